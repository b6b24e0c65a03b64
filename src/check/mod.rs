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
    let main = model.graph.as_ref().expect("loaded models have a graph");
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

fn tensorrt_node(c: &mut Ctx, node: &NodeProto, id: NodeId) {
    if QOPERATORS.contains(&node.op_type()) {
        let op = node.op_type().to_string();
        return c.violation(
            "qoperator",
            node,
            id,
            format!("{op} is a QOperator op; TensorRT reads QDQ models only"),
        );
    }
    if !is_qdq(node) {
        return;
    }
    let int8 = DataType::Int8 as i32;
    let qtype = c.qtype(node).unwrap_or(int8);
    if qtype == DataType::Uint8 as i32 {
        c.violation(
            "uint8",
            node,
            id,
            "uint8 quantization (TensorRT: \"unsupported input type of UINT8\")".into(),
        );
    } else if qtype == DataType::Int32 as i32 && node.op_type() == "DequantizeLinear" {
        c.violation(
            "int32_bias_dq",
            node,
            id,
            "DequantizeLinear of int32 (a quantized bias): TensorRT wants float biases".into(),
        );
    } else if ![
        int8,
        DataType::Float8e4m3fn as i32,
        DataType::Int4 as i32,
        DataType::Float4e2m1 as i32,
    ]
    .contains(&qtype)
    {
        c.violation(
            "type",
            node,
            id,
            format!(
                "{} quantization: TensorRT supports int8, fp8 e4m3, int4 and fp4",
                elem_type_name(qtype)
            ),
        );
    }
    if let Some(zp) = c.init(node, 2)
        && crate::onnx::tensor::le_bytes(zp).is_ok_and(|b| b.iter().any(|&b| b != 0))
    {
        c.violation(
            "zero_point_nonzero",
            node,
            id,
            format!("zero-point `{}` is not 0", zp.name()),
        );
    }
    match c.init(node, 1) {
        None => c.violation(
            "scale_not_constant",
            node,
            id,
            format!(
                "scale `{}` is not an initializer",
                node.input.get(1).map_or("", |s| s)
            ),
        ),
        Some(s) => {
            if let Some(v) = crate::ir::constant::float_values(s)
                && v.iter().any(|x| !(x.is_finite() && *x > 0.0))
            {
                c.violation(
                    "scale_not_positive",
                    node,
                    id,
                    format!("scale `{}` has values that are not positive", s.name()),
                );
            }
            if s.data_type() != crate::proto::tensor_proto::DataType::Float as i32 && c.opset < 19 {
                c.violation(
                    "opset",
                    node,
                    id,
                    format!(
                        "scale `{}` is {}: scales other than float32 need opset 19, the model has {}",
                        s.name(),
                        elem_type_name(s.data_type()),
                        c.opset
                    ),
                );
            }
            per_channel(c, node, id, s);
        }
    }
    if ir::attr_int(node, "block_size").unwrap_or(0) > 0 && qtype == int8 {
        c.violation(
            "blocked_int8",
            node,
            id,
            "block quantization of int8: TensorRT blocks fp4, fp8 and int4 only".into(),
        );
    }
}

