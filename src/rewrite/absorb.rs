//! Pass `absorb-bias`: high-bias absorption (Nagel et al., "Data-Free Quantization Through
//! Weight Equalization and Bias Correction", 2019, §4.2), after equalization.
//!
//! Equalization divides a channel's weights and bias by its factor: a channel whose weights
//! were small comes out with a large bias, and its activations with a large offset that the
//! activation's one scale must cover. When layer 1's pre-activation `x_c` never falls below
//! `a_c ≥ 0`, the `a_c` can move into layer 2: layer 1's bias loses it, layer 2's bias gains
//! `W₂ · a` (each output's weights of channel `c`, summed over the kernel, times `a_c`), and
//! the activation between them spans `[0, max x_c − a_c]` instead of `[0, max x_c]`.
//!
//! Exact where `x_c ≥ a_c`: there `Relu(x − a) + a = Relu(x)`, a MaxPool commutes with the
//! shift, and a per-channel bound `M_c` (a Clip from 0 to `M`, or equalization's Relu then Min)
//! becomes `M_c − a_c` (with `a_c ≤ M_c`). Where some value falls below `a_c` the output
//! differs by `a_c − max(x, 0)` there, so the shifts come from data ([`shift`]): at most the
//! smallest value each channel took on the samples measured, and at most its mean less three
//! standard deviations (DFQ's own rule, there from BatchNormalization's parameters). Only pairs
//! whose layer 2 reads every input position through a real weight are taken: a Conv without
//! padding, or a Gemm. Zero padding would read `0` where the original read `a_c`, and a Pad
//! between the layers likewise, so those pairs are left as they are.
//!
//! Pure: the caller measures the pre-activations (`pipeline/absorb.rs`) and reads external
//! weights in first.

use std::collections::BTreeMap;

use super::equalize::{Layer, Values, drop_unread_bounds, layer, own_float, relu_then_min};
use crate::ir::{self, Index, NodeId, Patch};
use crate::onnx::tensor::{f32_data, f32_tensor};
use crate::params::Rows;
use crate::proto::{ModelProto, NodeProto};

/// A pre-activation value below its channel's mean by more than this many standard
/// deviations is taken to occur (the shift stays above it).
const SIGMAS: f64 = 3.0;

/// An op between the layers that the shift passes through.
#[derive(Clone, Debug)]
enum Step {
    /// Relu, or a Clip from 0 without upper bound.
    Relu,
    /// A Clip from 0 to this bound, which becomes a Relu then a Min with each channel's bound.
    Clip(NodeId, f32),
    /// A Min with a per-channel constant (equalization's bounds): the initializer.
    Bound(String),
    MaxPool,
}

/// A pair of layers whose channels between can shift.
#[derive(Clone, Debug)]
pub struct Site {
    first: Layer,
    second: Layer,
    /// Layer 1's output: the pre-activation whose per-channel minima bound the shifts
    /// (channels on axis 1).
    pub pre: String,
    pub channels: usize,
    /// The pre-activation's rank (a Conv's weight rank, a Gemm's 2).
    rank: usize,
    /// Layer 1 and layer 2, by node label.
    pub labels: (String, String),
    steps: Vec<Step>,
    /// Layer 2's bias, when it has one (its own, one value per output channel).
    bias2: Option<String>,
}

/// What a pre-activation's channel did on the samples measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Measured {
    pub min: Vec<f64>,
    pub max: Vec<f64>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

/// What absorption did.
#[derive(Clone, Debug, Default)]
pub struct Absorbed {
    /// Pairs whose layer 2 took some shift: (layer 1, layer 2) by label.
    pub pairs: Vec<(String, String)>,
    /// Channels shifted, over all pairs.
    pub channels: usize,
    /// Per pair: the largest activation between the layers on the samples measured (`Relu`
    /// and the bounds applied), before and after.
    pub range_before: Vec<f64>,
    pub range_after: Vec<f64>,
    /// Clips from 0 to a bound rewritten as a Relu then a Min, by label.
    pub clips: Vec<String>,
}

/// Whether a Conv reads no padding: explicit pads all zero, `auto_pad` absent, NOTSET or VALID.
fn unpadded(node: &NodeProto) -> bool {
    let auto = ir::attr(node, "auto_pad").map(|a| a.s().to_vec());
    let auto_ok = auto.is_none_or(|a| a.is_empty() || a == b"NOTSET" || a == b"VALID");
    let pads_ok = ir::attr(node, "pads").is_none_or(|a| a.ints.iter().all(|&p| p == 0));
    auto_ok && pads_ok
}

