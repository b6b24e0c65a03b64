//! A streaming, exactly mergeable histogram of one tensor's values.
//!
//! Bins have width `2^e` and sit on both sides of zero: positive bin `k` holds `[k·w, (k+1)·w)`,
//! negative bin `k` holds `(-(k+1)·w, -k·w]`, and exact zeros are counted apart (zero is always
//! exactly representable, so they never contribute quantization error). `e` is the smallest
//! exponent for which every value seen fits in `bins` bins per side. When a larger value
//! arrives, `e` grows and bins are merged in groups of `2^Δe`: re-binning is exact, because a
//! coarse bin is exactly the union of the fine ones. The histogram of a data set therefore
//! does not depend on the order or the grouping of its values, and merging the histograms of
//! two shards gives exactly the histogram of their union.

use serde::{Deserialize, Serialize};

/// See the module documentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "HistogramFile", try_from = "HistogramFile")]
pub struct Histogram {
    bins: usize,
    /// `log2` of the bin width; `None` while only zeros were seen.
    exp: Option<i32>,
    /// `2·bins + 1` counts: negative bin `k` at `bins - 1 - k`, zeros at `bins`, positive bin
    /// `k` at `bins + 1 + k`. One array lets a value find its slot without branching on its
    /// sign (ReLU outputs alternate between zero and positive unpredictably).
    counts: Vec<u64>,
}

/// `2^e` as f64 (exact for the exponents a f32 histogram uses).
fn pow2(e: i32) -> f64 {
    2f64.powi(e)
}

impl Histogram {
    /// An empty histogram with `bins` bins per side (at least 2, rounded up to even).
    pub fn new(bins: usize) -> Self {
        let bins = bins.max(2).next_multiple_of(2);
        Histogram {
            bins,
            exp: None,
            counts: vec![0; 2 * bins + 1],
        }
    }

    pub fn bins(&self) -> usize {
        self.bins
    }

    /// Width of a bin, `None` while only zeros were seen.
    pub fn width(&self) -> Option<f64> {
        self.exp.map(pow2)
    }

    pub fn zeros(&self) -> u64 {
        self.counts[self.bins]
    }

    /// Counts of the positive side, bin `k` = `[k·w, (k+1)·w)`.
    pub fn positive(&self) -> &[u64] {
        &self.counts[self.bins + 1..]
    }

    /// Counts of the negative side, bin `k` = `(-(k+1)·w, -k·w]`.
    pub fn negative(&self) -> Vec<u64> {
        self.counts[..self.bins].iter().rev().copied().collect()
    }

    /// Total number of values.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The share of values whose magnitude is below `t` (> 0): whole bins under it, and the
    /// bin it falls in in proportion (values are taken as spread evenly in a bin).
    pub fn share_below(&self, t: f64) -> f64 {
        let total = self.total();
        if total == 0 {
            return 0.0;
        }
        let Some(w) = self.width() else {
            return 1.0;
        };
        let b = self.bins;
        let mut below = self.zeros() as f64;
        for k in 0..b {
            let lo = k as f64 * w;
            if lo >= t {
                break;
            }
            let part = ((t - lo) / w).min(1.0);
            below += part * (self.counts[b + 1 + k] + self.counts[b - 1 - k]) as f64;
        }
        below / total as f64
    }

    /// The smallest exponent whose bins hold `amax` (> 0, finite).
    fn exponent_for(&self, amax: f64) -> i32 {
        let fits = |e: i32| amax * pow2(-e) < self.bins as f64;
        let mut e = (amax / self.bins as f64).log2().floor() as i32;
        while !fits(e) {
            e += 1;
        }
        while fits(e - 1) {
            e -= 1;
        }
        e
    }

    /// Coarsens the bins to exponent `e` (≥ the current one).
    fn grow_to(&mut self, e: i32) {
        let Some(cur) = self.exp else {
            self.exp = Some(e);
            return;
        };
        if e <= cur {
            return;
        }
        let shift = (e - cur).min(63) as u32;
        let b = self.bins;
        let mut out = vec![0u64; self.counts.len()];
        out[b] = self.counts[b];
        for k in 0..b {
            out[b + 1 + (k >> shift)] += self.counts[b + 1 + k];
            out[b - 1 - (k >> shift)] += self.counts[b - 1 - k];
        }
        self.counts = out;
        self.exp = Some(e);
    }

    /// Adds `values` (all finite; the caller checks).
    pub fn add(&mut self, values: &[f32]) {
        let amax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
        self.add_with_amax(values, amax);
    }

