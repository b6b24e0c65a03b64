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

/// Iterator over the samples of a [`Dataset`].
pub struct Samples {
    inputs: Vec<InputSpec>,
    image: Option<ImagePlan>,
    groups: std::vec::IntoIter<Group>,
    current: Option<OpenGroup>,
    next_index: usize,
    len: usize,
    skip: usize,
    only: Option<Arc<BTreeSet<usize>>>,
}

struct OpenGroup {
    origin: PathBuf,
    readers: Vec<FeedReader>,
    left: usize,
}

enum FeedReader {
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
    fn read_next(&mut self) -> Option<Result<Sample, CalibError>> {
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
    fn next(&mut self, spec: &InputSpec) -> Result<Array, CalibError> {
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

fn open_group(
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
fn read_whole(feed: &Feed) -> Result<Array, CalibError> {
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
fn read_pb(path: &Path) -> Result<(String, Array), CalibError> {
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
fn fit(shape: &[usize], spec: &InputSpec) -> Result<(Vec<usize>, Option<usize>), ()> {
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

struct Scan<'a> {
    inputs: &'a [InputSpec],
    groups: Vec<Group>,
    skipped: usize,
    images: &'a ImageOptions,
    /// Set at the first image met.
    image: Option<ImagePlan>,
    notes: Vec<String>,
}

fn ext(path: &Path) -> Option<&str> {
    path.extension().and_then(|e| e.to_str())
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default()
}

impl Scan<'_> {
    fn feed(
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

    fn input_named(&self, key: &str) -> Option<usize> {
        if let Some(i) = self.inputs.iter().position(|s| s.name == key) {
            return Some(i);
        }
        let k: usize = key.strip_prefix("input_")?.parse().ok()?;
        (k < self.inputs.len()).then_some(k)
    }

    fn header(&self, path: &Path) -> Result<(String, Elem, Vec<usize>), CalibError> {
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

    fn location(path: &Path) -> Location {
        if ext(path) == Some("pb") {
            Location::Pb
        } else {
            Location::Npy
        }
    }

    fn single_file_group(&mut self, path: &Path) -> Result<Group, CalibError> {
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
    fn image_plan(&mut self, path: &Path) -> Result<&ImagePlan, CalibError> {
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
    fn image_groups(&mut self, dir: &Path, paths: Vec<PathBuf>) -> Result<(), CalibError> {
        let Some(first) = paths.first() else {
            return Ok(());
        };
        let plan = self.image_plan(first)?;
        let (batch, shape) = (plan.batch, plan.shape());
        for path in &paths {
            super::image::dimensions(path).map_err(|reason| CalibError::BadFile {
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

    fn npz_group(&mut self, path: &Path) -> Result<Group, CalibError> {
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

    fn missing(&self, origin: &Path, missing: Vec<usize>) -> CalibError {
        CalibError::MissingInputs {
            path: origin.to_path_buf(),
            missing: missing
                .iter()
                .map(|&i| format!("`{}`", self.inputs[i].name))
                .collect(),
        }
    }

    /// Builds a group from (input, file, location, elem, shape) parts, checking coverage and counts.
    fn group_of(
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

    fn dir(&mut self, dir: &Path, depth: usize) -> Result<(), CalibError> {
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
