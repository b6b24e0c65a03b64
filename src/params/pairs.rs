//! Int8 weight pairs in the x86 kernels of CPUs without VNNI.
//!
//! ONNX Runtime (MLAS) and OpenVINO (oneDNN) compute uint8 × int8 dot products on AVX2 and
//! AVX-512 without VNNI with `VPMADDUBSW`, which multiplies adjacent bytes and adds each pair of
//! products into a *saturating* int16 before widening; activations reach the kernels as uint8
//! (ONNX Runtime adds 128 to int8 ones on x86). With uint8 values up to 255, a pair of
//! same-signed weights whose magnitudes add up to more than [`PAIR_LIMIT`] can saturate:
//! 255 · 129 = 32 895 > 32 767. Which weights are paired follows from how the kernels pack them
//! ([`Pairing`]; docs/presets.md quotes the sources). VNNI (`VPDPBUSD`) adds four products into
//! int32 and does not saturate; TensorRT does not either.

use serde::Serialize;

use super::{QuantizedWeight, f16_ceil, round_even_small};

/// The largest same-sign |w₀| + |w₁| of a pair that cannot saturate int16 for any uint8 input.
pub const PAIR_LIMIT: i32 = 128;

/// Scales tried per channel between the current one and the one that fits the worst pair.
const SCALE_STEPS: usize = 8;

/// What `weights.cpu_overflow` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuOverflow {
    /// Weights as rounded (TensorRT, GPUs, CPUs with VNNI).
    #[default]
    None,
    /// Only the pairs that could saturate are changed, channel by channel by least error.
    Auto,
    /// Every weight in 7 bits (|q| <= 63), as ONNX Runtime's `reduce_range`.
    All,
}

/// How a weight's values meet in pairs, per the packing of the x86 kernels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pairing {
    /// Conv weight `[O, I/g, taps]` (row-major). MLAS reorders each filter tap-major
    /// (`[tap][input channel]`) for its GEMM and its symmetric kernel, and pairs consecutive
    /// values; oneDNN blocks four input channels per tap. Both are input channels `2m, 2m+1`
    /// at one tap when `I/g` is even; with `I/g` odd MLAS's pairs straddle taps, so both sets.
    /// A depthwise Conv (`I/g = 1`, one output per group) widens to 16 or 32 bits: no pairs.
    Conv {
        outputs: usize,
        inputs: usize,
        taps: usize,
    },
    /// ConvTranspose weight `[I, O/g, taps]`: input channels `2m, 2m+1` of a group, per output
    /// channel and tap.
    ConvTranspose {
        groups: usize,
        inputs: usize,
        outputs: usize,
        taps: usize,
    },
    /// The right operand `[batch, K, N]` of a product: rows `2m, 2m+1`, per column.
    Rows { batch: usize, k: usize, n: usize },
    /// `[batch, M, K]` reduced along its last axis (a left operand, or `transB`): columns
    /// `2m, 2m+1`, per row.
    Columns { batch: usize, m: usize, k: usize },
}

impl Pairing {
    /// The pairing of a weight of shape `dims` read by `op` at input `slot`; `group` for Conv
    /// and ConvTranspose, `trans` the op's transpose flag for that input (Gemm). `None`: the
    /// kernels do not pair it (depthwise, or an op without int8 dot products).
    pub fn of(op: &str, dims: &[usize], slot: usize, group: usize, trans: bool) -> Option<Pairing> {
        let taps = || dims.iter().skip(2).product::<usize>();
        match (op, slot) {
            ("Conv", 1) if dims.len() >= 3 => {
                let outputs = dims[0];
                let inputs = dims[1];
                let depthwise = inputs == 1 && group > 1 && outputs == group;
                (!depthwise).then(|| Pairing::Conv {
                    outputs,
                    inputs,
                    taps: taps(),
                })
            }
            ("ConvTranspose", 1)
                if dims.len() >= 3 && group >= 1 && dims[0].is_multiple_of(group) =>
            {
                let inputs = dims[0] / group;
                (inputs > 1).then(|| Pairing::ConvTranspose {
                    groups: group,
                    inputs,
                    outputs: dims[1],
                    taps: taps(),
                })
            }
            ("MatMul" | "Gemm", _) if dims.len() >= 2 => {
                let r = dims.len();
                let batch = dims[..r - 2].iter().product();
                let (a, b) = (dims[r - 2], dims[r - 1]);
                // the right operand is [K, N] unless transposed; the left [M, K] unless transposed
                let right = slot == 1;
                Some(if right != trans {
                    Pairing::Rows { batch, k: a, n: b }
                } else {
                    Pairing::Columns { batch, m: a, k: b }
                })
            }
            _ => None,
        }
    }

