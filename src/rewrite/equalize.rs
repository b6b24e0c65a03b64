//! Pass `equalize`: cross-layer equalization (Nagel et al., "Data-Free Quantization Through
//! Weight Equalization and Bias Correction", 2019).
//!
//! Two linear layers joined by ops that commute with a positive per-channel factor — layer 1
//! (Conv, Gemm or MatMul) → [Relu | LeakyRelu | Pad with zeros | MaxPool]* → layer 2 — compute
//! the same function when output channel `c` of layer 1 (its weights and bias) is divided by
//! `s_c > 0` and input channel `c` of layer 2 is multiplied by it. With
//! `s_c = sqrt(r1_c / r2_c)` (`r1_c`: largest |weight| of layer 1's output channel `c`, `r2_c`:
//! of layer 2's input channel `c`) both become `sqrt(r1_c · r2_c)`: the channels of each weight
//! tensor are as even as the pair allows, so one scale per tensor (per-tensor weights, and the
//! activation between the layers) no longer serves a few wide channels at the expense of the
//! rest. Depthwise convolutions take part as either layer; chains (pointwise → depthwise →
//! pointwise) are equalized pair by pair until the factors settle. Computed in f64, written as
//! float32.
//!
//! Exact: Relu, LeakyRelu, Pad (constant 0) and MaxPool commute with the factors, so the float
//! function is unchanged up to float32 rounding. A Clip from 0 to `M` (ReLU6) does not: its
//! bound would have to become `M / s_c`, per channel. [`ClipMode`] says what happens to a pair
//! through one: `Bound` (exact) makes the Clip a Relu then a Min with each channel's bound,
//! `Relu` makes it a Relu as DFQ and AIMET do (the output differs wherever the pre-activation
//! exceeded `M`; measured in docs/accuracy.md), `Skip` leaves the pair alone; the report names
//! every Clip rewritten. BatchNormalization after layer 1 must be folded first
//! (`fold_batchnorm`): its factors are part of the weights being equalized.
//!
//! Pure: the caller folds BatchNormalization and reads external weights first.

use std::collections::BTreeMap;

use serde::Serialize;

pub use crate::config::ClipMode;
use crate::ir::{self, Index, NodeId, Patch};
use crate::onnx::tensor::{f32_data, f32_tensor};
use crate::params::Rows;
use crate::proto::{ModelProto, NodeProto};

/// The factors of a round change the weights less than this (|ln s|): equalized.
const SETTLED: f64 = 1e-9;
/// Rounds over the pairs at most (chains of two pairs settle in a few dozen).
const MAX_ROUNDS: usize = 500;

/// What equalization did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Equalized {
    /// The pairs equalized: (layer 1, layer 2) by node label.
    pub pairs: Vec<(String, String)>,
    /// Clips from 0 to a bound rewritten (`ClipMode::Bound`, `Relu`), by node label.
    pub clips: Vec<String>,
    /// Rounds until the factors settled.
    pub rounds: usize,
    /// Median over the pairs' layers of (largest / smallest channel range), before and after.
    pub spread_before: f64,
    pub spread_after: f64,
}

/// One linear layer taking part in a pair.
#[derive(Clone, Debug)]
pub(super) struct Layer {
    pub node: NodeId,
    pub weight: String,
    pub bias: Option<String>,
    pub layout: Rows,
}

/// A float weight being equalized: its values as read, and the factors found so far (f64),
/// applied once when the weight is written: `w · inp[in channel] / out[out channel]`.
pub(super) struct Values {
    pub dims: Vec<usize>,
    pub v: Vec<f32>,
    /// How the weight is laid out (a weight has one reader, so one layout).
    pub layout: Rows,
    /// Per output channel: the weight (and the bias) is divided by it.
    pub out: Vec<f64>,
    /// Per input channel: the weight is multiplied by it.
    pub inp: Vec<f64>,
}

