//! Turns a [`QuantPlan`] and its parameters into a QDQ model.
//!
//! Each pass reads the current graph and returns an [`ir::Patch`]; [`run`] applies them in
//! order with [`ir::apply`], which re-sorts and verifies the graph after every pass. Passes never
//! edit the graph themselves. Rules are directional: a tensor already behind a
//! DequantizeLinear is never planned again (policy refuses it), so running onnx-quant on its
//! own output adds nothing.

mod fold_bn;
mod fold_relu;
pub mod fp16;
mod qdq;
pub mod smooth;
#[cfg(test)]
mod tests;
mod weights;

pub use fold_bn::fold_batchnorm;
pub use fold_relu::fold_relu;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::Error;
use crate::ir::{self, NodeId};
use crate::params::{QParams, QType, WeightType};
use crate::policy::QuantPlan;
use crate::proto::{ModelProto, NodeProto};

/// Integer type and parameters of every planned activation, by tensor name.
#[derive(Clone, Debug, Default)]
pub struct ActivationParams {
    pub tensors: BTreeMap<String, (QType, QParams)>,
    /// Weight scales are raised to float16 values too (`high_precision: fp16`).
    pub f16_scales: bool,
    /// int4 weight scales by least squared error (`weights.clip_search`).
    pub clip_search: bool,
    /// int8 weight pairs kept inside int16 (`weights.cpu_overflow`).
    pub cpu_overflow: crate::params::pairs::CpuOverflow,
    /// Float Conv/ConvTranspose/Gemm read quantized tensors through a per-axis
    /// DequantizeLinear (`placement.float_reads_per_axis`).
    pub float_reads_per_axis: bool,
}

/// What the weight pass did to one weight.
#[derive(Clone, Debug, Serialize)]
pub struct WeightReport {
    pub name: String,
    pub dims: Vec<usize>,
    pub dtype: WeightType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub axis: Option<usize>,
    pub scales: usize,
    /// The float initializer was kept because other (float) nodes still read it.
    pub float_kept: bool,
    /// Settings an override decided.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub decided_by: Vec<String>,
    /// What keeping its pairs inside int16 changed (`weights.cpu_overflow`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pairs: Option<crate::params::pairs::PairFix>,
}

/// Summary of a rewrite.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RewriteReport {
    pub weights: Vec<WeightReport>,
    pub activations: usize,
    pub int32_biases: usize,
    pub opset: Option<i64>,
    /// Folded Relus put back: their unit's output is not quantized exactly (`fold_relu`).
    pub restored_relus: Vec<String>,
}

/// Where each node of the planned graph now stands.
struct IdMap(Vec<NodeId>);

impl IdMap {
    fn get(&self, id: NodeId) -> NodeId {
        self.0[id]
    }

    fn then(&mut self, moved: Vec<NodeId>) {
        for id in self.0.iter_mut().filter(|id| **id != usize::MAX) {
            *id = moved[*id];
        }
    }
}

/// The tensor names one quantized tensor `base` needs.
struct QdqNames {
    scale: String,
    zero_point: String,
    quantized: String,
    dequantized: String,
}

impl QdqNames {
    fn new(names: &mut ir::Names, base: &str) -> Self {
        QdqNames {
            scale: names.fresh(&format!("{base}_scale")),
            zero_point: names.fresh(&format!("{base}_zero_point")),
            quantized: names.fresh(&format!("{base}_quantized")),
            dequantized: names.fresh(&format!("{base}_dequantized")),
        }
    }

    /// A `QuantizeLinear` (x → quantized) or `DequantizeLinear` (quantized → dequantized)
    /// node using these scale and zero-point, named `<base>_<op>`.
    fn node(&self, names: &mut ir::Names, base: &str, op: &str, axis: Option<usize>) -> NodeProto {
        let (input, output) = match op {
            "QuantizeLinear" => (base, &self.quantized),
            _ => (self.quantized.as_str(), &self.dequantized),
        };
        let attribute = axis
            .map(|a| ir::int_attr("axis", a as i64))
            .into_iter()
            .collect();
        NodeProto {
            name: Some(names.fresh(&format!("{base}_{op}"))),
            op_type: Some(op.into()),
            input: vec![
                input.to_string(),
                self.scale.clone(),
                self.zero_point.clone(),
            ],
            output: vec![output.clone()],
            attribute,
            ..Default::default()
        }
    }
}

/// Applies one pass's patch and tracks where the planned nodes moved.
fn step(
    name: &str,
    model: &mut ModelProto,
    patch: ir::Patch,
    ids: &mut IdMap,
) -> Result<(), Error> {
    if patch.is_empty() {
        return Ok(());
    }
    let moved = ir::apply(model, patch)
        .map_err(|e| Error::Internal(format!("rewrite pass `{name}` broke the graph: {e}")))?;
    ids.then(moved);
    Ok(())
}

/// Rewrites `model` (the graph `plan` was made from) in place. Weights still in external
/// files are read through `external` one at a time, as they are quantized.
/// Values of a weight still in its external file (`onnx::load_deferring`): the caller reads
/// them, so the passes do no I/O.
pub type ExternalValues<'a> = &'a dyn Fn(&crate::proto::TensorProto) -> Result<Vec<f32>, Error>;

pub fn run(
    model: &mut ModelProto,
    plan: &QuantPlan,
    act: &ActivationParams,
    external: ExternalValues,
) -> Result<RewriteReport, Error> {
    let n = model.graph.as_ref().map_or(0, |g| g.node.len());
    let mut ids = IdMap((0..n).collect());
    let mut report = RewriteReport::default();
    if let Some(up) = &plan.upgrade {
        report.opset = up.patch.opset;
        step("opset-upgrade", model, up.patch.clone(), &mut ids)?;
    }
    let (patch, restored) = fold_relu::restore_relus(model, plan, act);
    report.restored_relus = restored;
    step("restore-relu", model, patch, &mut ids)?;
    let (patch, weights) = weights::quantize_weights(model, plan, act, &ids, external)?;
    report.weights = weights;
    report.int32_biases = plan.biases.len();
    step("quantize-weights", model, patch, &mut ids)?;
    let patch = qdq::insert_qdq(model, plan, act, &ids)?;
    report.activations = plan.activations.len();
    step("insert-qdq", model, patch, &mut ids)?;
    Ok(report)
}
