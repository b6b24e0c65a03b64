//! The statistics file (`onnx-quant calibrate --stats FILE`): JSON, one entry per tensor, tied
//! to the model it was measured on by the SHA-256 of the model file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TensorStats;
use crate::error::{CalibError, OutputError};

const FORMAT: &str = "onnx-quant-stats";
const VERSION: u32 = 1;

/// What a statistics file holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsFile {
    pub format: String,
    pub version: u32,
    /// SHA-256 of the model file the statistics were measured on (hex).
    pub model_sha256: String,
    pub samples: usize,
    /// The model was equalized before it was measured (`equalize: true`), with this
    /// `equalize_clip`: its activations are the equalized model's, which a quantize run reading
    /// the file must equalize the same way. Absent: measured as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equalized: Option<String>,
    pub tensors: BTreeMap<String, TensorStats>,
}

impl StatsFile {
    pub fn new(
        model_sha256: String,
        samples: usize,
        tensors: BTreeMap<String, TensorStats>,
    ) -> Self {
        StatsFile {
            format: FORMAT.into(),
            version: VERSION,
            model_sha256,
            samples,
            equalized: None,
            tensors,
        }
    }
}

/// Writes `file` to `path` atomically.
pub fn save(path: &Path, file: &StatsFile) -> Result<(), OutputError> {
    // Compact: histograms are long arrays; `jq .` pretty-prints when a person reads one.
    let mut json = serde_json::to_vec(file).expect("statistics serialize");
    json.push(b'\n');
    crate::atomic::write(path, &json)
}

fn bad(path: &Path, reason: impl Into<String>) -> CalibError {
    CalibError::BadFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads and checks a statistics file.
pub fn load(path: &Path) -> Result<StatsFile, CalibError> {
    let bytes = std::fs::read(path).map_err(|source| CalibError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file: StatsFile = serde_json::from_slice(&bytes)
        .map_err(|e| bad(path, format!("not an onnx-quant statistics file: {e}")))?;
    if file.format != FORMAT || file.version != VERSION {
        return Err(bad(
            path,
            format!(
                "format `{}` version {} is not `{FORMAT}` version {VERSION}",
                file.format, file.version
            ),
        ));
    }
    for (name, t) in &file.tensors {
        let m = &t.minmax;
        if !(m.min.is_finite() && m.max.is_finite() && m.min <= m.max && m.count > 0) {
            return Err(bad(
                path,
                format!(
                    "tensor `{name}` has an invalid range [{}, {}]",
                    m.min, m.max
                ),
            ));
        }
    }
    Ok(file)
}

/// Whether a statistics key names a tensor inside a subgraph (`If_0/then_branch::x`).
pub fn is_scoped(key: &str) -> bool {
    key.contains("::")
}

/// How a statistics file's model was prepared, in words.
pub fn equalized_as(equalized: Option<&str>) -> String {
    match equalized {
        Some(clip) => format!("equalized (`equalize: true`, `equalize_clip: {clip}`)"),
        None => "as it is (not equalized)".into(),
    }
}

/// Merges statistics of disjoint sample sets of one model into the statistics of all of them.
pub fn merge_files(files: Vec<(PathBuf, StatsFile)>) -> Result<StatsFile, CalibError> {
    let mut iter = files.into_iter();
    let (first_path, mut all) = iter.next().ok_or(CalibError::NoSamples)?;
    for (path, f) in iter {
        if f.model_sha256 != all.model_sha256 {
            return Err(bad(
                &path,
                format!(
                    "measured on another model than `{}` (model SHA-256 differs)",
                    first_path.display()
                ),
            ));
        }
        if f.equalized != all.equalized {
            return Err(bad(
                &path,
                format!(
                    "measured on the model {} and `{}` on the model {}",
                    equalized_as(f.equalized.as_deref()),
                    first_path.display(),
                    equalized_as(all.equalized.as_deref())
                ),
            ));
        }
        // tensors of a subgraph (`<scope>::<name>`) are measured by the shards whose samples
        // take it, so they may be on one side only; main-graph tensors are on both
        let only =
            |a: &BTreeMap<String, TensorStats>, b: &BTreeMap<String, TensorStats>| -> Vec<String> {
                a.keys()
                    .filter(|k| !b.contains_key(*k) && !is_scoped(k))
                    .map(|k| format!("`{k}`"))
                    .collect()
            };
        let (missing, extra) = (
            only(&all.tensors, &f.tensors),
            only(&f.tensors, &all.tensors),
        );
        if !missing.is_empty() || !extra.is_empty() {
            return Err(bad(
                &path,
                format!(
                    "holds other tensors than `{}` (missing: {}; extra: {})",
                    first_path.display(),
                    if missing.is_empty() {
                        "none".into()
                    } else {
                        missing.join(", ")
                    },
                    if extra.is_empty() {
                        "none".into()
                    } else {
                        extra.join(", ")
                    }
                ),
            ));
        }
        for (name, t) in f.tensors {
            match all.tensors.get_mut(&name) {
                Some(target) => target
                    .merge(&t)
                    .map_err(|e| bad(&path, format!("tensor `{name}`: {e}")))?,
                None => {
                    all.tensors.insert(name, t);
                }
            }
        }
        all.samples += f.samples;
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Averaged, Histogram, MinMax};

    fn stats(values: &[f32]) -> TensorStats {
        let mut h = Histogram::new(64);
        h.add(values);
        let mut minmax = MinMax::default();
        minmax.update(values).unwrap();
        TensorStats {
            minmax,
            averaged: Some(Averaged {
                min_sum: -1.5,
                max_sum: 2.25,
                batches: 3,
            }),
            histogram: Some(h),
            non_finite: 0,
            channels: None,
        }
    }

    #[test]
    fn stats_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let tensors = BTreeMap::from([
            ("a".to_string(), stats(&[0.1, -3.0, 7.25])),
            ("b/c:0".to_string(), stats(&[0.0, 1e-30])),
        ]);
        let file = StatsFile::new("ab12".into(), 7, tensors);
        save(&path, &file).unwrap();
        assert_eq!(load(&path).unwrap(), file);
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(&path, "{\"format\": \"other\"}").unwrap();
        assert!(
            load(&path)
                .unwrap_err()
                .to_string()
                .contains("not an onnx-quant statistics file")
        );
        let mut file = StatsFile::new(
            "x".into(),
            1,
            BTreeMap::from([("t".to_string(), stats(&[1.0]))]),
        );
        file.version = 9;
        save(&path, &file).unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("version 9"));
    }

    #[test]
    fn merging_needs_the_same_model_and_tensors() {
        let one = |sha: &str, name: &str| {
            (
                PathBuf::from(format!("{sha}.json")),
                StatsFile::new(
                    sha.into(),
                    2,
                    BTreeMap::from([(name.to_string(), stats(&[1.0, -2.0]))]),
                ),
            )
        };
        let merged = merge_files(vec![one("m", "t"), one("m", "t")]).unwrap();
        assert_eq!(merged.samples, 4);
        assert_eq!(merged.tensors["t"].minmax.count, 4);
        assert_eq!(merged.tensors["t"].averaged.unwrap().batches, 6);
        let err = merge_files(vec![one("m", "t"), one("other", "t")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("another model"), "{err}");
        let err = merge_files(vec![one("m", "t"), one("m", "u")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing: `t`") && err.contains("extra: `u`"),
            "{err}"
        );
    }
}