impl Values {
    /// Calls `f(out channel, in channel, value)` for every entry in flat order, the value as
    /// the factors so far make it (one product per entry, the factor once per run).
    pub(super) fn visit(&self, mut f: impl FnMut(usize, usize, f64)) {
        let d = &self.dims;
        let inv: Vec<f64> = self.out.iter().map(|o| 1.0 / o).collect();
        match self.layout {
            Rows::Conv { groups: group } => {
                let cpg = d[1];
                let taps: usize = d[2..].iter().product();
                let opg = d[0] / group;
                for (o, &inv_o) in inv.iter().enumerate() {
                    for j in 0..cpg {
                        let c = (o / opg) * cpg + j;
                        let k = self.inp[c] * inv_o;
                        let start = (o * cpg + j) * taps;
                        for &x in &self.v[start..start + taps] {
                            f(o, c, f64::from(x) * k);
                        }
                    }
                }
            }
            Rows::Transposed | Rows::Matrix => {
                let transposed = self.layout == Rows::Transposed;
                let (rows, cols) = (d[0], d[1]);
                for r in 0..rows {
                    for q in 0..cols {
                        let (o, c) = if transposed { (r, q) } else { (q, r) };
                        f(o, c, f64::from(self.v[r * cols + q]) * self.inp[c] * inv[o]);
                    }
                }
            }
        }
    }

    /// The largest |w| of each output channel and of each input channel.
    fn ranges(&self) -> (Vec<f64>, Vec<f64>) {
        let (mut out, mut inp) = (vec![0f64; self.out.len()], vec![0f64; self.inp.len()]);
        self.visit(|o, c, x| {
            out[o] = out[o].max(x.abs());
            inp[c] = inp[c].max(x.abs());
        });
        (out, inp)
    }

    /// The rescaled weight, as float32.
    fn scaled(&self) -> Vec<f32> {
        let mut w = Vec::with_capacity(self.v.len());
        self.visit(|_, _, x| w.push(x as f32));
        w
    }
}

/// A float initializer nothing but `node` reads (not a graph input or output, not captured).
pub(super) fn own_float<'g>(
    index: &Index<'g>,
    name: &str,
    node: NodeId,
) -> Option<&'g crate::proto::TensorProto> {
    let t = index.initializer(name)?;
    let ok = index.consumers(name).iter().all(|&(n, _)| n == node)
        && !index.is_graph_input(name)
        && !index.is_graph_output(name)
        && !index.is_captured(name)
        && t.data_type == Some(crate::proto::tensor_proto::DataType::Float as i32);
    ok.then_some(t)
}

/// `node` as a layer whose weights can be rescaled (`first`: as layer 1, whose bias scales too).
pub(super) fn layer(index: &Index, id: NodeId, first: bool) -> Option<Layer> {
    let node = index.node(id);
    if !ir::is_default_domain(node.domain()) {
        return None;
    }
    let weight = node.input.get(1)?;
    let w = own_float(index, weight, id)?;
    let takes = match node.op_type() {
        "Conv" => true,
        "Gemm" => ir::attr_int(node, "transA").unwrap_or(0) == 0,
        "MatMul" => w.dims.len() == 2,
        _ => false,
    };
    let layout = super::rows_of(node).filter(|_| takes)?;
    let dims: Vec<usize> = w.dims.iter().map(|&d| d as usize).collect();
    let (out, _) = layout.channels(&dims)?;
    let bias = match node.input.get(2).filter(|b| !b.is_empty()) {
        None => None,
        Some(b) if first => {
            let t = own_float(index, b, id)?;
            // a bias per output channel ([N] or [1, N]); a broadcast scalar cannot be scaled
            (t.dims.iter().product::<i64>() == out as i64 && t.dims.last() == Some(&(out as i64)))
                .then(|| b.clone())?
                .into()
        }
        Some(_) => None,
    };
    Some(Layer {
        node: id,
        weight: weight.clone(),
        bias,
        layout,
    })
}

/// Whether `node`, between the layers, commutes with positive per-channel factors (`Some(false)`)
/// or is a Clip from 0 that will become a Relu (`Some(true)`). Ops of a pair of Convs only
/// where noted.
fn between(index: &Index, node: &NodeProto, convs: bool) -> Option<bool> {
    if !ir::is_default_domain(node.domain())
        || node.output.iter().filter(|o| !o.is_empty()).count() != 1
    {
        return None;
    }
    match node.op_type() {
        "Relu" => Some(false),
        "LeakyRelu" => Some(false),
        "Clip" => match super::fold_relu::clip_bounds(index, node)? {
            (0.0, None) => Some(false),
            (lo, Some(hi)) if lo == 0.0 && hi > 0.0 => Some(true),
            _ => None,
        },
        "MaxPool" if convs => Some(false),
        "Pad" if convs => {
            let mode = ir::attr(node, "mode").map(|a| a.s().to_vec());
            let constant = mode.is_none_or(|m| m == b"constant");
            let zero = match node.input.get(2).filter(|v| !v.is_empty()) {
                None => true,
                Some(v) => index
                    .initializer(v)
                    .and_then(|t| f32_data(t).ok())
                    .is_some_and(|v| v.iter().all(|&x| x == 0.0)),
            };
            // opset < 11 keeps pads and value as attributes
            let attr_zero = ir::attr(node, "value").is_none_or(|a| a.f() == 0.0);
            (constant && zero && attr_zero && node.input.get(3).is_none_or(|a| a.is_empty()))
                .then_some(false)
        }
        _ => None,
    }
}

