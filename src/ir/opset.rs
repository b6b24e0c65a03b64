//! Raising the default-domain opset of a model to 13, the first version whose
//! `DequantizeLinear` takes an `axis` (per-channel weights).
//!
//! Only ops whose signature changed between the model's opset and 13 need work. The ones whose
//! attributes simply became inputs are converted (Squeeze, Unsqueeze, Split, ReduceSum axes;
//! Slice starts/ends/axes, Reshape's shape, TopK's k, Clip's bounds, Pad's pads and value);
//! attributes that became no-ops are dropped (Dropout's ratio and is_test, BatchNormalization's
//! spatial=1, legacy `broadcast` without `axis`, `consumed_inputs`); Upsample and Resize-10 become
//! the Resize-13 that computes the same (asymmetric coordinates, floor for nearest). Ops whose
//! meaning changed block the upgrade. From 10-12 the caller then falls back to per-tensor
//! weights, which work at any opset from 10; below 10 (no QuantizeLinear) the model is refused
//! with every blocking node named.

use crate::proto::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};

use super::{
    Names, NodeId, Patch, default_opset, int_attr, is_default_domain, node_label, string_attr,
};

/// What raising the opset takes: a patch, or the nodes that prevent it.
pub struct OpsetUpgrade {
    pub patch: Patch,
    /// Nodes converted (for the report).
    pub converted: Vec<String>,
}

/// The IR version that introduced an opset (13: IR 7, 19: IR 9).
fn ir_for(opset: i64) -> i64 {
    match opset {
        ..=12 => 6,
        13..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        _ => 10,
    }
}

/// Plans the upgrade of `model` to opset `target` (13 for per-channel weights, 19 for float16
/// scales). `Err` lists every blocking node with the reason.
// One loop over the main graph's nodes (their subgraphs through convert_graph): the PRelu and
// Softmax cases, then convert_node, every blocker collected so that all are reported at once.
pub fn plan_upgrade(
    model: &ModelProto,
    names: &mut Names,
    target: i64,
) -> Result<OpsetUpgrade, Vec<String>> {
    let from = default_opset(model).unwrap_or(0);
    let mut up = OpsetUpgrade {
        patch: Patch::default(),
        converted: Vec::new(),
    };
    if from >= target {
        return Ok(up);
    }
    let graph = crate::ir::graph(model);
    let mut blockers = Vec::new();
    for (id, node) in graph.node.iter().enumerate() {
        // a one-value slope means the same in every PRelu version
        if node.op_type() == "PRelu"
            && node.input.get(1).is_some_and(|s| {
                graph
                    .initializer
                    .iter()
                    .any(|t| t.name() == s && t.dims.iter().product::<i64>() == 1)
            })
        {
            continue;
        }
        // A Softmax over the flattened trailing axes (its meaning before opset 13) is rewritten
        // exactly as Flatten → Softmax(-1) → Reshape back to the input's shape, so the model
        // gets per-channel weights instead of falling back to per-tensor ones
        if from < 13
            && matches!(node.op_type(), "Softmax" | "LogSoftmax" | "Hardmax")
            && super::attr_int(node, "axis") != Some(-1)
            && is_default_domain(node.domain())
        {
            softmax_as_flattened(node, id, names, &mut up);
            continue;
        }
        let mut node = node.clone();
        let mut changed = convert_node(
            &mut node,
            (from, target),
            &mut up.patch.add_initializers,
            names,
        )
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
                    (from, target),
                    &mut up.patch.add_initializers,
                    names,
                    &mut blockers,
                );
            }
        }
        if changed {
            let was = graph.node[id].op_type();
            up.converted.push(if was == node.op_type() {
                format!("{} ({was})", node_label(&node, id))
            } else {
                format!("{} ({was} → {})", node_label(&node, id), node.op_type())
            });
            up.patch.replace.push((id as NodeId, node));
        }
    }
    if !blockers.is_empty() {
        return Err(blockers);
    }
    up.patch.opset = Some(target);
    up.patch.min_ir_version = Some(ir_for(target));
    Ok(up)
}