fn per_channel(c: &mut Ctx, node: &NodeProto, id: NodeId, scale: &TensorProto) {
    let channels: i64 = scale.dims.iter().product();
    if scale.dims.is_empty() || channels == 1 {
        return;
    }
    if c.opset < 13 {
        c.violation(
            "opset",
            node,
            id,
            format!(
                "per-axis quantization needs opset 13, the model has {}",
                c.opset
            ),
        );
    }
    let data = node.input.first().map_or("", |s| s.as_str());
    let index = c.index;
    if node.op_type() == "QuantizeLinear" && index.initializer(data).is_some() {
        return; // a float weight behind Q → DQ: its DequantizeLinear is checked
    }
    // the weight a DequantizeLinear reads: stored quantized, or quantized by a Q of a float weight
    let weight = index.initializer(data).or_else(|| {
        let (p, _) = index.producer(data)?;
        let q = index.node(p);
        (q.op_type() == "QuantizeLinear")
            .then(|| q.input.first().and_then(|i| index.initializer(i)))?
    });
    let Some(weight) = weight.filter(|_| node.op_type() == "DequantizeLinear") else {
        return c.violation(
            "per_channel_activation",
            node,
            id,
            "per-channel scale on an activation: TensorRT allows it on weights only".into(),
        );
    };
    let rank = weight.dims.len();
    let axis = ir::attr_int(node, "axis").unwrap_or(1);
    let axis = if axis < 0 { axis + rank as i64 } else { axis };
    let block = ir::attr_int(node, "block_size").unwrap_or(0);
    let out = node.output.first().map_or("", |s| s.as_str());
    for &(consumer, slot) in c.index.consumers(out) {
        let cn = c.index.node(consumer);
        let expected = if block > 0 {
            ir::weight_input_axis(cn, rank).map(|a| (a, "input channels (blocks)"))
        } else {
            ir::weight_output_axis(cn, rank).map(|a| (a, "output channels"))
        };
        let Some((want, what)) = expected.filter(|_| slot == 1) else {
            continue;
        };
        if axis != want as i64 {
            let msg = format!(
                "weight scale on axis {axis}, but `{}` ({}) has its {what} on axis {want}",
                node_label(cn, consumer),
                cn.op_type()
            );
            return c.violation("per_channel_axis", node, id, msg);
        }
        if block > 0 {
            let fits = scale.dims.len() == rank
                && weight.dims.get(want).copied() == Some(scale.dims[want] * block);
            if !fits {
                let msg = format!(
                    "scale dims {:?} do not divide weight dims {:?} into blocks of {block} on axis {want}",
                    scale.dims, weight.dims
                );
                return c.violation("per_channel_axis", node, id, msg);
            }
            continue;
        }
        if weight.dims.get(want) != Some(&channels) {
            let msg = format!(
                "{channels} scales for axis {want} of size {:?}",
                weight.dims.get(want)
            );
            return c.violation("per_channel_axis", node, id, msg);
        }
    }
}

/// Placements TensorRT accepts but cannot fuse.
fn tensorrt_fusion(c: &mut Ctx, graph: &GraphProto) {
    for (id, node) in graph.node.iter().enumerate() {
        if node.op_type() != "QuantizeLinear" {
            continue;
        }
        let Some((p, _)) = node.input.first().and_then(|i| c.index.producer(i)) else {
            continue;
        };
        if !matches!(c.index.node(p).op_type(), "Conv" | "ConvTranspose") {
            continue;
        }
        let conv = node_label(c.index.node(p), p);
        let index = c.index;
        for dq_out in readers_through_dq(index, node) {
            for &(r, _) in index.consumers(&dq_out) {
                let op = c.index.node(r).op_type();
                let message = match op {
                    "BatchNormalization" | "Relu" => {
                        format!("Q/DQ between `{conv}` and its {op}: TensorRT cannot fuse them")
                    }
                    // the skip input of an Add that fuses into the conv producing its other input
                    "Add" if add_fuses_elsewhere(index, c.index.node(r), &dq_out) => continue,
                    "Add" => format!(
                        "Q/DQ on the output of `{conv}` feeding an Add: quantize the Add's other (skip) input so the Add fuses into the conv"
                    ),
                    _ => continue,
                };
                c.warning("fusion", node, id, message);
            }
        }
    }
}

