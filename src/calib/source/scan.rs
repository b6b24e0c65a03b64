//! Finding the samples: what a calibration path holds, grouped into samples by input.

use super::*;

pub(super) struct Scan<'a> {
    pub(super) inputs: &'a [InputSpec],
    pub(super) groups: Vec<Group>,
    pub(super) skipped: usize,
    pub(super) images: &'a ImageOptions,
    /// Set at the first image met.
    pub(super) image: Option<ImagePlan>,
    pub(super) notes: Vec<String>,
}

pub(super) fn ext(path: &Path) -> Option<&str> {
    path.extension().and_then(|e| e.to_str())
}

pub(super) fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default()
}

impl Scan<'_> {
    pub(super) fn feed(
        &self,
        path: &Path,
        location: Location,
        elem: Elem,
        shape: &[usize],
        input: usize,
    ) -> Result<Feed, CalibError> {
        let spec = &self.inputs[input];
        let mismatch = || CalibError::Mismatch {
            path: path.to_path_buf(),
            input: spec.name.clone(),
            expected: spec.describe(),
            got: format!("{} {}", elem.name(), shape_str(shape)),
        };
        if !elem.casts_to(spec.elem) {
            return Err(mismatch());
        }
        let (per_sample, count) = fit(shape, spec).map_err(|_| mismatch())?;
        Ok(Feed {
            path: path.to_path_buf(),
            location,
            elem,
            per_sample,
            count,
        })
    }

    pub(super) fn input_named(&self, key: &str) -> Option<usize> {
        if let Some(i) = self.inputs.iter().position(|s| s.name == key) {
            return Some(i);
        }
        let k: usize = key.strip_prefix("input_")?.parse().ok()?;
        (k < self.inputs.len()).then_some(k)
    }

    pub(super) fn header(&self, path: &Path) -> Result<(String, Elem, Vec<usize>), CalibError> {
        let bad = |reason: String| CalibError::BadFile {
            path: path.to_path_buf(),
            reason,
        };
        match ext(path) {
            Some("pb") => {
                let (name, a) = read_pb(path)?;
                let key = if !name.is_empty() && self.input_named(&name).is_some() {
                    name
                } else {
                    stem(path)
                };
                Ok((key, a.elem, a.shape))
            }
            _ => {
                let s = npy::open_npy(path).map_err(bad)?;
                Ok((stem(path), s.header.elem, s.header.shape))
            }
        }
    }

    pub(super) fn location(path: &Path) -> Location {
        if ext(path) == Some("pb") {
            Location::Pb
        } else {
            Location::Npy
        }
    }

    pub(super) fn single_file_group(&mut self, path: &Path) -> Result<Group, CalibError> {
        let (key, elem, shape) = self.header(path)?;
        let input = match self.input_named(&key) {
            Some(i) => i,
            None if self.inputs.len() == 1 => 0,
            None => return Err(self.missing(path, (0..self.inputs.len()).collect())),
        };
        self.group_of(
            path,
            vec![(input, path.to_path_buf(), Self::location(path), elem, shape)],
        )
    }

    /// The plan images follow, made at the first one: `Err` when the model cannot take them.
    pub(super) fn image_plan(&mut self, path: &Path) -> Result<&ImagePlan, CalibError> {
        let bad = |reason: String| CalibError::BadFile {
            path: path.to_path_buf(),
            reason,
        };
        if self.inputs.len() != 1 {
            return Err(bad(format!(
                "an image feeds a model with one input; this one has {}: use .npz files",
                self.inputs.len()
            )));
        }
        if self.image.is_none() {
            self.image = Some(ImagePlan::new(&self.inputs[0], self.images).map_err(bad)?);
        }
        Ok(self.image.as_ref().expect("set above"))
    }

    /// Images in natural order, `batch` per sample of the model's only input. Headers are
    /// read now, pixels when the sample is; images after the last full batch are left out
    /// (with a note).
    pub(super) fn image_groups(
        &mut self,
        dir: &Path,
        paths: Vec<PathBuf>,
    ) -> Result<(), CalibError> {
        let Some(first) = paths.first() else {
            return Ok(());
        };
        let plan = self.image_plan(first)?;
        let (batch, shape) = (plan.batch, plan.shape());
        for path in &paths {
            crate::calib::image::dimensions(path).map_err(|reason| CalibError::BadFile {
                path: path.clone(),
                reason,
            })?;
        }
        let left = paths.len() % batch;
        if left > 0 {
            self.skipped += left;
            self.notes.push(format!(
                "{left} image(s) of `{}` left out: a sample of input `{}` takes {batch}, and {} image(s) make {} full sample(s)",
                dir.display(),
                self.inputs[0].name,
                paths.len(),
                paths.len() / batch
            ));
        }
        for chunk in paths.chunks_exact(batch) {
            self.groups.push(Group {
                origin: chunk[0].clone(),
                feeds: vec![Feed {
                    path: chunk[0].clone(),
                    location: Location::Images(chunk.to_vec()),
                    elem: Elem::F32,
                    per_sample: shape.clone(),
                    count: Some(1),
                }],
                count: 1,
            });
        }
        Ok(())
    }

    pub(super) fn npz_group(&mut self, path: &Path) -> Result<Group, CalibError> {
        let bad = |reason: String| CalibError::BadFile {
            path: path.to_path_buf(),
            reason,
        };
        let entries = npy::npz_entries(path).map_err(bad)?;
        let mut parts = Vec::new();
        for e in entries {
            let input = match self.input_named(&e.key) {
                Some(i) => i,
                None if self.inputs.len() == 1 && parts.is_empty() => 0,
                None => continue,
            };
            let h = npy::open_npz_entry(path, &e).map_err(bad)?.header;
            parts.push((
                input,
                path.to_path_buf(),
                Location::NpzEntry(e),
                h.elem,
                h.shape,
            ));
        }
        self.group_of(path, parts)
    }

    pub(super) fn missing(&self, origin: &Path, missing: Vec<usize>) -> CalibError {
        CalibError::MissingInputs {
            path: origin.to_path_buf(),
            missing: missing
                .iter()
                .map(|&i| format!("`{}`", self.inputs[i].name))
                .collect(),
        }
    }

    /// Builds a group from (input, file, location, elem, shape) parts, checking coverage and counts.
    pub(super) fn group_of(
        &self,
        origin: &Path,
        parts: Vec<(usize, PathBuf, Location, Elem, Vec<usize>)>,
    ) -> Result<Group, CalibError> {
        let mut feeds: Vec<Option<Feed>> = vec![None; self.inputs.len()];
        for (input, path, location, elem, shape) in parts {
            if feeds[input].is_some() {
                return Err(CalibError::BadFile {
                    path: path.clone(),
                    reason: format!(
                        "input `{}` is fed twice in `{}`",
                        self.inputs[input].name,
                        origin.display()
                    ),
                });
            }
            feeds[input] = Some(self.feed(&path, location, elem, &shape, input)?);
        }
        let missing: Vec<usize> = (0..feeds.len()).filter(|&i| feeds[i].is_none()).collect();
        if !missing.is_empty() {
            return Err(self.missing(origin, missing));
        }
        let feeds: Vec<Feed> = feeds.into_iter().map(|f| f.expect("all present")).collect();
        let counts: Vec<(usize, &Feed)> = feeds
            .iter()
            .filter_map(|f| f.count.map(|c| (c, f)))
            .collect();
        let count = counts.first().map_or(1, |c| c.0);
        if let Some((c, f)) = counts.iter().find(|(c, _)| *c != count) {
            return Err(CalibError::BadFile {
                path: f.path.clone(),
                reason: format!(
                    "holds {c} samples where `{}` holds {count}",
                    counts[0].1.path.display()
                ),
            });
        }
        Ok(Group {
            origin: origin.to_path_buf(),
            feeds,
            count,
        })
    }

    pub(super) fn dir(&mut self, dir: &Path, depth: usize) -> Result<(), CalibError> {
        let read_err = |source| CalibError::Read {
            path: dir.to_path_buf(),
            source,
        };
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(read_err)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(read_err)?;
        entries.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
        let mut named = Vec::new();
        let mut subdirs = Vec::new();
        let mut images = Vec::new();
        for path in entries {
            if path.is_dir() {
                subdirs.push(path);
                continue;
            }
            match ext(&path) {
                Some("npz") => {
                    let g = self.npz_group(&path)?;
                    self.groups.push(g);
                }
                Some("npy" | "pb") if stem(&path).starts_with("output_") => self.skipped += 1,
                Some("npy" | "pb") => {
                    let (key, elem, shape) = self.header(&path)?;
                    match self.input_named(&key) {
                        Some(i)
                            if self.inputs.len() > 1
                                || key == self.inputs[0].name
                                || key.starts_with("input_") =>
                        {
                            named.push((i, path.clone(), Self::location(&path), elem, shape))
                        }
                        _ if self.inputs.len() == 1 => {
                            let g = self.group_of(
                                &path,
                                vec![(0, path.clone(), Self::location(&path), elem, shape)],
                            )?;
                            self.groups.push(g);
                        }
                        _ => {
                            let names: Vec<&str> =
                                self.inputs.iter().map(|s| s.name.as_str()).collect();
                            return Err(CalibError::BadFile {
                                path,
                                reason: format!(
                                    "cannot tell which input it feeds: name it after an input ({}) or use .npz",
                                    names.join(", ")
                                ),
                            });
                        }
                    }
                }
                _ if is_image(&path) => images.push(path),
                _ => self.skipped += 1,
            }
        }
        if !named.is_empty() {
            let g = self.group_of(dir, named)?;
            self.groups.push(g);
        }
        self.image_groups(dir, images)?;
        if depth == 0 {
            for sub in subdirs {
                self.dir(&sub, depth + 1)?;
            }
        } else {
            self.skipped += subdirs.len();
        }
        Ok(())
    }
}
