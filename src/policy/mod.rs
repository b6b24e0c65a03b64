//! Which tensors to quantize, and why every other node stays float.
//!
//! The rules are the same for every target; the target's preset ([`Config::placement`]) says
//! which apply and to which ops:
//! - *weighted ops*: the data and weight inputs of Conv, ConvTranspose, Gemm, MatMul;
//! - *input ops*: the activation inputs of element-wise ops and the like (OpenVINO, ORT);
//! - *output ops*: the output too, making complete node units (ORT);
//! - *residual Add*: the skip input only (TensorRT fuses the Add into the conv) or all inputs;
//! - *propagation*, to a fixpoint: a quantized Concat output shares its scale with its inputs,
//!   a quantized pooling output quantizes the pooling input, a quantized shape-op output
//!   reuses its input's scale.
//!
//! Constant float32 inputs are weights (int8 + DequantizeLinear, per channel on the
//! output-channel axis for the weight slot of weighted ops); other inputs are activations
//! (calibrated, per tensor). Pure: reads the graph, the tensor types found by the runner and
//! the configuration, returns a [`QuantPlan`]; does no I/O.

mod apply;
mod rules;
#[cfg(test)]
mod tests;

pub use apply::{Overrides, unmatched, unmatched_anywhere};

use std::collections::HashMap;

use serde::Serialize;

use crate::config::Config;
use crate::ir::TensorInfo;
use crate::ir::{self, NodeId};
use crate::params::{QType, WeightType};
use crate::proto::ModelProto;

