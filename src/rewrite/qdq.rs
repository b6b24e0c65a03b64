//! Pass `insert-qdq`: a QuantizeLinear → DequantizeLinear pair on every planned activation,
//! read by the planned consumers only (other readers keep the float tensor).

use crate::error::Error;
use crate::ir::{Index, Names, Patch, Placement};
use crate::onnx::tensor::{f32_tensor, i8_tensor, u8_tensor};
use crate::params::QType;
use crate::policy::QuantPlan;
use crate::proto::ModelProto;

use super::{ActivationParams, IdMap, QdqNames};

pub(super) fn insert_qdq(
    model: &ModelProto,
    plan: &QuantPlan,
    act: &ActivationParams,
    ids: &IdMap,
) -> Result<Patch, Error> {
    let graph = model.graph.as_ref().expect("loaded models have a graph");
    let mut names = Names::new(&Index::new(graph));
    let mut patch = Patch::default();
    for site in &plan.activations {
        let t = site.tensor.as_str();
        let p = act
            .tensors
            .get(t)
            .ok_or_else(|| Error::Internal(format!("no parameters for planned tensor `{t}`")))?;
        let n = QdqNames::new(&mut names, t);
        patch
            .add_initializers
            .push(f32_tensor(&n.scale, &[], &[p.scale]));
        patch
            .add_initializers
            .push(match act.qtype.unwrap_or(QType::Int8) {
                QType::Int8 => i8_tensor(&n.zero_point, &[], &[p.zero_point as i8]),
                QType::Uint8 => u8_tensor(&n.zero_point, &[], &[p.zero_point as u8]),
            });
        let q = n.node(&mut names, t, "QuantizeLinear", None);
        let dq = n.node(&mut names, t, "DequantizeLinear", None);
        patch.nodes.push((Placement::After(t.into()), q));
        patch.nodes.push((Placement::After(t.into()), dq));
        patch.rewire.extend(
            site.consumers
                .iter()
                .map(|&(id, slot)| (ids.get(id), slot, n.dequantized.clone())),
        );
    }
    Ok(patch)
}
