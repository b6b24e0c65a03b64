//! Calibration data: finding it, matching arrays to model inputs, and streaming one sample at a
//! time so memory does not grow with the number of samples.
//!
//! Accepted layouts (`--calib PATH`):
//! - one `.npy` (single-input model, or its stem names an input) or `.npz` (keys = input names);
//! - one ONNX `TensorProto` `.pb` file;
//! - a directory of such files, sorted in natural order: a `.npz` feeds every input; a `.npy` or
//!   `.pb` named after an input (file stem, or the `.pb` tensor's name, or `input_K` for the K-th
//!   input) feeds that input; any other `.npy` / `.pb` is a sample of a single-input model;
//!   `output_K.pb` files (reference outputs) are skipped; subdirectories such as ONNX's
//!   `test_data_set_N/` are read the same way, in natural order;
//! - PNG and JPEG images (a file, or among the files of a directory): a single-input model's
//!   image input, one image per batch item (B per sample for a fixed batch of B, in natural
//!   order), preprocessed as [`super::image`] describes.
//!
//! An array's axis 0 stacks samples: with one axis more than the input it holds `shape[0]`
//! feeds; with the input's rank, batches of the input's batch size (1 when symbolic); with one
//! axis less, one feed without its batch axis. A 0-d array in a `.npz` is fed at every step.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;

use super::array::{Array, Elem, InputSpec, convert, shape_str};
use super::image::{ImageOptions, ImagePlan, is_image};
use super::npy;
use crate::error::CalibError;
use crate::proto::TensorProto;

/// One feed of the model: an array per input, in input order.
#[derive(Debug)]
pub struct Sample {
    pub index: usize,
    /// The file (or directory) it came from, for messages.
    pub origin: PathBuf,
    pub arrays: Vec<Array>,
}

#[derive(Clone, Debug)]
enum Location {
    Npy,
    NpzEntry(npy::NpzEntry),
    Pb,
    /// The images of one sample, in order.
    Images(Vec<PathBuf>),
}

/// Where one input's data comes from inside a group.
#[derive(Clone, Debug)]
struct Feed {
    path: PathBuf,
    location: Location,
    elem: Elem,
    /// Shape of one sample of this input.
    per_sample: Vec<usize>,
    /// Samples it holds; `None` for a constant fed at every step.
    count: Option<usize>,
}

/// A set of files that together give `count` samples of every input.
#[derive(Clone, Debug)]
struct Group {
    origin: PathBuf,
    feeds: Vec<Feed>,
    count: usize,
}

/// A calibration data set, checked and counted, not yet read.
#[derive(Clone, Debug)]
pub struct Dataset {
    inputs: Vec<InputSpec>,
    groups: Vec<Group>,
    /// Samples `skip..len` are produced (the first `skip` are read past).
    len: usize,
    skip: usize,
    /// Only these samples are produced (the others are read past), when set.
    only: Option<Arc<BTreeSet<usize>>>,
    /// Files seen but not used (not data, or reference outputs).
    pub skipped_files: usize,
    /// How image files are read (set when there are some).
    image: Option<ImagePlan>,
    /// What the caller should warn about (images left over after the last full batch).
    pub notes: Vec<String>,
}

impl Dataset {
    /// Scans `path`, matches its arrays to `inputs` and checks every header, without reading
    /// data. At most `max_samples` samples are used.
    pub fn open(
        path: &Path,
        inputs: &[InputSpec],
        max_samples: Option<usize>,
        images: &ImageOptions,
    ) -> Result<Dataset, CalibError> {
        if !path.exists() {
            return Err(CalibError::NotFound(path.to_path_buf()));
        }
        let mut scan = Scan {
            inputs,
            groups: Vec::new(),
            skipped: 0,
            images,
            image: None,
            notes: Vec::new(),
        };
        if path.is_dir() {
            scan.dir(path, 0)?;
        } else if is_image(path) {
            scan.image_groups(path, vec![path.to_path_buf()])?;
            if let Some(plan) = scan.image.as_ref().filter(|p| p.batch > 1) {
                return Err(CalibError::BadFile {
                    path: path.to_path_buf(),
                    reason: format!(
                        "one image, where a sample of input `{}` takes {}: give a directory",
                        inputs[0].name, plan.batch
                    ),
                });
            }
        } else {
            let group = match ext(path) {
                Some("npz") => scan.npz_group(path)?,
                Some("npy" | "pb") => scan.single_file_group(path)?,
                _ => {
                    return Err(CalibError::BadFile {
                        path: path.to_path_buf(),
                        reason:
                            "expected a .npy, .npz, .pb or image (.png, .jpg) file, or a directory"
                                .into(),
                    });
                }
            };
            scan.groups.push(group);
        }
        if scan.groups.is_empty() {
            return Err(CalibError::Empty(path.to_path_buf()));
        }
        if scan.image.is_none() && *images != ImageOptions::default() {
            return Err(CalibError::BadFile {
                path: path.to_path_buf(),
                reason: "image options (--image-size, --mean, --std, ...) are given, but it holds no image".into(),
            });
        }
        let total: usize = scan.groups.iter().map(|g| g.count).sum();
        let len = max_samples.map_or(total, |m| m.min(total));
        if len == 0 {
            return Err(CalibError::NoSamples);
        }
        Ok(Dataset {
            inputs: inputs.to_vec(),
            groups: scan.groups,
            len,
            skip: 0,
            only: None,
            skipped_files: scan.skipped,
            image: scan.image,
            notes: scan.notes,
        })
    }

