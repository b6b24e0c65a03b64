//! Pass `fold-relu`, on the written model when the preset asks for it (ORT): a Relu, or a Clip
//! from 0 to a constant (ReLU6), reading the output of a complete node unit is dropped, the
//! unit writing its output instead. Otherwise that unit's output would be quantized twice,
//! before and after the Clip, once with the wide pre-activation range (MobileNet-style nets lose
//! about 3 dB of output SQNR to it).
//!
//! Exact, not an approximation: calibration still runs the model with its Relus, so that tensor
//! is measured after the Relu (never below 0, never above a Clip's bound), and with asymmetric
//! activations its range `[0, hi]` gets zero-point `qmin`: QuantizeLinear clamps every negative
//! value to `qmin`, which dequantizes to exactly 0, and every value above `hi` to `qmax` — what
//! the Relu or Clip did, as long as `hi` is not above the Clip's bound. Symmetric activations
//! keep them (ONNX Runtime's own tool drops them there too, and negative values pass: see
//! ANCHORS).

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
    let graph = crate::ir::graph(model);
    let index = Index::new(graph);
    let mut patch = Patch::default();
    let mut restored = Vec::new();
    for f in &plan.folded_relus {
        let exact = plan.site(&f.tensor).is_some_and(|s| s.all_consumers)
            && act.tensors.get(&f.tensor).is_some_and(|(q, p)| {
                let (lo, hi) = q.range();
                let top = f64::from(hi - p.zero_point) * f64::from(p.scale);
                p.zero_point == lo
                    && f.upper
                        .is_none_or(|u| top <= f64::from(u) * (1.0 + 1e-6) + 1e-12)
            });
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
    let graph = crate::ir::graph(model);
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
        let upper = match r.op_type() {
            "Relu" => None,
            "Clip" => match clip_bounds(&index, r) {
                Some((0.0, upper)) => upper,
                _ => continue,
            },
            _ => continue,
        };
        if !ir::is_default_domain(r.domain())
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
            upper,
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

/// A Clip's bounds when both are constants (inputs 1 and 2 from opset 11, attributes before);
/// an absent upper bound is `None`.
pub(super) fn clip_bounds(
    index: &Index,
    clip: &crate::proto::NodeProto,
) -> Option<(f32, Option<f32>)> {
    let scalar = |slot: usize| -> Option<Option<f32>> {
        match clip.input.get(slot).filter(|n| !n.is_empty()) {
            None => Some(None),
            Some(name) => {
                let value = match index.initializer(name) {
                    Some(t) if !index.is_graph_input(name) => {
                        crate::onnx::tensor::f32_data(t).ok()?
                    }
                    Some(_) => return None,
                    None => crate::ir::constant::evaluate(index, name)?.0.data,
                };
                match value.as_slice() {
                    [v] if v.is_finite() => Some(Some(*v)),
                    _ => None,
                }
            }
        }
    };
    let attr = |name: &str| ir::attr(clip, name).and_then(|a| a.f);
    let lower = match (scalar(1)?, attr("min")) {
        (Some(v), _) => v,
        (None, Some(v)) if clip.input.len() < 2 => v,
        _ => return None,
    };
    let upper = scalar(2)?.or(if clip.input.len() < 3 {
        attr("max")
    } else {
        None
    });
    Some((lower, upper))
}