/// `Softmax(x, axis=a)` of opsets before 13 as `Reshape(Softmax(Flatten(x, a), -1), Shape(x))`.
fn softmax_as_flattened(node: &NodeProto, id: NodeId, names: &mut Names, up: &mut OpsetUpgrade) {
    let axis = super::attr_int(node, "axis").unwrap_or(1);
    let (Some(x), Some(y)) = (node.input.first(), node.output.first()) else {
        return;
    };
    let shape = names.fresh(&format!("{y}_input_shape"));
    let flat = names.fresh(&format!("{y}_flat"));
    let inner = names.fresh(&format!("{y}_2d"));
    let make =
        |op: &str, inputs: Vec<String>, output: &str, attrs: Vec<AttributeProto>, n: &mut Names| {
            NodeProto {
                name: Some(n.fresh(&format!(
                    "{}_{op}",
                    if node.name().is_empty() {
                        y.as_str()
                    } else {
                        node.name()
                    }
                ))),
                op_type: Some(op.into()),
                input: inputs,
                output: vec![output.to_string()],
                attribute: attrs,
                ..Default::default()
            }
        };
    let shape_node = make("Shape", vec![x.clone()], &shape, vec![], names);
    let flatten = make(
        "Flatten",
        vec![x.clone()],
        &flat,
        vec![int_attr("axis", axis)],
        names,
    );
    let reshape = make(
        "Reshape",
        vec![inner.clone(), shape.clone()],
        y,
        vec![],
        names,
    );
    let mut soft = node.clone();
    soft.input[0] = flat;
    soft.output[0] = inner;
    soft.attribute.retain(|a| a.name() != "axis");
    soft.attribute.push(int_attr("axis", -1));
    up.converted.push(format!(
        "{} ({} over the flattened trailing axes: Flatten → {} → Reshape)",
        node_label(node, id),
        node.op_type(),
        node.op_type()
    ));
    up.patch.replace.push((id, soft));
    for n in [shape_node, flatten, reshape] {
        up.patch.nodes.push((super::Placement::Before(id), n));
    }
}

/// Raises `model` to opset 13 in place, for models older than QuantizeLinear (opset 10).
/// Returns the converted nodes; `Err` lists every node that prevents it. Initializers that
/// IR versions before 4 had to list as graph inputs are removed from the inputs (from IR 4 on,
/// such an input may be fed, and runtimes stop treating the tensor as a constant).
pub fn upgrade_in_place(model: &mut ModelProto) -> Result<Vec<String>, Vec<String>> {
    let mut names = super::Names::new(&super::Index::new(crate::ir::graph(model)));
    let mut up = plan_upgrade(model, &mut names, 13)?;
    if model.ir_version() < 4 {
        // initializers need not be inputs any more: callers may no longer override them
        let g = crate::ir::graph(model);
        let inits: std::collections::HashSet<&str> =
            g.initializer.iter().map(|t| t.name()).collect();
        up.patch.remove_inputs = g
            .input
            .iter()
            .filter(|v| inits.contains(v.name()))
            .map(|v| v.name().to_string())
            .collect();
    }
    super::apply(model, up.patch).map_err(|e| vec![e])?;
    Ok(up.converted)
}

fn convert_graph(
    g: &mut GraphProto,
    versions: (i64, i64),
    inits: &mut Vec<TensorProto>,
    names: &mut Names,
    blockers: &mut Vec<String>,
) -> bool {
    let mut changed = false;
    for (id, node) in g.node.iter_mut().enumerate() {
        match convert_node(node, versions, inits, names) {
            Ok(c) => changed |= c,
            Err(why) => blockers.push(format!(
                "subgraph node `{}` ({}): {why}",
                node_label(node, id),
                node.op_type()
            )),
        }
        for a in &mut node.attribute {
            for sub in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                changed |= convert_graph(sub, versions, inits, names, blockers);
            }
        }
    }
    changed
}