/// The pairs of `model`'s main graph: (layer 1, layer 2, Clips between them).
fn pairs(index: &Index, graph: &crate::proto::GraphProto) -> Vec<(Layer, Layer, Vec<NodeId>)> {
    let mut out = Vec::new();
    for id in 0..graph.node.len() {
        let Some(first) = layer(index, id, true) else {
            continue;
        };
        let convs = matches!(first.layout, Rows::Conv { .. });
        let mut clips = Vec::new();
        let mut t = match graph.node[id].output.first() {
            Some(t) => t.clone(),
            None => continue,
        };
        let second = loop {
            let single = index.consumers(&t).len() == 1
                && !index.is_graph_output(&t)
                && !index.is_captured(&t);
            let &[(next, slot)] = index.consumers(&t) else {
                break None;
            };
            if !single || slot != 0 {
                break None;
            }
            let node = index.node(next);
            if let Some(second) = layer(index, next, false) {
                break Some(second);
            }
            match between(index, node, convs) {
                Some(clip) => {
                    if clip {
                        clips.push(next);
                    }
                    t = node.output[0].clone();
                }
                None => break None,
            }
        };
        let Some(second) = second else {
            continue;
        };
        if convs != matches!(second.layout, Rows::Conv { .. }) {
            continue;
        }
        out.push((first, second, clips));
    }
    out
}

