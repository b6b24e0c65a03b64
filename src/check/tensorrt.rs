//! TensorRT's rules: QOperator ops, quantized types, zero-points, scales, per-channel axes, and the Q/DQ placements its fusions need.

use super::*;

// Long by design: TensorRT's rules for one node one after another (QOperator, type,
// zero-point, scale, per-channel axis), each independent.
pub(super) fn tensorrt_node(c: &mut Ctx, node: &NodeProto, id: NodeId) {
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
    if ir::attr_int(node, "block_size").unwrap_or(0) > 0
        && qtype == DataType::Int4 as i32
        && node.op_type() == "DequantizeLinear"
        && let Some(reader) = quantized_reader(c.index, node)
    {
        c.violation(
            "int4_blocks_with_quantized_input",
            node,
            id,
            format!(
                "int4 weight blocks read by `{reader}`, whose data input is quantized: TensorRT takes int4 for weight-only quantization (TensorRT-RTX 1.7 parses this and fails to build it); keep that layer's activations float (`--weight-only`) or use int4 per channel"
            ),
        );
    }
}

/// A node reading `dq`'s output as its weight (input 1) whose data input (input 0) comes from
/// a DequantizeLinear, by label.
fn quantized_reader(index: &Index, dq: &NodeProto) -> Option<String> {
    let out = dq.output.first()?;
    index.consumers(out).iter().find_map(|&(r, slot)| {
        let reader = index.node(r);
        let data = reader.input.first()?;
        let quantized = index
            .producer(data)
            .is_some_and(|(p, _)| index.node(p).op_type() == "DequantizeLinear");
        (slot == 1 && quantized).then(|| node_label(reader, r))
    })
}

pub(super) fn per_channel(c: &mut Ctx, node: &NodeProto, id: NodeId, scale: &TensorProto) {
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
pub(super) fn tensorrt_fusion(c: &mut Ctx, graph: &GraphProto) {
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
pub(super) fn add_fuses_elsewhere(index: &Index, add: &NodeProto, skip: &str) -> bool {
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
