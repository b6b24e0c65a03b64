//! GPTQ (Frantar et al. 2022, after Optimal Brain Quantization): the integer weights of a
//! linear layer chosen to minimise its output error `‖(W − Ŵ) X‖²` on the calibration inputs,
//! instead of rounding each weight to its nearest level.
//!
//! Each output row is quantized one input entry at a time, on the scales round-to-nearest
//! chose (the grid stays; only which level each weight takes changes); the rounding error of
//! entry `t` is spread over the entries not yet quantized through the upper Cholesky factor `U`
//! of `H⁻¹`, `H = E[x xᵀ] + λI` (λ: 1 % of the mean diagonal), exactly as GPTQ does. Each
//! block is run in two orders, the entries' own and by decreasing diagonal of `H` (GPTQ's
//! act-order), and each row keeps the levels with the smaller `(w − ŵ)ᵀ H (w − ŵ)`, or
//! nearest rounding's when neither is smaller: a row's error never exceeds nearest's. `H` is
//! kept in diagonal blocks of at most [`BLOCK`] consecutive entries (`stats::Gram`): a layer
//! whose input patch has at most that many entries per group (every Gemm/MatMul up to 128
//! features, depthwise and small convs) gets exact GPTQ; a wider one gets GPTQ within each
//! block, the error not crossing blocks — the memory and time of `Σ x xᵀ` over every entry of
//! a 3×3×512 conv (4608², 170 MB per layer) would cost more than calibration itself.
//! Linear algebra (Cholesky, inverse): `faer`.

use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, Side};

use super::{QuantizedWeight, Rows};
use crate::stats::Gram;

/// Entries per diagonal block of `H`.
pub const BLOCK: usize = 128;

/// GPTQ's damping: this fraction of the mean diagonal is added to it.
const DAMP: f64 = 0.01;

/// The diagonal blocks of the Gram matrix for a weight of `dims` read as `rows`: each group's
/// patch entries in runs of at most [`BLOCK`].
pub fn blocks(rows: Rows, dims: &[usize]) -> Vec<(usize, usize)> {
    let (_, per_row) = rows.shape(dims);
    let groups = match rows {
        Rows::Conv { groups } => groups.max(1),
        _ => 1,
    };
    let mut out = Vec::new();
    for g in 0..groups {
        let mut s = 0;
        while s < per_row {
            let len = (per_row - s).min(BLOCK);
            out.push((g * per_row + s, len));
            s += len;
        }
    }
    out
}

/// Output signal and error of a layer, summed over its rows and blocks: `Σ wᵀ H w` and
/// `Σ (w − ŵ)ᵀ H (w − ŵ)`, `H` block-diagonal.
#[derive(Clone, Copy, Debug, Default)]
pub struct OutputError {
    pub signal: f64,
    pub error: f64,
}

impl OutputError {
    /// Output SQNR in dB (infinite without error).
    pub fn sqnr_db(self) -> f64 {
        if self.error <= 0.0 {
            f64::INFINITY
        } else {
            10.0 * (self.signal / self.error).log10()
        }
    }
}

/// `Σ_r v_rᵀ H v_r` over the `n` rows of `v` (`n × len`, row-major), `H` `len × len`.
fn quadratic(v: &[f64], h: &[f64], n: usize, len: usize) -> f64 {
    row_errors(v, h, n, len).iter().sum()
}

/// `v_rᵀ H v_r` for each of the `n` rows of `v` (`n × len`, row-major), `H` `len × len`.
fn row_errors(v: &[f64], h: &[f64], n: usize, len: usize) -> Vec<f64> {
    let mut vh = vec![0f64; n * len];
    // SAFETY: `v` is n × len, `h` len × len and `vh` n × len, row-major, as the strides say.
    unsafe {
        matrixmultiply::dgemm(
            n,
            len,
            len,
            1.0,
            v.as_ptr(),
            len as isize,
            1,
            h.as_ptr(),
            len as isize,
            1,
            0.0,
            vh.as_mut_ptr(),
            len as isize,
            1,
        );
    }
    v.chunks(len.max(1))
        .zip(vh.chunks(len.max(1)))
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum())
        .collect()
}

/// The upper Cholesky factor `U` of `(H + damp·I)⁻¹` with the entries taken in `order`, by
/// rows: `U[k][k..]` is what rounding the `k`-th entry of the order spreads over the later ones.
fn upper_factor(
    h: &[f64],
    len: usize,
    order: &[usize],
    damp: f64,
) -> Result<Vec<Vec<f64>>, String> {
    let damped = Mat::<f64>::from_fn(len, len, |i, j| {
        h[order[i] * len + order[j]] + if i == j { damp } else { 0.0 }
    });
    let hinv = damped
        .llt(Side::Lower)
        .map_err(|e| format!("H is not positive definite ({e:?})"))?
        .inverse();
    let l = hinv
        .llt(Side::Lower)
        .map_err(|e| format!("H⁻¹ is not positive definite ({e:?})"))?;
    // U = Lᵀ: row k of U is column k of L, contiguous
    let l = l.L();
    Ok((0..len)
        .map(|k| {
            l.col(k)
                .try_as_col_major()
                .expect("a contiguous column")
                .as_slice()
                .to_vec()
        })
        .collect())
}

