//! What bias correction and GPTQ measure of the layers they adjust, riding along the
//! calibration run (the copy tract runs): the mean input patch (Conv: each input channel ×
//! kernel tap, the zero padding at the borders counted as the layer sees it; Gemm and MatMul:
//! each input feature), and for GPTQ the products of sampled patches (`stats::Gram`).
//! `rewrite` turns them into each layer's mean output shift and GPTQ's levels.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::calib::{Collect, Extra, Floats, Sample};
use crate::error::Error;
use crate::ir::{self, Index};
use crate::params::gptq;
use crate::policy::QuantPlan;
use crate::proto::{ModelProto, NodeProto};
use crate::stats::{Gram, PatchSums};

/// How a layer forms its input patches.
#[derive(Clone, Debug, PartialEq)]
enum Geometry {
    /// A 2-D Conv: kernel, strides, dilations, pads (top, left, bottom, right) or `SAME_*`.
    Conv {
        kernel: [usize; 2],
        strides: [usize; 2],
        dilations: [usize; 2],
        pads: Pads,
    },
    /// Gemm (`transA` 0) or MatMul: one patch per row, the input's last axis.
    Matrix,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Pads {
    Explicit([usize; 4]),
    /// `auto_pad` SAME_UPPER (`true`: the extra row after) or SAME_LOWER.
    Same(bool),
}

/// One layer to measure: its weight (the key), its data input, how it reads it.
#[derive(Clone, Debug)]
struct Site {
    weight: String,
    /// Index of its input among the tensors computed.
    tensor: usize,
    geometry: Geometry,
    /// GPTQ: the diagonal blocks of the Gram matrix to sum.
    gram: Option<Vec<(usize, usize)>>,
}

/// Patches per sample and layer whose products GPTQ's Gram matrix sums (spread evenly over the
/// output positions): the products of all of them would cost more than running the network.
const ROWS_PER_SAMPLE: usize = 64;

/// Samples whose patches the Gram matrices sum at most (spread evenly over the data set):
/// 32 × 64 = 2048 patches per layer, 16 per entry of a block of 128, estimate `E[x xᵀ]` well;
/// summing every sample's would double the time of a 128-sample calibration of a ResNet-18.
const GRAM_SAMPLES: usize = 32;

fn ints(node: &NodeProto, name: &str) -> Option<Vec<usize>> {
    ir::attr(node, name).map(|a| a.ints.iter().map(|&v| v.max(0) as usize).collect())
}

/// How `node` reads its input, when bias correction knows.
fn geometry(node: &NodeProto, weight_dims: &[usize]) -> Option<Geometry> {
    match node.op_type() {
        "Conv" if weight_dims.len() == 4 => {
            let two = |name: &str| -> Option<[usize; 2]> {
                match ints(node, name).as_deref() {
                    None => Some([1, 1]),
                    Some([a, b]) if *a > 0 && *b > 0 => Some([*a, *b]),
                    _ => None,
                }
            };
            let pads = match ir::attr(node, "auto_pad")
                .map(|a| a.s().to_vec())
                .as_deref()
            {
                None | Some(b"NOTSET") => match ints(node, "pads").as_deref() {
                    None => Pads::Explicit([0; 4]),
                    Some(&[t, l, b, r]) => Pads::Explicit([t, l, b, r]),
                    _ => return None,
                },
                Some(b"VALID") => Pads::Explicit([0; 4]),
                Some(b"SAME_UPPER") => Pads::Same(true),
                Some(b"SAME_LOWER") => Pads::Same(false),
                _ => return None,
            };
            Some(Geometry::Conv {
                kernel: [weight_dims[2], weight_dims[3]],
                strides: two("strides")?,
                dilations: two("dilations")?,
                pads,
            })
        }
        "Gemm" if ir::attr_int(node, "transA").unwrap_or(0) == 0 => Some(Geometry::Matrix),
        "MatMul" if weight_dims.len() == 2 => Some(Geometry::Matrix),
        _ => None,
    }
}

/// The layers of `plan` bias correction or GPTQ adjust: a weight read by one Conv/Gemm/MatMul
/// as its weight, and that layer's data input; the input tensors in order.
fn sites(model: &ModelProto, plan: &QuantPlan) -> (Vec<Site>, Vec<String>) {
    let graph = ir::graph(model);
    let index = Index::new(graph);
    let mut tensors: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for w in &plan.weights {
        let gptq = w.gptq();
        let [(node, 1)] = w.consumers[..] else {
            continue;
        };
        if !gptq && !w.bias_correction {
            continue;
        }
        let node = index.node(node);
        let Some(geometry) = geometry(node, &w.dims) else {
            continue;
        };
        let Some(x) = node.input.first().filter(|x| !x.is_empty()) else {
            continue;
        };
        let tensor = match tensors.iter().position(|t| t == x) {
            Some(i) => i,
            None => {
                tensors.push(x.clone());
                tensors.len() - 1
            }
        };
        let gram = match crate::rewrite::rows_of(node) {
            Some(rows) if gptq => Some(gptq::blocks(rows, &w.dims)),
            _ => None,
        };
        out.push(Site {
            weight: w.initializer.clone(),
            tensor,
            geometry,
            gram,
        });
    }
    (out, tensors)
}

/// Output size and the padding before, along one axis.
fn axis(size: usize, k: usize, s: usize, d: usize, pads: Pads, which: usize) -> (usize, i64) {
    let span = d * (k - 1) + 1;
    match pads {
        Pads::Explicit(p) => {
            let (before, after) = (p[which], p[which + 2]);
            let out = (size + before + after).saturating_sub(span) / s + 1;
            (out, before as i64)
        }
        Pads::Same(upper) => {
            let out = size.div_ceil(s);
            let total = ((out - 1) * s + span).saturating_sub(size);
            let before = if upper { total / 2 } else { total - total / 2 };
            (out, before as i64)
        }
    }
}

/// A 2-D Conv's geometry over one input: kernel, strides, dilations, the input's `[N, C, H,
/// W]`, the output size and the padding before (top, left).
struct ConvShape {
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    input: [usize; 4],
    out: [usize; 2],
    before: [i64; 2],
}

impl ConvShape {
    fn of(x: &Floats, g: &Geometry) -> Result<ConvShape, String> {
        let Geometry::Conv {
            kernel: [kh, kw],
            strides: [sh, sw],
            dilations: [dh, dw],
            pads,
        } = *g
        else {
            unreachable!("a Conv's geometry")
        };
        let &[n, c, h, w] = x.shape else {
            return Err(format!("has shape {:?}, not [N, C, H, W]", x.shape));
        };
        let (oh, top) = axis(h, kh, sh, dh, pads, 0);
        let (ow, left) = axis(w, kw, sw, dw, pads, 1);
        Ok(ConvShape {
            kernel: [kh, kw],
            strides: [sh, sw],
            dilations: [dh, dw],
            input: [n, c, h, w],
            out: [oh, ow],
            before: [top, left],
        })
    }
}

/// The sums of a 2-D Conv's input patches over one input `[N, C, H, W]`: one per channel and
/// tap, and the number of patches.
fn conv_sums(x: &Floats, g: &Geometry) -> Result<(Vec<f64>, u64), String> {
    let ConvShape {
        kernel: [kh, kw],
        strides: [sh, sw],
        dilations: [dh, dw],
        input: [n, c, h, w],
        out: [oh, ow],
        before: [top, left],
    } = ConvShape::of(x, g)?;
    // the input rows (columns) each tap reads, over the output positions
    let taps = |k: usize, s: usize, d: usize, out: usize, before: i64, size: usize| {
        (0..k)
            .map(|t| {
                (0..out)
                    .map(|o| (o * s + t * d) as i64 - before)
                    .filter(|&i| i >= 0 && (i as usize) < size)
                    .map(|i| i as usize)
                    .collect::<Vec<usize>>()
            })
            .collect::<Vec<_>>()
    };
    let rows = taps(kh, sh, dh, oh, top, h);
    let cols = taps(kw, sw, dw, ow, left, w);
    let mut sums = vec![0f64; c * kh * kw];
    let mut row_sums = vec![0f64; h * kw];
    for b in 0..n {
        for ch in 0..c {
            let plane = &x.data[(b * c + ch) * h * w..(b * c + ch + 1) * h * w];
            for r in 0..h {
                for (j, cs) in cols.iter().enumerate() {
                    row_sums[r * kw + j] = cs.iter().map(|&q| f64::from(plane[r * w + q])).sum();
                }
            }
            for (i, rs) in rows.iter().enumerate() {
                for j in 0..kw {
                    sums[(ch * kh + i) * kw + j] +=
                        rs.iter().map(|&r| row_sums[r * kw + j]).sum::<f64>();
                }
            }
        }
    }
    Ok((sums, (n * oh * ow) as u64))
}

/// The sums of a matrix layer's input rows `[..., K]`.
fn matrix_sums(x: &Floats) -> Result<(Vec<f64>, u64), String> {
    let k = *x.shape.last().ok_or("is a scalar")?;
    let mut sums = vec![0f64; k];
    if k == 0 {
        return Ok((sums, 0));
    }
    for row in x.data.chunks(k) {
        for (s, v) in sums.iter_mut().zip(row) {
            *s += f64::from(*v);
        }
    }
    Ok((sums, (x.data.len() / k) as u64))
}

/// The patch of output position `p` (of `oh · ow` per image) of a Conv input: each channel's
/// taps, zero outside the input.
fn conv_patch(x: &Floats, shape: &ConvShape, p: usize, out: &mut [f64]) {
    let &ConvShape {
        kernel: [kh, kw],
        strides: [sh, sw],
        dilations: [dh, dw],
        input: [_, c, h, w],
        out: [oh, ow],
        before: [top, left],
    } = shape;
    let (b, y, z) = (p / (oh * ow), (p / ow) % oh, p % ow);
    for ch in 0..c {
        let plane = &x.data[(b * c + ch) * h * w..(b * c + ch + 1) * h * w];
        for i in 0..kh {
            let r = (y * sh + i * dh) as i64 - top;
            for j in 0..kw {
                let q = (z * sw + j * dw) as i64 - left;
                let inside = r >= 0 && q >= 0 && (r as usize) < h && (q as usize) < w;
                out[(ch * kh + i) * kw + j] = if inside {
                    f64::from(plane[r as usize * w + q as usize])
                } else {
                    0.0
                };
            }
        }
    }
}

/// The products of up to [`ROWS_PER_SAMPLE`] patches of input `x` (evenly spread) over each of
/// `blocks`, and the number of patches.
fn products(blocks: &[(usize, usize)], x: &Floats, geometry: &Geometry) -> (Vec<Vec<f64>>, u64) {
    let conv = match geometry {
        Geometry::Matrix => None,
        _ => match ConvShape::of(x, geometry) {
            Ok(shape) => Some(shape),
            Err(_) => return (Vec::new(), 0),
        },
    };
    let (patches, k) = match &conv {
        None => {
            let k = x.shape.last().copied().unwrap_or(0);
            (x.data.len().checked_div(k).unwrap_or(0), k)
        }
        Some(s) => (
            s.input[0] * s.out[0] * s.out[1],
            s.input[1] * s.kernel[0] * s.kernel[1],
        ),
    };
    let r = patches.min(ROWS_PER_SAMPLE);
    if r == 0 || k == 0 || blocks.last().is_some_and(|b| b.0 + b.1 > k) {
        return (Vec::new(), 0);
    }
    let mut rows = vec![0f64; r * k];
    for (j, row) in rows.chunks_mut(k).enumerate() {
        let p = j * patches / r;
        match geometry {
            Geometry::Matrix => {
                for (o, v) in row.iter_mut().zip(&x.data[p * k..(p + 1) * k]) {
                    *o = f64::from(*v);
                }
            }
            _ => conv_patch(x, conv.as_ref().expect("a Conv"), p, row),
        }
    }
    let mut out = Vec::with_capacity(blocks.len());
    for &(s, len) in blocks {
        let mut sums = vec![0f64; len * len];
        // sums = Xᵀ X over the block's columns of the rows (row-major r × k)
        // SAFETY: the pointers and strides describe `rows` (r × k, from column `s`, `len`
        // columns) and `sums` (len × len), all in bounds.
        unsafe {
            matrixmultiply::dgemm(
                len,
                r,
                len,
                1.0,
                rows.as_ptr().add(s),
                1,
                k as isize,
                rows.as_ptr().add(s),
                k as isize,
                1,
                0.0,
                sums.as_mut_ptr(),
                len as isize,
                1,
            );
        }
        out.push(sums);
    }
    (out, r as u64)
}

/// What bias correction and GPTQ measure of the layers of a plan, riding along calibration:
/// each sample's sums are formed in f64 by the thread that ran it, then added in fixed point
/// (exact in any order) to the one accumulator of each layer.
pub(super) struct LayerProbe {
    sites: Vec<Site>,
    /// The Gram matrices sum samples whose index is a multiple of this.
    gram_every: usize,
    /// The layers' data inputs, in the order the collectors receive them.
    tensors: Vec<String>,
    shared: Vec<Mutex<PatchSums>>,
}

impl LayerProbe {
    /// The probe of the layers of `plan` (in `model`, the written model's graph) whose weights
    /// bias correction or GPTQ adjust (`WeightSite::bias_correction`, `gptq`); `None` without.
    pub(super) fn new(model: &ModelProto, plan: &QuantPlan, samples: usize) -> Option<LayerProbe> {
        let (sites, tensors) = sites(model, plan);
        let shared = sites
            .iter()
            .map(|s| {
                Mutex::new(PatchSums {
                    gram: s.gram.clone().map(|b| Arc::new(Gram::new(b))),
                    ..PatchSums::default()
                })
            })
            .collect();
        (!sites.is_empty()).then_some(LayerProbe {
            sites,
            gram_every: samples.div_ceil(GRAM_SAMPLES).max(1),
            tensors,
            shared,
        })
    }

