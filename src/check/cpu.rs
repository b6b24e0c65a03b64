//! Int8 weight pairs that x86 CPUs without VNNI can saturate (`params::pairs`), found in any
//! QDQ model: ONNX Runtime and OpenVINO compute a Conv/ConvTranspose/MatMul/Gemm whose data and
//! weight inputs are quantized with uint8 × int8 kernels that, on AVX2 and AVX-512 without
//! VNNI, add two products into a saturating int16. ONNX Runtime shifts int8 activations to
//! uint8 (+128), so the uint8 values reach 255 whatever the activation type.

use serde::Serialize;

use crate::ir::{self, Index};
use crate::onnx::tensor::i8_data;
use crate::params::pairs::{PAIR_LIMIT, Pairing, channel_map, scan};
use crate::proto::{GraphProto, NodeProto};

use super::{Ctx, from_dq};

/// The largest uint8 value an activation reaches in the kernels.
const U8_MAX: i32 = 255;

/// One weighted op's pairs that can saturate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Risk {
    pub node: String,
    pub pairs: usize,
    pub overflowing: usize,
    pub worst: i32,
    /// Output channel (or column) of the worst pair, and its two flat weight indices.
    pub worst_at: (usize, usize),
    pub channel: usize,
}

/// The int8 weight a node reads at `slot` through a DequantizeLinear, with its dims.
fn int8_weight(index: &Index, node: &NodeProto, slot: usize) -> Option<(Vec<i8>, Vec<usize>)> {
    let (p, _) = index.producer(node.input.get(slot)?)?;
    let dq = index.node(p);
    if dq.op_type() != "DequantizeLinear" {
        return None;
    }
    let t = index.initializer(dq.input.first()?)?;
    let values = i8_data(t).ok()?;
    Some((values, t.dims.iter().map(|&d| d as usize).collect()))
}

/// How the x86 kernels pair the weight of shape `dims` that `node` reads at `slot` (its group
/// and transpose flag read from the node); `None` where they do not pair it.
pub fn pairing(node: &NodeProto, dims: &[usize], slot: usize) -> Option<Pairing> {
    let group = ir::attr_int(node, "group").unwrap_or(1).max(1) as usize;
    let trans =
        ir::attr_int(node, if slot == 0 { "transA" } else { "transB" }).is_some_and(|t| t != 0);
    Pairing::of(node.op_type(), dims, slot, group, trans)
}

/// Every weighted op an int8 kernel computes whose weight pairs can saturate without VNNI.
pub fn risks(index: &Index, graph: &GraphProto) -> Vec<(usize, Risk)> {
    let mut out = Vec::new();
    for (id, node) in graph.node.iter().enumerate() {
        if !ir::is_default_domain(node.domain())
            || !matches!(node.op_type(), "Conv" | "ConvTranspose" | "MatMul" | "Gemm")
            || node.input.len() < 2
        {
            continue;
        }
        // the weight is the constant side; the other must be a quantized activation
        let slot = if int8_weight(index, node, 1).is_some() {
            1
        } else if matches!(node.op_type(), "MatMul" | "Gemm") {
            0
        } else {
            continue;
        };
        let Some((values, dims)) = int8_weight(index, node, slot) else {
            continue;
        };
        if !from_dq(index, &node.input[1 - slot]) {
            continue;
        }
        let Some(pairing) = pairing(node, &dims, slot) else {
            continue;
        };
        let s = scan(&values, &pairing);
        if s.overflowing == 0 {
            continue;
        }
        let axis = ir::weight_output_axis(node, dims.len()).unwrap_or(0);
        let channel_of = channel_map(&dims, Some(axis), dims[axis]);
        out.push((
            id,
            Risk {
                node: ir::node_label(node, id),
                pairs: s.pairs,
                overflowing: s.overflowing,
                worst: s.worst,
                worst_at: s.worst_at,
                channel: channel_of(s.worst_at.0),
            },
        ));
    }
    out
}

/// Warnings for `check --target ort|openvino`.
pub(super) fn cpu_pairs(c: &mut Ctx, graph: &GraphProto) {
    for (id, mut r) in risks(c.index, graph) {
        let node = &graph.node[id];
        r.node = c.label(node, id);
        c.out.cpu_pairs.push(r.clone());
        c.warning(
            "cpu_pair_overflow",
            node,
            id,
            format!(
                "on x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) {op} adds int8 weights two by two into a saturating int16: {} of {} pairs can overflow, the worst |w| + |w'| = {} at output channel {} (255 × {} = {} > 32767; the limit is {PAIR_LIMIT}); `weights.cpu_overflow: auto` (the ort and openvino presets) keeps every pair inside",
                r.overflowing,
                r.pairs,
                r.worst,
                r.channel,
                r.worst,
                U8_MAX * r.worst,
                op = node.op_type(),
            ),
        );
    }
}