    /// Number of samples that will be produced.
    pub fn len(&self) -> usize {
        match &self.only {
            None => self.len - self.skip,
            Some(only) => only.range(self.skip..self.len).count(),
        }
    }

    /// The indices of the samples that will be produced, in order.
    pub fn indices(&self) -> Vec<usize> {
        match &self.only {
            None => (self.skip..self.len).collect(),
            Some(only) => only.range(self.skip..self.len).copied().collect(),
        }
    }

    /// The same data set, producing only the samples of `indices` among its own.
    pub fn select(&self, indices: impl IntoIterator<Item = usize>) -> Dataset {
        let mine: BTreeSet<usize> = self.indices().into_iter().collect();
        let only: BTreeSet<usize> = indices.into_iter().filter(|i| mine.contains(i)).collect();
        Dataset {
            only: Some(Arc::new(only)),
            notes: Vec::new(),
            ..self.clone()
        }
    }

    /// The samples split by the shape of their inputs, in order of first sample: one data set
    /// per shape, with that shape (`self` whole when every sample has the same).
    pub fn by_shape(self) -> Vec<(Vec<Vec<usize>>, Dataset)> {
        let mut shapes: Vec<(Vec<Vec<usize>>, Vec<usize>)> = Vec::new();
        let mut start = 0;
        for g in &self.groups {
            let shape: Vec<Vec<usize>> = g.feeds.iter().map(|f| f.per_sample.clone()).collect();
            let range = start..start + g.count;
            start += g.count;
            match shapes.iter_mut().find(|(s, _)| *s == shape) {
                Some((_, idx)) => idx.extend(range),
                None => shapes.push((shape, range.collect())),
            }
        }
        if shapes.len() <= 1 {
            let shape = shapes.pop().map_or_else(Vec::new, |(s, _)| s);
            return vec![(shape, self)];
        }
        let parts: Vec<(Vec<Vec<usize>>, Dataset)> = shapes
            .into_iter()
            .map(|(shape, idx)| (shape, self.select(idx)))
            .filter(|(_, d)| !d.is_empty())
            .collect();
        parts
    }

