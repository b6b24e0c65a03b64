//! Which tensors to quantize, and why every other node stays float.
//!
//! The placement is TensorRT's (and works in every runtime): Q→DQ on the inputs of Conv,
//! ConvTranspose, Gemm and MatMul, never on their outputs; constant float32 inputs of those ops
//! are weights (int8 + DequantizeLinear, per channel on the output-channel axis), other inputs
//! are activations (calibrated, per tensor). Pure: reads the graph and the tensor types found by
//! the runner, returns a [`QuantPlan`]; does no I/O.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::calib::{Elem, TensorInfo};
use crate::ir::{self, Index, NodeId};
use crate::params::ActivationScheme;
use crate::proto::{ModelProto, NodeProto, tensor_proto::DataType};

/// What the user asked for.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub activation: ActivationScheme,
    /// Per-channel weights (on the output-channel axis) instead of one scale per weight.
    pub per_channel: bool,
}

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

/// An activation tensor to calibrate and quantize for the listed consumer inputs.
#[derive(Clone, Debug)]
pub struct ActivationSite {
    pub tensor: String,
    pub consumers: Vec<(NodeId, usize)>,
}

/// A constant weight to store as int8 for the listed consumer inputs.
#[derive(Clone, Debug)]
pub struct WeightSite {
    pub initializer: String,
    /// Per-channel axis, `None` for one scale.
    pub axis: Option<usize>,
    pub consumers: Vec<(NodeId, usize)>,
}

/// The complete decision for one model.
pub struct QuantPlan {
    pub nodes: Vec<NodeDecision>,
    pub activations: Vec<ActivationSite>,
    pub weights: Vec<WeightSite>,
    /// Raising the opset to 13, needed by per-channel weights on an older model.
    pub upgrade: Option<ir::OpsetUpgrade>,
    /// Remarks for the report (fallbacks and the like).
    pub notes: Vec<String>,
}

impl QuantPlan {
    /// Names of the tensors calibration must observe, in plan order.
    pub fn observed(&self) -> Vec<String> {
        self.activations.iter().map(|a| a.tensor.clone()).collect()
    }
}

/// Ops whose inputs the default placement quantizes.
const WEIGHTED: [&str; 4] = ["Conv", "ConvTranspose", "Gemm", "MatMul"];

/// Output-channel axis of the weight input (slot 1) of a weighted op, for a weight of `rank`.
fn weight_axis(node: &NodeProto, rank: usize) -> Option<usize> {
    let axis = match node.op_type() {
        "Conv" => 0,
        "ConvTranspose" => 1,
        "Gemm" if ir::attr_int(node, "transB").unwrap_or(0) != 0 => 0,
        "Gemm" => 1,
        "MatMul" => rank.checked_sub(1)?,
        _ => return None,
    };
    (rank >= 2 && axis < rank).then_some(axis)
}

/// Where one weight is read, gathered over the graph.
struct WeightUse {
    first: NodeId,
    axes: Vec<Option<usize>>,
    consumers: Vec<(NodeId, usize)>,
}

enum Input {
    Activation(String),
    Weight(String, Option<usize>),
}

/// Classifies input `slot` of a weighted node, or says why the node cannot be quantized.
fn classify(
    index: &Index,
    types: &HashMap<String, TensorInfo>,
    ir_version: i64,
    node: &NodeProto,
    slot: usize,
) -> Result<Input, String> {
    let name = node
        .input
        .get(slot)
        .filter(|n| !n.is_empty())
        .ok_or(format!("input {slot} is missing"))?;
    if let Some((p, _)) = index.producer(name)
        && index.node(p).op_type() == "DequantizeLinear"
    {
        return Err(format!(
            "input `{name}` is already quantized (it comes from DequantizeLinear)"
        ));
    }
    if let Some(init) = index.initializer(name) {
        if index.is_graph_input(name) && ir_version >= 4 {
            return Err(format!(
                "weight `{name}` is also a graph input, so callers may override it"
            ));
        }
        if init.data_type() != DataType::Float as i32 {
            let ty = crate::onnx::tensor::elem_type_name(init.data_type());
            return Err(format!(
                "weight `{name}` is {ty}; only float32 weights are quantized"
            ));
        }
        let axis = if slot == 1 {
            weight_axis(node, init.dims.len())
        } else {
            None
        };
        return Ok(Input::Weight(name.clone(), axis));
    }
    match types.get(name).and_then(|t| t.elem) {
        Some(Elem::F32) => Ok(Input::Activation(name.clone())),
        Some(e) => Err(format!(
            "input `{name}` is {}; only float32 activations are quantized",
            e.name()
        )),
        None => Err(format!("the type of input `{name}` is unknown")),
    }
}