/// A quantizer's level for `x` and the value it stands for, on scale `s`, zero-point `z`.
fn level(x: f64, s: f64, z: i32, (lo, hi): (i32, i32)) -> (i32, f64) {
    let q = ((x / s).round_ties_even() as i64 + i64::from(z)).clamp(i64::from(lo), i64::from(hi))
        as i32;
    (q, f64::from(q - z) * s)
}

/// Re-chooses the levels of `q` (the round-to-nearest quantization of `w`, shape `dims`, read
/// as `rows`, levels within `range`; `scale_of(i)`: the scale index of flat entry `i`) by GPTQ
/// on `gram`. Returns the output error before (nearest) and after.
pub fn gptq(
    w: &[f32],
    dims: &[usize],
    rows: Rows,
    q: &mut QuantizedWeight,
    scale_of: &dyn Fn(usize) -> usize,
    range: (i32, i32),
    gram: &Gram,
) -> Result<(OutputError, OutputError), String> {
    let (n_rows, per_row) = rows.shape(dims);
    let zero = |si: usize| q.zero_points.get(si).copied().unwrap_or(0);
    let (mut before, mut after) = (OutputError::default(), OutputError::default());
    for (b, &(start, len)) in gram.blocks.iter().enumerate() {
        let mut h = gram.block(b);
        // the rows reading this block, and where it starts within them
        let readers: Vec<(usize, usize)> = (0..n_rows)
            .filter_map(|o| {
                let first = rows.first_entry(dims, o);
                (start >= first && start + len <= first + per_row).then(|| (o, start - first))
            })
            .collect();
        let mean_diag = (0..len).map(|i| h[i * len + i]).sum::<f64>() / len as f64;
        if readers.is_empty() || mean_diag <= 0.0 || !mean_diag.is_finite() {
            continue;
        }
        // an entry never nonzero: GPTQ's "dead" inputs, whose weights do not matter
        for i in 0..len {
            if h[i * len + i] <= 0.0 {
                h[i * len + i] = mean_diag;
            }
        }
        // the block's rows: weights, and their nearest-rounding error
        let n = readers.len();
        let mut weights = vec![0f64; n * len];
        let mut delta = vec![0f64; n * len];
        // each entry's flat index, scale and zero-point
        let mut at = vec![0usize; n * len];
        let mut grid = vec![(0f64, 0i32); n * len];
        for (r, &(o, off)) in readers.iter().enumerate() {
            for t in 0..len {
                let i = rows.at(dims, o, off + t);
                let si = scale_of(i);
                let (scale, z) = (f64::from(q.scales[si]), zero(si));
                let value = f64::from(i32::from(q.values[i]) - z) * scale;
                (at[r * len + t], grid[r * len + t]) = (i, (scale, z));
                weights[r * len + t] = f64::from(w[i]);
                delta[r * len + t] = f64::from(w[i]) - value;
            }
        }
        let signal = quadratic(&weights, &h, n, len);
        before.signal += signal;
        after.signal += signal;
        // each row's nearest-rounding error, then the smallest found
        let mut best_error = row_errors(&delta, &h, n, len);
        before.error += best_error.iter().sum::<f64>();
        // two orders of the entries: as they come, and by decreasing H diagonal (GPTQ's
        // act-order: the entries the output depends on most are rounded while the rest can
        // still absorb their error); each row keeps the levels of the order that leaves it the
        // smaller output error on the calibration data
        let mut act: Vec<usize> = (0..len).collect();
        act.sort_by(|&a, &b| h[b * len + b].total_cmp(&h[a * len + a]).then(a.cmp(&b)));
        let natural: Vec<usize> = (0..len).collect();
        let mut orders = vec![natural];
        if act != orders[0] {
            orders.push(act);
        }
        let factors = orders
            .iter()
            .map(|order| upper_factor(&h, len, order, DAMP * mean_diag))
            .collect::<Result<Vec<_>, _>>()?;
        // round-to-nearest's levels, where neither order does better (damping can make it so)
        let mut best_levels: Vec<i32> = at.iter().map(|&i| i32::from(q.values[i])).collect();
        for (order, u) in orders.iter().zip(&factors) {
            let (mut levels, mut d) = (vec![0i32; n * len], vec![0f64; n * len]);
            for r in 0..n {
                // the row's weights in `order`
                let mut cur: Vec<f64> = order.iter().map(|&t| weights[r * len + t]).collect();
                for (k, &t) in order.iter().enumerate() {
                    let (scale, z) = grid[r * len + t];
                    let (lv, value) = level(cur[k], scale, z, range);
                    let err = (cur[k] - value) / u[k][k];
                    for (c, lu) in cur[k + 1..].iter_mut().zip(&u[k][k + 1..]) {
                        *c -= err * lu;
                    }
                    levels[r * len + t] = lv;
                    d[r * len + t] = weights[r * len + t] - value;
                }
            }
            for (r, e) in row_errors(&d, &h, n, len).into_iter().enumerate() {
                if e < best_error[r] {
                    best_error[r] = e;
                    let row = r * len..(r + 1) * len;
                    best_levels[row.clone()].copy_from_slice(&levels[row]);
                }
            }
        }
        for (&i, &lv) in at.iter().zip(&best_levels) {
            q.values[i] = lv as i8;
        }
        after.error += best_error.iter().sum::<f64>();
    }
    Ok((before, after))
}

