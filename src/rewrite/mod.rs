//! Turns a [`QuantPlan`] and its parameters into a QDQ model.
//!
//! Every pass, in the order a quantize run applies them:
//!
//! | stage | pass | what |
//! |---|---|---|
//! | prepare | `smoothquant` | per-channel factors folded into a LayerNormalization and the weights reading it (`smooth.rs`; the maxima are measured by `pipeline/smooth.rs` with tract) |
//! | prepare | `equalize` | cross-layer equalization (`equalize.rs`; BatchNormalization folded first, on the model tract calibrates too) |
//! | prepare | `absorb-bias` | high-bias absorption after equalization (`absorb.rs`; the shifts measured by `pipeline/absorb.rs` with tract on the first calibration samples) |
//! | prepare | `fold-batchnorm` | Conv → BatchNormalization folded into the Conv (`placement.fold_batchnorm`) |
//! | prepare | `fold-relu` | Relus and Clips from 0 dropped after node units (`placement.fold_relu`, asymmetric ranges) |
//! | rewrite | `opset-upgrade` | the opset the plan needs (13 for per-channel weights, 21 for int4/int16) |
//! | rewrite | `restore-relu` | each folded Relu put back where the plan does not clamp its unit's output exactly |
//! | rewrite | `quantize-weights` | int8/int4 weights + DequantizeLinear, int32 biases |
//! | rewrite | `insert-qdq` | a QuantizeLinear → DequantizeLinear pair per planned activation |
//! | finish | `float16` | what stays float in float16 (`high_precision: fp16`, `fp16.rs`) |
//!
//! [`PREPARE`] and [`REWRITE`] are those lists as code: [`prepare`] and [`run`] drive them in
//! order. Each rewrite pass reads the current graph and returns an [`ir::Patch`], applied with
//! [`ir::apply`], which re-sorts and verifies the graph after every pass; passes never edit the
//! graph themselves. Rules are directional: a tensor already behind a DequantizeLinear is never
//! planned again (policy refuses it), so running onnx-quant on its own output adds nothing.

pub mod absorb;
mod bias;
pub use bias::{BiasCorrection, rows_of};
pub mod equalize;
mod fold_bn;
mod fold_relu;
pub mod fp16;
mod qdq;
pub mod smooth;
#[cfg(test)]
mod tests;
mod weights;

pub use fold_bn::{fold_batchnorm, fold_batchnorm_in_place};
pub use fold_relu::fold_relu;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::Config;
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
    /// Bias correction: the mean input patch of each layer, by weight (`stats::PatchSums`).
    pub input_means: BTreeMap<String, Vec<f64>>,
    /// GPTQ: the Gram matrix of each layer's input patches, by weight.
    pub grams: BTreeMap<String, std::sync::Arc<crate::stats::Gram>>,
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
    /// The mean output shift bias correction removed (`bias_correction`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bias_correction: Option<bias::BiasCorrection>,
    /// The layer's output SQNR (dB) on the calibration inputs with the weights rounded to
    /// nearest and as GPTQ chose them (`weights.rounding: gptq`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gptq: Option<GptqReport>,
}

/// What GPTQ changed in one weight.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct GptqReport {
    pub nearest_sqnr_db: f64,
    pub gptq_sqnr_db: f64,
    /// Levels that differ from nearest rounding.
    pub changed: usize,
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

/// Values of a weight still in its external file (`onnx::load_deferring`): the caller reads
/// them, so the passes do no I/O.
pub type ExternalValues<'a> = &'a dyn Fn(&crate::proto::TensorProto) -> Result<Vec<f32>, Error>;

/// What the rewrite passes read besides the graph.
struct Ctx<'a> {
    plan: &'a QuantPlan,
    act: &'a ActivationParams,
    external: ExternalValues<'a>,
}

/// A rewrite pass: the patch it makes of the current graph (`ids`: where the planned nodes
/// now stand), noting what it did in the report.
type RewriteFn = fn(&ModelProto, &Ctx, &IdMap, &mut RewriteReport) -> Result<ir::Patch, Error>;