    /// Calls `f(i, j)` for every pair of flat indices the kernels may add into one int16.
    pub fn for_each(&self, mut f: impl FnMut(usize, usize)) {
        match *self {
            Pairing::Conv {
                outputs,
                inputs,
                taps,
            } => {
                let len = inputs * taps;
                // position n of a filter in tap-major order -> its offset in [I, taps]
                let at = |n: usize| (n % inputs) * taps + n / inputs;
                for o in 0..outputs {
                    let base = o * len;
                    for n in (0..len.saturating_sub(1)).step_by(2) {
                        f(base + at(n), base + at(n + 1));
                    }
                    // at even taps these are pairs of the tap-major order already
                    if inputs % 2 == 1 && inputs > 1 {
                        for t in (1..taps).step_by(2) {
                            for c in (0..inputs - 1).step_by(2) {
                                f(base + c * taps + t, base + (c + 1) * taps + t);
                            }
                        }
                    }
                }
            }
            Pairing::ConvTranspose {
                groups,
                inputs,
                outputs,
                taps,
            } => {
                let at = |g: usize, c: usize, o: usize, t: usize| {
                    ((g * inputs + c) * outputs + o) * taps + t
                };
                for g in 0..groups {
                    for o in 0..outputs {
                        for t in 0..taps {
                            for c in (0..inputs - 1).step_by(2) {
                                f(at(g, c, o, t), at(g, c + 1, o, t));
                            }
                        }
                    }
                }
            }
            Pairing::Rows { batch, k, n } => {
                for b in 0..batch {
                    for r in (0..k.saturating_sub(1)).step_by(2) {
                        for c in 0..n {
                            let i = (b * k + r) * n + c;
                            f(i, i + n);
                        }
                    }
                }
            }
            Pairing::Columns { batch, m, k } => {
                for row in 0..batch * m {
                    for c in (0..k.saturating_sub(1)).step_by(2) {
                        let i = row * k + c;
                        f(i, i + 1);
                    }
                }
            }
        }
    }
}

/// How much a pair of int8 weights can push an int16 sum of uint8 products: |a| + |b| when
/// they share a sign, else the larger magnitude.
pub fn load(a: i8, b: i8) -> i32 {
    let (a, b) = (i32::from(a), i32::from(b));
    if (a > 0 && b > 0) || (a < 0 && b < 0) {
        a.abs() + b.abs()
    } else {
        a.abs().max(b.abs())
    }
}

/// The pairs of one weight, as `check` reports them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PairScan {
    pub pairs: usize,
    /// Pairs whose load exceeds [`PAIR_LIMIT`].
    pub overflowing: usize,
    /// The largest load, and the flat indices of a pair with it.
    pub worst: i32,
    pub worst_at: (usize, usize),
}

/// Scans `values` paired as `pairing`.
pub fn scan(values: &[i8], pairing: &Pairing) -> PairScan {
    let mut s = PairScan::default();
    pairing.for_each(|i, j| {
        let l = load(values[i], values[j]);
        s.pairs += 1;
        if l > PAIR_LIMIT {
            s.overflowing += 1;
        }
        if l > s.worst {
            s.worst = l;
            s.worst_at = (i, j);
        }
    });
    s
}

