//! [`ExactSum`]: a sum of `f64` values that is exact, so that adding in any order (samples over
//! threads, shards merged) gives the same bits.

/// Bits per chunk of the fixed-point accumulator.
const CHUNK: u32 = 32;
/// Chunks covering every finite `f64`: bit positions 0 (2^-1074) to 2045 + 84.
const CHUNKS: usize = 68;

/// An exact sum of `f64` values: each value's 53-bit mantissa added at its binary position into
/// 32-bit chunks held in `i64`s (carries propagated before they could overflow). Non-finite
/// values are summed apart (an infinity or NaN makes the sum so).
#[derive(Clone, Debug)]
pub struct ExactSum {
    chunks: [i64; CHUNKS],
    /// Additions since the carries were last propagated.
    pending: u32,
    special: f64,
}

/// Equal when the exact sums are (whatever the pending carries).
impl PartialEq for ExactSum {
    fn eq(&self, other: &Self) -> bool {
        let (mut a, mut b) = (self.clone(), other.clone());
        a.carry();
        b.carry();
        a.chunks == b.chunks && a.special.to_bits() == b.special.to_bits()
    }
}

impl Default for ExactSum {
    fn default() -> Self {
        ExactSum {
            chunks: [0; CHUNKS],
            pending: 0,
            special: 0.0,
        }
    }
}

impl ExactSum {
    pub fn add(&mut self, v: f64) {
        if !v.is_finite() {
            self.special += v;
            return;
        }
        if v == 0.0 {
            return;
        }
        let bits = v.to_bits();
        let biased = ((bits >> 52) & 0x7ff) as u32;
        let frac = bits & ((1u64 << 52) - 1);
        let (mantissa, position) = if biased == 0 {
            (frac, 0) // subnormal: frac · 2^-1074
        } else {
            (frac | (1u64 << 52), biased - 1) // (2^52 + frac) · 2^(biased - 1075)
        };
        let (k, offset) = ((position / CHUNK) as usize, position % CHUNK);
        let wide = u128::from(mantissa) << offset;
        let sign = if v < 0.0 { -1 } else { 1 };
        for j in 0..3 {
            let piece = ((wide >> (CHUNK * j as u32)) & 0xffff_ffff) as i64;
            self.chunks[k + j] += sign * piece;
        }
        self.pending += 1;
        if self.pending >= 1 << 29 {
            self.carry();
        }
    }

    /// Propagates carries: every chunk but the last in [0, 2^32).
    fn carry(&mut self) {
        for i in 0..CHUNKS - 1 {
            let c = self.chunks[i] >> CHUNK;
            self.chunks[i] -= c << CHUNK;
            self.chunks[i + 1] += c;
        }
        self.pending = 0;
    }

    pub fn merge(&mut self, other: &ExactSum) {
        let mut o = other.clone();
        o.carry();
        self.carry();
        for (a, b) in self.chunks.iter_mut().zip(o.chunks) {
            *a += b;
        }
        // both sides were carried: each chunk now holds under 2^33, like a few additions
        self.pending = 2;
        self.special += o.special;
    }

    /// The sum, rounded to an `f64` (the same bits for the same exact sum).
    pub fn value(&self) -> f64 {
        if self.special != 0.0 || self.special.is_nan() {
            return self.special;
        }
        let mut c = self.clone();
        c.carry();
        // the magnitude in canonical chunks (each in [0, 2^32)), then the sign
        let negative = c.chunks[CHUNKS - 1] < 0;
        if negative {
            c.chunks.iter_mut().for_each(|x| *x = -*x);
            c.carry();
        }
        let mut out = 0.0f64;
        for (i, &chunk) in c.chunks.iter().enumerate().rev() {
            if chunk != 0 {
                out += chunk as f64 * pow2(CHUNK as i32 * i as i32 - 1074);
            }
        }
        if negative { -out } else { out }
    }
}

/// 2^e exactly, for e from -1074 to 1023 (`powi` loses the smallest powers).
fn pow2(e: i32) -> f64 {
    if e >= -1022 {
        f64::from_bits(((e + 1023) as u64) << 52)
    } else {
        f64::from_bits(1u64 << (e + 1074))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(values: &[f64]) -> ExactSum {
        let mut s = ExactSum::default();
        values.iter().for_each(|&v| s.add(v));
        s
    }

    /// The same values in any order and any split give the same bits, where plain f64 sums
    /// do not.
    #[test]
    fn order_and_sharding_do_not_change_the_sum() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let values: Vec<f64> = (0..2000)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let m = (x % 1_000_000) as f64 / 7.0;
                let e = (i % 40) - 20;
                if i % 3 == 0 {
                    -m * 2f64.powi(e)
                } else {
                    m * 2f64.powi(e)
                }
            })
            .collect();
        let forward = sum(&values).value();
        let mut reversed = values.clone();
        reversed.reverse();
        assert_eq!(sum(&reversed).value().to_bits(), forward.to_bits());
        let (a, b) = values.split_at(777);
        let mut merged = sum(b);
        merged.merge(&sum(a));
        assert_eq!(merged.value().to_bits(), forward.to_bits());
        let plain_forward: f64 = values.iter().sum();
        let plain_reversed: f64 = reversed.iter().sum();
        assert_ne!(
            plain_forward.to_bits(),
            plain_reversed.to_bits(),
            "a plain sum would do"
        );
        assert!((forward - plain_forward).abs() <= 1e-9 * plain_forward.abs().max(1.0));
    }

    #[test]
    fn exact_on_cancellation_extremes_and_specials() {
        assert_eq!(sum(&[1e300, 1.0, -1e300]).value(), 1.0);
        assert_eq!(
            sum(&[f64::MIN_POSITIVE / 4.0, f64::MIN_POSITIVE / 4.0]).value(),
            f64::MIN_POSITIVE / 2.0
        );
        assert_eq!(sum(&[f64::MAX, -f64::MAX, 0.5]).value(), 0.5);
        assert_eq!(sum(&[0.1, 0.2]).value(), 0.30000000000000004);
        assert_eq!(sum(&[]).value(), 0.0);
        assert!(sum(&[1.0, f64::INFINITY]).value().is_infinite());
        assert!(sum(&[f64::INFINITY, f64::NEG_INFINITY]).value().is_nan());
        assert_eq!(sum(&[-3.5, -0.25]).value(), -3.75);
    }
}