/// Decides what to quantize in `model`'s main graph.
pub fn plan(
    model: &ModelProto,
    types: &HashMap<String, TensorInfo>,
    settings: &Settings,
) -> QuantPlan {
    let graph = model.graph.as_ref().expect("loaded models have a graph");
    let index = Index::new(graph);
    let mut nodes = Vec::with_capacity(graph.node.len());
    let mut acts: BTreeMap<String, (usize, Vec<(NodeId, usize)>)> = BTreeMap::new();
    let mut weights: BTreeMap<String, WeightUse> = BTreeMap::new();
    for (id, node) in graph.node.iter().enumerate() {
        let mut decision = NodeDecision {
            id,
            name: ir::node_label(node, id),
            op_type: node.op_type().to_string(),
            quantized: false,
            reason: None,
        };
        let weighted = ir::is_default_domain(node.domain()) && WEIGHTED.contains(&node.op_type());
        if !weighted {
            decision.reason = Some(if ir::has_subgraphs(node) {
                "control flow: its subgraphs are not quantized".into()
            } else {
                "not an input of Conv, ConvTranspose, Gemm or MatMul (default placement)".into()
            });
            nodes.push(decision);
            continue;
        }
        let classified: Result<Vec<Input>, String> = (0..2)
            .map(|slot| classify(&index, types, model.ir_version(), node, slot))
            .collect();
        match classified {
            Err(why) => decision.reason = Some(why),
            Ok(inputs) => {
                decision.quantized = true;
                for (slot, input) in inputs.into_iter().enumerate() {
                    match input {
                        Input::Activation(t) => {
                            acts.entry(t).or_insert((id, vec![])).1.push((id, slot))
                        }
                        Input::Weight(w, axis) => {
                            let e = weights.entry(w).or_insert(WeightUse {
                                first: id,
                                axes: vec![],
                                consumers: vec![],
                            });
                            e.axes.push(axis);
                            e.consumers.push((id, slot));
                        }
                    }
                }
            }
        }
        nodes.push(decision);
    }
    let mut notes = Vec::new();
    let mut weights: Vec<(usize, WeightSite)> = weights
        .into_iter()
        .map(
            |(
                w,
                WeightUse {
                    first,
                    axes,
                    consumers,
                },
            )| {
                let axis = if settings.per_channel && axes.iter().all(|a| *a == axes[0]) {
                    axes[0]
                } else {
                    if settings.per_channel && axes[0].is_some() {
                        notes.push(format!(
                            "weight `{w}` is per-tensor: its consumers disagree on the channel axis"
                        ));
                    }
                    None
                };
                (
                    first,
                    WeightSite {
                        initializer: w,
                        axis,
                        consumers,
                    },
                )
            },
        )
        .collect();
    weights.sort_by_key(|(first, w)| (*first, w.initializer.clone()));
    let mut weights: Vec<WeightSite> = weights.into_iter().map(|(_, w)| w).collect();
    let upgrade = plan_opset(model, &index, &mut weights, &mut notes);
    let mut activations: Vec<(usize, ActivationSite)> = acts
        .into_iter()
        .map(|(tensor, (first, consumers))| (first, ActivationSite { tensor, consumers }))
        .collect();
    activations.sort_by_key(|(first, a)| (*first, a.tensor.clone()));
    QuantPlan {
        nodes,
        activations: activations.into_iter().map(|(_, a)| a).collect(),
        weights,
        upgrade,
        notes,
    }
}

/// Per-channel weights need opset 13: plan the upgrade, or fall back to per-tensor weights.
fn plan_opset(
    model: &ModelProto,
    index: &Index,
    weights: &mut [WeightSite],
    notes: &mut Vec<String>,
) -> Option<ir::OpsetUpgrade> {
    let opset = ir::default_opset(model).unwrap_or(0);
    if opset >= 13 || weights.iter().all(|w| w.axis.is_none()) {
        return None;
    }
    match ir::plan_upgrade(model, &mut ir::Names::new(index)) {
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