fn spread(r: &[f64]) -> f64 {
    let hi = r.iter().copied().fold(0.0, f64::max);
    let lo = r
        .iter()
        .copied()
        .filter(|&x| x > 0.0)
        .fold(f64::INFINITY, f64::min);
    if lo.is_finite() { hi / lo } else { 1.0 }
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 1.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The Clip from 0 `clip` (node `id`) rewritten by `patch` as a Relu then a Min with `bound`,
/// one value per channel of an activation of `rank` (channels on axis 1).
pub(super) fn relu_then_min(
    (id, clip): (NodeId, &NodeProto),
    bound: &[f32],
    rank: usize,
    names: &mut ir::Names,
    patch: &mut Patch,
) {
    let mut dims = vec![bound.len()];
    dims.resize(rank - 1, 1);
    let base = clip.name().to_string();
    let (relu_out, bound_name) = (
        names.fresh(&format!("{}_relu", clip.output[0])),
        names.fresh(&format!("{base}_bound")),
    );
    patch
        .add_initializers
        .push(f32_tensor(&bound_name, &dims, bound));
    let relu = NodeProto {
        op_type: Some("Relu".into()),
        input: vec![clip.input[0].clone()],
        output: vec![relu_out.clone()],
        attribute: Vec::new(),
        ..clip.clone()
    };
    let min = NodeProto {
        name: Some(names.fresh(&format!("{base}_min"))),
        op_type: Some("Min".into()),
        input: vec![relu_out, bound_name],
        output: vec![clip.output[0].clone()],
        ..Default::default()
    };
    patch.replace.push((id, relu));
    patch
        .nodes
        .push((ir::Placement::After(clip.input[0].clone()), min));
}

/// The bounds of the Clips in `replaced` (now Relus) that nothing else reads, removed by `patch`.
pub(super) fn drop_unread_bounds(index: &Index, replaced: &[NodeId], patch: &mut Patch) {
    for &c in replaced {
        for b in index.node(c).input.iter().skip(1).filter(|b| !b.is_empty()) {
            let unread = index.consumers(b).iter().all(|(n, _)| replaced.contains(n));
            if unread
                && index.initializer(b).is_some()
                && !index.is_graph_input(b)
                && !index.is_graph_output(b)
                && !index.is_captured(b)
                && !patch.remove_initializers.contains(b)
            {
                patch.remove_initializers.push(b.clone());
            }
        }
    }
}

/// Equalizes every pair of `model`'s main graph in place. Weights still in external files
/// are not touched (the caller reads them in first); a model without pairs is left as it is.
// The steps share the pairs and the weights being rescaled: find the pairs, read their weights,
// find the factors (f64) round after round until they settle, write the weights back rescaled
// once and turn the Clips between rescaled layers into Relus.
pub fn equalize(model: &mut ModelProto, clip_mode: ClipMode) -> Result<Equalized, String> {
    let graph = ir::graph(model);
    let index = Index::new(graph);
    let mut found = pairs(&index, graph);
    if clip_mode == ClipMode::Skip {
        found.retain(|(_, _, clips)| clips.is_empty());
    }
    let mut values: BTreeMap<String, Values> = BTreeMap::new();
    let mut biases: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let mut read = |l: &Layer| -> Result<(), String> {
        if !values.contains_key(&l.weight) {
            let t = index
                .initializer(&l.weight)
                .ok_or_else(|| format!("no initializer `{}`", l.weight))?;
            let v = f32_data(t).map_err(|e| format!("`{}` {e}", l.weight))?;
            let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
            let (out, inp) = l.layout.channels(&dims).ok_or("checked by `layer`")?;
            let values_of = Values {
                dims,
                v,
                layout: l.layout,
                out: vec![1.0; out],
                inp: vec![1.0; inp],
            };
            values.insert(l.weight.clone(), values_of);
        }
        if let Some(b) = &l.bias {
            let t = index
                .initializer(b)
                .ok_or_else(|| format!("no initializer `{b}`"))?;
            biases.insert(b.clone(), f32_data(t).map_err(|e| format!("`{b}` {e}"))?);
        }
        Ok(())
    };
    for (a, b, _) in &found {
        read(a)?;
        read(b)?;
    }
    // channel counts must agree
    found.retain(|(a, b, _)| values[&a.weight].out.len() == values[&b.weight].inp.len());
    let mut report = Equalized::default();
    if found.is_empty() {
        return Ok(report);
    }
    let layer_spreads = |values: &BTreeMap<String, Values>| {
        let s = found
            .iter()
            .flat_map(|(a, b, _)| [a, b])
            .map(|l| spread(&values[&l.weight].ranges().0))
            .collect();
        median(s)
    };
    report.spread_before = layer_spreads(&values);
    for round in 1..=MAX_ROUNDS {
        let mut largest = 0f64;
        for (a, b, _) in &found {
            let r1 = values[&a.weight].ranges().0;
            let r2 = values[&b.weight].ranges().1;
            let s: Vec<f64> = r1
                .iter()
                .zip(&r2)
                .map(|(&x, &y)| {
                    if x > 0.0 && y > 0.0 {
                        (x / y).sqrt()
                    } else {
                        1.0
                    }
                })
                .collect();
            largest = s.iter().fold(largest, |m, f| m.max(f.ln().abs()));
            let wa = values.get_mut(&a.weight).expect("read");
            wa.out.iter_mut().zip(&s).for_each(|(o, f)| *o *= f);
            let wb = values.get_mut(&b.weight).expect("read");
            wb.inp.iter_mut().zip(&s).for_each(|(c, f)| *c *= f);
        }
        report.rounds = round;
        if largest < SETTLED {
            break;
        }
    }
    // each pair's factors: what layer 1's output channels were divided by (a Clip's bound)
    let factors: Vec<Vec<f64>> = found
        .iter()
        .map(|(a, _, _)| values[&a.weight].out.clone())
        .collect();
    report.spread_after = layer_spreads(&values);
    let labels = |id: NodeId| ir::node_label(&graph.node[id], id);
    report.pairs = found
        .iter()
        .map(|(a, b, _)| (labels(a.node), labels(b.node)))
        .collect();
    let mut patch = Patch::default();
    let mut replaced = Vec::new();
    let mut names = ir::Names::new(&index);
    for ((a, _, clips), s) in found.iter().zip(&factors) {
        if s.iter().all(|&f| f == 1.0) {
            continue;
        }
        for &c in clips {
            let clip = &graph.node[c];
            report.clips.push(labels(c));
            replaced.push(c);
            if clip_mode != ClipMode::Bound {
                let relu = NodeProto {
                    op_type: Some("Relu".into()),
                    input: vec![clip.input[0].clone()],
                    attribute: Vec::new(),
                    ..clip.clone()
                };
                patch.replace.push((c, relu));
                continue;
            }
            // Relu → Min(·, M / s): the Clip, channel by channel
            let (_, Some(hi)) = super::fold_relu::clip_bounds(&index, clip).expect("a Clip from 0")
            else {
                unreachable!("only bounded Clips are recorded")
            };
            let bound: Vec<f32> = s.iter().map(|&f| (f64::from(hi) / f) as f32).collect();
            let rank = match a.layout {
                Rows::Conv { .. } => values[&a.weight].dims.len(),
                Rows::Transposed | Rows::Matrix => 2,
            };
            relu_then_min((c, clip), &bound, rank, &mut names, &mut patch);
        }
    }
    drop_unread_bounds(&index, &replaced, &mut patch);
    // the layer-1 bias of each pair, by name, and the factors dividing it
    let bias_factors: BTreeMap<&String, &Vec<f64>> = found
        .iter()
        .filter_map(|(a, _, _)| Some((a.bias.as_ref()?, &values[&a.weight].out)))
        .collect();
    let graph = ir::graph_mut(model);
    for t in graph.initializer.iter_mut() {
        if let Some(v) = values.get(t.name()) {
            *t = f32_tensor(t.name(), &v.dims, &v.scaled());
        } else if let (Some(b), Some(out)) = (
            biases.get(t.name()),
            bias_factors.get(&t.name().to_string()),
        ) {
            let f: Vec<f32> = b
                .iter()
                .zip(out.iter())
                .map(|(&x, o)| (f64::from(x) / o) as f32)
                .collect();
            *t = f32_tensor(
                t.name(),
                &t.dims.iter().map(|&d| d as usize).collect::<Vec<_>>(),
                &f,
            );
        }
    }
    if !patch.is_empty() {
        ir::apply(model, patch).map_err(|e| format!("pass `equalize` broke the graph: {e}"))?;
    }
    Ok(report)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::ir::testnet::Net;

    /// A small deterministic generator (xorshift), uniform in [-1, 1).
    pub(in crate::rewrite) struct Rng(pub u64);

    impl Rng {
        pub(in crate::rewrite) fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        }
    }

    pub(in crate::rewrite) fn values(model: &ModelProto, name: &str) -> Vec<f64> {
        let t = ir::graph(model)
            .initializer
            .iter()
            .find(|t| t.name() == name)
            .unwrap();
        f32_data(t).unwrap().into_iter().map(f64::from).collect()
    }

    /// `x [B, K] · W [K, N] + b` (`W` stored `[N, K]` when `transposed`).
    pub(in crate::rewrite) fn gemm(
        x: &[f64],
        k: usize,
        w: &[f64],
        b: &[f64],
        transposed: bool,
    ) -> Vec<f64> {
        let n = b.len();
        x.chunks(k)
            .flat_map(|row| {
                (0..n).map(move |j| {
                    let at = |i: usize| {
                        if transposed {
                            w[j * k + i]
                        } else {
                            w[i * n + j]
                        }
                    };
                    (0..k).map(|i| row[i] * at(i)).sum::<f64>() + b[j]
                })
            })
            .collect()
    }

    /// Gemm (W1 `[N, K]`, transB) → Relu or Clip(0, 6) → Gemm (W2 `[K2, N]`... as `[N, M]`),
    /// output channels of the first spread over three orders of magnitude.
    fn pair(clip: bool) -> (ModelProto, Vec<f64>) {
        pair_lifted(clip, &[0.0; 5])
    }

    /// [`pair`] with `lift[c]` (times channel `c`'s spread) added to layer 1's bias.
    pub(in crate::rewrite) fn pair_lifted(clip: bool, lift: &[f64]) -> (ModelProto, Vec<f64>) {
        let (k, n, m) = (6, 5, 4);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let spread: Vec<f64> = (0..n).map(|c| 10f64.powf(c as f64 * 0.75 - 1.5)).collect();
        let w1: Vec<f32> = (0..n * k)
            .map(|i| (rng.next() * spread[i / k]) as f32)
            .collect();
        let b1: Vec<f32> = (0..n)
            .map(|c| ((rng.next() + lift[c]) * spread[c]) as f32)
            .collect();
        let w2: Vec<f32> = (0..n * m).map(|_| rng.next() as f32).collect();
        let b2: Vec<f32> = (0..m).map(|_| rng.next() as f32).collect();
        let mut net = Net::new(&["x"]);
        net.typed("x", &[3, k]);
        net.init(f32_tensor("w1", &[n, k], &w1))
            .init(f32_tensor("b1", &[n], &b1));
        net.init(f32_tensor("w2", &[n, m], &w2))
            .init(f32_tensor("b2", &[m], &b2));
        net.node("Gemm", "first", &["x", "w1", "b1"], &["h"])
            .attr_int("transB", 1);
        if clip {
            net.init(f32_tensor("lo", &[], &[0.0]))
                .init(f32_tensor("hi", &[], &[6.0]));
            net.node("Clip", "act", &["h", "lo", "hi"], &["a"]);
        } else {
            net.node("Relu", "act", &["h"], &["a"]);
        }
        net.node("Gemm", "second", &["a", "w2", "b2"], &["y"]);
        net.typed("h", &[3, n])
            .typed("a", &[3, n])
            .typed("y", &[3, m])
            .output("y");
        let x: Vec<f64> = (0..3 * k).map(|_| rng.next() * 3.0).collect();
        (net.model(), x)
    }

    /// The float function of [`pair`]'s model (with its Clip, or Relu then Min, when there).
    pub(in crate::rewrite) fn run(model: &ModelProto, x: &[f64]) -> Vec<f64> {
        let g = ir::graph(model);
        let h = gemm(x, 6, &values(model, "w1"), &values(model, "b1"), true);
        let bound: Option<Vec<f64>> = g
            .node
            .iter()
            .find(|n| n.op_type() == "Min")
            .map(|n| values(model, &n.input[1]));
        let clip = g.node.iter().any(|n| n.op_type() == "Clip");
        let a: Vec<f64> = h
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let r = v.max(0.0);
                match (&bound, clip) {
                    (Some(b), _) => r.min(b[i % b.len()]),
                    (None, true) => r.min(6.0),
                    (None, false) => r,
                }
            })
            .collect();
        gemm(&a, 5, &values(model, "w2"), &values(model, "b2"), false)
    }

    fn out_ranges(model: &ModelProto) -> Vec<f64> {
        let w = values(model, "w1");
        w.chunks(6)
            .map(|r| r.iter().fold(0f64, |m, v| m.max(v.abs())))
            .collect()
    }

    pub(in crate::rewrite) fn close(a: &[f64], b: &[f64]) {
        let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-5 * scale, "{x} vs {y} (scale {scale})");
        }
    }

    #[test]
    fn a_relu_pair_keeps_its_float_function_and_evens_its_ranges() {
        let (mut model, x) = pair(false);
        let before = run(&model, &x);
        let spread_before = spread(&out_ranges(&model));
        let e = equalize(&mut model, ClipMode::Bound).unwrap();
        assert_eq!(e.pairs.len(), 1);
        assert!(e.clips.is_empty());
        close(&run(&model, &x), &before);
        // one pair settles in one round: both layers' channel ranges become sqrt(r1 · r2)
        let (r1, w2) = (out_ranges(&model), values(&model, "w2"));
        for (c, r) in r1.iter().enumerate() {
            let r2 = w2[c * 4..c * 4 + 4]
                .iter()
                .fold(0f64, |m, v| m.max(v.abs()));
            assert!((r - r2).abs() <= 1e-6 * r, "channel {c}: {r} vs {r2}");
        }
        assert!(
            spread_before > 500.0 && spread(&r1) < spread_before / 10.0,
            "{spread_before} → {}",
            spread(&r1)
        );
    }

    #[test]
    fn a_relu6_pair_is_exact_with_bounds_and_left_alone_with_skip() {
        let (mut model, x) = pair(true);
        let before = run(&model, &x);
        let mut skipped = model.clone();
        let e = equalize(&mut model, ClipMode::Bound).unwrap();
        assert_eq!(e.clips, vec!["act".to_string()]);
        let ops: Vec<&str> = ir::graph(&model).node.iter().map(|n| n.op_type()).collect();
        assert_eq!(ops, ["Gemm", "Relu", "Min", "Gemm"]);
        close(&run(&model, &x), &before);
        // the bounds the Clip read are gone with it
        assert!(
            ir::graph(&model)
                .initializer
                .iter()
                .all(|t| t.name() != "hi")
        );
        let e = equalize(&mut skipped, ClipMode::Skip).unwrap();
        assert!(e.pairs.is_empty());
        assert_eq!(run(&skipped, &x), before);
    }
}
