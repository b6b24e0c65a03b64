//! The running minimum and maximum of a tensor over every element of every sample.

use serde::{Deserialize, Serialize};

/// Range of one tensor over the samples seen.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MinMax {
    pub min: f32,
    pub max: f32,
    /// Elements observed.
    pub count: u64,
}

impl Default for MinMax {
    fn default() -> Self {
        MinMax {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            count: 0,
        }
    }
}

impl MinMax {
    /// Folds `values` in. A NaN or infinite value is refused (`Err` says which) and leaves
    /// the statistics unchanged.
    pub fn update(&mut self, values: &[f32]) -> Result<(), &'static str> {
        self.merge(&MinMax::of(values)?);
        Ok(())
    }

    /// The range of `values` alone, refusing NaN and infinities.
    pub fn of(values: &[f32]) -> Result<MinMax, &'static str> {
        // 16 independent lanes the compiler keeps in vector registers: a single running
        // min/max is a serial chain (and `f32::min`'s NaN rule blocks vectorising it), 10-15
        // times slower on the large activations calibration scans for every sample. The
        // extremes of finite values do not depend on the order they are taken in.
        const LANES: usize = 16;
        let (mut lo, mut hi) = ([f32::INFINITY; LANES], [f32::NEG_INFINITY; LANES]);
        let mut non_finite = [false; LANES];
        let chunks = values.chunks_exact(LANES);
        let rest = chunks.remainder();
        for chunk in chunks {
            for i in 0..LANES {
                let v = chunk[i];
                non_finite[i] |= !v.is_finite();
                lo[i] = if v < lo[i] { v } else { lo[i] };
                hi[i] = if v > hi[i] { v } else { hi[i] };
            }
        }
        let finite = !non_finite.contains(&true) && rest.iter().all(|v| v.is_finite());
        let (mut min, mut max) = (f32::INFINITY, f32::NEG_INFINITY);
        for (&l, &h) in lo.iter().zip(&hi) {
            min = min.min(l);
            max = max.max(h);
        }
        for &v in rest {
            min = min.min(v);
            max = max.max(v);
        }
        if !finite {
            return Err(if values.iter().any(|v| v.is_nan()) {
                "NaN"
            } else {
                "infinity"
            });
        }
        if values.is_empty() {
            return Ok(MinMax::default());
        }
        // one zero, whichever sign the data had first
        Ok(MinMax {
            min: min + 0.0,
            max: max + 0.0,
            count: values.len() as u64,
        })
    }

    /// Largest absolute value (0 when nothing was observed).
    pub fn amax(&self) -> f32 {
        if self.is_observed() {
            self.min.abs().max(self.max.abs())
        } else {
            0.0
        }
    }

    pub fn merge(&mut self, other: &MinMax) {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.count += other.count;
    }

    /// Whether any element was observed.
    pub fn is_observed(&self) -> bool {
        self.count > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_tracks_range_and_refuses_non_finite() {
        let mut m = MinMax::default();
        m.update(&[1.0, -2.0]).unwrap();
        m.update(&[0.5]).unwrap();
        assert_eq!((m.min, m.max, m.count), (-2.0, 1.0, 3));
        assert_eq!(m.update(&[f32::NAN, 100.0]), Err("NaN"));
        assert_eq!(m.update(&[f32::NEG_INFINITY]), Err("infinity"));
        assert_eq!((m.min, m.max, m.count), (-2.0, 1.0, 3));
    }

    proptest::proptest! {
        /// The lane-wise scan finds what one running min/max over the values finds, at any
        /// length (full lanes and a tail), with NaN or an infinity anywhere refused.
        #[test]
        fn lanes_find_the_plain_extremes(
            values in proptest::collection::vec(-1e3f32..1e3, 0..100),
            bad in proptest::option::of((0usize..100, proptest::bool::ANY)),
        ) {
            let mut values = values;
            let plain = values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
            let m = MinMax::of(&values).unwrap();
            proptest::prop_assert_eq!((m.min, m.max, m.count), (plain.0 + 0.0, plain.1 + 0.0, values.len() as u64));
            if let Some((at, nan)) = bad.filter(|(at, _)| *at < values.len()) {
                values[at] = if nan { f32::NAN } else { f32::INFINITY };
                proptest::prop_assert_eq!(MinMax::of(&values), Err(if nan { "NaN" } else { "infinity" }));
            }
        }
    }

    #[test]
    fn zeros_of_either_sign_give_positive_zero() {
        let m = MinMax::of(&[-0.0; 20]).unwrap();
        assert!(m.min.is_sign_positive() && m.max.is_sign_positive());
    }

    #[test]
    fn merged_shards_equal_one_pass() {
        let data = [3.0, -1.0, 7.5, 0.0, -4.25, 2.0];
        let mut whole = MinMax::default();
        whole.update(&data).unwrap();
        let (mut a, mut b) = (MinMax::default(), MinMax::default());
        a.update(&data[..2]).unwrap();
        b.update(&data[2..]).unwrap();
        a.merge(&b);
        assert_eq!(a, whole);
    }
}
