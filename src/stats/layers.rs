//! What a linear layer's input looks like from the layer's side: the mean of every entry of
//! its input patches (Conv: input channel × kernel tap, borders' zero padding included; Gemm
//! and MatMul: input feature), for bias correction. Kept as fixed-point sums, like
//! [`super::ChannelMoments`], so shards and threads merge exactly in any order.

use std::sync::Arc;

/// Sums are added as `round(s · 2^40)` (each sample's sum formed in f64 first).
const SUM_SCALE: f64 = (1u64 << 40) as f64;

/// `round(s · 2^40)` as an integer: through i64 where it fits (one instruction; the same value),
/// through i128 (a library routine, many times slower) where it does not.
fn fixed(s: f64) -> i128 {
    let v = (s * SUM_SCALE).round();
    if v.abs() < 9.0e18 {
        i128::from(v as i64)
    } else {
        v as i128
    }
}

/// The products of a layer's input patch entries, `Σ x xᵀ` (GPTQ's Hessian up to a factor), in
/// diagonal blocks of consecutive entries: `blocks` lists each block's (first entry, size); the
/// sums are each block's rows in turn, added as `round(s · 2^40)` like the patch sums (products
/// up to 10^12 over 10^7 patches do not overflow).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gram {
    pub blocks: Vec<(usize, usize)>,
    pub sums: Vec<i128>,
    /// Patches (rows) summed.
    pub rows: u64,
}

impl Gram {
    /// An empty Gram over `blocks`.
    pub fn new(blocks: Vec<(usize, usize)>) -> Gram {
        let size = blocks.iter().map(|b| b.1 * b.1).sum();
        Gram {
            blocks,
            sums: vec![0; size],
            rows: 0,
        }
    }

    /// Adds one block's f64 sums (`b`: its index), row-major.
    pub fn add_block(&mut self, b: usize, sums: &[f64]) {
        let start: usize = self.blocks[..b].iter().map(|x| x.1 * x.1).sum();
        for (a, s) in self.sums[start..start + sums.len()].iter_mut().zip(sums) {
            *a = a.saturating_add(fixed(*s));
        }
    }

    pub fn merge(&mut self, other: &Gram) -> Result<(), String> {
        if self.blocks != other.blocks {
            return Err("Gram matrices of different blocks".into());
        }
        for (a, b) in self.sums.iter_mut().zip(&other.sums) {
            *a = a.saturating_add(*b);
        }
        self.rows += other.rows;
        Ok(())
    }

    /// Block `b` as f64, divided by the rows: `E[x xᵀ]` over the block's entries.
    pub fn block(&self, b: usize) -> Vec<f64> {
        let start: usize = self.blocks[..b].iter().map(|x| x.1 * x.1).sum();
        let n = self.blocks[b].1;
        let scale = 1.0 / SUM_SCALE / self.rows.max(1) as f64;
        self.sums[start..start + n * n]
            .iter()
            .map(|&s| s as f64 * scale)
            .collect()
    }
}

/// The sums of a layer's input patches.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PatchSums {
    /// One per patch entry (`[C_in / groups... ]` flattened as the weight's input side is:
    /// channel-major, then taps).
    pub sums: Vec<i128>,
    /// Patches (output positions) seen.
    pub count: u64,
    /// Products of the entries of some of the patches, for GPTQ.
    /// Shared: the rewrite reads it where calibration left it.
    pub gram: Option<Arc<Gram>>,
}

impl PatchSums {
    /// Adds the f64 sums of `count` more patches.
    pub fn add(&mut self, sums: &[f64], count: u64) -> Result<(), String> {
        if self.sums.is_empty() {
            self.sums = vec![0; sums.len()];
        } else if self.sums.len() != sums.len() {
            return Err(format!(
                "patches of {} entries here and {} before",
                sums.len(),
                self.sums.len()
            ));
        }
        for (a, s) in self.sums.iter_mut().zip(sums) {
            *a = a.saturating_add(fixed(*s));
        }
        self.count += count;
        Ok(())
    }

    pub fn merge(&mut self, other: &PatchSums) -> Result<(), String> {
        if other.sums.is_empty() {
            return Ok(());
        }
        if self.sums.is_empty() {
            // the first patches: added to zeros (a Gram matrix already here is kept)
            self.sums = vec![0; other.sums.len()];
        }
        if self.sums.len() != other.sums.len() {
            return Err(format!(
                "patches of {} entries and of {}",
                self.sums.len(),
                other.sums.len()
            ));
        }
        for (a, b) in self.sums.iter_mut().zip(&other.sums) {
            *a = a.saturating_add(*b);
        }
        self.count += other.count;
        match (&mut self.gram, &other.gram) {
            (Some(a), Some(b)) => Arc::make_mut(a).merge(b),
            // the other side summed no products (samples the Gram matrix leaves out)
            (_, None) => Ok(()),
            (None, Some(b)) => {
                self.gram = Some(b.clone());
                Ok(())
            }
        }
    }

    /// The mean of each entry (zeros before any patch).
    pub fn means(&self) -> Vec<f64> {
        let n = self.count.max(1) as f64;
        self.sums
            .iter()
            .map(|&s| s as f64 / SUM_SCALE / n)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_and_exact_merging() {
        let mut all = PatchSums::default();
        all.add(&[1.5, -3.0], 3).unwrap();
        all.add(&[0.25, 1e-9], 1).unwrap();
        let (mut a, mut b) = (PatchSums::default(), PatchSums::default());
        a.add(&[0.25, 1e-9], 1).unwrap();
        b.add(&[1.5, -3.0], 3).unwrap();
        a.merge(&b).unwrap();
        assert_eq!(a, all);
        let m = all.means();
        assert!((m[0] - 1.75 / 4.0).abs() < 1e-12 && (m[1] + 0.75).abs() < 1e-9);
        assert!(all.add(&[0.0], 1).is_err());
    }
}