/// Converts one node from opset `from` to its form at `target`. `Ok(true)` when changed, `Err`
/// when it cannot be.
// Long by design: one short, independent arm per op whose attributes became inputs or whose
// meaning changed between opsets; together they are the conversion table.
fn convert_node(
    node: &mut NodeProto,
    (from, target): (i64, i64),
    inits: &mut Vec<TensorProto>,
    names: &mut Names,
) -> Result<bool, String> {
    if !is_default_domain(node.domain()) {
        return Ok(false);
    }
    // An in-place hint of opsets 1-5, without effect on the result.
    let mut changed = from < 7 && drop_attrs(node, &["consumed_inputs"]);
    let op = node.op_type().to_string();
    changed |= match op.as_str() {
        "Squeeze" | "Unsqueeze" | "ReduceSum" => attr_to_input(node, "axes", 1, inits, names),
        "Split" => attr_to_input(node, "split", 1, inits, names),
        "Softmax" | "LogSoftmax" | "Hardmax" if from < 13 => match super::attr_int(node, "axis") {
            Some(-1) => false,
            _ => {
                return Err(
                    "its axis semantics changed in opset 13 (only an explicit axis=-1 is kept)"
                        .into(),
                );
            }
        },
        // Inference ignores the ratio; opset 12 moved it to an optional input.
        "Dropout" if from < 12 => drop_attrs(node, &["ratio", "is_test"]),
        "Clip" if from < 11 => {
            let lo = float_attr_to_input(node, "min", 1, inits, names);
            let hi = float_attr_to_input(node, "max", 2, inits, names);
            lo | hi
        }
        "Pad" if from < 11 => {
            let pads = attr_to_input(node, "pads", 1, inits, names);
            let value = float_attr_to_input(node, "value", 2, inits, names);
            pads | value
        }
        "Resize" if from < 11 => resize_from_10(node),
        "Upsample" if from < 10 => {
            move_to_input(node, "scales", 1, inits, names, |n, a| {
                crate::onnx::tensor::f32_tensor(n, &[a.floats.len()], &a.floats)
            });
            node.op_type = Some("Resize".into());
            resize_from_10(node)
        }
        "Slice" if from < 10 => {
            let starts = attr_to_input(node, "starts", 1, inits, names);
            let ends = attr_to_input(node, "ends", 2, inits, names);
            let axes = attr_to_input(node, "axes", 3, inits, names);
            starts | ends | axes
        }
        "TopK" if from < 10 => move_to_input(node, "k", 1, inits, names, |n, a| {
            crate::onnx::tensor::i64_tensor(n, &[1], &[a.i()])
        }),
        "BatchNormalization" if from < 9 => {
            if super::attr_int(node, "spatial").is_some_and(|s| s != 1) {
                return Err("spatial=0 (per-activation statistics) was removed in opset 9".into());
            }
            drop_attrs(node, &["spatial", "is_test", "momentum_unused"])
        }
        "Reshape" if from < 5 => attr_to_input(node, "shape", 1, inits, names),
        "Concat" if from < 4 && super::attr_int(node, "axis").is_none() => {
            node.attribute.push(int_attr("axis", 1));
            true
        }
        // PRelu-6 applies a slope of C values along the channel axis; from opset 7 it broadcasts
        // from the right (a C-vector would meet the last axis)
        "PRelu" if from < 7 => {
            return Err("its slope broadcasting changed in opset 7".into());
        }
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "And" | "Or" | "Xor" | "Equal" | "Greater"
        | "Less" | "Gemm"
            if from < 7 =>
        {
            if op != "Gemm"
                && super::attr_int(node, "broadcast") == Some(1)
                && super::attr(node, "axis").is_some()
            {
                return Err(
                    "legacy broadcasting along `axis` was replaced by numpy broadcasting in opset 7"
                        .into(),
                );
            }
            drop_attrs(node, &["broadcast", "axis"])
        }
        "Cast" | "Tile" if from < 6 => return Err("its signature changed in opset 6".into()),
        "Scan" if from < 9 => return Err("its semantics changed in opset 9".into()),
        "Affine" | "Crop" | "DynamicSlice" | "GRUUnit" | "GivenTensorFill" | "ImageScaler"
        | "ParametricSoftplus" | "Scale" | "ScaledTanh" => {
            return Err("experimental op removed in opset 10".into());
        }
        "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1" | "ReduceL2"
        | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceSumSquare"
            if from < 18 && target >= 18 =>
        {
            attr_to_input(node, "axes", 1, inits, names)
        }
        // RoiAlign-10 sampled as `output_half_pixel`; opset 16 made `half_pixel` the default
        "RoiAlign" if from < 16 && target >= 16 => {
            if super::attr(node, "coordinate_transformation_mode").is_some() {
                false
            } else {
                node.attribute.push(string_attr(
                    "coordinate_transformation_mode",
                    "output_half_pixel",
                ));
                true
            }
        }
        // GridSample-20 renamed its modes (and added N-D inputs)
        "GridSample" if from < 20 && target >= 20 => {
            let mode = node
                .attribute
                .iter_mut()
                .find(|a| a.name() == "mode" && matches!(a.s(), b"bilinear" | b"bicubic"));
            // (no `mode`: the default was bilinear and is linear now, the same)
            match mode {
                Some(a) => {
                    let new: &[u8] = if a.s() == b"bilinear" {
                        b"linear"
                    } else {
                        b"cubic"
                    };
                    a.s = Some(new.to_vec().into());
                    true
                }
                None => false,
            }
        }
        "DFT" if from < 20 && target >= 20 => {
            return Err("its `axis` became an input in opset 20".into());
        }
        "GroupNormalization" if from < 21 && target >= 21 => {
            return Err(
                "its scale and bias changed from one value per group to one per channel in opset 21"
                    .into(),
            );
        }
        "Upsample" | "Scatter" => return Err("deprecated after its opset".into()),
        _ => false,
    };
    Ok(changed)
}