    /// The sums, by weight.
    pub(super) fn finish(self) -> BTreeMap<String, PatchSums> {
        let sums = self
            .shared
            .into_iter()
            .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()));
        self.sites.into_iter().map(|s| s.weight).zip(sums).collect()
    }
}

impl Extra for LayerProbe {
    fn tensors(&self) -> &[String] {
        &self.tensors
    }

    fn collector(&self) -> Box<dyn Collect + '_> {
        Box::new(Patches(self))
    }
}

/// One thread's view of a [`LayerProbe`].
struct Patches<'a>(&'a LayerProbe);

impl Collect for Patches<'_> {
    fn collect(&mut self, sample: &Sample, outputs: &[Vec<Floats>]) -> Result<(), Error> {
        let probe = self.0;
        let gram = sample.index.is_multiple_of(probe.gram_every);
        for (site, shared) in probe.sites.iter().zip(&probe.shared) {
            let x = &outputs[0][site.tensor];
            let fail = |e: String| {
                Error::Internal(format!(
                    "layer statistics: input `{}` of weight `{}` {e}",
                    probe.tensors[site.tensor], site.weight
                ))
            };
            let (sums, count) = match site.geometry {
                Geometry::Matrix => matrix_sums(x),
                _ => conv_sums(x, &site.geometry),
            }
            .map_err(fail)?;
            let products = site
                .gram
                .as_ref()
                .filter(|_| gram)
                .map(|blocks| products(blocks, x, &site.geometry));
            // into fixed point here, so the lock only guards integer additions
            let mut local = PatchSums {
                gram: products
                    .as_ref()
                    .and(site.gram.clone())
                    .map(|b| Arc::new(Gram::new(b))),
                ..PatchSums::default()
            };
            local.add(&sums, count).map_err(fail)?;
            if let (Some(g), Some((blocks, rows))) = (&mut local.gram, products) {
                let g = Arc::make_mut(g);
                for (b, s) in blocks.iter().enumerate() {
                    g.add_block(b, s);
                }
                g.rows += rows;
            }
            let mut acc = shared.lock().unwrap_or_else(|p| p.into_inner());
            acc.merge(&local).map_err(fail)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The patch sums of a padded, strided conv, against every patch formed one by one.
    #[test]
    fn conv_patch_sums_count_the_padding_as_zeros() {
        let (n, c, h, w) = (2, 3, 5, 6);
        let data: Vec<f32> = (0..n * c * h * w)
            .map(|i| ((i * 7919) % 23) as f32 - 11.0)
            .collect();
        let x = Floats {
            shape: &[n, c, h, w],
            data: &data,
        };
        for pads in [
            Pads::Explicit([1, 0, 2, 1]),
            Pads::Same(true),
            Pads::Same(false),
        ] {
            let g = Geometry::Conv {
                kernel: [3, 2],
                strides: [2, 1],
                dilations: [1, 2],
                pads,
            };
            let (sums, count) = conv_sums(&x, &g).unwrap();
            let (oh, top) = axis(h, 3, 2, 1, pads, 0);
            let (ow, left) = axis(w, 2, 1, 2, pads, 1);
            let mut want = vec![0f64; c * 6];
            for b in 0..n {
                for ch in 0..c {
                    for (i, j) in (0..3).flat_map(|i| (0..2).map(move |j| (i, j))) {
                        for (y, z) in (0..oh).flat_map(|y| (0..ow).map(move |z| (y, z))) {
                            let r = (y * 2 + i) as i64 - top;
                            let q = (z + j * 2) as i64 - left;
                            if r >= 0 && q >= 0 && (r as usize) < h && (q as usize) < w {
                                want[(ch * 3 + i) * 2 + j] += f64::from(
                                    data[((b * c + ch) * h + r as usize) * w + q as usize],
                                );
                            }
                        }
                    }
                }
            }
            assert_eq!(count, (n * oh * ow) as u64);
            assert_eq!(sums, want, "{pads:?}");
        }
    }
}