    /// The same samples with only the inputs at `which` (in that order): to read small inputs
    /// without the others.
    pub fn only_inputs(&self, which: &[usize]) -> Dataset {
        Dataset {
            inputs: which.iter().map(|&i| self.inputs[i].clone()).collect(),
            groups: self
                .groups
                .iter()
                .map(|g| Group {
                    origin: g.origin.clone(),
                    feeds: which.iter().map(|&i| g.feeds[i].clone()).collect(),
                    count: g.count,
                })
                .collect(),
            image: if which.is_empty() {
                None
            } else {
                self.image.clone()
            },
            notes: Vec::new(),
            ..self.clone()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Splits off the last `n` samples (at most all but one): `(first, last)`. Samples keep
    /// their index in the whole set.
    pub fn split_last(self, n: usize) -> (Dataset, Dataset) {
        let n = n.min(self.len().saturating_sub(1));
        if self.only.is_some() {
            let idx = self.indices();
            let (head, tail) = idx.split_at(idx.len() - n);
            return (self.select(head.to_vec()), self.select(tail.to_vec()));
        }
        let cut = self.len - n;
        let tail = Dataset {
            inputs: self.inputs.clone(),
            groups: self.groups.clone(),
            len: self.len,
            skip: cut,
            only: None,
            skipped_files: self.skipped_files,
            image: self.image.clone(),
            notes: Vec::new(),
        };
        let head = Dataset { len: cut, ..self };
        (head, tail)
    }

    /// Per input, the one shape every sample has (to concretise the model's symbolic dims),
    /// or `None` when samples differ.
    pub fn fixed_shapes(&self) -> Vec<Option<Vec<usize>>> {
        let produced: BTreeSet<usize> = self.indices().into_iter().collect();
        let mut start = 0;
        let mut used = Vec::new();
        for g in &self.groups {
            if produced.range(start..start + g.count).next().is_some() {
                used.push(g);
            }
            start += g.count;
        }
        (0..self.inputs.len())
            .map(|i| {
                let first = &used.first()?.feeds[i].per_sample;
                used.iter()
                    .all(|g| &g.feeds[i].per_sample == first)
                    .then(|| first.clone())
            })
            .collect()
    }

    /// Streams the samples, reading one group's files at a time.
    pub fn samples(self) -> Samples {
        Samples {
            inputs: self.inputs,
            image: self.image,
            groups: self.groups.into_iter(),
            current: None,
            next_index: 0,
            len: self.len,
            skip: self.skip,
            only: self.only,
        }
    }
}

/// Integer class labels from a `.npy` file (any integer dtype and shape, read flattened).
pub fn read_labels(path: &Path) -> Result<Vec<i64>, CalibError> {
    if !path.exists() {
        return Err(CalibError::NotFound(path.to_path_buf()));
    }
    let bad = |reason: String| CalibError::BadFile {
        path: path.to_path_buf(),
        reason,
    };
    let mut stream = npy::open_npy(path).map_err(bad)?;
    let elem = stream.header.elem;
    if !elem.casts_to(Elem::I64) {
        return Err(bad(format!("labels must be integers, not {}", elem.name())));
    }
    let mut bytes = Vec::new();
    stream
        .reader
        .read_to_end(&mut bytes)
        .map_err(|source| CalibError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    let wide = convert(elem, &bytes, Elem::I64).map_err(bad)?;
    Ok(wide
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

mod scan;
mod stream;

use scan::{Scan, ext};
pub use stream::Samples;
use stream::{fit, read_pb};

/// Orders `a2` before `a10`: digit runs compare as numbers.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    fn runs(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ra, rb) = (runs(a), runs(b));
    for ((da, sa), (db, sb)) in ra.iter().zip(&rb) {
        let ord = if *da && *db {
            let (ta, tb) = (sa.trim_start_matches('0'), sb.trim_start_matches('0'));
            ta.len().cmp(&tb.len()).then(ta.cmp(tb))
        } else {
            sa.cmp(sb)
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    ra.len().cmp(&rb.len()).then(a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dims: &[Option<usize>]) -> InputSpec {
        InputSpec::f32_for_test(dims)
    }

    #[test]
    fn arrays_split_into_samples() {
        let sym = spec(&[None, Some(3), Some(8)]);
        assert_eq!(fit(&[64, 3, 8], &sym), Ok((vec![1, 3, 8], Some(64))));
        assert_eq!(fit(&[64, 2, 3, 8], &sym), Ok((vec![2, 3, 8], Some(64))));
        assert_eq!(fit(&[3, 8], &sym), Ok((vec![1, 3, 8], Some(1))));
        let fixed = spec(&[Some(2), Some(3), Some(8)]);
        assert_eq!(fit(&[8, 3, 8], &fixed), Ok((vec![2, 3, 8], Some(4))));
        assert!(fit(&[7, 3, 8], &fixed).is_err());
        assert!(fit(&[64, 4, 8], &sym).is_err());
        assert!(fit(&[8], &sym).is_err());
        assert_eq!(fit(&[], &spec(&[])), Ok((vec![], None)));
        assert_eq!(fit(&[5], &spec(&[])), Ok((vec![], Some(5))));
    }

    #[test]
    fn natural_order_compares_numbers() {
        let mut v = vec![
            "s10.npy",
            "s2.npy",
            "s1.npy",
            "test_data_set_10",
            "test_data_set_9",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            [
                "s1.npy",
                "s2.npy",
                "s10.npy",
                "test_data_set_9",
                "test_data_set_10"
            ]
        );
    }
}
