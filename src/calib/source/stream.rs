//! Streaming the samples of a [`Dataset`]: one open group of files at a time, each feed read
//! (or a stored array sliced) sample by sample.

use super::*;

/// Iterator over the samples of a [`Dataset`].
pub struct Samples {
    pub(super) inputs: Vec<InputSpec>,
    pub(super) image: Option<ImagePlan>,
    pub(super) groups: std::vec::IntoIter<Group>,
    pub(super) current: Option<OpenGroup>,
    pub(super) next_index: usize,
    pub(super) len: usize,
    pub(super) skip: usize,
    pub(super) only: Option<Arc<BTreeSet<usize>>>,
}

pub(super) struct OpenGroup {
    pub(super) origin: PathBuf,
    pub(super) readers: Vec<FeedReader>,
    pub(super) left: usize,
}

pub(super) enum FeedReader {
    Stream {
        path: PathBuf,
        reader: Box<dyn Read + Send>,
        elem: Elem,
        shape: Vec<usize>,
    },
    /// `array.shape` is one sample's shape; `array.data` holds every sample (or, when not
    /// `stacked`, the one constant fed at every step).
    Memory {
        array: Array,
        sample_len: usize,
        at: usize,
        stacked: bool,
    },
}

impl Iterator for Samples {
    type Item = Result<Sample, CalibError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let item = self.read_next()?;
            match item {
                Ok(s) if s.index < self.skip => continue,
                Ok(s) if self.only.as_ref().is_some_and(|o| !o.contains(&s.index)) => continue,
                item => return Some(item),
            }
        }
    }
}

impl Samples {
    pub(super) fn read_next(&mut self) -> Option<Result<Sample, CalibError>> {
        if self.next_index >= self.len {
            return None;
        }
        while self.current.as_ref().is_none_or(|g| g.left == 0) {
            let group = self.groups.next()?;
            // a group none of whose samples is produced is passed over unopened
            let range = self.next_index..self.next_index + group.count;
            let wanted = match &self.only {
                Some(only) => only.range(range.clone()).next().is_some(),
                None => range.end > self.skip,
            };
            if !wanted {
                self.next_index = range.end;
                self.current = None;
                if self.next_index >= self.len {
                    return None;
                }
                continue;
            }
            match open_group(group, &self.inputs, self.image.as_ref()) {
                Ok(g) => self.current = Some(g),
                Err(e) => return Some(Err(e)),
            }
        }
        let group = self.current.as_mut().expect("set above");
        group.left -= 1;
        let index = self.next_index;
        self.next_index += 1;
        let arrays: Result<Vec<Array>, CalibError> = group
            .readers
            .iter_mut()
            .zip(&self.inputs)
            .map(|(r, spec)| r.next(spec))
            .collect();
        Some(arrays.map(|arrays| Sample {
            index,
            origin: group.origin.clone(),
            arrays,
        }))
    }
}

impl FeedReader {
    pub(super) fn next(&mut self, spec: &InputSpec) -> Result<Array, CalibError> {
        match self {
            FeedReader::Stream {
                path,
                reader,
                elem,
                shape,
            } => {
                let n: usize = shape.iter().product::<usize>() * elem.size();
                let mut buf = vec![0u8; n];
                reader
                    .read_exact(&mut buf)
                    .map_err(|source| CalibError::Read {
                        path: path.clone(),
                        source,
                    })?;
                let data =
                    convert(*elem, &buf, spec.elem).map_err(|reason| CalibError::BadFile {
                        path: path.clone(),
                        reason: format!("input `{}`: {reason}", spec.name),
                    })?;
                Ok(Array {
                    elem: spec.elem,
                    shape: shape.clone(),
                    data,
                })
            }
            FeedReader::Memory {
                array,
                sample_len,
                at,
                stacked,
            } => {
                let bytes = &array.data[*at..*at + *sample_len];
                if *stacked {
                    *at += *sample_len;
                }
                Ok(Array {
                    elem: array.elem,
                    shape: array.shape.clone(),
                    data: bytes.to_vec(),
                })
            }
        }
    }
}