/// What keeping the pairs inside int16 did to one weight.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PairFix {
    /// Pairs that could saturate before.
    pub pairs: usize,
    /// Values changed (rounded under the pair limit, or requantized with a larger scale).
    pub changed: usize,
    /// Channels whose scale was raised rather than their pairs rounded.
    pub rescaled: usize,
    pub channels: usize,
    /// Weight SQNR (dB) before and after.
    pub sqnr_before_db: f64,
    pub sqnr_after_db: f64,
}

/// Rounds the pairs of `q` (quantized from `data`, shape `dims`, scales along `q.axis`) that
/// could saturate so that none can: per channel, each such pair is rounded onto the limit (the
/// change split as the rounding residuals ask), at the current scale or at one of
/// [`SCALE_STEPS`] larger ones up to the scale that fits the channel's worst pair, whichever
/// leaves the least squared error.
/// `CpuOverflow::All` requantizes every channel to 7 bits. `None` when nothing changed.
// One function: the per-channel search (current scale, larger ones, 7-bit) shares the channel's
// members, its pairs and the closures over them; each step is commented inside.
pub fn fix(
    data: &[f32],
    dims: &[usize],
    q: &mut QuantizedWeight,
    pairing: &Pairing,
    mode: CpuOverflow,
    f16: bool,
) -> Option<PairFix> {
    if mode == CpuOverflow::None || data.len() != q.values.len() {
        return None;
    }
    let channel_of = channel_map(dims, q.axis, q.scales.len());
    let channels = q.scales.len();
    // pairs grouped by channel (a pair's values share the output channel)
    let mut by_channel: Vec<Vec<(usize, usize)>> = vec![Vec::new(); channels];
    let mut worst = vec![0i32; channels];
    let mut over = 0usize;
    pairing.for_each(|i, j| {
        let c = channel_of(i);
        let l = load(q.values[i], q.values[j]);
        worst[c] = worst[c].max(l);
        if l > PAIR_LIMIT {
            over += 1;
        }
        by_channel[c].push((i, j));
    });
    if mode == CpuOverflow::Auto && over == 0 {
        return None;
    }
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); channels];
    for i in 0..data.len() {
        members[channel_of(i)].push(i);
    }
    let before = sqnr(data, &q.values, &q.scales, &channel_of);
    let mut out = PairFix {
        pairs: over,
        channels,
        sqnr_before_db: before,
        ..PairFix::default()
    };
    for c in 0..channels {
        let scale = q.scales[c];
        let pairs = &by_channel[c];
        let idx = &members[c];
        let requantize = |s: f32| -> Vec<i8> {
            idx.iter()
                .map(|&i| round_even_small(data[i] / s).clamp(-127.0, 127.0) as i8)
                .collect()
        };
        let err = |vals: &[i8], s: f32| -> f64 {
            idx.iter()
                .zip(vals)
                .map(|(&i, &v)| (f64::from(v) * f64::from(s) - f64::from(data[i])).powi(2))
                .sum()
        };
        let local = |i: usize| {
            idx.binary_search(&i)
                .expect("a pair's values are in its channel")
        };
        let project = |vals: &mut Vec<i8>, s: f32| {
            for &(i, j) in pairs {
                let (a, b) = (local(i), local(j));
                round_pair(vals, a, b, data[i] / s, data[j] / s);
            }
        };
        let current: Vec<i8> = idx.iter().map(|&i| q.values[i]).collect();
        let (vals, s) = if mode == CpuOverflow::All {
            let s = raise(scale, 127.0 / 63.0, f16);
            let mut v = requantize(s);
            project(&mut v, s);
            (v, s)
        } else if worst[c] <= PAIR_LIMIT {
            continue;
        } else {
            // the scale that fits the worst pair, and steps between it and the current one
            let top = worst[c] as f32 / PAIR_LIMIT as f32;
            let mut best: Option<(f64, Vec<i8>, f32)> = None;
            for k in 0..=SCALE_STEPS {
                let factor = top.powf(k as f32 / SCALE_STEPS as f32);
                let s = if k == 0 {
                    scale
                } else {
                    raise(scale, factor, f16)
                };
                let mut v = if k == 0 {
                    current.clone()
                } else {
                    requantize(s)
                };
                project(&mut v, s);
                let e = err(&v, s);
                if best.as_ref().is_none_or(|b| e < b.0) {
                    best = Some((e, v, s));
                }
            }
            let (_, v, s) = best.expect("at least the current scale");
            (v, s)
        };
        if s != scale {
            out.rescaled += 1;
        }
        for (k, &i) in idx.iter().enumerate() {
            out.changed += usize::from(q.values[i] != vals[k]);
            q.values[i] = vals[k];
        }
        q.scales[c] = s;
    }
    out.sqnr_after_db = sqnr(data, &q.values, &q.scales, &channel_of);
    Some(out)
}