/// Whether `add`'s input other than `skip` is the float output of a Conv/ConvTranspose (or of
/// its BatchNormalization): TensorRT then fuses the Add into that conv with `skip` quantized.
fn add_fuses_elsewhere(index: &Index, add: &NodeProto, skip: &str) -> bool {
    let Some(other) = add.input.iter().find(|i| i.as_str() != skip) else {
        return false;
    };
    let mut tensor = other.as_str();
    loop {
        let Some((p, _)) = index.producer(tensor) else {
            return false;
        };
        let producer = index.node(p);
        match producer.op_type() {
            "Conv" | "ConvTranspose" => return true,
            "BatchNormalization" => tensor = producer.input.first().map_or("", |s| s.as_str()),
            _ => return false,
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

/// ONNX Runtime fuses a node only as a complete unit (it has no int8 ConvTranspose on CPU, so
/// that op is not listed): DequantizeLinear on every data input, a
/// QuantizeLinear reading its output (or, for MatMul/Gemm, a float output).
fn ort_units(c: &mut Ctx, graph: &GraphProto) {
    let data_inputs: HashMap<&str, usize> = [
        ("Conv", 2),
        ("MatMul", 2),
        ("Gemm", 2),
        ("Add", 2),
        ("Mul", 2),
        ("AveragePool", 1),
        ("GlobalAveragePool", 1),
    ]
    .into();
    for (id, node) in graph.node.iter().enumerate() {
        let Some(&n) = data_inputs.get(node.op_type()) else {
            continue;
        };
        let quantized: Vec<bool> = node
            .input
            .iter()
            .take(n)
            .map(|i| from_dq(c.index, i))
            .collect();
        if !quantized.iter().any(|q| *q) {
            continue;
        }
        let op = node.op_type().to_string();
        if quantized.iter().any(|q| !q) {
            if matches!(node.op_type(), "Conv" | "Gemm")
                && float_weight(c.index, node)
                && per_tensor_dq(c.index, &node.input[0])
            {
                c.warning(
                    "float_weight_requantized",
                    node,
                    id,
                    format!(
                        "float {op} reads a per-tensor DequantizeLinear: ONNX Runtime quantizes its weight per tensor itself (WeightBiasQuantization); read through a per-axis DequantizeLinear to keep it float"
                    ),
                );
                continue;
            }
            if weight_only(c.index, graph, node) || float_weight(c.index, node) {
                continue;
            }
            c.warning(
                "incomplete_unit",
                node,
                id,
                format!("{op} has a quantized and a float data input: it runs in float"),
            );
            continue;
        }
        let out = node.output.first().map_or("", |s| s.as_str());
        let readers = c.index.consumers(out);
        let to_q = !readers.is_empty()
            && readers
                .iter()
                .all(|&(r, _)| c.index.node(r).op_type() == "QuantizeLinear");
        if !to_q && !matches!(node.op_type(), "MatMul" | "Gemm") {
            c.warning(
                "incomplete_unit",
                node,
                id,
                format!(
                    "{op} output is not quantized: ONNX Runtime runs it in float between Q/DQ pairs"
                ),
            );
        }
    }
}

/// OpenVINO 2026.4 (CPU) computes DequantizeLinear → ReduceMean over axis 1 of a rank-3 tensor
/// (the token mean of a transformer) right for the first item of a batch only: the others come
/// out wrong (measured against ONNX Runtime; rank 4, other axes and batch 1 are right). The
/// rank is not known here, so every such ReduceMean over axis 1 or -2 is reported.
fn openvino_reduce_mean(c: &mut Ctx, graph: &GraphProto) {
    for (id, node) in graph.node.iter().enumerate() {
        if node.op_type() != "ReduceMean" || !ir::is_default_domain(node.domain()) {
            continue;
        }
        let Some(x) = node.input.first() else {
            continue;
        };
        let activation = activation_dq(c.index, x).is_some();
        let axes: Vec<i64> = match ir::attr(node, "axes") {
            Some(a) => a.ints.clone(),
            None => node
                .input
                .get(1)
                .and_then(|n| c.index.initializer(n))
                .and_then(|t| crate::onnx::tensor::i64_data(t).ok())
                .unwrap_or_default(),
        };
        if activation && axes.iter().any(|&a| a == 1 || a == -2) {
            c.warning(
                "reduce_mean_batch",
                node,
                id,
                "a dequantized ReduceMean over axis 1: OpenVINO 2026.4 (CPU) gets every batch item but the first wrong on rank-3 inputs; run it with batch 1 there, or keep its input float (`skip` the node producing it)".into(),
            );
        }
    }
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

/// OpenVINO 2026.4 (CPU) computes a Conv whose int8 data comes through a Concat wrongly once the
/// values pass half the int8 range (|q| > 64): a Concat of int8 DequantizeLinear outputs, or a
/// Concat quantized to int8 after it. uint8 (any zero-point) is computed exactly.
fn openvino_int8_concat(c: &mut Ctx, graph: &GraphProto) {
    let index = c.index;
    let int8_dq = |t: &str| {
        activation_dq(index, t).is_some_and(|dq| {
            dq.input
                .get(2)
                .and_then(|z| index.initializer(z))
                .is_some_and(|z| z.data_type() == DataType::Int8 as i32)
        })
    };
    let concat = |t: &str| {
        index
            .producer(t)
            .map(|(p, _)| index.node(p))
            .filter(|n| n.op_type() == "Concat")
    };
    for (id, node) in graph.node.iter().enumerate() {
        if node.op_type() != "Conv"
            || !ir::is_default_domain(node.domain())
            || !from_dq(index, node.input.get(1).map_or("", |s| s.as_str()))
        {
            continue;
        }
        let Some(x) = node.input.first() else {
            continue;
        };
        // Concat -> QuantizeLinear(int8) -> DequantizeLinear -> Conv
        let after = int8_dq(x)
            && index.producer(x).is_some_and(|(d, _)| {
                let q = index.node(d).input.first().and_then(|q| index.producer(q));
                q.is_some_and(|(q, _)| {
                    let q = index.node(q);
                    q.op_type() == "QuantizeLinear"
                        && q.input.first().is_some_and(|t| concat(t).is_some())
                })
            });
        // Concat(int8 DequantizeLinear, ...) -> Conv
        let before = concat(x).is_some_and(|n| n.input.iter().any(|i| int8_dq(i)));
        if after || before {
            c.warning(
                "int8_concat",
                node,
                id,
                "int8 data through a Concat: OpenVINO 2026.4 (CPU) computes this Conv wrongly once values pass half the int8 range; quantize the Concat's tensors as uint8 (`activations.concat_uint8`)".into(),
            );
        }
    }
}

/// OpenVINO 2026.4 (CPU) moves the dequantization of a Concat's inputs past a reduction over
/// the Concat's output as if they shared one scale: with different scales the reduction is
/// wrong (the corpus's attacut segmenters: 16.6 dB in OpenVINO against 31.7 exact).
fn openvino_concat_scales(c: &mut Ctx, graph: &GraphProto) {
    let index = c.index;
    for (id, node) in graph.node.iter().enumerate() {
        if node.op_type() != "Concat" || !ir::is_default_domain(node.domain()) {
            continue;
        }
        let mut scales: Vec<u32> = node
            .input
            .iter()
            .filter_map(|t| activation_dq(index, t))
            .filter_map(|dq| dq.input.get(1).and_then(|s| index.initializer(s)))
            .filter_map(|s| crate::onnx::tensor::f32_data(s).ok())
            .filter(|v| v.len() == 1)
            .map(|v| v[0].to_bits())
            .collect();
        scales.sort_unstable();
        scales.dedup();
        let reduced = node
            .output
            .first()
            .is_some_and(|o| ir::read_by_reduction(index, o));
        if scales.len() > 1 && reduced {
            c.warning(
                "concat_scales",
                node,
                id,
                format!(
                    "a reduction reads this Concat of {} different dequantization scales: OpenVINO 2026.4 (CPU) reduces them as if they shared one; give them one scale (`placement.concat_inputs_shared`)",
                    scales.len()
                ),
            );
        }
    }
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

/// OpenVINO runs Conv/MatMul/Gemm in int8 when both the data and the weight input are quantized.
fn openvino_inputs(c: &mut Ctx, graph: &GraphProto) {
    for (id, node) in graph.node.iter().enumerate() {
        if !matches!(node.op_type(), "Conv" | "ConvTranspose" | "MatMul" | "Gemm")
            || node.input.len() < 2
        {
            continue;
        }
        let (a, b) = (
            from_dq(c.index, &node.input[0]),
            from_dq(c.index, &node.input[1]),
        );
        if a != b && !weight_only(c.index, graph, node) && !float_weight(c.index, node) {
            let which = if a { "weight" } else { "data" };
            c.warning(
                "half_quantized",
                node,
                id,
                format!("its {which} input is float: OpenVINO runs it in float"),
            );
        }
    }
}