/// A deterministic pseudo-random sequence in [-1, 1), for tests.
#[cfg(test)]
pub(crate) fn noise(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{Int4Layout, quantize_weight, quantize_weight_4bit, scale_index};

    /// `rows` inputs of `k` correlated entries (a random mixing of independent ones).
    fn inputs(rows: usize, k: usize, seed: u64) -> Vec<f64> {
        let mix = noise(k * k, 99);
        let z = noise(rows * k, seed);
        (0..rows * k)
            .map(|i| {
                let (r, j) = (i / k, i % k);
                (0..k).map(|m| mix[j * k + m] * z[r * k + m]).sum::<f64>() + 0.3
            })
            .collect()
    }

    /// ‖(W − Ŵ) X‖² for `W` `[n, k]` and rows of `x`.
    fn output_error(w: &[f32], q: &QuantizedWeight, dims: &[usize], x: &[f64]) -> f64 {
        let (n, k) = (dims[0], dims[1]);
        let at = scale_index(dims, q, None);
        let d: Vec<f64> = (0..n * k)
            .map(|i| {
                let z = q.zero_points.get(at(i)).copied().unwrap_or(0);
                f64::from(w[i]) - f64::from(i32::from(q.values[i]) - z) * f64::from(q.scales[at(i)])
            })
            .collect();
        x.chunks(k)
            .map(|row| {
                (0..n)
                    .map(|o| (0..k).map(|j| d[o * k + j] * row[j]).sum::<f64>().powi(2))
                    .sum::<f64>()
            })
            .sum()
    }

    fn gram_of(x: &[f64], k: usize, dims: &[usize]) -> Gram {
        let blocks = blocks(Rows::Transposed, dims);
        let rows = (x.len() / k) as u64;
        let mut g = Gram::new(blocks.clone());
        for (b, &(s, len)) in blocks.iter().enumerate() {
            let mut sums = vec![0f64; len * len];
            for row in x.chunks(k) {
                for i in 0..len {
                    for j in 0..len {
                        sums[i * len + j] += row[s + i] * row[s + j];
                    }
                }
            }
            g.add_block(b, &sums);
        }
        g.rows = rows;
        g
    }

    /// GPTQ beats round-to-nearest in ‖(W − Ŵ) X‖ on inputs it never saw, for int8 and int4
    /// per channel, with one block (48 entries) and with three (300 entries).
    #[test]
    fn gptq_beats_nearest_on_held_out_inputs() {
        // (entries, the last 8 entries' inputs scaled up: the order GPTQ takes them in matters)
        for (k, skew) in [(48, 1.0), (300, 1.0), (48, 10.0)] {
            let dims = [8, k];
            let w: Vec<f32> = noise(8 * k, 7).iter().map(|&v| v as f32).collect();
            let skewed = |mut x: Vec<f64>| {
                x.iter_mut()
                    .enumerate()
                    .filter(|(i, _)| i % k >= k - 8)
                    .for_each(|(_, v)| *v *= skew);
                x
            };
            let gram = gram_of(&skewed(inputs(1000, k, 1)), k, &dims);
            let held_out = skewed(inputs(500, k, 2));
            for four in [false, true] {
                let rtn = if four {
                    quantize_weight_4bit(
                        &w,
                        &dims,
                        Int4Layout::PerChannel(0),
                        &[],
                        false,
                        false,
                        false,
                    )
                } else {
                    quantize_weight(&w, &dims, Some(0), &[], false)
                };
                let mut q = rtn.clone();
                let range = if four { (-8, 7) } else { (-127, 127) };
                let at = scale_index(&dims, &rtn, None);
                let (before, after) =
                    gptq(&w, &dims, Rows::Transposed, &mut q, &at, range, &gram).unwrap();
                let (e_rtn, e_gptq) = (
                    output_error(&w, &rtn, &dims, &held_out),
                    output_error(&w, &q, &dims, &held_out),
                );
                // within one block GPTQ is exact; across blocks the error does not travel
                let bound = if k <= BLOCK { 0.9 } else { 0.95 };
                assert!(
                    e_gptq < bound * e_rtn,
                    "k {k}, skew {skew}, int4 {four}: GPTQ {e_gptq} vs nearest {e_rtn}"
                );
                // the estimate on the calibration inputs says so too, and the grid is kept
                assert!(after.error < before.error && after.sqnr_db() > before.sqnr_db());
                assert_eq!(q.scales, rtn.scales);
                assert!(
                    q.values
                        .iter()
                        .all(|&v| i32::from(v) >= range.0 && i32::from(v) <= range.1)
                );
            }
        }
    }
}
