//! `onnx-quant check`: what a runtime will refuse or run slowly in a QDQ model, from any tool.
//!
//! TensorRT rules (violations: the parser rejects the model or the engine build fails) come from
//! its ONNX parser and documentation: zero-points all 0; int8 (not uint8, int16, ...); scales
//! positive constants; per-channel scales only on weights, on the consumer's output-channel axis
//! and as many as that axis; no DequantizeLinear on an int32 bias; no int8 block quantization;
//! opset 13 for per-axis; no QOperator (QLinear*, *Integer) ops. Warnings are placements that
//! TensorRT accepts but cannot fuse. For ONNX Runtime and OpenVINO, findings are the weighted and
//! element-wise ops that will not run in int8 (incomplete node units, half-quantized inputs).

pub mod cpu;
mod openvino;
mod ort;
mod tensorrt;

use openvino::{
    openvino_concat_scales, openvino_inputs, openvino_int8_concat, openvino_reduce_mean,
};
use ort::ort_units;
use tensorrt::{tensorrt_fusion, tensorrt_node};
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use serde::Serialize;

use crate::ir::{self, Index, NodeId, control, node_label};
use crate::onnx::tensor::elem_type_name;
use crate::proto::{GraphProto, ModelProto, NodeProto, TensorProto, tensor_proto::DataType};

/// One finding.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// Short rule name, e.g. `zero_point_nonzero`.
    pub rule: &'static str,
    pub node: String,
    pub message: String,
}

/// What `check` found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    pub target: String,
    /// Rejected by the target.
    pub violations: Vec<Finding>,
    /// Accepted, but slower than it could be.
    pub warnings: Vec<Finding>,
    pub quantize_nodes: usize,
    pub dequantize_nodes: usize,
    /// Weighted ops whose int8 weight pairs x86 CPUs without VNNI can saturate (ort, openvino).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cpu_pairs: Vec<cpu::Risk>,
    /// Rules that were not applied, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl CheckReport {
    /// Violation counts per rule, for the summary.
    pub fn counts(&self) -> Vec<(&'static str, usize)> {
        let mut m: std::collections::BTreeMap<&'static str, usize> = Default::default();
        for v in &self.violations {
            *m.entry(v.rule).or_default() += 1;
        }
        m.into_iter().collect()
    }
}

const QOPERATORS: [&str; 12] = [
    "QLinearConv",
    "QLinearMatMul",
    "QLinearAdd",
    "QLinearMul",
    "QLinearConcat",
    "QLinearAveragePool",
    "QLinearGlobalAveragePool",
    "QLinearLeakyRelu",
    "QLinearSigmoid",
    "QGemm",
    "ConvInteger",
    "MatMulInteger",
];

struct Ctx<'i, 'g> {
    index: &'i Index<'g>,
    opset: i64,
    /// Where the graph being checked sits (`If_3/then_branch`), empty for the main graph.
    scope: String,
    out: CheckReport,
}

impl<'i, 'g> Ctx<'i, 'g> {
    /// A node's label, with the subgraph it sits in: `If_3/then_branch::conv/Conv`.
    fn label(&self, node: &NodeProto, id: NodeId) -> String {
        let label = node_label(node, id);
        if self.scope.is_empty() {
            label
        } else {
            format!("{}::{label}", self.scope)
        }
    }

    fn violation(&mut self, rule: &'static str, node: &NodeProto, id: NodeId, message: String) {
        let node = self.label(node, id);
        self.out.violations.push(Finding {
            rule,
            node,
            message,
        });
    }

    fn warning(&mut self, rule: &'static str, node: &NodeProto, id: NodeId, message: String) {
        let node = self.label(node, id);
        self.out.warnings.push(Finding {
            rule,
            node,
            message,
        });
    }

    fn init(&self, node: &NodeProto, slot: usize) -> Option<&'g TensorProto> {
        node.input.get(slot).and_then(|n| self.index.initializer(n))
    }

    /// The element type of a Q/DQ node's quantized side.
    fn qtype(&self, node: &NodeProto) -> Option<i32> {
        if let Some(zp) = self.init(node, 2) {
            return Some(zp.data_type());
        }
        if node.op_type() == "DequantizeLinear" {
            return self.init(node, 0).map(|t| t.data_type());
        }
        // QuantizeLinear without zero-point: `output_dtype` or uint8
        Some(ir::attr_int(node, "output_dtype").map_or(DataType::Uint8 as i32, |v| v as i32))
    }
}

fn is_qdq(node: &NodeProto) -> bool {
    matches!(node.op_type(), "QuantizeLinear" | "DequantizeLinear")
        && ir::is_default_domain(node.domain())
}

