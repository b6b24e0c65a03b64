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

pub mod pairs;
pub mod range;

pub use range::{Method, histogram_sqnr_db, select_range};

/// The integer types onnx-quant writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QType {
    Int8,
    Uint8,
    /// Opset 21; ONNX Runtime and OpenVINO, not TensorRT.
    Int16,
    /// float8 e4m3fn (opset 19; TensorRT, ONNX Runtime): symmetric, `amax` at 448.
    Fp8,
}

impl QType {
    /// The ONNX element type.
    pub fn data_type(self) -> crate::proto::tensor_proto::DataType {
        use crate::proto::tensor_proto::DataType;
        match self {
            QType::Int8 => DataType::Int8,
            QType::Uint8 => DataType::Uint8,
            QType::Int16 => DataType::Int16,
            QType::Fp8 => DataType::Float8e4m3fn,
        }
    }

    /// Inclusive integer range (float8: its largest magnitudes).
    pub fn range(self) -> (i32, i32) {
        if self == QType::Fp8 {
            return (-448, 448);
        }
        let (lo, hi) =
            crate::onnx::tensor::int_range(self.data_type() as i32).expect("an integer type");
        (lo as i32, hi as i32)
    }

    /// Half the number of steps of a symmetric range: `amax` maps to ±127 (int16: ±32767).
    pub fn symmetric_steps(self) -> f64 {
        match self {
            QType::Int8 | QType::Uint8 => 127.0,
            QType::Int16 => 32767.0,
            QType::Fp8 => FP8_MAX as f64,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            QType::Int8 => "int8",
            QType::Uint8 => "uint8",
            QType::Int16 => "int16",
            QType::Fp8 => "fp8",
        }
    }

    /// Zero-point of a symmetric range.
    pub fn mid(self) -> i32 {
        match self {
            QType::Int8 | QType::Int16 | QType::Fp8 => 0,
            QType::Uint8 => 128,
        }
    }
}

/// The integer types of weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightType {
    /// Symmetric over [-127, 127].
    Int8,
    /// Symmetric, `amax` at 7 and -8 kept for clipped values; opset 21.
    Int4,
    /// float8 e4m3fn, `amax` at 448; opset 19.
    Fp8,
    /// Asymmetric, [0, 15] with a zero-point per scale; opset 21 (ONNX Runtime, OpenVINO).
    Uint4,
}

