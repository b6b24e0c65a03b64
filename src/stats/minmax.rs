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
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        let mut finite = true;
        for &v in values {
            finite &= v.is_finite();
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if !finite {
            return Err(if values.iter().any(|v| v.is_nan()) {
                "NaN"
            } else {
                "infinity"
            });
        }
        Ok(MinMax {
            min: lo,
            max: hi,
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
