//! Empirical bias correction (Nagel et al. 2019, as AIMET and Quark apply it): rounding a
//! layer's weights shifts the mean of its outputs by `(W − Ŵ) · E[x]` per output channel,
//! where `E[x]` is the mean input patch on the calibration data (`stats::PatchSums`); adding
//! that shift to the bias makes the quantized-weight layer's mean output equal the float
//! layer's on that data. A layer without a bias gains one (Conv, Gemm; a MatMul has no slot).

use serde::Serialize;

use crate::params::QuantizedWeight;
use crate::params::Rows;
use crate::proto::NodeProto;

/// What bias correction did to one layer.
#[derive(Clone, Debug, Serialize)]
pub struct BiasCorrection {
    /// Root mean square over the output channels of the mean output shift removed.
    pub shift_rms: f64,
    /// The largest one.
    pub shift_max: f64,
    /// The layer had no bias and gained one.
    pub bias_added: bool,
}

/// How `node` (Conv, Gemm, MatMul; `None` for other ops) reads its weight (input 1).
pub fn rows_of(node: &NodeProto) -> Option<Rows> {
    let int = |name: &str, default: i64| crate::ir::attr_int(node, name).unwrap_or(default);
    Some(match node.op_type() {
        "Conv" => Rows::Conv {
            groups: usize::try_from(int("group", 1)).ok()?,
        },
        "Gemm" if int("transB", 0) != 0 => Rows::Transposed,
        "Gemm" | "MatMul" => Rows::Matrix,
        _ => return None,
    })
}

/// The values `q` stands for.
pub(super) fn dequantized(
    q: &QuantizedWeight,
    dims: &[usize],
    block: Option<(usize, usize)>,
) -> Vec<f64> {
    let at = crate::params::scale_index(dims, q, block);
    q.values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let s = at(i);
            let z = q.zero_points.get(s).copied().unwrap_or(0);
            f64::from(i32::from(v) - z) * f64::from(q.scales[s])
        })
        .collect()
}

/// The mean output shift `(W − Ŵ) · E[x]` of each output row of a weight `w` (of `dims`,
/// laid out as `rows`) read as `w_hat`, given the layer's mean input patch `means` (`None` when
/// the layout does not match them).
pub(super) fn shift(
    rows: Rows,
    w: &[f32],
    w_hat: &[f64],
    dims: &[usize],
    means: &[f64],
) -> Option<Vec<f64>> {
    if rows.entries(dims)? != means.len() {
        return None;
    }
    let (n, per_row) = rows.shape(dims);
    Some(
        (0..n)
            .map(|o| {
                let first = rows.first_entry(dims, o);
                (0..per_row)
                    .map(|j| {
                        let i = rows.at(dims, o, j);
                        (f64::from(w[i]) - w_hat[i]) * means[first + j]
                    })
                    .sum()
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{Int4Layout, quantize_weight, quantize_weight_4bit};

    fn noise(n: usize, seed: u64) -> Vec<f32> {
        crate::params::gptq::noise(n, seed)
            .into_iter()
            .map(|v| v as f32)
            .collect()
    }

    #[test]
    fn dequantized_values_are_within_half_a_step() {
        let dims = [4, 64];
        let w = noise(256, 1);
        let layouts: [(QuantizedWeight, Option<(usize, usize)>); 3] = [
            (quantize_weight(&w, &dims, Some(0), &[], false), None),
            (
                quantize_weight_4bit(
                    &w,
                    &dims,
                    Int4Layout::Blocks { axis: 1, size: 32 },
                    &[],
                    false,
                    false,
                    false,
                ),
                Some((1, 32)),
            ),
            (
                quantize_weight_4bit(&w, &dims, Int4Layout::PerTensor, &[], false, false, true),
                None,
            ),
        ];
        for (q, block) in layouts {
            let hat = dequantized(&q, &dims, block);
            let step = q.scales.iter().copied().fold(0f32, f32::max);
            for (a, b) in w.iter().zip(&hat) {
                assert!(
                    (f64::from(*a) - b).abs() <= f64::from(step) * 0.5 + 1e-7,
                    "{a} vs {b}, step {step}"
                );
            }
        }
    }

    /// The corrected bias makes the mean output of the rounded layer equal the float layer's,
    /// on the inputs the means came from: a Gemm with transB, and a grouped Conv (1x1 taps).
    #[test]
    fn corrected_biases_zero_the_mean_output_shift() {
        let (n, k, rows) = (3, 8, 50);
        let w = noise(n * k, 2);
        let x: Vec<f64> = noise(rows * k, 3)
            .iter()
            .map(|&v| f64::from(v) + 0.5)
            .collect();
        let q = quantize_weight(&w, &[n, k], None, &[], false);
        let hat = dequantized(&q, &[n, k], None);
        let means: Vec<f64> = (0..k)
            .map(|j| (0..rows).map(|r| x[r * k + j]).sum::<f64>() / rows as f64)
            .collect();
        let s = shift(Rows::Transposed, &w, &hat, &[n, k], &means).unwrap();
        for (o, &so) in s.iter().enumerate() {
            let mean = |v: &dyn Fn(usize) -> f64| {
                (0..rows)
                    .map(|r| (0..k).map(|j| v(o * k + j) * x[r * k + j]).sum::<f64>())
                    .sum::<f64>()
                    / rows as f64
            };
            let float = mean(&|i| f64::from(w[i]));
            let rounded = mean(&|i| hat[i]) + so;
            assert!(
                (float - rounded).abs() < 1e-12,
                "channel {o}: {float} vs {rounded}"
            );
            assert!(so != 0.0);
        }
        // Conv [4, 4, 1, 1] in 2 groups over 8 channels: output o reads channels of its group
        let conv = Rows::Conv { groups: 2 };
        let wc = noise(16, 4);
        let qc = quantize_weight(&wc, &[4, 4, 1, 1], Some(0), &[], false);
        let hc = dequantized(&qc, &[4, 4, 1, 1], None);
        let s = shift(conv, &wc, &hc, &[4, 4, 1, 1], &means).unwrap();
        for o in 0..4 {
            let g = o / 2;
            let want: f64 = (0..4)
                .map(|j| (f64::from(wc[o * 4 + j]) - hc[o * 4 + j]) * means[g * 4 + j])
                .sum();
            assert!((s[o] - want).abs() < 1e-15);
        }
        assert!(shift(conv, &wc, &hc, &[4, 4, 1, 1], &means[..4]).is_none());
    }
}
