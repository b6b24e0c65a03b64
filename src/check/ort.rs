//! ONNX Runtime's node units: a quantized op whose output is not quantized is not fused.

use super::*;

/// ONNX Runtime fuses a node only as a complete unit (it has no int8 ConvTranspose on CPU, so
/// that op is not listed): DequantizeLinear on every data input, a
/// QuantizeLinear reading its output (or, for MatMul/Gemm, a float output).
pub(super) fn ort_units(c: &mut Ctx, graph: &GraphProto) {
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
