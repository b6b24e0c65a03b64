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

pub mod gptq;
mod rows;

pub use rows::Rows;

/// How weights take their integer levels (`weights.rounding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rounding {
    /// GPTQ for 4-bit weights (where it gains most), nearest for the others.
    Auto,
    Nearest,
    Gptq,
}

impl Rounding {
    /// Whether weights of `dtype` are rounded by GPTQ (never float8: it has no uniform grid).
    pub fn gptq_for(self, dtype: WeightType) -> bool {
        match self {
            Rounding::Gptq => dtype != WeightType::Fp8,
            Rounding::Auto => matches!(dtype, WeightType::Int4 | WeightType::Uint4),
            Rounding::Nearest => false,
        }
    }

    pub fn parse(s: &str) -> Option<Rounding> {
        Some(match s {
            "auto" => Rounding::Auto,
            "nearest" => Rounding::Nearest,
            "gptq" => Rounding::Gptq,
            _ => return None,
        })
    }
}
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

/// Where each value of a weight of `dims` finds its scale (and zero-point) in `q`: one scale,
/// one per channel of `q.axis`, or blocks of `block.1` along `block.0`.
pub fn scale_index(
    dims: &[usize],
    q: &QuantizedWeight,
    block: Option<(usize, usize)>,
) -> impl Fn(usize) -> usize + use<> {
    let strides: Vec<usize> = (0..dims.len())
        .map(|a| dims[a + 1..].iter().product())
        .collect();
    let dims = dims.to_vec();
    let axis = q.axis;
    let single = q.scales.len() == 1;
    move |i: usize| {
        if single {
            return 0;
        }
        match (block, axis) {
            (Some((a, size)), _) => {
                // the scale tensor has the weight's dims, axis `a` divided into blocks
                let mut at = 0;
                for (d, (&n, &s)) in dims.iter().zip(&strides).enumerate() {
                    let idx = (i / s) % n;
                    let (idx, n) = if d == a {
                        (idx / size, n.div_ceil(size))
                    } else {
                        (idx, n)
                    };
                    at = at * n + idx;
                }
                at
            }
            (None, Some(a)) => (i / strides[a]) % dims[a],
            (None, None) => 0,
        }
    }
}

/// Quantizes `data` (row-major, shape `dims`) to 4 bits, one scale per group of `layout`.
/// int4: symmetric in [-8, 7], `amax / 7`. uint4 (`unsigned`): the range `[lo, hi]` widened to
/// include 0, `scale = (hi - lo) / 15`, zero-point `round(-lo / scale)` in [0, 15], values in
/// [0, 15]. With `search`, the range shrunk by the ratio r = 1, 0.975, ..., 0.525 with the least
/// squared error over the group (rounding against clipping). `floors` and `f16` as for
/// [`quantize_weight`] (floors per channel, for int32 biases).
// One pass per group (tensor, channel or block) with the clipping search inline: the group
// iteration and the search share the group's index arithmetic.
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
mod tests;