/// The rewrite passes, in order.
const REWRITE: [(&str, RewriteFn); 4] = [
    ("opset-upgrade", |_, c, _, report| {
        let Some(up) = &c.plan.upgrade else {
            return Ok(ir::Patch::default());
        };
        report.opset = up.patch.opset;
        Ok(up.patch.clone())
    }),
    ("restore-relu", |model, c, _, report| {
        let (patch, restored) = fold_relu::restore_relus(model, c.plan, c.act);
        report.restored_relus = restored;
        Ok(patch)
    }),
    ("quantize-weights", |model, c, ids, report| {
        let (patch, weights) = weights::quantize_weights(model, c.plan, c.act, ids, c.external)?;
        report.weights = weights;
        report.int32_biases = c.plan.biases.len();
        Ok(patch)
    }),
    ("insert-qdq", |model, c, ids, report| {
        let patch = qdq::insert_qdq(model, c.plan, c.act, ids)?;
        report.activations = c.plan.activations.len();
        Ok(patch)
    }),
];

/// Rewrites `model` (the graph `plan` was made from) in place, pass by pass ([`REWRITE`]).
/// Weights still in external files are read through `external` one at a time, as they are
/// quantized.
pub fn run(
    model: &mut ModelProto,
    plan: &QuantPlan,
    act: &ActivationParams,
    external: ExternalValues,
) -> Result<RewriteReport, Error> {
    let n = model.graph.as_ref().map_or(0, |g| g.node.len());
    let mut ids = IdMap((0..n).collect());
    let mut report = RewriteReport::default();
    let ctx = Ctx {
        plan,
        act,
        external,
    };
    for (name, pass) in REWRITE {
        let patch = pass(model, &ctx, &ids, &mut report)?;
        step(name, model, patch, &mut ids)?;
    }
    Ok(report)
}

/// What preparing the written model did: notes for the report, and the Relus folded into node
/// units (restored by the rewrite where the plan does not quantize that output exactly).
#[derive(Clone, Debug, Default)]
pub struct Prep {
    pub notes: Vec<String>,
    pub folded_relus: Vec<crate::ir::FoldedRelu>,
}

/// A preparation pass: the model it makes of `model` under `config` (`None`: nothing to do).
type PrepareFn = fn(&ModelProto, &Config, &mut Prep) -> Result<Option<ModelProto>, Error>;

/// The preparation passes [`prepare`] runs, in order (SmoothQuant runs before them, where
/// calibration data is at hand: see the module's table).
pub const PREPARE: [(&str, PrepareFn); 2] = [
    ("fold-batchnorm", |model, config, prep| {
        if !config.placement.fold_batchnorm {
            return Ok(None);
        }
        let (m, n) = fold_batchnorm(model)?;
        if n > 0 {
            prep.notes.push(format!(
                "{n} BatchNormalization node(s) folded into the Conv before them"
            ));
        }
        Ok(Some(m))
    }),
    ("fold-relu", |model, config, prep| {
        let p = &config.placement;
        if !p.fold_relu || config.activation.symmetric {
            return Ok(None);
        }
        let (folded, relus) = fold_relu(model, &p.output_ops)?;
        if !relus.is_empty() {
            let names: Vec<&str> = relus.iter().map(|r| r.label.as_str()).collect();
            prep.notes.push(format!(
                "{} Relu (or Clip from 0) node(s) folded into the quantized output before them (asymmetric ranges clamp at 0, and at a Clip's bound, exactly): {}",
                relus.len(),
                names.join(", ")
            ));
        }
        prep.folded_relus = relus;
        Ok(Some(folded))
    }),
];

/// The model the quantized one is made from: `model` with the preparation passes ([`PREPARE`])
/// the preset asks for (BatchNormalization folded into Convs, Relus into node units).
pub fn prepare(model: &ModelProto, config: &Config) -> Result<(ModelProto, Prep), Error> {
    let mut prep = Prep::default();
    // the input is copied once: by the first pass that changes it, or at the end
    let mut m: Option<ModelProto> = None;
    for (_, pass) in PREPARE {
        if let Some(next) = pass(m.as_ref().unwrap_or(model), config, &mut prep)? {
            m = Some(next);
        }
    }
    Ok((m.unwrap_or_else(|| model.clone()), prep))
}