/// Checks `model` against `target`'s rules (`tensorrt`, `ort` or `openvino`): the main graph
/// and every subgraph (If branches, Loop and Scan bodies), whose findings name the subgraph.
pub fn check(model: &ModelProto, target: &str) -> CheckReport {
    let main = crate::ir::graph(model);
    let mut graphs = vec![(String::new(), main)];
    for scope in control::scopes(model) {
        if let Some(g) = control::subgraph(model, &scope) {
            graphs.push((control::label(model, &scope), g));
        }
    }
    let mut out = CheckReport {
        target: target.into(),
        ..Default::default()
    };
    for (scope, graph) in graphs {
        let index = Index::new(graph);
        let mut c = Ctx {
            index: &index,
            opset: ir::default_opset(model).unwrap_or(0),
            scope,
            out,
        };
        check_graph(&mut c, graph, target);
        out = c.out;
    }
    if target == "tensorrt" {
        out.notes.push(
            "int8 weight pairs that x86 CPUs without VNNI saturate (`--target ort` or `openvino` reports them) do not apply: TensorRT accumulates int8 products in int32".into(),
        );
    }
    out
}

/// The rules of `target` on one graph.
fn check_graph(c: &mut Ctx, graph: &GraphProto, target: &str) {
    for (id, node) in graph.node.iter().enumerate() {
        match node.op_type() {
            "QuantizeLinear" if is_qdq(node) => c.out.quantize_nodes += 1,
            "DequantizeLinear" if is_qdq(node) => c.out.dequantize_nodes += 1,
            _ => {}
        }
        if target == "tensorrt" {
            tensorrt_node(c, node, id);
        }
    }
    match target {
        "tensorrt" => tensorrt_fusion(c, graph),
        "ort" => {
            ort_units(c, graph);
            cpu::cpu_pairs(c, graph);
        }
        _ => {
            openvino_inputs(c, graph);
            openvino_reduce_mean(c, graph);
            openvino_int8_concat(c, graph);
            openvino_concat_scales(c, graph);
            cpu::cpu_pairs(c, graph);
        }
    }
}

/// Outputs of the DequantizeLinear nodes reading this QuantizeLinear.
fn readers_through_dq(index: &Index, q: &NodeProto) -> Vec<String> {
    let out = q.output.first().map_or("", |s| s.as_str());
    index
        .consumers(out)
        .iter()
        .map(|&(d, _)| index.node(d))
        .filter(|d| d.op_type() == "DequantizeLinear")
        .filter_map(|d| d.output.first().cloned())
        .collect()
}

fn from_dq(index: &Index, tensor: &str) -> bool {
    index
        .producer(tensor)
        .is_some_and(|(p, _)| index.node(p).op_type() == "DequantizeLinear")
}

/// The DequantizeLinear producing `tensor` when it dequantizes a computed tensor (an activation).
fn activation_dq<'a>(index: &'a Index, tensor: &str) -> Option<&'a NodeProto> {
    let (p, _) = index.producer(tensor)?;
    let dq = index.node(p);
    (dq.op_type() == "DequantizeLinear"
        && dq
            .input
            .first()
            .is_some_and(|q| index.initializer(q).is_none()))
    .then_some(dq)
}

/// Whether `tensor` is an activation dequantized with one scale: ONNX Runtime's
/// `WeightBiasQuantization` then quantizes the weight of a float Conv/ConvTranspose/Gemm
/// reading it.
fn per_tensor_dq(index: &Index, tensor: &str) -> bool {
    activation_dq(index, tensor).is_some_and(|dq| {
        dq.input
            .get(1)
            .and_then(|s| index.initializer(s))
            .is_some_and(|s| s.dims.iter().product::<i64>() == 1)
    })
}

/// Whether `node` reads a float data input and a dequantized constant weight in a model that
/// quantizes no activation: weight-only quantization, which ONNX Runtime runs as MatMulNBits
/// (int4 blocks) or with dequantized weights, and OpenVINO as compressed weights; not a
/// missed placement.
fn weight_only(index: &Index, graph: &GraphProto, node: &NodeProto) -> bool {
    let no_q = !graph.node.iter().any(|n| n.op_type() == "QuantizeLinear");
    let weight = node
        .input
        .get(1)
        .and_then(|w| index.producer(w))
        .is_some_and(|(p, _)| {
            let dq = index.node(p);
            dq.op_type() == "DequantizeLinear"
                && dq
                    .input
                    .first()
                    .is_some_and(|q| index.initializer(q).is_some())
        });
    no_q && weight && node.input.first().is_some_and(|x| !from_dq(index, x))
}

/// A Conv/MatMul/Gemm whose weight (input 1) is a float constant: a float op on purpose (an
/// override or a rule kept it float), reading a quantized tensor like any other float op.
fn float_weight(index: &Index, node: &NodeProto) -> bool {
    matches!(node.op_type(), "Conv" | "ConvTranspose" | "MatMul" | "Gemm")
        && node.input.get(1).is_some_and(|w| {
            index.initializer(w).is_some()
                || index
                    .producer(w)
                    .is_some_and(|(p, _)| index.node(p).op_type() == "Constant")
        })
}