/// `scale · factor`, a float16 value with `f16`.
fn raise(scale: f32, factor: f32, f16: bool) -> f32 {
    let s = scale * factor;
    if f16 { f16_ceil(s) } else { s }
}

/// Brings the pair at `a`, `b` of `vals` (exact values `xa`, `xb` in steps) under the limit,
/// lowering the magnitudes as little from the exact values as the limit allows.
fn round_pair(vals: &mut [i8], a: usize, b: usize, xa: f32, xb: f32) {
    let (va, vb) = (i32::from(vals[a]), i32::from(vals[b]));
    if load(vals[a], vals[b]) <= PAIR_LIMIT || va.signum() != vb.signum() {
        return;
    }
    let (ma, mb) = (va.abs(), vb.abs());
    let excess = ma + mb - PAIR_LIMIT;
    let (ea, eb) = (f64::from(xa.abs()), f64::from(xb.abs()));
    let mut best = (f64::INFINITY, 0);
    for da in 0..=excess.min(ma) {
        let db = excess - da;
        if db > mb {
            continue;
        }
        let cost = (f64::from(ma - da) - ea).powi(2) + (f64::from(mb - db) - eb).powi(2);
        if cost < best.0 {
            best = (cost, da);
        }
    }
    let da = best.1;
    let db = excess - da;
    vals[a] = ((ma - da) * va.signum()) as i8;
    vals[b] = ((mb - db) * vb.signum()) as i8;
}

/// Flat index -> channel of the scale along `axis` (0 with one scale).
pub fn channel_map(dims: &[usize], axis: Option<usize>, scales: usize) -> impl Fn(usize) -> usize {
    let (inner, n) = match axis {
        Some(a) if scales > 1 => (dims[a + 1..].iter().product::<usize>().max(1), dims[a]),
        _ => (1, 1),
    };
    move |i| (i / inner) % n
}