    /// Adds `values` whose largest absolute value is `amax` (all finite).
    pub fn add_with_amax(&mut self, values: &[f32], amax: f32) {
        if amax > 0.0 {
            let e = self.exponent_for(f64::from(amax));
            if self.exp.is_none_or(|cur| e > cur) {
                self.grow_to(e);
            }
        }
        let Some(e) = self.exp else {
            self.counts[self.bins] += values.len() as u64;
            return;
        };
        // Multiplying by a power of two is exact, so a value's bin does not depend on how it
        // is computed; f32 is exact too while 2^-e is a normal f32.
        let (b, last) = (self.bins as isize, self.bins - 1);
        if (-126..=126).contains(&e) {
            // The bins of a block first, in vector registers, then the increments: about half
            // the time of one value at a time. The bin is `floor(min(|v| · inv, last))`,
            // computed without a float-to-int conversion (whose saturating form the compiler
            // leaves scalar): adding 2^23 rounds `y < 2^22` to the nearest integer `r`
            // exactly, `r - 1` when that rounded up; adding 2^23 again and reading the bits
            // gives the integer (`y < 2^22`: with more bins, every value goes the slow way).
            const BLOCK: usize = 64;
            const MAGIC: f32 = 8_388_608.0; // 2^23
            let inv = pow2(-e) as f32;
            let (b32, top) = (self.bins as i32, last as f32);
            let mut at = [0u32; BLOCK];
            let fast = if self.bins < 1 << 22 {
                values.len() - values.len() % BLOCK
            } else {
                0
            };
            let (blocks, rest) = values.split_at(fast);
            for block in blocks.chunks_exact(BLOCK) {
                for (slot, &v) in at.iter_mut().zip(block) {
                    let y = v.abs() * inv;
                    let y = if y > top { top } else { y };
                    let r = (y + MAGIC) - MAGIC;
                    let k = if r > y { r - 1.0 } else { r };
                    let k = ((k + MAGIC).to_bits() - MAGIC.to_bits()) as i32;
                    let sign = (v > 0.0) as i32 - (v < 0.0) as i32;
                    *slot = (b32 + sign * (k + 1)) as u32;
                }
                for &i in &at {
                    self.counts[i as usize] += 1;
                }
            }
            for &v in rest {
                let k = ((v.abs() * inv) as usize).min(last) as isize;
                let sign = (v > 0.0) as isize - (v < 0.0) as isize;
                self.counts[(b + sign * (k + 1)) as usize] += 1;
            }
        } else {
            let inv = pow2(-e);
            for &v in values {
                let k = ((f64::from(v.abs()) * inv) as usize).min(last) as isize;
                let sign = (v > 0.0) as isize - (v < 0.0) as isize;
                self.counts[(b + sign * (k + 1)) as usize] += 1;
            }
        }
    }

    /// Adds `other` (same number of bins): the result is the histogram of both data sets.
    pub fn merge(&mut self, other: &Histogram) -> Result<(), String> {
        if self.bins != other.bins {
            return Err(format!(
                "histograms with {} and {} bins cannot be merged",
                self.bins, other.bins
            ));
        }
        let mut other = other.clone();
        if let Some(e) = other.exp {
            self.grow_to(e.max(self.exp.unwrap_or(e)));
        }
        if let Some(e) = self.exp {
            other.grow_to(e);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        Ok(())
    }

    /// Histogram of `|x|`: bin `k` counts values with `k·w ≤ |x| < (k+1)·w` (zeros excluded),
    /// trimmed after the last non-empty bin.
    pub fn magnitudes(&self) -> Vec<u64> {
        let neg = self.negative();
        let mut out: Vec<u64> = self
            .positive()
            .iter()
            .zip(&neg)
            .map(|(a, b)| a + b)
            .collect();
        let last = out.iter().rposition(|&c| c > 0).map_or(0, |i| i + 1);
        out.truncate(last);
        out
    }
}

/// On-disk form: sides stored from their first to their last non-empty bin.
#[derive(Serialize, Deserialize)]
struct HistogramFile {
    bins: usize,
    log2_width: Option<i32>,
    zeros: u64,
    positive: SparseSide,
    negative: SparseSide,
}

#[derive(Serialize, Deserialize)]
struct SparseSide {
    start: usize,
    counts: Vec<u64>,
}

impl SparseSide {
    fn from(side: &[u64]) -> Self {
        let start = side.iter().position(|&c| c > 0).unwrap_or(0);
        let end = side.iter().rposition(|&c| c > 0).map_or(start, |i| i + 1);
        SparseSide {
            start,
            counts: side[start..end].to_vec(),
        }
    }

    fn dense(self, bins: usize) -> Result<Vec<u64>, String> {
        if self.start.saturating_add(self.counts.len()) > bins {
            return Err(format!("a histogram side runs past its {bins} bins"));
        }
        let mut v = vec![0; bins];
        v[self.start..self.start + self.counts.len()].copy_from_slice(&self.counts);
        Ok(v)
    }
}

impl From<Histogram> for HistogramFile {
    fn from(h: Histogram) -> Self {
        HistogramFile {
            bins: h.bins,
            log2_width: h.exp,
            zeros: h.zeros(),
            positive: SparseSide::from(h.positive()),
            negative: SparseSide::from(&h.negative()),
        }
    }
}

impl TryFrom<HistogramFile> for Histogram {
    type Error = String;

