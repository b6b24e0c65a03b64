//! Pass `fold-batchnorm`, for the calibration graph only: a Conv whose output feeds nothing but
//! a BatchNormalization becomes one Conv with scaled weights and bias, writing the BN's output.
//!
//! tract does not fold an unfolded BN away on its own (ResNet-18 with BN runs ≈ 20 % slower in
//! it than the same network folded). The written model keeps its BN nodes: the fold only speeds
//! up calibration. The one tensor it removes, the raw Conv output, is read by the BN alone, so no
//! placement observes it.

use crate::error::Error;
use crate::ir::{self, Index, Names, Patch};
use crate::onnx::tensor::{f32_data, f32_tensor};
use crate::proto::{ModelProto, NodeProto};

fn float_init(index: &Index, name: Option<&String>) -> Option<(Vec<f32>, Vec<i64>)> {
    let t = index.initializer(name?)?;
    if index.is_graph_input(t.name()) {
        return None;
    }
    Some((f32_data(t).ok()?, t.dims.clone()))
}

/// The folded Conv, or `None` when this Conv/BN pair does not qualify.
fn fold(
    index: &Index,
    names: &mut Names,
    conv: &NodeProto,
    bn: &NodeProto,
    patch: &mut Patch,
) -> Option<NodeProto> {
    if bn.output.iter().filter(|o| !o.is_empty()).count() != 1
        || ir::attr_int(bn, "training_mode").unwrap_or(0) != 0
    {
        return None;
    }
    let (w, dims) = float_init(index, conv.input.get(1))?;
    let m = usize::try_from(*dims.first()?).ok()?;
    let param = |slot: usize| {
        float_init(index, bn.input.get(slot))
            .map(|(v, _)| v)
            .filter(|v| v.len() == m)
    };
    let (gamma, beta, mean, var) = (param(1)?, param(2)?, param(3)?, param(4)?);
    let bias = match conv.input.get(2).filter(|b| !b.is_empty()) {
        Some(b) => float_init(index, Some(b))
            .map(|(v, _)| v)
            .filter(|v| v.len() == m)?,
        None => vec![0.0; m],
    };
    let eps = f64::from(ir::attr(bn, "epsilon").map_or(1e-5, |a| a.f()));
    let scale: Vec<f64> = (0..m)
        .map(|c| f64::from(gamma[c]) / (f64::from(var[c]) + eps).sqrt())
        .collect();
    let per = w.len() / m.max(1);
    let new_w: Vec<f32> = w
        .iter()
        .enumerate()
        .map(|(i, &x)| (f64::from(x) * scale[i / per]) as f32)
        .collect();
    let new_b: Vec<f32> = (0..m)
        .map(|c| ((f64::from(bias[c]) - f64::from(mean[c])) * scale[c] + f64::from(beta[c])) as f32)
        .collect();
    let (wn, bn_name) = (
        names.fresh(&format!("{}_bn_folded", conv.input[1])),
        names.fresh(&format!("{}_bn_folded_bias", conv.output[0])),
    );
    let udims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    patch.add_initializers.push(f32_tensor(&wn, &udims, &new_w));
    patch
        .add_initializers
        .push(f32_tensor(&bn_name, &[m], &new_b));
    let mut folded = conv.clone();
    folded.input.truncate(2);
    folded.input[1] = wn;
    folded.input.push(bn_name);
    folded.output = vec![bn.output[0].clone()];
    Some(folded)
}

/// A copy of `model` with every qualifying Conv → BatchNormalization pair folded, and how many.
pub fn fold_batchnorm(model: &ModelProto) -> Result<(ModelProto, usize), Error> {
    let mut folded = model.clone();
    let count = fold_batchnorm_in_place(&mut folded)?;
    Ok((folded, count))
}

/// [`fold_batchnorm`] in place (no second copy of the weights); how many pairs it folded.
pub fn fold_batchnorm_in_place(model: &mut ModelProto) -> Result<usize, Error> {
    let (patch, count) = fold_patch(model);
    if count > 0 {
        ir::apply(model, patch)
            .map_err(|e| Error::Internal(format!("pass `fold-batchnorm` broke the graph: {e}")))?;
    }
    Ok(count)
}

/// The patch folding every qualifying pair of `model`, and how many it folds.
fn fold_patch(model: &ModelProto) -> (Patch, usize) {
    let graph = crate::ir::graph(model);
    let index = Index::new(graph);
    let mut names = Names::new(&index);
    let mut patch = Patch::default();
    for (id, conv) in graph.node.iter().enumerate() {
        if conv.op_type() != "Conv" || !ir::is_default_domain(conv.domain()) {
            continue;
        }
        let Some(out) = conv.output.first() else {
            continue;
        };
        let [(bn_id, 0)] = index.consumers(out) else {
            continue;
        };
        let bn = index.node(*bn_id);
        if bn.op_type() != "BatchNormalization"
            || index.is_graph_output(out)
            || index.is_captured(out)
        {
            continue;
        }
        if let Some(folded) = fold(&index, &mut names, conv, bn, &mut patch) {
            patch.replace.push((id, folded));
            patch.remove.push(*bn_id);
            // drop the float weights nothing else reads: tract would hold them twice
            let only_here = |t: &String, node: usize| {
                index.initializer(t).is_some()
                    && index.consumers(t).iter().all(|c| c.0 == node)
                    && !index.is_captured(t)
            };
            let conv_params = conv.input.iter().skip(1).filter(|t| only_here(t, id));
            let bn_params = bn.input.iter().skip(1).filter(|t| only_here(t, *bn_id));
            patch
                .remove_initializers
                .extend(conv_params.chain(bn_params).cloned());
        }
    }
    let count = patch.remove.len();
    (patch, count)
}
