//! Activation statistics: what calibration measures and range selection reads. Plain data, no
//! I/O except the stats file (`file.rs`) and the TensorRT calibration cache (`trt_cache.rs`).
//!
//! Every statistic here is mergeable: the statistics of two disjoint sample sets combine into
//! those of their union — exactly for min/max and histograms.

mod channels;
mod file;
mod histogram;
mod layers;
mod minmax;
mod trt_cache;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use channels::ChannelMoments;
pub use file::{StatsFile, equalized_as, is_scoped, load, merge_files, save};
pub use histogram::Histogram;
pub use layers::{Gram, PatchSums};
pub use minmax::MinMax;
pub use trt_cache::{is_trt_cache, read_trt_cache, write_trt_cache};

/// Mean of per-batch minima and maxima (the `--moving-average` min/max variant), kept as sums
/// so that shards merge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Averaged {
    pub min_sum: f64,
    pub max_sum: f64,
    pub batches: u64,
}

impl Averaged {
    pub fn merge(&mut self, other: &Averaged) {
        self.min_sum += other.min_sum;
        self.max_sum += other.max_sum;
        self.batches += other.batches;
    }

    /// The averaged range, `None` when nothing was seen.
    pub fn range(&self) -> Option<(f32, f32)> {
        (self.batches > 0).then(|| {
            let n = self.batches as f64;
            ((self.min_sum / n) as f32, (self.max_sum / n) as f32)
        })
    }
}

/// Everything measured about one tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorStats {
    #[serde(flatten)]
    pub minmax: MinMax,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub averaged: Option<Averaged>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<Histogram>,
    /// NaN and ±infinity values skipped (`--nan-policy ignore`); not part of any range.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub non_finite: u64,
    /// Per-channel moments, for tensors whose channels planning weighs one by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<ChannelMoments>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl TensorStats {
    /// Merges `other` into `self`; statistics present on one side only are dropped (they no
    /// longer describe all the data).
    pub fn merge(&mut self, other: &TensorStats) -> Result<(), String> {
        self.minmax.merge(&other.minmax);
        self.non_finite += other.non_finite;
        self.averaged = match (self.averaged, other.averaged) {
            (Some(mut a), Some(b)) => {
                a.merge(&b);
                Some(a)
            }
            _ => None,
        };
        self.histogram = match (self.histogram.take(), &other.histogram) {
            (Some(mut a), Some(b)) => {
                a.merge(b)?;
                Some(a)
            }
            _ => None,
        };
        self.channels = match (self.channels.take(), &other.channels) {
            (Some(mut a), Some(b)) => {
                a.merge(b)?;
                Some(a)
            }
            _ => None,
        };
        Ok(())
    }
}

/// Statistics of every observed tensor, by ONNX tensor name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatsTable {
    pub samples: usize,
    pub tensors: BTreeMap<String, TensorStats>,
    /// The input patches of the layers bias correction adjusts, by weight initializer (measured
    /// by the quantize job with `bias_correction: true`; not kept in statistics files).
    pub layers: BTreeMap<String, PatchSums>,
}
