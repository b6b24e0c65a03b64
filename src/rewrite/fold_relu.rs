//! Pass `fold-relu`, on the written model when the preset asks for it (ORT): a Relu reading
//! the output of a complete node unit is dropped, the unit writing the Relu's output instead.
//!
//! Exact, not an approximation: calibration still runs the model with its Relus, so that tensor
//! is measured after the Relu (never below 0), and with asymmetric activations its range
//! `[0, hi]` gets zero-point `qmin`: QuantizeLinear clamps every negative value to `qmin`, which
//! dequantizes to exactly 0 — what the Relu did. Symmetric activations keep their Relus
//! (ONNX Runtime's own tool drops them there too, and negative values pass: see ANCHORS).

use crate::error::Error;
use crate::ir::{self, Index, Patch};
use crate::proto::ModelProto;

/// A copy of `model` with every Relu that follows one of `ops` (and is that output's only
/// reader) folded away, and the names of the Relus removed.
pub fn fold_relu(model: &ModelProto, ops: &[String]) -> Result<(ModelProto, Vec<String>), Error> {
    let graph = model.graph.as_ref().expect("loaded models have a graph");
    let index = Index::new(graph);
    let mut patch = Patch::default();
    let mut folded = Vec::new();
    for (id, node) in graph.node.iter().enumerate() {
        if !ir::is_default_domain(node.domain()) || !ops.iter().any(|o| o == node.op_type()) {
            continue;
        }
        let Some(out) = node.output.first().filter(|o| !o.is_empty()) else {
            continue;
        };
        let [(relu, 0)] = index.consumers(out) else {
            continue;
        };
        let r = index.node(*relu);
        if r.op_type() != "Relu"
            || !ir::is_default_domain(r.domain())
            || index.is_graph_output(out)
            || index.is_captured(out)
        {
            continue;
        }
        let mut unit = node.clone();
        unit.output[0] = r.output[0].clone();
        patch.replace.push((id, unit));
        patch.remove.push(*relu);
        folded.push(ir::node_label(r, *relu));
    }
    let mut model = model.clone();
    if !folded.is_empty() {
        ir::apply(&mut model, patch)
            .map_err(|e| Error::Internal(format!("pass `fold-relu` broke the graph: {e}")))?;
    }
    Ok((model, folded))
}
