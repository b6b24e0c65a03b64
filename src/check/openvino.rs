//! OpenVINO's half-quantized ops and the defects of its CPU plugin around Concat and ReduceMean.

use super::*;

/// OpenVINO 2026.4 (CPU) computes DequantizeLinear → ReduceMean over axis 1 of a rank-3 tensor
/// (the token mean of a transformer) right for the first item of a batch only: the others come
/// out wrong (measured against ONNX Runtime; rank 4, other axes and batch 1 are right). The
/// rank is not known here, so every such ReduceMean over axis 1 or -2 is reported.
pub(super) fn openvino_reduce_mean(c: &mut Ctx, graph: &GraphProto) {
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

/// OpenVINO 2026.4 (CPU) computes a Conv whose int8 data comes through a Concat wrongly once the
/// values pass half the int8 range (|q| > 64): a Concat of int8 DequantizeLinear outputs, or a
/// Concat quantized to int8 after it. uint8 (any zero-point) is computed exactly.
pub(super) fn openvino_int8_concat(c: &mut Ctx, graph: &GraphProto) {
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
pub(super) fn openvino_concat_scales(c: &mut Ctx, graph: &GraphProto) {
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

/// OpenVINO runs Conv/MatMul/Gemm in int8 when both the data and the weight input are quantized.
pub(super) fn openvino_inputs(c: &mut Ctx, graph: &GraphProto) {
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
