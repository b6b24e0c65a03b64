//! Pass `quantize-weights`: every planned weight becomes an int8 initializer read through a
//! DequantizeLinear (per channel when the plan gives an axis). The float initializer is removed
//! unless something else still reads it.

use crate::error::Error;
use crate::ir::{Index, Names, Patch, Placement};
use crate::onnx::tensor::{f32_data, f32_tensor, i8_tensor};
use crate::params::quantize_weight;
use crate::policy::QuantPlan;
use crate::proto::ModelProto;

use super::{IdMap, QdqNames, WeightReport};

pub(super) fn quantize_weights(
    model: &ModelProto,
    plan: &QuantPlan,
    ids: &IdMap,
) -> Result<(Patch, Vec<WeightReport>), Error> {
    let graph = model.graph.as_ref().expect("loaded models have a graph");
    let index = Index::new(graph);
    let mut names = Names::new(&index);
    let mut patch = Patch::default();
    let mut reports = Vec::new();
    for site in &plan.weights {
        let w = site.initializer.as_str();
        let init = index.initializer(w).ok_or_else(|| {
            Error::Internal(format!("planned weight `{w}` is not an initializer"))
        })?;
        // `ir::verify` checked the payload size of every initializer before planning.
        let data = f32_data(init).map_err(|e| Error::Internal(format!("weight `{w}` {e}")))?;
        let dims: Vec<usize> = init.dims.iter().map(|&d| d as usize).collect();
        let q = quantize_weight(&data, &dims, site.axis);
        let param_dims: Vec<usize> = if site.axis.is_some() {
            vec![q.scales.len()]
        } else {
            vec![]
        };
        let n = QdqNames::new(&mut names, w);
        patch
            .add_initializers
            .push(i8_tensor(&n.quantized, &dims, &q.values));
        patch
            .add_initializers
            .push(f32_tensor(&n.scale, &param_dims, &q.scales));
        patch.add_initializers.push(i8_tensor(
            &n.zero_point,
            &param_dims,
            &vec![0; q.scales.len()],
        ));
        let dq = n.node(&mut names, w, "DequantizeLinear", site.axis);
        let consumers: Vec<(usize, usize)> = site
            .consumers
            .iter()
            .map(|&(id, slot)| (ids.get(id), slot))
            .collect();
        let first = consumers
            .iter()
            .map(|c| c.0)
            .min()
            .expect("a weight site has consumers");
        patch.nodes.push((Placement::Before(first), dq));
        patch.rewire.extend(
            consumers
                .iter()
                .map(|&(id, slot)| (id, slot, n.dequantized.clone())),
        );
        let others = index.consumers(w).iter().any(|c| !consumers.contains(c));
        let float_kept = others || index.is_graph_output(w) || index.is_captured(w);
        if !float_kept {
            patch.remove_initializers.push(w.to_string());
        }
        reports.push(WeightReport {
            name: w.to_string(),
            dims,
            axis: site.axis,
            scales: q.scales.len(),
            float_kept,
        });
    }
    Ok((patch, reports))
}