/// The fate of one node.
#[derive(Clone, Debug, Serialize)]
pub struct NodeDecision {
    #[serde(skip)]
    pub id: NodeId,
    pub name: String,
    pub op_type: String,
    pub quantized: bool,
    /// Why it stays float (or a remark on how it was quantized).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An activation tensor to calibrate and quantize.
#[derive(Clone, Debug)]
pub struct ActivationSite {
    pub tensor: String,
    /// The (node, input slot) pairs that read the dequantized tensor.
    pub consumers: Vec<(NodeId, usize)>,
    /// The output of a complete node unit: every reader reads the dequantized tensor.
    pub all_consumers: bool,
    /// Sites sharing one scale carry the same group number.
    pub group: Option<usize>,
    /// A range fixed by the op that produces the tensor (e.g. Softmax: [0, 1]).
    pub fixed_range: Option<(f32, f32)>,
    /// What the user's overrides set for this tensor.
    pub settings: SiteSettings,
}

impl ActivationSite {
    /// Whether calibration must observe it (no fixed range or scale).
    pub fn needs_stats(&self) -> bool {
        self.fixed_range.is_none() && self.settings.range.is_none() && self.settings.scale.is_none()
    }
}

/// Activation settings an override gave one tensor (unset: the global setting applies).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SiteSettings {
    pub qtype: Option<QType>,
    pub symmetric: Option<bool>,
    pub method: Option<String>,
    pub percentile: Option<f64>,
    pub range: Option<(f32, f32)>,
    /// A fixed scale and zero-point (`None`: the type's natural zero-point).
    pub scale: Option<(f32, Option<i32>)>,
    /// (field, override that set it).
    pub sources: Vec<(&'static str, String)>,
}

/// A constant weight to store as int8 for the listed consumer inputs.
#[derive(Clone, Debug)]
pub struct WeightSite {
    pub initializer: String,
    /// Per-channel axis, `None` for one scale.
    pub axis: Option<usize>,
    pub consumers: Vec<(NodeId, usize)>,
    /// Overrides that set its settings (`per_channel: override #1 (q.yaml:3)`).
    pub decided_by: Vec<String>,
    pub dtype: WeightType,
    /// Requested int4 block size (0: none); [`WeightSite::block`] is what is done.
    pub block_size: usize,
    /// The input-channel axis all consumers agree on, if any.
    pub input_axis: Option<usize>,
    pub dims: Vec<usize>,
    /// Blocks: (axis, block size). `axis` is then unused.
    pub block: Option<(usize, usize)>,
}

/// A float bias stored as int32 with scale `s_x · s_w` (ORT's QLinearConv / QGemm).
#[derive(Clone, Debug)]
pub struct BiasSite {
    pub node: NodeId,
    /// The bias initializer (input 2).
    pub bias: String,
    /// The activation (input 0) and weight (input 1) it depends on.
    pub activation: String,
    pub weight: String,
}

/// The complete decision for one model.
pub struct QuantPlan {
    pub nodes: Vec<NodeDecision>,
    pub activations: Vec<ActivationSite>,
    pub weights: Vec<WeightSite>,
    pub biases: Vec<BiasSite>,
    /// Raising the opset to 13, needed by per-channel weights on an older model.
    pub upgrade: Option<ir::OpsetUpgrade>,
    /// Remarks for the report (fallbacks and the like).
    pub notes: Vec<String>,
    /// Why the plan cannot be written (an opset the model cannot be raised to).
    pub blocked: Option<String>,
    /// Relus folded into node units before planning (set by the caller that folded them).
    pub folded_relus: Vec<crate::ir::FoldedRelu>,
    /// Tensors whose small values reach a `Log`, with that Log: quantized only when few of
    /// their values round to zero ([`QuantPlan::drop_small_log_inputs`]).
    pub log_fed: std::collections::BTreeMap<String, String>,
    /// Quantized weighted ops whose output's small values reach a `Log`: (node, output),
    /// observed to tell whether int8 would erase those values.
    pub log_probes: Vec<(NodeId, String)>,
    /// Quantized depthwise convolutions, whose output is observed channel by channel to tell
    /// whether one int8 scale for their input leaves some channels in noise.
    pub depthwise: Vec<DepthwiseProbe>,
}

/// A depthwise (grouped) Conv whose input one activation scale quantizes: each output channel
/// reads one input channel (or a few), so a channel much quieter than the loudest gets few
/// int8 steps, and the BatchNormalization after it scales that noise up with the channel.
#[derive(Clone, Debug)]
pub struct DepthwiseProbe {
    pub node: NodeId,
    /// Its data input.
    pub input: String,
    /// What is observed per channel: the output of the BatchNormalization right after it,
    /// or its own output.
    pub output: String,
    /// The BatchNormalization after it, if any.
    pub batchnorm: Option<NodeId>,
}

impl QuantPlan {
    /// Names of the tensors calibration must observe, in plan order.
    pub fn observed(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .activations
            .iter()
            .filter(|a| a.needs_stats())
            .map(|a| a.tensor.clone())
            .collect();
        for p in &self.log_probes {
            if !out.contains(&p.1) {
                out.push(p.1.clone());
            }
        }
        for p in &self.depthwise {
            if !out.contains(&p.output) {
                out.push(p.output.clone());
            }
        }
        out
    }

    /// The observed tensors whose channels are weighed one by one (axis 1).
    pub fn observed_by_channel(&self) -> std::collections::BTreeSet<String> {
        self.depthwise.iter().map(|p| p.output.clone()).collect()
    }