/// Resize-10 (and Upsample, already renamed) as the Resize-13 computing the same: an empty `roi`
/// input before `scales`, asymmetric coordinates, nearest rounding down.
fn resize_from_10(node: &mut NodeProto) -> bool {
    if node.input.len() >= 2 {
        node.input.insert(1, String::new());
    }
    node.attribute
        .retain(|a| a.name() != "coordinate_transformation_mode" && a.name() != "nearest_mode");
    node.attribute
        .push(string_attr("coordinate_transformation_mode", "asymmetric"));
    if node
        .attribute
        .iter()
        .find(|a| a.name() == "mode")
        .is_none_or(|a| a.s() == b"nearest")
    {
        node.attribute.push(string_attr("nearest_mode", "floor"));
    }
    true
}

fn drop_attrs(node: &mut NodeProto, names: &[&str]) -> bool {
    let before = node.attribute.len();
    node.attribute.retain(|a| !names.contains(&a.name()));
    node.attribute.len() != before
}

fn output_base(node: &NodeProto) -> String {
    node.output
        .first()
        .map_or("node".to_string(), |s| s.clone())
}

/// Moves attribute `attr` to an initializer at input `slot` (`tensor` builds it from its name
/// and the attribute), padding with empty optional inputs. Returns whether the attribute was there.
fn move_to_input(
    node: &mut NodeProto,
    attr: &str,
    slot: usize,
    inits: &mut Vec<TensorProto>,
    names: &mut Names,
    tensor: impl FnOnce(&str, &AttributeProto) -> TensorProto,
) -> bool {
    let Some(pos) = node.attribute.iter().position(|a| a.name() == attr) else {
        return false;
    };
    let a: AttributeProto = node.attribute.remove(pos);
    let name = names.fresh(&format!("{}_{attr}", output_base(node)));
    inits.push(tensor(&name, &a));
    while node.input.len() < slot {
        node.input.push(String::new());
    }
    node.input.insert(slot, name);
    true
}

/// Moves an ints attribute to an int64 initializer at input `slot`.
fn attr_to_input(
    node: &mut NodeProto,
    attr: &str,
    slot: usize,
    inits: &mut Vec<TensorProto>,
    names: &mut Names,
) -> bool {
    move_to_input(node, attr, slot, inits, names, |n, a| {
        crate::onnx::tensor::i64_tensor(n, &[a.ints.len()], &a.ints)
    })
}

/// Moves a float attribute to a float32 scalar initializer at input `slot`.
fn float_attr_to_input(
    node: &mut NodeProto,
    attr: &str,
    slot: usize,
    inits: &mut Vec<TensorProto>,
    names: &mut Names,
) -> bool {
    move_to_input(node, attr, slot, inits, names, |n, a| {
        crate::onnx::tensor::f32_tensor(n, &[], &[a.f()])
    })
}

#[cfg(test)]
mod tests;