impl WeightType {
    pub fn name(self) -> &'static str {
        match self {
            WeightType::Int8 => "int8",
            WeightType::Int4 => "int4",
            WeightType::Fp8 => "fp8",
            WeightType::Uint4 => "uint4",
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

fn usable(scale: f64) -> Option<f32> {
    let s = scale as f32;
    (s.is_finite() && s >= f32::MIN_POSITIVE).then_some(s)
}

/// Largest finite float8 e4m3fn value.
pub const FP8_MAX: f32 = 448.0;

/// `x` as float8 e4m3fn (1 sign, 4 exponent bits with bias 7, 3 mantissa bits, no
/// infinities), rounded to nearest even and saturated to ±448 as ONNX QuantizeLinear does with
/// `saturate=1`; NaN stays NaN (0x7f).
pub fn to_fp8(x: f32) -> u8 {
    if x.is_nan() {
        return 0x7f;
    }
    let sign = if x.is_sign_negative() { 0x80 } else { 0 };
    let a = f64::from(x.abs());
    if a >= f64::from(FP8_MAX) {
        return sign | 0x7e;
    }
    let min_normal = 2f64.powi(-6);
    if a < min_normal {
        // subnormal: steps of 2^-9; 8 steps is the smallest normal (0x08)
        let m = (a / 2f64.powi(-9)).round_ties_even() as u8;
        return sign | m;
    }
    let mut e = a.log2().floor() as i32;
    // log2 can land one off near powers of two
    if 2f64.powi(e) > a {
        e -= 1;
    } else if 2f64.powi(e + 1) <= a {
        e += 1;
    }
    let mut q = ((a / 2f64.powi(e) - 1.0) * 8.0).round_ties_even() as u8;
    if q == 8 {
        e += 1;
        q = 0;
    }
    let biased = e + 7;
    if biased > 15 || (biased == 15 && q == 7) {
        return sign | 0x7e;
    }
    sign | ((biased as u8) << 3) | q
}

/// The value of a float8 e4m3fn byte.
pub fn from_fp8(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let (e, m) = (i32::from((b >> 3) & 0x0f), f64::from(b & 0x07));
    if e == 15 && m == 7.0 {
        return f32::NAN;
    }
    let v = if e == 0 {
        m / 8.0 * 2f64.powi(-6)
    } else {
        (1.0 + m / 8.0) * 2f64.powi(e - 7)
    };
    (sign * v) as f32
}

/// Parameters for an activation observed in `[min, max]` (both finite).
pub fn activation_params(min: f32, max: f32, scheme: ActivationScheme) -> QParams {
    let (qmin, qmax) = scheme.qtype.range();
    if scheme.symmetric || scheme.qtype == QType::Fp8 {
        let amax = (min as f64).abs().max((max as f64).abs());
        let scale = usable(amax / scheme.qtype.symmetric_steps()).unwrap_or(1.0);
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
        scale: usable(f64::from(amax) / QType::Int8.symmetric_steps()).unwrap_or(1.0),
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
    /// One per scale (uint4); empty: all 0.
    pub zero_points: Vec<i32>,
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
        zero_points: Vec::new(),
    }
}

/// `data` (shape `dims`) as float8 e4m3fn bytes, one scale per channel of `axis` (or one):
/// `amax / 448`, raised to a float16 value with `f16`.
pub fn quantize_weight_fp8(
    data: &[f32],
    dims: &[usize],
    axis: Option<usize>,
    f16: bool,
) -> (Vec<u8>, Vec<f32>) {
    let (channels, inner) = match axis {
        Some(a) => (dims[a], dims[a + 1..].iter().product::<usize>().max(1)),
        None => (1, data.len().max(1)),
    };
    let channel = |i: usize| (i / inner) % channels;
    let mut amax = vec![0f32; channels];
    for (i, x) in data.iter().enumerate() {
        amax[channel(i)] = amax[channel(i)].max(x.abs());
    }
    let scales: Vec<f32> = amax
        .iter()
        .map(|&a| {
            let s = usable(f64::from(a) / f64::from(FP8_MAX)).unwrap_or(1.0);
            if f16 { f16_ceil(s) } else { s }
        })
        .collect();
    let bytes = data
        .iter()
        .enumerate()
        .map(|(i, &x)| to_fp8(x / scales[channel(i)]))
        .collect();
    (bytes, scales)
}

/// How an int4 weight shares scales.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int4Layout {
    PerTensor,
    /// One scale per index of this axis.
    PerChannel(usize),
    /// One scale per `size` consecutive values along `axis` (which `size` divides), for every
    /// position of the other axes.
    Blocks {
        axis: usize,
        size: usize,
    },
}

impl Int4Layout {
    /// Dims of the scale tensor for a weight of `dims` (ONNX: blocks keep the rank).
    pub fn scale_dims(self, dims: &[usize]) -> Vec<usize> {
        match self {
            Int4Layout::PerTensor => vec![],
            Int4Layout::PerChannel(a) => vec![dims[a]],
            Int4Layout::Blocks { axis, size } => {
                let mut d = dims.to_vec();
                d[axis] /= size;
                d
            }
        }
    }
}

/// Clipping ratios the int4 search tries: the scale is `ratio · amax / 7`.
const CLIP_RATIOS: usize = 20;

/// Quantizes `data` (row-major, shape `dims`) to 4 bits, one scale per group of `layout`.
/// int4: symmetric in [-8, 7], `amax / 7`. uint4 (`unsigned`): the range `[lo, hi]` widened to
/// include 0, `scale = (hi - lo) / 15`, zero-point `round(-lo / scale)` in [0, 15], values in
/// [0, 15]. With `search`, the range shrunk by the ratio r = 1, 0.975, ..., 0.525 with the least
/// squared error over the group (rounding against clipping). `floors` and `f16` as for
/// [`quantize_weight`] (floors per channel, for int32 biases).
pub fn quantize_weight_4bit(
    data: &[f32],
    dims: &[usize],
    layout: Int4Layout,
    floors: &[f32],
    f16: bool,
    search: bool,
    unsigned: bool,
) -> QuantizedWeight {
    let (axis, inner) = match layout {
        Int4Layout::PerTensor => (None, 1),
        Int4Layout::PerChannel(a) | Int4Layout::Blocks { axis: a, .. } => {
            (Some(a), dims[a + 1..].iter().product::<usize>())
        }
    };
    let channels = axis.map_or(1, |a| dims[a]);
    let groups: usize = layout.scale_dims(dims).iter().product();
    let group_of = |i: usize| -> usize {
        match layout {
            Int4Layout::PerTensor => 0,
            Int4Layout::PerChannel(_) => (i / inner) % channels,
            Int4Layout::Blocks { size, .. } => {
                let (o, c, r) = (i / (channels * inner), (i / inner) % channels, i % inner);
                (o * (channels / size) + c / size) * inner + r
            }
        }
    };
    let channel_of = |g: usize| match layout {
        Int4Layout::PerChannel(_) => g,
        _ => 0,
    };
    let n = groups.max(1);
    let (mut lo, mut hi) = (vec![0f32; n], vec![0f32; n]);
    for (i, &x) in data.iter().enumerate() {
        let g = group_of(i);
        lo[g] = lo[g].min(x);
        hi[g] = hi[g].max(x);
    }
    let floor = |g: usize| {
        let c = channel_of(g);
        floors.get(c).or(floors.first()).copied().unwrap_or(0.0)
    };
    // (scale, zero-point) of group `g` with its range shrunk by `ratio`
    let params_for = |g: usize, ratio: f64| -> (f32, i32) {
        let span = if unsigned {
            (f64::from(hi[g]) - f64::from(lo[g])) / 15.0
        } else {
            f64::from(lo[g].abs().max(hi[g].abs())) / 7.0
        };
        let s = usable(span * ratio).unwrap_or(1.0).max(floor(g));
        let s = if f16 { f16_ceil(s) } else { s };
        let zp = if unsigned {
            (-(f64::from(lo[g]) * ratio) / f64::from(s))
                .round_ties_even()
                .clamp(0.0, 15.0) as i32
        } else {
            0
        };
        (s, zp)
    };
    let (qmin, qmax) = if unsigned { (0.0, 15.0) } else { (-8.0, 7.0) };
    let q = |x: f32, (s, zp): (f32, i32)| (round_even_small(x / s) + zp as f32).clamp(qmin, qmax);
    let mut params: Vec<(f32, i32)> = (0..n).map(|g| params_for(g, 1.0)).collect();
    if search {
        let mut best = vec![f64::INFINITY; n];
        let mut err = vec![0f64; n];
        for k in 0..CLIP_RATIOS {
            let ratio = 1.0 - 0.025 * k as f64;
            let cand: Vec<(f32, i32)> = (0..n).map(|g| params_for(g, ratio)).collect();
            err.iter_mut().for_each(|e| *e = 0.0);
            for (i, &x) in data.iter().enumerate() {
                let g = group_of(i);
                let (s, zp) = cand[g];
                let d = f64::from(x) - f64::from((q(x, cand[g]) - zp as f32) * s);
                err[g] += d * d;
            }
            for g in 0..n {
                // strictly better only: ties keep the larger (unclipped) scale
                if err[g] < best[g] {
                    best[g] = err[g];
                    params[g] = cand[g];
                }
            }
        }
    }
    let values = data
        .iter()
        .enumerate()
        .map(|(i, &x)| q(x, params[group_of(i)]) as i8)
        .collect();
    let scales = params.iter().map(|p| p.0).collect();
    QuantizedWeight {
        values,
        zero_points: if unsigned {
            params.iter().map(|p| p.1).collect()
        } else {
            Vec::new()
        },
        scales,
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

    const S16: ActivationScheme = ActivationScheme {
        qtype: QType::Int16,
        symmetric: true,
    };
    const A16: ActivationScheme = ActivationScheme {
        qtype: QType::Int16,
        symmetric: false,
    };

    fn scheme() -> impl Strategy<Value = ActivationScheme> {
        prop_oneof![
            Just(S8),
            Just(A8),
            Just(AU8),
            Just(SU8),
            Just(S16),
            Just(A16)
        ]
    }

    #[test]
    fn fp8_e4m3_rounds_to_nearest_even_and_saturates() {
        // every byte but NaN decodes and encodes back to itself
        for b in 0..=255u8 {
            let v = from_fp8(b);
            if v.is_nan() {
                continue;
            }
            let back = to_fp8(v);
            assert!(
                back == b || (v == 0.0 && back & 0x7f == 0),
                "{b:#04x} -> {v} -> {back:#04x}"
            );
        }
        assert_eq!(from_fp8(0x7e), 448.0);
        assert_eq!(to_fp8(1000.0), 0x7e);
        assert_eq!(to_fp8(-f32::INFINITY), 0xfe);
        assert_eq!(
            to_fp8(460.0),
            0x7e,
            "past 448 saturates rather than meeting NaN"
        );
        // 1 + 1/16 lies halfway between 1 and 1.125: even mantissa (1) wins
        assert_eq!(from_fp8(to_fp8(1.0625)), 1.0);
        assert_eq!(from_fp8(to_fp8(1.1875)), 1.25);
        // subnormals: steps of 2^-9
        assert_eq!(from_fp8(to_fp8(3.0 * 2f32.powi(-9))), 3.0 * 2f32.powi(-9));
        assert_eq!(from_fp8(to_fp8(2f32.powi(-11))), 0.0);
        let p = activation_params(
            -3.0,
            2.0,
            ActivationScheme {
                qtype: QType::Fp8,
                symmetric: false,
            },
        );
        assert_eq!(
            (p.scale, p.zero_point),
            (3.0 / 448.0, 0),
            "fp8 is symmetric"
        );
    }

    #[test]
    fn int16_uses_its_whole_range() {
        let p = activation_params(-2.0, 3.0, S16);
        assert_eq!((p.scale, p.zero_point), ((3.0f64 / 32767.0) as f32, 0));
        assert_eq!(quantize(3.0, p, QType::Int16.range()), 32767);
        let a = activation_params(-1.0, 3.0, A16);
        assert_eq!(quantize(-1.0, a, QType::Int16.range()), -32768);
        assert_eq!(quantize(3.0, a, QType::Int16.range()), 32767);
    }

    /// A `[rows, cols]` weight of a smooth ramp with one outlier per 32-value block of each
    /// column (row 0, 32, ...).
    fn ramp_with_outliers(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| {
                let (r, c) = (i / cols, i % cols);
                let v = ((r * 7 + c * 3) % 23) as f32 / 23.0 - 0.5;
                if r % 32 == 0 { v + 4.0 } else { v }
            })
            .collect()
    }

    #[test]
    fn int4_blocks_have_one_scale_per_block_of_the_input_axis() {
        let (rows, cols) = (64, 3);
        let data = ramp_with_outliers(rows, cols);
        let layout = Int4Layout::Blocks { axis: 0, size: 16 };
        assert_eq!(layout.scale_dims(&[rows, cols]), vec![4, 3]);
        let q = quantize_weight_4bit(&data, &[rows, cols], layout, &[], false, false, false);
        assert_eq!((q.values.len(), q.scales.len()), (rows * cols, 12));
        for (i, (&x, &v)) in data.iter().zip(&q.values).enumerate() {
            let (r, c) = (i / cols, i % cols);
            let s = q.scales[(r / 16) * cols + c];
            // round to nearest: amax / 7 per block, nothing clipped
            assert!((-7..=7).contains(&v), "{v}");
            assert!(
                (f32::from(v) * s - x).abs() <= s * 0.5 + 1e-6,
                "{x} {v} {s}"
            );
        }
        // blocks without an outlier get a 4x finer scale than blocks with one
        assert!(q.scales[3] < q.scales[0] / 4.0, "{:?}", q.scales);
    }

    #[test]
    fn int4_clip_search_lowers_the_error() {
        let (rows, cols) = (64, 4);
        let data = ramp_with_outliers(rows, cols);
        // one scale per column
        let err = |q: &QuantizedWeight| -> f64 {
            data.iter()
                .zip(&q.values)
                .enumerate()
                .map(|(i, (&x, &v))| {
                    (f64::from(x) - f64::from(v) * f64::from(q.scales[i % cols])).powi(2)
                })
                .sum()
        };
        let layout = Int4Layout::PerChannel(1);
        let rtn = quantize_weight_4bit(&data, &[rows, cols], layout, &[], false, false, false);
        let searched = quantize_weight_4bit(&data, &[rows, cols], layout, &[], false, true, false);
        assert!(searched.values.iter().all(|v| (-8..=7).contains(v)));
        let (e_search, e_rtn) = (err(&searched), err(&rtn));
        assert!(
            e_search < 0.9 * e_rtn,
            "search {e_search} vs round-to-nearest {e_rtn}"
        );
        // every searched scale is one of the candidates: at most the absolute-maximum one
        for (s, r) in searched.scales.iter().zip(&rtn.scales) {
            assert!(s <= r && *s >= r * 0.5, "{s} {r}");
        }
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
