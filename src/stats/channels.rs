//! Per-channel mean and spread of one tensor, kept as fixed-point sums: integer addition is
//! associative, so the moments of shards merged equal those of one run, in any order (as
//! min/max and histograms do).

use serde::{Deserialize, Serialize};

/// The sums of one tensor's channel (in f64, in the tensor's order) are added as
/// `round(s · 2^40)` and `round(q · 2^50)`: values between about `1e-6` and `1e6` keep 7
/// significant digits, and sums of 10^8 values do not overflow.
const SUM_SCALE: f64 = (1u64 << 40) as f64;
const SQ_SCALE: f64 = (1u64 << 50) as f64;

/// Sums of values and squares per channel along `axis`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelMoments {
    pub axis: usize,
    /// Values seen per channel.
    pub count: u64,
    pub sum: Vec<i128>,
    pub sum_sq: Vec<i128>,
}

impl ChannelMoments {
    pub fn new(axis: usize) -> Self {
        ChannelMoments {
            axis,
            count: 0,
            sum: Vec::new(),
            sum_sq: Vec::new(),
        }
    }

    /// Adds a tensor of `shape` (row-major `values`, all finite).
    pub fn add(&mut self, shape: &[usize], values: &[f32]) -> Result<(), String> {
        let Some(&channels) = shape.get(self.axis) else {
            return Err(format!(
                "has rank {}, no axis {} to take channels along",
                shape.len(),
                self.axis
            ));
        };
        if self.sum.is_empty() {
            self.sum = vec![0; channels];
            self.sum_sq = vec![0; channels];
        } else if self.sum.len() != channels {
            return Err(format!(
                "has {channels} channels on axis {} here and {} before",
                self.axis,
                self.sum.len()
            ));
        }
        let inner: usize = shape[self.axis + 1..].iter().product();
        let outer: usize = shape[..self.axis].iter().product();
        if channels == 0 || inner == 0 {
            return Ok(());
        }
        // each channel's sums in f64 in a fixed order (the values of this tensor), then once
        // into fixed point, where adding is associative
        for o in 0..outer {
            for c in 0..channels {
                let start = (o * channels + c) * inner;
                let (mut s, mut q) = (0f64, 0f64);
                for &v in &values[start..start + inner] {
                    let v = f64::from(v);
                    s += v;
                    q += v * v;
                }
                self.sum[c] = self.sum[c].saturating_add((s * SUM_SCALE).round() as i128);
                self.sum_sq[c] = self.sum_sq[c].saturating_add((q * SQ_SCALE).round() as i128);
            }
        }
        self.count += (outer * inner) as u64;
        Ok(())
    }

    pub fn merge(&mut self, other: &ChannelMoments) -> Result<(), String> {
        if other.sum.is_empty() {
            return Ok(());
        }
        if self.sum.is_empty() {
            *self = other.clone();
            return Ok(());
        }
        if self.axis != other.axis || self.sum.len() != other.sum.len() {
            return Err(format!(
                "channel moments of {} channels on axis {} and of {} on axis {}",
                self.sum.len(),
                self.axis,
                other.sum.len(),
                other.axis
            ));
        }
        self.count += other.count;
        for (a, b) in self.sum.iter_mut().zip(&other.sum) {
            *a = a.saturating_add(*b);
        }
        for (a, b) in self.sum_sq.iter_mut().zip(&other.sum_sq) {
            *a = a.saturating_add(*b);
        }
        Ok(())
    }

    /// The mean of each channel (zeros before any value).
    pub fn mean(&self) -> Vec<f64> {
        let n = self.count.max(1) as f64;
        self.sum.iter().map(|&s| s as f64 / SUM_SCALE / n).collect()
    }

    /// The standard deviation of each channel (empty before any value).
    pub fn std(&self) -> Vec<f64> {
        if self.count == 0 {
            return vec![0.0; self.sum.len()];
        }
        let n = self.count as f64;
        self.sum
            .iter()
            .zip(&self.sum_sq)
            .map(|(&s, &q)| {
                let mean = s as f64 / SUM_SCALE / n;
                let sq = q as f64 / SQ_SCALE / n;
                (sq - mean * mean).max(0.0).sqrt()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_per_channel_and_exact_merging() {
        // shape [2, 3, 2]: channel c holds rows (c, c+3) of each batch item
        let values: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        let mut all = ChannelMoments::new(1);
        all.add(&[2, 3, 2], &values).unwrap();
        let std = all.std();
        // channel 0: -2, -1.5, 1, 1.5
        let c0 = [-2.0f64, -1.5, 1.0, 1.5];
        let m = c0.iter().sum::<f64>() / 4.0;
        let want = (c0.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / 4.0).sqrt();
        assert!((std[0] - want).abs() < 1e-9, "{} vs {want}", std[0]);
        let (mut a, mut b) = (ChannelMoments::new(1), ChannelMoments::new(1));
        a.add(&[1, 3, 2], &values[..6]).unwrap();
        b.add(&[1, 3, 2], &values[6..]).unwrap();
        let mut ba = b.clone();
        ba.merge(&a).unwrap();
        a.merge(&b).unwrap();
        assert_eq!(a, all);
        assert_eq!(ba, all);
        assert!(a.add(&[1, 4, 2], &[0.0; 8]).is_err());
    }
}
