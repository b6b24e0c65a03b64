//! Rewrite: ranges and parameters from the statistics, Q/DQ nodes and int8 weights written, in
//! the main graph and each subgraph; the one step the quantize job and mixed precision share.

use std::path::Path;

use crate::config::Config;
use crate::error::Error;
use crate::policy::{Overrides, QuantPlan};
use crate::report::ActivationReport;
use crate::stats::StatsTable;
use crate::{onnx, rewrite};

use super::plan::replan;
use super::ranges::settle_on_statistics;
use super::{Types, scopes};
use crate::rewrite::Prep;

/// A quantized model built in memory, and what went into it.
pub(super) struct Built {
    pub(super) model: crate::proto::ModelProto,
    pub(super) plan: QuantPlan,
    pub(super) activations: Vec<ActivationReport>,
    pub(super) rewritten: rewrite::RewriteReport,
    pub(super) subgraphs: Vec<crate::report::SubgraphReport>,
}

/// What building needs besides the plan: the types (to plan again), the preparation, the
/// control nodes kept, the overrides the plan was made with.
#[derive(Clone, Copy)]
pub(super) struct Subs<'a> {
    pub(super) types: &'a Types,
    pub(super) kept: &'a scopes::Kept,
    pub(super) overrides: &'a Overrides,
    pub(super) prep: &'a Prep,
    /// Whether calibration samples decided the branches (else the declared shapes did).
    pub(super) data: bool,
}

/// Chooses every range from `stats` and rewrites a copy of `written` after `plan`, then the
/// subgraphs calibration reached.
pub(super) fn build(
    written: &crate::proto::ModelProto,
    input: &Path,
    mut plan: QuantPlan,
    stats: &StatsTable,
    config: &Config,
    source: &Path,
    subs: Subs,
) -> Result<Built, Error> {
    let (plan_, act, activations) = settle_on_statistics(
        plan,
        written,
        stats,
        config,
        source,
        subs.overrides,
        &|o: &Overrides| replan(written, &subs.types.main, config, o, subs.prep),
    )?;
    plan = plan_;
    let mut model = written.clone();
    // the weights `open_model` left on disk (`written` is a copy of that model): each weight
    // quantized is read as its turn comes, what stays float afterwards
    let external = |t: &crate::proto::TensorProto| -> Result<Vec<f32>, Error> {
        Ok(onnx::read_external_f32(t, input)?)
    };
    let mut rewritten = rewrite::run(&mut model, &plan, &act, &external)?;
    let mut activations = activations;
    let mut subgraphs = Vec::new();
    if crate::ir::control::has_subgraphs(&model) {
        let done = scopes::quantize_scopes(
            &mut model,
            written,
            subs.types,
            subs.kept,
            subs.data,
            config,
            subs.overrides,
            stats,
            source,
            &external,
        )?;
        plan.nodes.extend(done.nodes);
        plan.notes.extend(done.notes);
        activations.extend(done.activations);
        rewritten.activations += done.subgraphs.iter().map(|s| s.activations).sum::<usize>();
        rewritten.weights.extend(done.weights);
        subgraphs = done.subgraphs;
    }
    onnx::materialize(&mut model, input)?;
    if !rewritten.restored_relus.is_empty() {
        plan.notes.push(format!(
            "{} folded Relu node(s) put back, their unit's output not being quantized with the zero-point at the type's minimum (kept float, or another range): {}",
            rewritten.restored_relus.len(),
            rewritten.restored_relus.join(", ")
        ));
    }
    Ok(Built {
        model,
        plan,
        activations,
        rewritten,
        subgraphs,
    })
}