/// A Gemm computes `alpha · A·B + beta · C` with both factors 1.
fn plain_gemm(node: &NodeProto) -> bool {
    let one = |name: &str| ir::attr(node, name).is_none_or(|a| a.f() == 1.0);
    one("alpha") && one("beta")
}

/// `node`, reading the pre-activation's channels, as a step the shift passes through.
fn step(index: &Index, id: NodeId, channels: usize, rank: usize) -> Option<Step> {
    let node = index.node(id);
    if !ir::is_default_domain(node.domain())
        || node.output.iter().filter(|o| !o.is_empty()).count() != 1
    {
        return None;
    }
    match node.op_type() {
        "Relu" => Some(Step::Relu),
        "Clip" => match super::fold_relu::clip_bounds(index, node)? {
            (0.0, None) => Some(Step::Relu),
            (0.0, Some(hi)) if hi > 0.0 => Some(Step::Clip(id, hi)),
            _ => None,
        },
        "MaxPool" if rank > 2 => Some(Step::MaxPool),
        "Min" if node.input.len() == 2 => {
            let b = &node.input[1];
            let t = own_float(index, b, id)?;
            // one value per channel, laid out along axis 1 of the activation
            let mut dims: Vec<i64> = t.dims.clone();
            while dims.len() > rank - 1 && dims.first() == Some(&1) {
                dims.remove(0);
            }
            let per_channel = dims.first() == Some(&(channels as i64))
                && dims.len() == rank - 1
                && dims[1..].iter().all(|&d| d == 1);
            per_channel.then(|| Step::Bound(b.clone()))
        }
        _ => None,
    }
}

/// The pairs of `model`'s main graph whose channels between can shift: layer 1 (Conv or Gemm
/// with its own bias) → Relu (or Clip from 0), MaxPool, per-channel Min → layer 2 (Conv without
/// padding, or a Gemm with factors 1), each tensor read by the next op only.
pub fn sites(model: &ModelProto) -> Vec<Site> {
    let graph = ir::graph(model);
    let index = Index::new(graph);
    let mut out = Vec::new();
    for id in 0..graph.node.len() {
        let node = &graph.node[id];
        let Some(first) = layer(&index, id, true) else {
            continue;
        };
        if first.bias.is_none() || (node.op_type() == "Gemm" && !plain_gemm(node)) {
            continue;
        }
        let w = index
            .initializer(&first.weight)
            .expect("checked by `layer`");
        let dims: Vec<usize> = w.dims.iter().map(|&d| d as usize).collect();
        let Some((channels, _)) = first.layout.channels(&dims) else {
            continue;
        };
        // the activation's rank: a Conv's weight rank, a Gemm's 2
        let rank = match first.layout {
            Rows::Conv { .. } => dims.len(),
            _ => 2,
        };
        let Some(pre) = node.output.first().filter(|t| !t.is_empty()) else {
            continue;
        };
        let mut steps = Vec::new();
        let mut t = pre.clone();
        let second = loop {
            let &[(next, 0)] = index.consumers(&t) else {
                break None;
            };
            if index.is_graph_output(&t) || index.is_captured(&t) {
                break None;
            }
            if let Some(second) = layer(&index, next, false) {
                break Some((next, second));
            }
            match step(&index, next, channels, rank) {
                Some(s) => {
                    steps.push(s);
                    t = index.node(next).output[0].clone();
                }
                None => break None,
            }
        };
        let Some((id2, second)) = second else {
            continue;
        };
        let node2 = index.node(id2);
        let relu = steps
            .iter()
            .any(|s| matches!(s, Step::Relu | Step::Clip(..)));
        let whole = match second.layout {
            Rows::Conv { .. } => rank > 2 && unpadded(node2),
            Rows::Transposed | Rows::Matrix => {
                rank == 2 && node2.op_type() == "Gemm" && plain_gemm(node2)
            }
        };
        let w2 = index
            .initializer(&second.weight)
            .expect("checked by `layer`");
        let dims2: Vec<usize> = w2.dims.iter().map(|&d| d as usize).collect();
        let Some((out2, in2)) = second.layout.channels(&dims2) else {
            continue;
        };
        // layer 2's bias: its own, one per output channel, or none yet
        let bias2 = match node2.input.get(2).filter(|b| !b.is_empty()) {
            None => Some(None),
            Some(b) => own_float(&index, b, id2)
                .filter(|t| {
                    t.dims.iter().product::<i64>() == out2 as i64
                        && t.dims.last() == Some(&(out2 as i64))
                })
                .map(|_| Some(b.clone())),
        };
        let (Some(bias2), true, true, true) = (bias2, relu, whole, in2 == channels) else {
            continue;
        };
        out.push(Site {
            labels: (ir::node_label(node, id), ir::node_label(node2, id2)),
            first,
            second,
            pre: pre.clone(),
            channels,
            rank,
            steps,
            bias2,
        });
    }
    out
}

