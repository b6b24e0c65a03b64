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
mod concat;
mod guards;
mod rules;
#[cfg(test)]
mod tests;

pub use apply::{Overrides, unmatched, unmatched_anywhere};
pub use concat::CONCAT_RANGE_RATIO;
pub use guards::{DEPTHWISE_MIN_SQNR_DB, LOG_SMALL_SHARE};

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
    /// How its levels are chosen (`weights.rounding`; [`WeightSite::gptq`]).
    pub rounding: crate::params::Rounding,
    /// The reading layer's bias absorbs the mean shift the rounding causes (`bias_correction`).
    pub bias_correction: bool,
}

impl WeightSite {
    /// Whether GPTQ chooses its levels.
    pub fn gptq(&self) -> bool {
        self.rounding.gptq_for(self.dtype)
    }
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
    let graph = crate::ir::graph(model);
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
    let index = ir::Index::new(crate::ir::graph(model));
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
    let index = ir::Index::new(crate::ir::graph(model));
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
