//! Plan: what to quantize and why not (the rules, the preset, the overrides), for the main
//! graph and every subgraph calibration reaches; the model the rewrite starts from.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use crate::calib::{Dataset, Observe, TensorInfo};
use crate::config::Config;
use crate::error::{Error, ModelError, UsageError};
use crate::policy::{Overrides, QuantPlan};
use crate::report::explain::{Explained, ExplainedSubgraph};
use crate::rewrite::Prep;
use crate::{policy, rewrite};

use super::open::{InputShapes, Model, open_model};
use super::ranges::observe_for;
use super::{DataSource, Engine, Scoped, Types, scopes};

/// The plan, the model it is made for, and what is needed to calibrate it.
pub(super) struct Planned {
    pub(super) engine: Engine,
    pub(super) plan: QuantPlan,
    /// The model to rewrite: the input, with the folds the preset asks for.
    pub(super) written: crate::proto::ModelProto,
    pub(super) data: Option<Dataset>,
    /// Tensor types found by tract (to plan again with other overrides).
    pub(super) types: Types,
    /// Control nodes the copies tract runs keep, with why.
    pub(super) kept: scopes::Kept,
    /// The plans of the subgraphs the copies tract runs reach.
    pub(super) sub_plans: Vec<scopes::ScopePlan>,
    /// The tensors the subgraphs' plans observe.
    pub(super) sub_observed: Vec<Scoped>,
    /// Those observed channel by channel.
    pub(super) sub_channels: BTreeSet<Scoped>,
    /// Whether some subgraph site needs histograms or averaged extremes.
    pub(super) sub_observe: Observe,
    /// What preparing `written` did (folds).
    pub(super) prep: Prep,
}

/// The settings and overrides a model is planned with.
#[derive(Clone, Debug)]
pub struct Planning {
    pub config: Config,
    pub overrides: Overrides,
    /// Overrides that select nothing are warnings instead of errors.
    pub allow_unmatched: bool,
    /// Shapes given for inputs (`--input-shape`), fixing their symbolic dims.
    pub input_shapes: InputShapes,
}

impl Planning {
    pub fn rules<'a>(&'a self, warn: &'a dyn Fn(&str)) -> Rules<'a> {
        Rules {
            config: &self.config,
            overrides: &self.overrides,
            allow_unmatched: self.allow_unmatched,
            input_shapes: &self.input_shapes,
            warn,
        }
    }
}

/// Plans `model` under `config` and the user's overrides. An override selecting nothing is an
/// error, or a warning with `allow_unmatched`.
pub struct Rules<'a> {
    pub config: &'a Config,
    pub overrides: &'a Overrides,
    pub allow_unmatched: bool,
    pub input_shapes: &'a InputShapes,
    pub warn: &'a dyn Fn(&str),
}

pub(super) fn plan_model(
    model: &Model,
    data: Option<&DataSource>,
    rules: &Rules,
) -> Result<Planned, Error> {
    let config = rules.config;
    let data = match data {
        Some(d) => Some(Dataset::open(
            &d.path,
            &model.inputs,
            d.max_samples,
            &d.images,
        )?),
        None => None,
    };
    let engine = Engine::new(&model.loaded.model, &model.loaded.path, &model.inputs);
    let legs = engine.all_legs(data.as_ref())?;
    let types = Types::of(&legs);
    let kept: scopes::Kept = legs
        .iter()
        .flat_map(|(_, l)| l.flat.kept.iter())
        .map(|k| {
            (
                (crate::ir::control::scope_of(&k.instance), k.node.clone()),
                k.reason.clone(),
            )
        })
        .collect();
    let (written, mut prep) = rewrite::prepare(&model.loaded.model, config)?;
    if let Some(note) = legs.iter().find_map(|(_, l)| l.note.clone()) {
        prep.notes.insert(0, note);
    }
    let subgraphs: Vec<&crate::proto::GraphProto> = crate::ir::control::scopes(&written)
        .iter()
        .filter_map(|s| crate::ir::control::subgraph(&written, s))
        .collect();
    let missing =
        policy::unmatched_anywhere(rules.overrides, crate::ir::graph(&written), &subgraphs);
    if !missing.is_empty() {
        if !rules.allow_unmatched {
            return Err(UsageError::Unmatched {
                file: rules.overrides.file.clone(),
                problems: missing,
            }
            .into());
        }
        missing.iter().for_each(|m| (rules.warn)(m));
    }
    let plan = replan(&written, &types.main, config, rules.overrides, &prep);
    if let Some(reason) = &plan.blocked {
        return Err(ModelError::OpsetBlocked {
            path: model.loaded.path.clone(),
            reason: reason.clone(),
        }
        .into());
    }
    let sub_plans = scopes::plan_scopes(&written, &types, config, rules.overrides);
    let sub_observed = scopes::observed(&sub_plans);
    let sub_channels = scopes::observed_by_channel(&sub_plans);
    let sub_observe = sub_plans
        .iter()
        .map(|p| observe_for(config, &p.plan))
        .fold(Observe::default(), Observe::union);
    Ok(Planned {
        engine,
        plan,
        written,
        data,
        types,
        kept,
        sub_plans,
        sub_observed,
        sub_channels,
        sub_observe,
        prep,
    })
}