/// DFQ's shift of each channel from what its pre-activation did: `max(0, min(smallest value
/// seen, mean − 3σ))`.
pub fn shift(m: &Measured) -> Vec<f64> {
    m.min
        .iter()
        .zip(&m.mean)
        .zip(&m.std)
        .map(|((&lo, &mu), &sd)| lo.min(mu - SIGMAS * sd).max(0.0))
        .collect()
}

/// Moves `shifts[i]` (per channel, from [`shift`]) of every pair `sites[i]` from layer 1's bias
/// into layer 2's, capped by the bounds on the way. `measured[i]` gives the report its
/// before/after ranges.
pub fn absorb(
    model: &mut ModelProto,
    sites: &[Site],
    shifts: &[Vec<f64>],
    measured: &[Measured],
) -> Result<Absorbed, String> {
    let graph = ir::graph(model);
    let index = Index::new(graph);
    let mut names = ir::Names::new(&index);
    let mut patch = Patch::default();
    let mut report = Absorbed::default();
    let mut replaced = Vec::new();
    // the values written so far, by initializer: a layer can be layer 2 of one pair and
    // layer 1 of the next
    let mut values: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let read = |values: &BTreeMap<String, Vec<f32>>, name: &str| -> Result<Vec<f32>, String> {
        if let Some(v) = values.get(name) {
            return Ok(v.clone());
        }
        let t = index
            .initializer(name)
            .ok_or_else(|| format!("no initializer `{name}`"))?;
        f32_data(t).map_err(|e| format!("`{name}` {e}"))
    };
    for ((site, a), m) in sites.iter().zip(shifts).zip(measured) {
        // the bounds on the way cap the shift
        let mut cap = vec![f64::INFINITY; site.channels];
        for s in &site.steps {
            match s {
                Step::Clip(_, hi) => cap.iter_mut().for_each(|c| *c = c.min(f64::from(*hi))),
                Step::Bound(b) => {
                    for (c, &v) in cap.iter_mut().zip(&read(&values, b)?) {
                        *c = c.min(f64::from(v));
                    }
                }
                Step::Relu | Step::MaxPool => {}
            }
        }
        let a: Vec<f64> = a.iter().zip(&cap).map(|(&x, &c)| x.min(c)).collect();
        if a.iter().all(|&x| x == 0.0) {
            continue;
        }
        report.channels += a.iter().filter(|&&x| x > 0.0).count();
        report.pairs.push(site.labels.clone());
        let top = |shifted: bool| {
            m.max
                .iter()
                .zip(&cap)
                .zip(&a)
                .map(|((&x, &c), &s)| {
                    let s = if shifted { s } else { 0.0 };
                    (x.min(c) - s).max(0.0)
                })
                .fold(0.0, f64::max)
        };
        report.range_before.push(top(false));
        report.range_after.push(top(true));
        // layer 1's bias loses the shift
        let b1 = site.first.bias.as_ref().expect("sites have a layer-1 bias");
        let new_b1: Vec<f32> = read(&values, b1)?
            .iter()
            .zip(&a)
            .map(|(&b, &s)| (f64::from(b) - s) as f32)
            .collect();
        values.insert(b1.clone(), new_b1);
        // layer 2's bias gains W₂ · a
        let w = index
            .initializer(&site.second.weight)
            .ok_or("checked by `sites`")?;
        let dims: Vec<usize> = w.dims.iter().map(|&d| d as usize).collect();
        let (out, inp) = site.second.layout.channels(&dims).ok_or("checked")?;
        let w2 = Values {
            v: f32_data(w).map_err(|e| format!("`{}` {e}", site.second.weight))?,
            dims,
            layout: site.second.layout,
            out: vec![1.0; out],
            inp: vec![1.0; inp],
        };
        let mut gain = vec![0f64; out];
        w2.visit(|o, c, x| gain[o] += x * a[c]);
        match &site.bias2 {
            Some(b2) => {
                let new_b2 = read(&values, b2)?
                    .iter()
                    .zip(&gain)
                    .map(|(&b, &g)| (f64::from(b) + g) as f32)
                    .collect();
                values.insert(b2.clone(), new_b2);
            }
            None => {
                let node2 = index.node(site.second.node);
                let name = names.fresh(&format!("{}_absorbed_bias", node2.name()));
                let b: Vec<f32> = gain.iter().map(|&g| g as f32).collect();
                patch.add_initializers.push(f32_tensor(&name, &[out], &b));
                let mut with_bias = node2.clone();
                with_bias.input.resize(2, String::new());
                with_bias.input.push(name);
                patch.replace.push((site.second.node, with_bias));
            }
        }
        // the bounds on the way lose it too
        for s in &site.steps {
            match s {
                Step::Bound(b) => {
                    let v = read(&values, b)?
                        .iter()
                        .zip(&a)
                        .map(|(&v, &s)| (f64::from(v) - s) as f32)
                        .collect();
                    values.insert(b.clone(), v);
                }
                Step::Clip(id, hi) => {
                    let clip = index.node(*id);
                    report.clips.push(ir::node_label(clip, *id));
                    let bound: Vec<f32> = a.iter().map(|&s| (f64::from(*hi) - s) as f32).collect();
                    relu_then_min((*id, clip), &bound, site.rank, &mut names, &mut patch);
                    replaced.push(*id);
                }
                Step::Relu | Step::MaxPool => {}
            }
        }
    }
    drop_unread_bounds(&index, &replaced, &mut patch);
    let graph = ir::graph_mut(model);
    for t in graph.initializer.iter_mut() {
        if let Some(v) = values.get(t.name()) {
            let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
            *t = f32_tensor(t.name(), &dims, v);
        }
    }
    if !patch.is_empty() {
        ir::apply(model, patch).map_err(|e| format!("pass `absorb-bias` broke the graph: {e}"))?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::testnet::Net;
    use crate::rewrite::equalize::tests::{close, gemm, pair_lifted, run, values};

    /// Layer-1 biases raised (in units of each channel's weight spread): channels 1 and 3 far
    /// above what their weights reach, channel 4 far below.
    const LIFT: [f64; 5] = [0.0, 25.0, 0.0, 40.0, -30.0];

    /// What layer 1's pre-activation (`h`) does on `x` in [`pair_lifted`]'s model.
    fn measure(model: &ModelProto, x: &[f64]) -> Measured {
        let n = 5;
        let h = gemm(x, 6, &values(model, "w1"), &values(model, "b1"), true);
        let rows = (h.len() / n) as f64;
        let mut m = Measured {
            min: vec![f64::INFINITY; n],
            max: vec![f64::NEG_INFINITY; n],
            mean: vec![0.0; n],
            std: vec![0.0; n],
        };
        for (i, &v) in h.iter().enumerate() {
            let c = i % n;
            m.min[c] = m.min[c].min(v);
            m.max[c] = m.max[c].max(v);
            m.mean[c] += v / rows;
        }
        for (i, &v) in h.iter().enumerate() {
            let c = i % n;
            m.std[c] += (v - m.mean[c]).powi(2) / rows;
        }
        m.std.iter_mut().for_each(|s| *s = s.sqrt());
        m
    }

    #[test]
    fn a_relu_pair_keeps_its_function_where_the_floor_holds_and_narrows_between() {
        let (mut model, x) = pair_lifted(false, &LIFT);
        let found = sites(&model);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].pre.as_str(), found[0].channels), ("h", 5));
        let m = measure(&model, &x);
        let a = shift(&m);
        for c in 0..5 {
            assert!(
                a[c] >= 0.0 && a[c] <= m.min[c].max(0.0),
                "channel {c}: {a:?}"
            );
            assert!(a[c] <= (m.mean[c] - 3.0 * m.std[c]).max(0.0));
        }
        assert!(a[1] > 0.0 && a[3] > 0.0 && a[4] == 0.0, "{a:?}");
        let before = run(&model, &x);
        let b1 = values(&model, "b1");
        let done = absorb(
            &mut model,
            &found,
            std::slice::from_ref(&a),
            std::slice::from_ref(&m),
        )
        .unwrap();
        assert_eq!(done.pairs, vec![("first".into(), "second".into())]);
        assert_eq!(done.channels, a.iter().filter(|&&s| s > 0.0).count());
        close(&run(&model, &x), &before);
        // layer 1 lost the shift; the activation between spans that much less per channel
        let after = measure(&model, &x);
        for c in 0..5 {
            let b = values(&model, "b1")[c];
            assert!((b - (b1[c] - a[c])).abs() <= 1e-5 * b1[c].abs().max(1.0));
            assert!((after.max[c] - (m.max[c] - a[c])).abs() <= 1e-4 * m.max[c].abs().max(1.0));
        }
        assert!(done.range_after[0] < done.range_before[0]);
    }

    #[test]
    fn a_relu6_bound_moves_with_its_channel() {
        let (mut model, x) = pair_lifted(true, &LIFT);
        let found = sites(&model);
        assert_eq!(found.len(), 1);
        let m = measure(&model, &x);
        // channel 3 stays far above the bound 6: its shift stops there
        assert!(m.min[3] > 6.0, "{:?}", m.min);
        let before = run(&model, &x);
        let done = absorb(&mut model, &found, &[shift(&m)], &[m]).unwrap();
        assert_eq!(done.clips, vec!["act".to_string()]);
        let ops: Vec<&str> = ir::graph(&model).node.iter().map(|n| n.op_type()).collect();
        assert_eq!(ops, ["Gemm", "Relu", "Min", "Gemm"]);
        close(&run(&model, &x), &before);
        let bound = values(&model, "act_bound");
        assert_eq!(bound[3], 0.0);
        assert!(
            ir::graph(&model)
                .initializer
                .iter()
                .all(|t| t.name() != "hi")
        );
    }

    /// Conv a (bias) → Relu → depthwise 3×3 b (bias, no padding) → Relu → 1×1 c padded.
    fn convs(b_bias: bool) -> ModelProto {
        let mut net = Net::new(&["x"]);
        net.conv("a", "x", "h1", true)
            .node("Relu", "r1", &["h1"], &["a1"]);
        let w: Vec<f32> = (0..72)
            .map(|i| ((i * 37) % 11) as f32 / 10.0 - 0.5)
            .collect();
        net.init(f32_tensor("b.w", &[8, 1, 3, 3], &w));
        let mut inputs = vec!["a1", "b.w"];
        if b_bias {
            net.init(f32_tensor("b.b", &[8], &[0.25; 8]));
            inputs.push("b.b");
        }
        net.node("Conv", "b", &inputs, &["h2"]).attr_int("group", 8);
        net.node("Relu", "r2", &["h2"], &["a2"]);
        net.conv("c", "a2", "y", true)
            .attr_ints("pads", &[1, 1, 1, 1]);
        net.typed("h2", &[1, 8, 2, 2])
            .typed("a2", &[1, 8, 2, 2])
            .typed("y", &[1, 8, 4, 4])
            .output("y");
        net.model()
    }

    #[test]
    fn only_layers_reading_no_padding_take_a_shift_and_a_bias_appears_where_none_was() {
        let found = sites(&convs(true));
        let pairs: Vec<_> = found.iter().map(|s| s.labels.clone()).collect();
        // b → c: c's zero padding would read 0 where the original read the shift
        assert_eq!(pairs, vec![("a".to_string(), "b".to_string())]);
        let mut model = convs(false);
        let found = sites(&model);
        assert_eq!(found.len(), 1);
        let a: Vec<f64> = (0..8).map(|c| f64::from(c as u8 % 3) * 0.5).collect();
        let w = values(&model, "b.w");
        let m = Measured {
            max: vec![4.0; 8],
            ..Measured::default()
        };
        absorb(&mut model, &found, std::slice::from_ref(&a), &[m]).unwrap();
        let g = ir::graph(&model);
        let b = g.node.iter().find(|n| n.name() == "b").unwrap();
        assert_eq!(b.input.len(), 3);
        let gained = values(&model, &b.input[2]);
        for c in 0..8 {
            // depthwise: output c reads input channel c through its 9 taps
            let want: f64 = w[c * 9..c * 9 + 9].iter().sum::<f64>() * a[c];
            assert!(
                (gained[c] - want).abs() < 1e-6,
                "{c}: {} vs {want}",
                gained[c]
            );
            assert!((values(&model, "a.b")[c] - (0.1 - a[c])).abs() < 1e-6);
        }
    }
}
