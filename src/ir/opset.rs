//! Raising the default-domain opset of a model from 10-12 to 13, the first version whose
//! `DequantizeLinear` takes an `axis` (per-channel weights).
//!
//! Only ops whose signature changed between the model's opset and 13 need work. The ones whose
//! attributes simply became inputs are converted (Squeeze, Unsqueeze, Split, ReduceSum axes;
//! Dropout's ratio); ones whose meaning changed block the upgrade, and the caller falls back to
//! per-tensor weights, which work at any opset from 10.

use crate::proto::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};

use super::{Names, NodeId, Patch, default_opset, is_default_domain, node_label};

/// What raising the opset takes: a patch, or the nodes that prevent it.
pub struct OpsetUpgrade {
    pub patch: Patch,
    /// Nodes converted (for the report).
    pub converted: Vec<String>,
}

const TARGET: i64 = 13;
/// ONNX IR version 7 introduced opset 13.
const TARGET_IR: i64 = 7;

/// Plans the upgrade of `model` to opset 13. `Err` lists every blocking node with the reason.
pub fn plan_upgrade(model: &ModelProto, names: &mut Names) -> Result<OpsetUpgrade, Vec<String>> {
    let from = default_opset(model).unwrap_or(0);
    let mut up = OpsetUpgrade {
        patch: Patch::default(),
        converted: Vec::new(),
    };
    if from >= TARGET {
        return Ok(up);
    }
    if from < 10 {
        return Err(vec![format!("opset {from} is older than 10")]);
    }
    let graph = model.graph.as_ref().expect("loaded models have a graph");
    let mut blockers = Vec::new();
    for (id, node) in graph.node.iter().enumerate() {
        let mut node = node.clone();
        let mut changed = convert_node(&mut node, from, &mut up.patch.add_initializers, names)
            .map_err(|why| {
                blockers.push(format!(
                    "node `{}` ({}): {why}",
                    node_label(&node, id),
                    node.op_type()
                ))
            })
            .unwrap_or(false);
        for a in &mut node.attribute {
            for g in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                changed |= convert_graph(
                    g,
                    from,
                    &mut up.patch.add_initializers,
                    names,
                    &mut blockers,
                );
            }
        }
        if changed {
            up.converted
                .push(format!("{} ({})", node_label(&node, id), node.op_type()));
            up.patch.replace.push((id as NodeId, node));
        }
    }
    if !blockers.is_empty() {
        return Err(blockers);
    }
    up.patch.opset = Some(TARGET);
    up.patch.min_ir_version = Some(TARGET_IR);
    Ok(up)
}

fn convert_graph(
    g: &mut GraphProto,
    from: i64,
    inits: &mut Vec<TensorProto>,
    names: &mut Names,
    blockers: &mut Vec<String>,
) -> bool {
    let mut changed = false;
    for (id, node) in g.node.iter_mut().enumerate() {
        match convert_node(node, from, inits, names) {
            Ok(c) => changed |= c,
            Err(why) => blockers.push(format!(
                "subgraph node `{}` ({}): {why}",
                node_label(node, id),
                node.op_type()
            )),
        }
        for a in &mut node.attribute {
            for sub in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                changed |= convert_graph(sub, from, inits, names, blockers);
            }
        }
    }
    changed
}

/// Converts one node to its opset-13 form. `Ok(true)` when changed, `Err` when it cannot be.
fn convert_node(
    node: &mut NodeProto,
    from: i64,
    inits: &mut Vec<TensorProto>,
    names: &mut Names,
) -> Result<bool, String> {
    if !is_default_domain(node.domain()) {
        return Ok(false);
    }
    match node.op_type() {
        "Squeeze" | "Unsqueeze" | "ReduceSum" => Ok(attr_to_input(node, "axes", 1, inits, names)),
        "Split" => Ok(attr_to_input(node, "split", 1, inits, names)),
        "Softmax" | "LogSoftmax" | "Hardmax" => match super::attr_int(node, "axis") {
            Some(-1) => Ok(false),
            _ => Err(
                "its axis semantics changed in opset 13 (only an explicit axis=-1 is kept)".into(),
            ),
        },
        "Dropout" if from < 12 => {
            // Inference ignores the ratio; opset 12 moved it to an optional input.
            let before = node.attribute.len();
            node.attribute.retain(|a| a.name() != "ratio");
            Ok(node.attribute.len() != before)
        }
        "Clip" | "Pad" | "Resize" if from < 11 => Err("its inputs changed in opset 11".into()),
        "Upsample" | "Scatter" => Err("deprecated after its opset".into()),
        _ => Ok(false),
    }
}

/// Moves an ints attribute to an int64 initializer at input `slot`. Returns whether it did.
fn attr_to_input(
    node: &mut NodeProto,
    attr: &str,
    slot: usize,
    inits: &mut Vec<TensorProto>,
    names: &mut Names,
) -> bool {
    let Some(pos) = node.attribute.iter().position(|a| a.name() == attr) else {
        return false;
    };
    let a: AttributeProto = node.attribute.remove(pos);
    let base = format!(
        "{}_{attr}",
        node.output.first().map_or("node", |s| s.as_str())
    );
    let name = names.fresh(&base);
    inits.push(crate::onnx::tensor::i64_tensor(
        &name,
        &[a.ints.len()],
        &a.ints,
    ));
    while node.input.len() < slot {
        node.input.push(String::new());
    }
    node.input.insert(slot, name);
    true
}