    fn try_from(f: HistogramFile) -> Result<Self, String> {
        if f.bins < 2 || f.bins > 1 << 24 || !f.bins.is_multiple_of(2) {
            return Err(format!("invalid histogram bin count {}", f.bins));
        }
        let b = f.bins;
        let mut counts = vec![0; 2 * b + 1];
        counts[b] = f.zeros;
        for (k, c) in f.positive.dense(b)?.into_iter().enumerate() {
            counts[b + 1 + k] = c;
        }
        for (k, c) in f.negative.dense(b)?.into_iter().enumerate() {
            counts[b - 1 - k] = c;
        }
        Ok(Histogram {
            bins: b,
            exp: f.log2_width,
            counts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bins_are_powers_of_two_wide_and_tight() {
        let mut h = Histogram::new(8);
        h.add(&[0.0, 1.0, -3.0, 7.9]);
        assert_eq!(h.width(), Some(1.0)); // 7.9 < 8 bins of width 1
        assert_eq!(h.zeros(), 1);
        assert_eq!(h.positive()[1], 1);
        assert_eq!(h.positive()[7], 1);
        assert_eq!(h.negative()[3], 1);
        h.add(&[8.0]);
        assert_eq!(h.width(), Some(2.0));
        assert_eq!(h.positive()[0..5], [1, 0, 0, 1, 1]); // 1.0 -> bin 0, 7.9 -> 3, 8.0 -> 4
        assert_eq!(h.negative()[1], 1); // -3.0
        assert_eq!(h.total(), 5);
    }

    /// Values on bin edges and just either side, up to the last bin: the block path (64 values
    /// at a time) bins each exactly as the one-value path does.
    #[test]
    fn bin_edges_bin_alike_on_both_paths() {
        let mut values = vec![40.0f32]; // width 2^-6 over 4096 bins
        for k in 0..4096u32 {
            let edge = k as f32 / 64.0;
            for v in [edge, f32::from_bits(edge.to_bits() + 1), edge - edge * 1e-7] {
                values.extend([v, -v]);
            }
        }
        let mut whole = Histogram::new(4096);
        whole.add(&values);
        let mut single = Histogram::new(4096);
        values
            .iter()
            .for_each(|v| single.add(std::slice::from_ref(v)));
        assert_eq!(whole, single);
        assert_eq!(whole.width(), Some(1.0 / 64.0));
        assert_eq!(whole.positive()[1], 3); // 1/64, one ulp above, and 2/64 minus a hair
    }

    #[test]
    fn only_zeros_keep_no_width() {
        let mut h = Histogram::new(16);
        h.add(&[0.0, -0.0]);
        assert_eq!((h.width(), h.zeros(), h.total()), (None, 2, 2));
        h.add(&[0.5]);
        assert_eq!(h.total(), 3);
    }

    #[test]
    fn file_form_round_trips() {
        let mut h = Histogram::new(64);
        h.add(&[0.1, -2.0, 3.5, 0.0, 3.5]);
        let json = serde_json::to_string(&h).unwrap();
        assert!(json.contains("\"log2_width\""));
        let back: Histogram = serde_json::from_str(&json).unwrap();
        assert_eq!(back, h);
        let bad = json.replace("\"bins\":64", "\"bins\":3");
        assert!(serde_json::from_str::<Histogram>(&bad).is_err());
    }

    fn values() -> impl Strategy<Value = Vec<f32>> {
        prop::collection::vec(prop_oneof![-1e4f32..1e4, -1e-3f32..1e-3, Just(0.0)], 0..200)
    }

    proptest! {
        #[test]
        fn merged_shards_equal_one_pass(a in values(), b in values(), c in values(), split in 0usize..200) {
            let all: Vec<f32> = a.iter().chain(&b).chain(&c).copied().collect();
            let mut whole = Histogram::new(32);
            whole.add(&all);
            // one pass in other chunks
            let mut chunked = Histogram::new(32);
            let split = split.min(all.len());
            chunked.add(&all[split..]);
            chunked.add(&all[..split]);
            prop_assert_eq!(&chunked, &whole);
            // one value at a time (never a full block) bins as the block path does
            let mut single = Histogram::new(32);
            all.iter().for_each(|v| single.add(std::slice::from_ref(v)));
            prop_assert_eq!(&single, &whole);
            // shards merged in any order
            let (mut ha, mut hb, mut hc) = (Histogram::new(32), Histogram::new(32), Histogram::new(32));
            ha.add(&a);
            hb.add(&b);
            hc.add(&c);
            hc.merge(&ha).unwrap();
            hc.merge(&hb).unwrap();
            prop_assert_eq!(&hc, &whole);
            prop_assert_eq!(whole.total(), all.len() as u64);
        }
    }
}