pub(super) fn open_group(
    group: Group,
    inputs: &[InputSpec],
    image: Option<&ImagePlan>,
) -> Result<OpenGroup, CalibError> {
    let mut readers = Vec::new();
    for (feed, spec) in group.feeds.into_iter().zip(inputs) {
        let bad = |reason: String| CalibError::BadFile {
            path: feed.path.clone(),
            reason,
        };
        let reader = match (&feed.location, feed.count) {
            (Location::Images(paths), _) => {
                let plan = image.expect("image groups come with a plan");
                let mut bytes = Vec::new();
                for path in paths {
                    let values = plan.load(path).map_err(|reason| CalibError::BadFile {
                        path: path.clone(),
                        reason,
                    })?;
                    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
                }
                let data = convert(Elem::F32, &bytes, spec.elem)
                    .map_err(|r| bad(format!("input `{}`: {r}", spec.name)))?;
                FeedReader::Memory {
                    sample_len: data.len(),
                    array: Array {
                        elem: spec.elem,
                        shape: feed.per_sample.clone(),
                        data,
                    },
                    at: 0,
                    stacked: true,
                }
            }
            (Location::Pb, _) | (_, None) => {
                let full = read_whole(&feed)?;
                let data = convert(full.elem, &full.data, spec.elem)
                    .map_err(|r| bad(format!("input `{}`: {r}", spec.name)))?;
                let sample_len = feed.per_sample.iter().product::<usize>() * spec.elem.size();
                FeedReader::Memory {
                    array: Array {
                        elem: spec.elem,
                        shape: feed.per_sample.clone(),
                        data,
                    },
                    sample_len,
                    at: 0,
                    stacked: feed.count.is_some(),
                }
            }
            (Location::Npy, Some(_)) => {
                let s = npy::open_npy(&feed.path).map_err(bad)?;
                FeedReader::Stream {
                    path: feed.path.clone(),
                    reader: s.reader,
                    elem: feed.elem,
                    shape: feed.per_sample.clone(),
                }
            }
            (Location::NpzEntry(e), Some(_)) => {
                let s = npy::open_npz_entry(&feed.path, e).map_err(bad)?;
                FeedReader::Stream {
                    path: feed.path.clone(),
                    reader: s.reader,
                    elem: feed.elem,
                    shape: feed.per_sample.clone(),
                }
            }
        };
        readers.push(reader);
    }
    Ok(OpenGroup {
        origin: group.origin,
        readers,
        left: group.count,
    })
}

/// Reads a whole (small) array into memory: `.pb` tensors and 0-d constants.
pub(super) fn read_whole(feed: &Feed) -> Result<Array, CalibError> {
    let bad = |reason: String| CalibError::BadFile {
        path: feed.path.clone(),
        reason,
    };
    match &feed.location {
        Location::Pb => read_pb(&feed.path).map(|(_, a)| a),
        Location::Images(_) => Err(bad("an image is not a constant".into())),
        Location::Npy | Location::NpzEntry(_) => {
            let mut s = match &feed.location {
                Location::NpzEntry(e) => npy::open_npz_entry(&feed.path, e),
                _ => npy::open_npy(&feed.path),
            }
            .map_err(bad)?;
            let n = s.header.data_len().unwrap_or(0) as usize;
            let mut data = vec![0u8; n];
            s.reader
                .read_exact(&mut data)
                .map_err(|source| CalibError::Read {
                    path: feed.path.clone(),
                    source,
                })?;
            Ok(Array {
                elem: s.header.elem,
                shape: s.header.shape,
                data,
            })
        }
    }
}

/// Decodes a `TensorProto` file: its name and its data.
pub(super) fn read_pb(path: &Path) -> Result<(String, Array), CalibError> {
    let bytes = std::fs::read(path).map_err(|source| CalibError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| CalibError::BadFile {
        path: path.to_path_buf(),
        reason,
    };
    let t = TensorProto::decode(bytes.as_slice())
        .map_err(|e| bad(format!("not an ONNX TensorProto: {e}")))?;
    let elem = Elem::from_onnx(t.data_type()).ok_or_else(|| {
        bad(format!(
            "unsupported element type {}",
            crate::onnx::tensor::elem_type_name(t.data_type())
        ))
    })?;
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| bad("negative dim".into()))?;
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad("dims overflow".into()))?;
    let data = crate::onnx::tensor::le_bytes(&t).map_err(bad)?.into_owned();
    Ok((t.name().to_string(), Array { elem, shape, data }))
}

/// Splits a stored array of `shape` into samples for an input of `dims` (see module docs).
/// Returns the per-sample shape and the count (`None`: a constant).
pub(super) fn fit(shape: &[usize], spec: &InputSpec) -> Result<(Vec<usize>, Option<usize>), ()> {
    let r = spec.dims.len();
    let (per, count) = if shape.len() == r + 1 {
        (shape[1..].to_vec(), Some(shape[0]))
    } else if shape.len() == r && r == 0 {
        (vec![], None)
    } else if shape.len() == r {
        let b = spec.dims[0].unwrap_or(1).max(1);
        if !shape[0].is_multiple_of(b) {
            return Err(());
        }
        let mut per = shape.to_vec();
        per[0] = b;
        (per, Some(shape[0] / b))
    } else if shape.len() + 1 == r {
        let mut per = vec![1];
        per.extend_from_slice(shape);
        (per, Some(1))
    } else {
        return Err(());
    };
    let compatible = per.len() == r
        && per
            .iter()
            .zip(&spec.dims)
            .all(|(&p, d)| d.is_none_or(|d| d == p));
    if compatible {
        Ok((per, count))
    } else {
        Err(())
    }
}