fn sqnr(data: &[f32], values: &[i8], scales: &[f32], channel_of: &impl Fn(usize) -> usize) -> f64 {
    let (mut sig, mut noise) = (0f64, 0f64);
    for (i, (&x, &v)) in data.iter().zip(values).enumerate() {
        let r = f64::from(v) * f64::from(scales[channel_of(i)]);
        sig += f64::from(x).powi(2);
        noise += (r - f64::from(x)).powi(2);
    }
    if noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (sig / noise).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::quantize_weight;

    /// Roughly normal values (sums of four uniforms), as trained weights are.
    fn lcg(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        let mut uniform = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        };
        (0..n)
            .map(|_| (0..4).map(|_| uniform()).sum::<f32>())
            .collect()
    }

    #[test]
    fn conv_pairs_follow_the_tap_major_packing() {
        // 1 output, 2 input channels, 2 taps: tap-major order is (c0,t0) (c1,t0) (c0,t1) (c1,t1)
        let p = Pairing::of("Conv", &[1, 2, 1, 2], 1, 1, false).unwrap();
        let mut v = Vec::new();
        p.for_each(|i, j| v.push((i, j)));
        assert_eq!(v, vec![(0, 2), (1, 3)]);
        // odd input channels: straddling pairs, and the per-tap ones
        let p = Pairing::of("Conv", &[1, 3, 1, 2], 1, 1, false).unwrap();
        let mut v = Vec::new();
        p.for_each(|i, j| v.push((i, j)));
        assert_eq!(v, vec![(0, 2), (4, 1), (3, 5), (1, 3)]);
        // depthwise: none
        assert_eq!(Pairing::of("Conv", &[8, 1, 3, 3], 1, 8, false), None);
        // a channel multiplier of 2 pairs taps
        assert!(Pairing::of("Conv", &[8, 1, 3, 3], 1, 4, false).is_some());
    }

    #[test]
    fn product_pairs_run_along_the_reduction() {
        let mut v = Vec::new();
        Pairing::of("MatMul", &[4, 3], 1, 1, false)
            .unwrap()
            .for_each(|i, j| v.push((i, j)));
        assert_eq!(v, vec![(0, 3), (1, 4), (2, 5), (6, 9), (7, 10), (8, 11)]);
        let mut v = Vec::new();
        Pairing::of("Gemm", &[2, 4], 1, 1, true)
            .unwrap()
            .for_each(|i, j| v.push((i, j)));
        assert_eq!(v, vec![(0, 1), (2, 3), (4, 5), (6, 7)]);
    }

    #[test]
    fn loads_count_only_same_signed_pairs() {
        assert_eq!(load(127, 2), 129);
        assert_eq!(load(-127, -1), 128);
        assert_eq!(load(127, -127), 127);
        assert_eq!(load(0, 0), 0);
    }

    #[test]
    fn auto_leaves_no_pair_over_the_limit_and_costs_less_than_seven_bits() {
        let dims = [16usize, 32, 3, 3];
        let data = lcg(dims.iter().product(), 7);
        let p = Pairing::of("Conv", &dims, 1, 1, false).unwrap();
        let q0 = quantize_weight(&data, &dims, Some(0), &[], false);
        assert!(scan(&q0.values, &p).overflowing > 0);
        let mut q = q0.clone();
        let fix = fix(&data, &dims, &mut q, &p, CpuOverflow::Auto, false).unwrap();
        assert_eq!(scan(&q.values, &p).overflowing, 0);
        assert!(fix.sqnr_after_db < fix.sqnr_before_db);
        let mut q7 = q0.clone();
        let seven = super::fix(&data, &dims, &mut q7, &p, CpuOverflow::All, false).unwrap();
        assert!(q7.values.iter().all(|v| v.abs() <= 64));
        assert!(
            fix.sqnr_after_db > seven.sqnr_after_db + 2.5,
            "int8 {:.2} dB, auto {:.2} dB, 7-bit {:.2} dB",
            fix.sqnr_before_db,
            fix.sqnr_after_db,
            seven.sqnr_after_db
        );
        // a weight with no risky pair is left alone
        let small: Vec<f32> = data.iter().map(|x| x * 0.4).collect();
        let mut qs = quantize_weight(&small, &dims, None, &[], false);
        let amax = small.iter().fold(0f32, |m, x| m.max(x.abs()));
        qs.scales = vec![amax / 60.0];
        qs.values = small
            .iter()
            .map(|x| (x / qs.scales[0]).round() as i8)
            .collect();
        assert_eq!(
            super::fix(&small, &dims, &mut qs, &p, CpuOverflow::Auto, false),
            None
        );
    }

    #[test]
    fn a_pair_is_rounded_where_its_residuals_point() {
        // exact 120.4 and 20.6 steps: 120 + 21 = 141 over; lowering 13 split by the residuals
        let mut v = vec![120i8, 21];
        round_pair(&mut v, 0, 1, 120.4, 20.6);
        assert_eq!(i32::from(v[0]) + i32::from(v[1]), PAIR_LIMIT);
        assert_eq!(v, vec![114, 14]);
        // opposite signs are left alone
        let mut v = vec![127i8, -127];
        round_pair(&mut v, 0, 1, 127.0, -127.0);
        assert_eq!(v, vec![127, -127]);
    }
}
