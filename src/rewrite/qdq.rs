//! Pass `insert-qdq`: a QuantizeLinear → DequantizeLinear pair on every planned activation,
//! read by the planned consumers only (other readers keep the float tensor).

use crate::error::Error;
use crate::ir::{Index, Names, Patch, Placement};
use crate::onnx::tensor::{f32_tensor, i8_tensor, u8_tensor};
use crate::params::QType;
use crate::policy::QuantPlan;
use crate::proto::{ModelProto, NodeProto};

use super::{ActivationParams, IdMap};

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
        let sname = names.fresh(&format!("{t}_scale"));
        let zname = names.fresh(&format!("{t}_zero_point"));
        let qname = names.fresh(&format!("{t}_quantized"));
        let out = names.fresh(&format!("{t}_dequantized"));
        patch
            .add_initializers
            .push(f32_tensor(&sname, &[], &[p.scale]));
        patch
            .add_initializers
            .push(match act.qtype.unwrap_or(QType::Int8) {
                QType::Int8 => i8_tensor(&zname, &[], &[p.zero_point as i8]),
                QType::Uint8 => u8_tensor(&zname, &[], &[p.zero_point as u8]),
            });
        let node = |op: &str, input: Vec<String>, output: &str, names: &mut Names| NodeProto {
            name: Some(names.fresh(&format!("{t}_{op}"))),
            op_type: Some(op.into()),
            input,
            output: vec![output.to_string()],
            ..Default::default()
        };
        let q = node(
            "QuantizeLinear",
            vec![t.into(), sname.clone(), zname.clone()],
            &qname,
            &mut names,
        );
        let dq = node(
            "DequantizeLinear",
            vec![qname.clone(), sname, zname],
            &out,
            &mut names,
        );
        patch.nodes.push((Placement::After(t.into()), q));
        patch.nodes.push((Placement::After(t.into()), dq));
        patch.rewire.extend(
            site.consumers
                .iter()
                .map(|&(id, slot)| (ids.get(id), slot, out.clone())),
        );
    }
    Ok(patch)
}
