//! Quantization math: ranges to scale / zero-point, and weights to int8. Pure functions, no I/O.
//!
//! Conventions (those of ONNX QuantizeLinear and of TensorRT):
//! - `q = clamp(round_half_to_even(x / scale) + zero_point, qmin, qmax)`, `x' = (q - zp) * scale`.
//! - Symmetric: `scale = amax / 127` with `amax = max(|min|, |max|)`, zero-point 0 (int8) or 128
//!   (uint8); activations may use -128, weights stay in [-127, 127].
//! - Asymmetric: the range is widened to include 0, `scale = (max - min) / (qmax - qmin)` in f64,
//!   `zero_point = round(qmin - min / scale)`: 0.0 is always exactly representable.
//! - A range too small for a normal f32 scale (all zeros, or denormal) gets scale 1 and the
//!   natural zero-point: every value quantizes to it, with an error below 1e-36.

use serde::Serialize;

pub mod range;

pub use range::{Method, select_range};

/// The integer types onnx-quant writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QType {
    Int8,
    Uint8,
}

impl QType {
    /// Inclusive integer range.
    pub fn range(self) -> (i32, i32) {
        match self {
            QType::Int8 => (-128, 127),
            QType::Uint8 => (0, 255),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            QType::Int8 => "int8",
            QType::Uint8 => "uint8",
        }
    }

    /// Zero-point of a symmetric range.
    fn mid(self) -> i32 {
        match self {
            QType::Int8 => 0,
            QType::Uint8 => 128,
        }
    }
}

/// How activations are quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ActivationScheme {
    pub qtype: QType,
    pub symmetric: bool,
}

/// Scale and zero-point of one tensor (or one channel).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct QParams {
    pub scale: f32,
    pub zero_point: i32,
}

/// Half the number of steps of a symmetric int8 range: `amax` maps to ±127.
const SYMMETRIC_STEPS: f64 = 127.0;

fn usable(scale: f64) -> Option<f32> {
    let s = scale as f32;
    (s.is_finite() && s >= f32::MIN_POSITIVE).then_some(s)
}

/// Parameters for an activation observed in `[min, max]` (both finite).
pub fn activation_params(min: f32, max: f32, scheme: ActivationScheme) -> QParams {
    let (qmin, qmax) = scheme.qtype.range();
    if scheme.symmetric {
        let amax = (min as f64).abs().max((max as f64).abs());
        let scale = usable(amax / SYMMETRIC_STEPS).unwrap_or(1.0);
        return QParams {
            scale,
            zero_point: scheme.qtype.mid(),
        };
    }
    let lo = (min as f64).min(0.0);
    let hi = (max as f64).max(0.0);
    match usable((hi - lo) / f64::from(qmax - qmin)) {
        Some(scale) => {
            let zp = (f64::from(qmin) - lo / f64::from(scale)).round_ties_even();
            QParams {
                scale,
                zero_point: (zp as i32).clamp(qmin, qmax),
            }
        }
        None => QParams {
            scale: 1.0,
            zero_point: 0.clamp(qmin, qmax),
        },
    }
}

/// Symmetric int8 weight parameters over [-127, 127] for values with absolute maximum `amax`.
pub fn weight_params(amax: f32) -> QParams {
    QParams {
        scale: usable(f64::from(amax) / SYMMETRIC_STEPS).unwrap_or(1.0),
        zero_point: 0,
    }
}

/// The smallest float16 value at or above `s` (at least the smallest positive float16, at most
/// the largest), as f32: a scale that converts to float16 exactly and clips nothing `s` kept.
pub fn f16_ceil(s: f32) -> f32 {
    use half::f16;
    if s >= f16::MAX.to_f32() {
        return f16::MAX.to_f32();
    }
    let h = f16::from_f32(s);
    let v = if h.to_f32() < s {
        f16::from_bits(h.to_bits() + 1).to_f32()
    } else {
        h.to_f32()
    };
    v.max(f16::from_bits(1).to_f32())
}

/// `p` with its scale raised to a float16 value ([`f16_ceil`]); an asymmetric zero-point is
/// recomputed so that `lo` (the range's lower end, ≤ 0) still maps inside the integer range.
pub fn with_f16_scale(p: QParams, scheme: ActivationScheme, lo: f32) -> QParams {
    let scale = f16_ceil(p.scale);
    if scheme.symmetric || scale == p.scale {
        return QParams { scale, ..p };
    }
    let (qmin, qmax) = scheme.qtype.range();
    let zp = (f64::from(qmin) - f64::from(lo.min(0.0)) / f64::from(scale)).round_ties_even();
    QParams {
        scale,
        zero_point: (zp as i32).clamp(qmin, qmax),
    }
}

/// ONNX QuantizeLinear of one value.
pub fn quantize(x: f32, p: QParams, (qmin, qmax): (i32, i32)) -> i32 {
    let q = (x / p.scale).round_ties_even() as i64 + i64::from(p.zero_point);
    q.clamp(i64::from(qmin), i64::from(qmax)) as i32
}