    /// The site of `tensor`, if it is quantized.
    pub fn site(&self, tensor: &str) -> Option<&ActivationSite> {
        self.activations.iter().find(|a| a.tensor == tensor)
    }
}

/// Decides what to quantize in `model`'s main graph.
pub fn plan(
    model: &ModelProto,
    types: &HashMap<String, TensorInfo>,
    config: &Config,
    overrides: &Overrides,
) -> QuantPlan {
    let graph = model.graph.as_ref().expect("loaded models have a graph");
    let mut b = rules::Builder::new(model, graph, types, config, overrides);
    for id in 0..graph.node.len() {
        b.node(id);
    }
    b.propagate();
    b.fix_ranges();
    let mut notes = Vec::new();
    let weights = b.weight_sites(&mut notes);
    let log_fed = b.log_fed();
    let (nodes, activations, biases) = b.finish();
    let mut plan = QuantPlan {
        nodes,
        activations,
        weights,
        biases,
        upgrade: None,
        notes,
        blocked: None,
        folded_relus: Vec::new(),
        log_fed,
        log_probes: Vec::new(),
        depthwise: Vec::new(),
    };
    apply::apply(&mut plan, graph, overrides);
    resolve_blocks(&mut plan);
    if config.weight_only {
        weight_only(&mut plan);
    }
    let act_types: Vec<QType> = plan
        .activations
        .iter()
        .map(|a| a.settings.qtype.unwrap_or(config.activation.qtype))
        .collect();
    let needed = if plan
        .weights
        .iter()
        .any(|w| matches!(w.dtype, WeightType::Int4 | WeightType::Uint4))
        || act_types.contains(&QType::Int16)
    {
        Some((WIDE_OPSET, "int4 weights or int16 activations"))
    } else if plan.weights.iter().any(|w| w.dtype == WeightType::Fp8)
        || act_types.contains(&QType::Fp8)
    {
        Some((FP8_OPSET, "float8 weights or activations"))
    } else {
        None
    };
    plan.log_probes = plan
        .nodes
        .iter()
        .filter(|d| d.quantized)
        .filter_map(|d| {
            let node = &graph.node[d.id];
            let out = node.output.first()?;
            (matches!(node.op_type(), "MatMul" | "Gemm" | "Conv" | "ConvTranspose")
                && plan.log_fed.contains_key(out))
            .then(|| (d.id, out.clone()))
        })
        .collect();
    if config.placement.min_conv_sqnr > 0.0 {
        plan.depthwise = depthwise_probes(graph, &plan);
    }
    match plan_opset(model, &mut plan.weights, &mut plan.notes, needed) {
        Ok(up) => plan.upgrade = up,
        Err(blocked) => plan.blocked = Some(blocked),
    }
    plan
}

/// The depthwise convolutions of the plan whose data input is quantized (see
/// [`DepthwiseProbe`]).
fn depthwise_probes(graph: &crate::proto::GraphProto, plan: &QuantPlan) -> Vec<DepthwiseProbe> {
    let index = ir::Index::new(graph);
    let mut out = Vec::new();
    for d in plan.nodes.iter().filter(|d| d.quantized) {
        let node = &graph.node[d.id];
        if node.op_type() != "Conv" {
            continue;
        }
        let (Some(input), Some(conv_out)) = (node.input.first(), node.output.first()) else {
            continue;
        };
        if !plan
            .activations
            .iter()
            .any(|a| a.tensor == *input && a.consumers.contains(&(d.id, 0)))
        {
            continue;
        }
        let bn = match index.consumers(conv_out) {
            [(c, 0)]
                if index.node(*c).op_type() == "BatchNormalization"
                    && !index.is_graph_output(conv_out) =>
            {
                Some(*c)
            }
            _ => None,
        };
        let output = bn
            .and_then(|b| index.node(b).output.first().cloned())
            .unwrap_or_else(|| conv_out.clone());
        out.push(DepthwiseProbe {
            node: d.id,
            input: input.clone(),
            output,
            batchnorm: bn,
        });
    }
    out
}

/// int4 weights with a block size get blocks along their input-channel axis when the size
/// divides it, else one scale per channel (noted); biases of blocked weights stay float (their
/// int32 scale needs one weight scale per channel).
fn resolve_blocks(plan: &mut QuantPlan) {
    for w in &mut plan.weights {
        if !matches!(w.dtype, WeightType::Int4 | WeightType::Uint4) || w.block_size == 0 {
            continue;
        }
        let bs = w.block_size;
        match w.input_axis {
            Some(a) if w.dims.get(a).is_some_and(|&d| d % bs == 0 && d >= bs) => {
                w.block = Some((a, bs));
            }
            Some(a) => plan.notes.push(format!(
                "weight `{}`: block size {bs} does not divide its input-channel axis {a} (length {}); int4 per channel instead",
                w.initializer,
                w.dims.get(a).copied().unwrap_or(0)
            )),
            None => plan.notes.push(format!(
                "weight `{}`: no input-channel axis its readers agree on, so no int4 blocks; int4 per channel instead",
                w.initializer
            )),
        }
    }
    let blocked: Vec<&WeightSite> = plan.weights.iter().filter(|w| w.block.is_some()).collect();
    let mut notes = Vec::new();
    plan.biases.retain(|b| {
        let keep = !blocked.iter().any(|w| w.initializer == b.weight);
        if !keep {
            notes.push(format!(
                "bias `{}` stays float: int32 biases need one scale per channel of `{}`, which has int4 blocks",
                b.bias, b.weight
            ));
        }
        keep
    });
    plan.notes.append(&mut notes);
}

/// `weight_only`: no activation is quantized, so neither is a bias; a node counts as quantized
/// when it reads a quantized weight.
fn weight_only(plan: &mut QuantPlan) {
    plan.activations.clear();
    plan.biases.clear();
    let weighted: std::collections::HashSet<NodeId> = plan
        .weights
        .iter()
        .flat_map(|w| w.consumers.iter().map(|c| c.0))
        .collect();
    for n in &mut plan.nodes {
        if weighted.contains(&n.id) {
            n.quantized = true;
            n.reason = Some("weights only (weight_only)".into());
        } else if n.quantized {
            n.quantized = false;
            n.reason = Some("weight_only: activations stay float".into());
        }
    }
}

/// The opset the types need (21 for int4 weights or int16 activations, 19 for float8), with
/// what needs it: plan the upgrade, or `Err` naming what blocks it.
fn plan_opset(
    model: &ModelProto,
    weights: &mut [WeightSite],
    notes: &mut Vec<String>,
    needed: Option<(i64, &str)>,
) -> Result<Option<ir::OpsetUpgrade>, String> {
    let opset = ir::default_opset(model).unwrap_or(0);
    let Some((target, why)) = needed else {
        return Ok(plan_opset_13(model, weights, notes));
    };
    if opset >= target {
        return Ok(None);
    }
    let index = ir::Index::new(model.graph.as_ref().expect("loaded models have a graph"));
    match ir::plan_upgrade(model, &mut ir::Names::new(&index), target) {
        Ok(up) => {
            notes.push(format!("opset raised from {opset} to {target} for {why}"));
            if !up.converted.is_empty() {
                notes.push(format!(
                    "converted to opset {target}: {}",
                    up.converted.join(", ")
                ));
            }
            Ok(Some(up))
        }
        Err(blockers) => Err(format!(
            "{why} need opset {target}, and raising opset {opset} is blocked by {}",
            blockers.join("; ")
        )),
    }
}

/// The opset whose QuantizeLinear and DequantizeLinear take float8.
pub const FP8_OPSET: i64 = 19;

/// The opset whose QuantizeLinear and DequantizeLinear take int4, int16 and blocks.
pub const WIDE_OPSET: i64 = 21;

/// Per-channel weights need opset 13: plan the upgrade, or fall back to per-tensor weights.
fn plan_opset_13(
    model: &ModelProto,
    weights: &mut [WeightSite],
    notes: &mut Vec<String>,
) -> Option<ir::OpsetUpgrade> {
    let opset = ir::default_opset(model).unwrap_or(0);
    if opset >= 13 || weights.iter().all(|w| w.axis.is_none()) {
        return None;
    }
    let index = ir::Index::new(model.graph.as_ref().expect("loaded models have a graph"));
    match ir::plan_upgrade(model, &mut ir::Names::new(&index), 13) {
        Ok(up) => {
            notes.push(format!(
                "opset raised from {opset} to 13 for per-channel weights"
            ));
            if !up.converted.is_empty() {
                notes.push(format!(
                    "converted to opset 13: {}",
                    up.converted.join(", ")
                ));
            }
            Some(up)
        }
        Err(blockers) => {
            notes.push(format!(
                "weights are per-tensor: per-channel needs opset 13 and opset {opset} cannot be raised ({})",
                blockers.join("; ")
            ));
            weights.iter_mut().for_each(|w| w.axis = None);
            None
        }
    }
}

/// Share of a tensor's values under half an int8 step above which a tensor whose small values
/// reach a `Log` stays float: a power spectrum has 91 % there, the STFT output it is the
/// square of 67 %, the audio itself 7 % (openWakeWord's mel front end).
pub const LOG_SMALL_SHARE: f64 = 0.25;

impl QuantPlan {
    /// The nodes to keep float because small values that reach a `Log` would be lost: those
    /// reading a planned activation more than [`LOG_SMALL_SHARE`] of whose values are under
    /// half its int8 step, and the quantized weighted ops whose output is mostly under half an
    /// int8 step of its own range (int8 weights or inputs leave an error floor about that
    /// high). `steps`: tensor → scale; `share`: tensor, threshold → the share of its values
    /// under it (`None` without a histogram: kept float too); `amax`: observed `|x|` maximum.
    pub fn small_log_inputs(
        &self,
        model: &ModelProto,
        steps: &HashMap<String, f32>,
        share: &dyn Fn(&str, f64) -> Option<f64>,
        amax: &dyn Fn(&str) -> Option<f32>,
    ) -> Vec<(NodeId, String)> {
        let graph = model.graph.as_ref().expect("loaded models have a graph");
        let index = ir::Index::new(graph);
        let mut out: Vec<(NodeId, String)> = Vec::new();
        // tensors whose small values int8 would erase, with why: then also every tensor they
        // reach on their way to the Log, which carries the same small values
        let mut lost: Vec<(String, String)> = Vec::new();
        for (id, t) in &self.log_probes {
            let log = &self.log_fed[t];
            let Some(a) = amax(t).filter(|a| *a > 0.0) else {
                continue;
            };
            let why = match share(t, f64::from(a) / 254.0) {
                Some(s) if s <= LOG_SMALL_SHARE => continue,
                Some(s) => format!(
                    "{:.0}% of its output `{t}` is under half an int8 step of its range, and reaches `{log}`, a logarithm: int8 weights or inputs would leave an error floor above those values",
                    s * 100.0
                ),
                None => format!(
                    "its output `{t}` reaches `{log}`, a logarithm, and its statistics hold no histogram to tell whether int8 would erase its small values"
                ),
            };
            out.push((*id, why.clone()));
            lost.push((t.clone(), why));
        }
        for a in &self.activations {
            let (Some(log), Some(&scale)) = (self.log_fed.get(&a.tensor), steps.get(&a.tensor))
            else {
                continue;
            };
            let t = &a.tensor;
            let why = match share(t, f64::from(scale) / 2.0) {
                Some(s) if s <= LOG_SMALL_SHARE => continue,
                Some(s) => format!(
                    "{:.0}% of `{t}`'s values are under half its int8 step, and its small values reach `{log}`, a logarithm, which would turn their loss into errors of many dB",
                    s * 100.0
                ),
                None => format!(
                    "`{t}` reaches `{log}`, a logarithm, and its statistics hold no histogram to tell how many of its values an int8 step would erase"
                ),
            };
            lost.push((t.clone(), why));
        }
        let mut seen = std::collections::BTreeSet::new();
        while let Some((t, why)) = lost.pop() {
            if !seen.insert(t.clone()) {
                continue;
            }
            if let Some(a) = self.site(&t) {
                let mut readers: Vec<NodeId> = a.consumers.iter().map(|c| c.0).collect();
                if a.all_consumers {
                    readers.extend(index.consumers(&t).iter().map(|c| c.0));
                }
                for id in readers {
                    if !out.iter().any(|o| o.0 == id) {
                        out.push((id, why.clone()));
                    }
                }
            }
            for &(c, _) in index.consumers(&t) {
                for o in &graph.node[c].output {
                    if self.log_fed.contains_key(o) {
                        lost.push((o.clone(), why.clone()));
                    }
                }
            }
        }
        out
    }
}

/// Least SQNR of a depthwise convolution's output, channel by channel after normalization,
/// with one int8 scale on its input; under it the convolution stays float. A paddle2onnx
/// PP-LCNet estimates 6.5-25 dB for its depthwise convolutions (BatchNormalization scales up to
/// 29 after them): kept float, its output goes from 5.3 to 22 dB against fp32.
pub const DEPTHWISE_MIN_SQNR_DB: f64 = 20.0;

impl QuantPlan {
    /// The convolutions to keep float because one int8 scale for their input would leave
    /// their output, each channel normalized by its spread, with less than
    /// [`DEPTHWISE_MIN_SQNR_DB`] of signal over the noise one input step adds:
    /// `noise_c = step/√12 · |w_c|` (`w_c` the channel's kernel times the BatchNormalization
    /// scale after it), `signal_c` the channel's observed spread (`spread`: tensor →
    /// per-channel standard deviations). `steps`: tensor → scale.
    pub fn noisy_convolutions(
        &self,
        model: &ModelProto,
        steps: &HashMap<String, f32>,
        spread: &dyn Fn(&str) -> Option<Vec<f64>>,
        floor_db: f64,
    ) -> Vec<(NodeId, String)> {
        let graph = model.graph.as_ref().expect("loaded models have a graph");
        let index = ir::Index::new(graph);
        let mut out = Vec::new();
        for p in &self.depthwise {
            let Some(db) = depthwise_sqnr(&index, p, steps, spread) else {
                continue;
            };
            if db >= floor_db {
                continue;
            }
            let node = &graph.node[p.node];
            let kind = if ir::attr_int(node, "group").unwrap_or(1) > 1 {
                "depthwise: "
            } else {
                ""
            };
            out.push((p.node, format!(
                "{kind}one int8 scale for `{}` leaves its output at {db:.1} dB channel by channel, under the {floor_db} dB of placement.min_conv_sqnr (its quiet channels get few steps, and normalization scales their noise up)",
                p.input
            )));
        }
        out
    }
}

/// The channel-by-channel SQNR estimate of [`QuantPlan::drop_noisy_depthwise`], `None` when a
/// piece is missing (no statistics, a weight that is not constant).
fn depthwise_sqnr(
    index: &ir::Index,
    p: &DepthwiseProbe,
    steps: &HashMap<String, f32>,
    spread: &dyn Fn(&str) -> Option<Vec<f64>>,
) -> Option<f64> {
    let step = f64::from(*steps.get(&p.input)?);
    let std = spread(&p.output)?;
    let node = index.node(p.node);
    let w = constant_values(index, node.input.get(1)?)?;
    let channels = w.0.first().copied()?;
    if channels == 0 || channels != std.len() || w.1.len() % channels != 0 {
        return None;
    }
    let per = w.1.len() / channels;
    let mut gain: Vec<f64> =
        w.1.chunks_exact(per)
            .map(|k| {
                k.iter()
                    .map(|&v| f64::from(v) * f64::from(v))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
    if let Some(bn) = p.batchnorm {
        let bn = index.node(bn);
        let scale = constant_values(index, bn.input.get(1)?)?.1;
        let var = constant_values(index, bn.input.get(4)?)?.1;
        let eps = ir::attr(bn, "epsilon").map_or(1e-5, |a| f64::from(a.f()));
        if scale.len() != channels || var.len() != channels {
            return None;
        }
        for (g, (s, v)) in gain.iter_mut().zip(scale.iter().zip(&var)) {
            *g *= f64::from(*s).abs() / (f64::from(*v) + eps).sqrt();
        }
    }
    let loudest = std.iter().cloned().fold(0.0, f64::max);
    let ratios: Vec<f64> = std
        .iter()
        .zip(&gain)
        // a constant channel carries nothing to lose
        .filter(|(s, _)| **s > loudest * 1e-6)
        .map(|(s, g)| {
            let noise = step / 12f64.sqrt() * g;
            (noise / s).powi(2)
        })
        .collect();
    if ratios.is_empty() {
        return None;
    }
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    (mean > 0.0).then(|| -10.0 * mean.log10())
}

/// The dims and float values of a constant (an initializer or computed by Constant nodes).
fn constant_values(index: &ir::Index, name: &str) -> Option<(Vec<usize>, Vec<f32>)> {
    match index.initializer(name) {
        Some(t) => Some((
            t.dims.iter().map(|&d| d as usize).collect(),
            crate::onnx::tensor::f32_data(t).ok()?,
        )),
        None => ir::constant::evaluate(index, name).map(|(c, _)| (c.dims, c.data)),
    }
}

/// Largest ratio between the ranges of the inputs a Concat puts under one scale before it is
/// kept float: past it, one int8 scale rounds the smaller inputs away (box coordinates in
/// 0-320 next to class scores in 0-1 leave the scores 0 or 1.25).
pub const CONCAT_RANGE_RATIO: f32 = 64.0;

impl QuantPlan {
    /// The shared-scale groups holding a Concat output that a Conv reads quantized (OpenVINO
    /// computes those wrongly in int8: `activations.concat_uint8`).
    pub fn concat_conv_groups(&self, model: &ModelProto) -> std::collections::BTreeSet<usize> {
        let graph = model.graph.as_ref().expect("loaded models have a graph");
        let index = ir::Index::new(graph);
        self.activations
            .iter()
            .filter(|a| {
                index
                    .producer(&a.tensor)
                    .is_some_and(|(p, _)| index.node(p).op_type() == "Concat")
                    && a.consumers
                        .iter()
                        .any(|&(n, _)| index.node(n).op_type() == "Conv")
            })
            .filter_map(|a| a.group)
            .collect()
    }

    /// Keeps float every Concat whose inputs would share one scale (a shared-scale group, or the
    /// quantized output of a node unit) while their ranges (`ranges`: tensor → [lo, hi]) differ
    /// by more than [`CONCAT_RANGE_RATIO`]. Returns a note per Concat kept float.
    pub fn split_disparate_concats(
        &mut self,
        model: &ModelProto,
        ranges: &HashMap<String, (f32, f32)>,
    ) -> Vec<String> {
        let graph = model.graph.as_ref().expect("loaded models have a graph");
        let mut notes = Vec::new();
        for (id, node) in graph.node.iter().enumerate() {
            if node.op_type() != "Concat" {
                continue;
            }
            let out = node.output.first().map_or("", |s| s.as_str());
            let out_group = self.site(out).map(|s| s.group);
            let inputs: Vec<&ActivationSite> = self
                .activations
                .iter()
                .filter(|a| a.consumers.iter().any(|c| c.0 == id))
                .collect();
            let grouped = inputs.len() > 1
                && inputs[0].group.is_some()
                && inputs.iter().all(|a| a.group == inputs[0].group);
            if out_group.is_none() && !grouped {
                continue;
            }
            let amax: Vec<(String, f32)> = inputs
                .iter()
                .filter_map(|a| {
                    ranges
                        .get(&a.tensor)
                        .map(|r| (a.tensor.clone(), r.0.abs().max(r.1.abs())))
                })
                .filter(|(_, m)| *m > 0.0)
                .collect();
            let (Some(lo), Some(hi)) = (
                amax.iter().min_by(|a, b| a.1.total_cmp(&b.1)),
                amax.iter().max_by(|a, b| a.1.total_cmp(&b.1)),
            ) else {
                continue;
            };
            if hi.1 / lo.1 <= CONCAT_RANGE_RATIO {
                continue;
            }
            let reason = format!(
                "its inputs' ranges differ {:.0}x (`{}` up to {}, `{}` up to {}): one int8 scale would erase the smaller",
                hi.1 / lo.1,
                hi.0,
                hi.1,
                lo.0,
                lo.1
            );
            let groups: Vec<usize> = inputs
                .iter()
                .filter_map(|a| a.group)
                .chain(out_group.flatten())
                .collect();
            self.activations.retain(|a| a.tensor != out);
            for a in &mut self.activations {
                a.consumers.retain(|c| c.0 != id);
                if a.group.is_some_and(|g| groups.contains(&g)) {
                    a.group = None;
                }
            }
            self.activations
                .retain(|a| !a.consumers.is_empty() || a.all_consumers);
            let d = &mut self.nodes[id];
            d.quantized = false;
            d.reason = Some(reason.clone());
            notes.push(format!(
                "`{}` kept float: {reason}",
                ir::node_label(node, id)
            ));
        }
        notes
    }
}