/// Plans `written` under `overrides`, the preparation notes first.
pub(super) fn replan(
    written: &crate::proto::ModelProto,
    types: &HashMap<String, TensorInfo>,
    config: &Config,
    overrides: &Overrides,
    prep: &Prep,
) -> QuantPlan {
    let mut plan = policy::plan(written, types, config, overrides);
    let mut notes = prep.notes.clone();
    notes.append(&mut plan.notes);
    plan.notes = notes;
    plan.folded_relus = prep.folded_relus.clone();
    // a unit's folded Relu or Clip output is clamped: the guard weighs the channels before it
    // (calibration runs the model with its activations, so that tensor is there)
    for probe in &mut plan.depthwise {
        if let Some(f) = prep.folded_relus.iter().find(|f| f.tensor == probe.output) {
            probe.output = f.relu.input[0].clone();
        }
    }
    plan
}

/// Cross-layer equalization (`equalize: true`) and high-bias absorption (`bias_absorption`,
/// measured on `data`): BatchNormalization folded, then the pairs rescaled, then the shifts
/// moved, in the model tract calibrates and the rewrite starts from; notes for the report.
/// Absorption alone leaves the model as it was (BatchNormalization unfolded) when it shifts
/// nothing.
pub(super) fn equalize_and_absorb(
    config: &Config,
    model: &mut Model,
    data: Option<&DataSource>,
) -> Result<Vec<String>, Error> {
    if config.equalize.is_none() && !config.bias_absorption {
        return Ok(Vec::new());
    }
    let path = model.loaded.path.clone();
    let mut proto = model.loaded.model.clone();
    crate::onnx::materialize(&mut proto, &path)?;
    let bns = crate::rewrite::fold_batchnorm_in_place(&mut proto)?;
    let mut notes = Vec::new();
    if bns > 0 {
        notes.push(format!(
            "{bns} BatchNormalization node(s) folded into the Conv before them first (equalize, bias absorption)"
        ));
    }
    if let Some(clip_mode) = config.equalize {
        notes.extend(equalize(&mut proto, &path, clip_mode)?);
    }
    let mut shifted = false;
    if config.bias_absorption {
        let (more, any) = super::absorb::absorb_model(&mut proto, &path, &model.inputs, data)?;
        notes.extend(more);
        shifted = any;
    }
    if config.equalize.is_none() && !shifted {
        // nothing changed but the folds: the model stays as it was
        return Ok(notes.into_iter().skip(usize::from(bns > 0)).collect());
    }
    model.loaded.model = proto;
    Ok(notes)
}

/// Cross-layer equalization of `model` (BatchNormalization already folded); notes.
fn equalize(
    model: &mut crate::proto::ModelProto,
    path: &Path,
    clip_mode: crate::config::ClipMode,
) -> Result<Vec<String>, Error> {
    let e = crate::rewrite::equalize::equalize(model, clip_mode).map_err(|reason| {
        Error::from(crate::error::ModelError::Unsupported {
            path: path.to_path_buf(),
            what: format!("a layer pair equalization cannot rescale ({reason})"),
        })
    })?;
    let mut notes = Vec::new();
    if e.pairs.is_empty() {
        notes.push("equalize: no two layers joined by a Relu (or ReLU6) to equalize".into());
        return Ok(notes);
    }
    notes.push(format!(
        "equalize: {} pair(s) of layers rescaled in {} round(s); median channel range spread (largest / smallest) {:.1} → {:.1}",
        e.pairs.len(),
        e.rounds,
        e.spread_before,
        e.spread_after
    ));
    if !e.clips.is_empty() {
        let how = match clip_mode {
            crate::config::ClipMode::Relu => {
                "Relu (equalize_clip: relu, an approximation: outputs change where the pre-activation exceeded the bound)"
            }
            _ => "Relu then Min with each channel's rescaled bound (exact)",
        };
        notes.push(format!(
            "equalize: {} Clip(s) from 0 between rescaled layers became {how}: {}",
            e.clips.len(),
            e.clips.join(", ")
        ));
    }
    Ok(notes)
}

/// Plans `input` under `rules` without running calibration.
pub fn plan_only(input: &Path, rules: &Rules) -> Result<Explained, Error> {
    let mut model = open_model(input, rules.input_shapes)?;
    model.loaded.warnings.iter().for_each(|w| (rules.warn)(w));
    let equalized = equalize_and_absorb(rules.config, &mut model, None)?;
    let Planned {
        mut plan,
        written,
        sub_plans,
        kept,
        ..
    } = plan_model(&model, None, rules)?;
    plan.notes.splice(0..0, equalized);
    let mut subgraphs = Vec::new();
    let mut sub_plans: HashMap<_, _> = sub_plans
        .into_iter()
        .map(|p| (p.model.scope.clone(), p))
        .collect();
    for scope in crate::ir::control::scopes(&written) {
        let label = crate::ir::control::label(&written, &scope);
        match sub_plans.remove(&scope) {
            Some(p) => subgraphs.push(ExplainedSubgraph {
                label,
                plan: Some((p.plan, p.model.model)),
                reason: None,
            }),
            None => {
                let reason = scopes::untaken_reason(&scope, &label, &kept, false);
                subgraphs.push(ExplainedSubgraph {
                    label,
                    plan: None,
                    reason: Some(reason),
                })
            }
        }
    }
    Ok(Explained {
        plan,
        model: written,
        subgraphs,
    })
}
