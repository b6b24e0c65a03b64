//! Pass `fold-relu`, on the written model when the preset asks for it (ORT): a Relu reading
//! the output of a complete node unit is dropped, the unit writing the Relu's output instead.
//!
//! Exact, not an approximation: calibration still runs the model with its Relus, so that tensor
//! is measured after the Relu (never below 0), and with asymmetric activations its range
//! `[0, hi]` gets zero-point `qmin`: QuantizeLinear clamps every negative value to `qmin`, which
//! dequantizes to exactly 0 — what the Relu did. Symmetric activations keep their Relus
//! (ONNX Runtime's own tool drops them there too, and negative values pass: see ANCHORS).

use crate::error::Error;
use crate::ir::FoldedRelu;
use crate::ir::{self, Index, Patch};
use crate::proto::ModelProto;
use crate::rewrite::ActivationParams;

/// Puts back every folded Relu whose unit output the plan does not quantize exactly: a Relu is
/// only redundant when every reader of the unit's output reads it through a QuantizeLinear whose
/// zero-point is the type's minimum (negative values clamp to exactly 0). An override that keeps
/// the unit float, or gives that tensor another range, needs the Relu back. Returns the patch
/// and the Relus restored.
pub(super) fn restore_relus(
    model: &ModelProto,
    plan: &crate::policy::QuantPlan,
    act: &ActivationParams,
) -> (Patch, Vec<String>) {
    let graph = model.graph.as_ref().expect("loaded models have a graph");
    let index = Index::new(graph);
    let mut patch = Patch::default();
    let mut restored = Vec::new();
    for f in &plan.folded_relus {
        let exact = plan.site(&f.tensor).is_some_and(|s| s.all_consumers)
            && act
                .tensors
                .get(&f.tensor)
                .is_some_and(|(q, p)| p.zero_point == q.range().0);
        let Some((unit, _)) = index.producer(&f.tensor) else {
            continue;
        };
        if exact {
            continue;
        }
        let mut node = index.node(unit).clone();
        node.output[0] = f.relu.input[0].clone();
        patch.replace.push((unit, node));
        patch
            .nodes
            .push((ir::Placement::After(f.tensor.clone()), f.relu.clone()));
        restored.push(f.label.clone());
    }
    (patch, restored)
}

/// A copy of `model` with every Relu that follows one of `ops` (and is that output's only
/// reader) folded away, and the Relus removed.
pub fn fold_relu(
    model: &ModelProto,
    ops: &[String],
) -> Result<(ModelProto, Vec<FoldedRelu>), Error> {
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
        folded.push(FoldedRelu {
            relu: r.clone(),
            label: ir::node_label(r, *relu),
            tensor: r.output[0].clone(),
        });
    }
    let mut model = model.clone();
    if !folded.is_empty() {
        ir::apply(&mut model, patch)
            .map_err(|e| Error::Internal(format!("pass `fold-relu` broke the graph: {e}")))?;
    }
    Ok((model, folded))
}