/// ONNX DequantizeLinear of one value.
pub fn dequantize(q: i32, p: QParams) -> f32 {
    (q - p.zero_point) as f32 * p.scale
}

/// A weight quantized to int8, one scale per channel of `axis` (or one scale).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedWeight {
    pub values: Vec<i8>,
    pub scales: Vec<f32>,
    pub axis: Option<usize>,
}

/// Round half to even for |x| < 2^22, without relying on the CPU's rounding instruction
/// (absent from the x86-64 baseline): adding and removing 1.5·2^23 leaves the integer that
/// IEEE round-to-nearest-even picks. Vectorises, unlike a call to `rintf`.
fn round_even_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    (x + MAGIC) - MAGIC
}

/// Quantizes `data` (row-major, shape `dims`) symmetrically to [-127, 127], per channel along
/// `axis` when given (`axis < dims.len()`), else per tensor. `floors` (empty, one value, or
/// one per channel) are the smallest scales allowed, e.g. so that an int32 bias fits. With
/// `f16`, scales are raised to float16 values ([`f16_ceil`]) before quantizing.
pub fn quantize_weight(
    data: &[f32],
    dims: &[usize],
    axis: Option<usize>,
    floors: &[f32],
    f16: bool,
) -> QuantizedWeight {
    let (channels, inner) = match axis {
        Some(a) => (dims[a], dims[a + 1..].iter().product::<usize>()),
        None => (1, data.len()),
    };
    // Row-major: the data is `outer` repetitions of `channels` runs of `inner` values.
    let runs = |f: &mut dyn FnMut(usize, &[f32])| {
        if inner == 0 || channels == 0 {
            return;
        }
        for (r, run) in data.chunks(inner).enumerate() {
            f(r % channels, run);
        }
    };
    let mut amax = vec![0f32; channels.max(1)];
    runs(&mut |c, run| amax[c] = run.iter().fold(amax[c], |m, x| m.max(x.abs())));
    let floor = |c: usize| floors.get(c).or(floors.first()).copied().unwrap_or(0.0);
    let params: Vec<QParams> = amax
        .iter()
        .enumerate()
        .map(|(c, &a)| {
            let p = weight_params(a);
            let scale = p.scale.max(floor(c));
            QParams {
                scale: if f16 { f16_ceil(scale) } else { scale },
                ..p
            }
        })
        .collect();
    let mut values = Vec::with_capacity(data.len());
    runs(&mut |c, run| {
        let scale = params[c].scale;
        // |x / scale| <= 127 (plus rounding) for every x of the channel, well inside the range
        // of `round_even_small`; values of an all-zero channel are 0 (scale 1).
        values.extend(
            run.iter()
                .map(|&x| round_even_small(x / scale).clamp(-127.0, 127.0) as i8),
        );
    });
    QuantizedWeight {
        values,
        scales: params.iter().map(|p| p.scale).collect(),
        axis,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S8: ActivationScheme = ActivationScheme {
        qtype: QType::Int8,
        symmetric: true,
    };
    const A8: ActivationScheme = ActivationScheme {
        qtype: QType::Int8,
        symmetric: false,
    };
    const AU8: ActivationScheme = ActivationScheme {
        qtype: QType::Uint8,
        symmetric: false,
    };
    const SU8: ActivationScheme = ActivationScheme {
        qtype: QType::Uint8,
        symmetric: true,
    };

    #[test]
    fn float16_scales_round_up_to_representable_values() {
        use half::f16;
        for s in [1e-9f32, 3e-6, 6.1e-5, 0.01, 0.0123457, 1.0, 3.3, 70000.0] {
            let c = f16_ceil(s);
            assert_eq!(f16::from_f32(c).to_f32(), c, "{s} -> {c} is a float16");
            assert!(c >= s.min(f16::MAX.to_f32()), "{s} -> {c}");
            // the next float16 below is below s: c is the smallest such value
            let below = f16::from_bits(f16::from_f32(c).to_bits() - 1).to_f32();
            assert!(below < s || c == f16::from_bits(1).to_f32(), "{s} -> {c}");
        }
        // asymmetric: the zero-point follows the larger scale, the range still fits
        let a = ActivationScheme {
            qtype: QType::Uint8,
            symmetric: false,
        };
        let p = activation_params(-1.0, 3.0, a);
        let h = with_f16_scale(p, a, -1.0);
        assert!(h.scale >= p.scale);
        assert_eq!(quantize(-1.0, h, a.qtype.range()), 0);
        assert!(quantize(3.0, h, a.qtype.range()) <= 255);
        let w = quantize_weight(&[1e-3, -2e-3, 5e-4], &[3], None, &[], true);
        assert_eq!(f16::from_f32(w.scales[0]).to_f32(), w.scales[0]);
        assert_eq!(
            f32::from(w.values[1]),
            (-2e-3f32 / w.scales[0]).round_ties_even().max(-127.0)
        );
    }

    #[test]
    fn symmetric_int8_maps_amax_to_127() {
        let p = activation_params(-2.0, 5.08, S8);
        assert_eq!(p.zero_point, 0);
        assert!((p.scale - 0.04).abs() < 1e-7);
        assert_eq!(quantize(5.08, p, QType::Int8.range()), 127);
        assert_eq!(quantize(-5.08, p, QType::Int8.range()), -127);
    }

    #[test]
    fn asymmetric_matches_onnx_runtime_formula() {
        // ORT: scale = (max - min) / 255, zp = round(qmin - min / scale)
        let p = activation_params(-1.0, 3.0, AU8);
        assert!((p.scale - 4.0 / 255.0).abs() < 1e-9);
        assert_eq!(p.zero_point, 64);
        let p = activation_params(0.5, 3.0, A8); // widened to include 0
        assert!((p.scale - 3.0 / 255.0).abs() < 1e-9);
        assert_eq!(p.zero_point, -128);
    }

    #[test]
    fn fast_rounding_matches_round_ties_even() {
        for i in -40_000..40_000 {
            let x = i as f32 * 0.0625 + 0.003 * (i % 7) as f32;
            assert_eq!(round_even_small(x), x.round_ties_even(), "{x}");
        }
        for x in [0.5f32, 1.5, 2.5, -0.5, -1.5, 126.5, -127.5, 4_194_303.5] {
            assert_eq!(round_even_small(x), x.round_ties_even(), "{x}");
        }
    }

    #[test]
    fn rounding_is_half_to_even() {
        let p = QParams {
            scale: 1.0,
            zero_point: 0,
        };
        let r = QType::Int8.range();
        assert_eq!(
            [0.5, 1.5, 2.5, -0.5, -1.5].map(|x| quantize(x, p, r)),
            [0, 2, 2, 0, -2]
        );
    }

    #[test]
    fn degenerate_ranges_get_scale_one() {
        for scheme in [S8, A8, AU8, SU8] {
            let p = activation_params(0.0, 0.0, scheme);
            assert_eq!(p.scale, 1.0);
            assert_eq!(dequantize(quantize(0.0, p, scheme.qtype.range()), p), 0.0);
        }
        assert_eq!(weight_params(1e-44).scale, 1.0);
        assert_eq!(weight_params(0.0).scale, 1.0);
    }

    #[test]
    fn per_channel_weights_use_their_own_amax() {
        // dims [2, 3], axis 0: rows have amax 1 and 100
        let w = quantize_weight(
            &[1.0, -0.5, 0.0, 100.0, 50.0, -100.0],
            &[2, 3],
            Some(0),
            &[],
            false,
        );
        assert_eq!(w.values, vec![127, -64, 0, 127, 64, -127]);
        assert_eq!(w.scales.len(), 2);
        // axis 1 of [2, 3]: columns
        let w = quantize_weight(
            &[1.0, 2.0, 4.0, -1.0, -2.0, -4.0],
            &[2, 3],
            Some(1),
            &[],
            false,
        );
        assert_eq!(w.values, vec![127, 127, 127, -127, -127, -127]);
        let t = quantize_weight(
            &[1.0, 2.0, 4.0, -1.0, -2.0, -4.0],
            &[2, 3],
            None,
            &[],
            false,
        );
        assert_eq!(t.scales, vec![4.0 / 127.0]);
        assert_eq!(t.values, vec![32, 64, 127, -32, -64, -127]);
    }

    fn scheme() -> impl Strategy<Value = ActivationScheme> {
        prop_oneof![Just(S8), Just(A8), Just(AU8), Just(SU8)]
    }

    proptest! {
        #[test]
        fn zero_is_exact_and_error_is_within_half_a_step(
            a in -1e6f32..1e6, b in -1e6f32..1e6, t in 0f32..=1.0, scheme in scheme()
        ) {
            let (min, max) = (a.min(b), a.max(b));
            let p = activation_params(min, max, scheme);
            let r = scheme.qtype.range();
            prop_assert!(p.scale.is_finite() && p.scale > 0.0);
            prop_assert!(p.zero_point >= r.0 && p.zero_point <= r.1);
            prop_assert_eq!(dequantize(quantize(0.0, p, r), p), 0.0);
            let x = min + (max - min) * t;
            let err = (dequantize(quantize(x, p, r), p) - x).abs();
            prop_assert!(err <= p.scale * 0.5 * (1.0 + 1e-4) + x.abs() * 1e-6,
                "x={} err={} scale={}", x, err, p.scale);
        }

        #[test]
        fn weights_stay_in_range_and_round_trip(
            data in prop::collection::vec(-50f32..50.0, 1..64), per_channel in any::<bool>()
        ) {
            let dims = [data.len()];
            let w = quantize_weight(&data, &dims, per_channel.then_some(0), &[], false);
            for (i, (&x, &q)) in data.iter().zip(&w.values).enumerate() {
                prop_assert!((-127..=127).contains(&q));
                let s = w.scales[if per_channel { i } else { 0 }];
                let back = f32::from(q) * s;
                prop_assert!((back - x).abs() <= s * 0.5 * (1.0 + 1e-4) + 1e-6, "x={} back={}", x, back);
            }
        }
    }
}
