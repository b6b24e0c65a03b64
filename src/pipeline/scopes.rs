//! Quantizing inside subgraphs: every `If` branch and `Loop` body that calibration reached is
//! planned and rewritten as a graph of its own, after the main graph. A subgraph is handed to
//! the planner and the passes as a model whose graph is the subgraph, with what it reads from
//! the graphs around it made explicit: float constants as initializers (so they quantize as
//! weights, stored in the subgraph), other tensors as graph inputs of their type; names used
//! anywhere else in the model are reserved (listed in its value_info) so new tensors never
//! shadow one. After the rewrite those additions are taken out and the subgraph goes back in
//! place. A subgraph no calibration sample reached stays float, and says so.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use super::{Scoped, Types};
use crate::calib::TensorInfo;
use crate::config::Config;
use crate::error::Error;
use crate::ir::control::{self, Step};
use crate::ir::{self, Index};
use crate::onnx::tensor::f32_tensor;
use crate::policy::{self, NodeDecision, Overrides, QuantPlan};
use crate::proto::{GraphProto, ModelProto, TypeProto, ValueInfoProto, type_proto};
use crate::report::{ActivationReport, SubgraphReport};
use crate::rewrite::{self, WeightReport};
use crate::stats::StatsTable;

/// A subgraph as a model of its own, and what was added to make it one.
pub(crate) struct ScopeModel {
    pub scope: Vec<Step>,
    /// `If_25/then_branch`.
    pub label: String,
    pub model: ModelProto,
    /// Graph inputs standing for tensors of the enclosing graphs.
    inputs: Vec<String>,
    /// Initializers copied from the enclosing graphs.
    copied: Vec<String>,
    /// value_info entries reserving the other names of the model.
    reserved: usize,
}

/// The subgraph at `scope` of `model` as a model of its own.
pub(crate) fn scope_model(model: &ModelProto, scope: &[Step], types: &Types) -> Option<ScopeModel> {
    let mut g = control::subgraph(model, scope)?.clone();
    let own_inputs: HashSet<String> = g.input.iter().map(|v| v.name().to_string()).collect();
    let captured = control::captured_by(&g);
    // the graphs around, innermost first
    let mut around: Vec<&GraphProto> = Vec::new();
    for k in (0..scope.len()).rev() {
        if let Some(p) = control::subgraph(model, &scope[..k]) {
            around.push(p);
        }
    }
    let mut inputs = Vec::new();
    let mut copied = Vec::new();
    for name in captured {
        if own_inputs.contains(&name) {
            continue;
        }
        let constant = around.iter().find_map(|outer| {
            let index = Index::new(outer);
            if let Some(t) = index.initializer(&name) {
                return Some(t.clone());
            }
            let defined = index.producer(&name).is_some();
            let c = ir::constant::evaluate(&index, &name).map(|(c, _)| c);
            match (defined, c) {
                (true, Some(c)) => Some(f32_tensor(&name, &c.dims, &c.data)),
                _ => None,
            }
        });
        match constant {
            Some(t) => {
                g.initializer.push(t);
                copied.push(name);
            }
            None => {
                g.input.push(value_info(&name, types.get(scope, &name)));
                inputs.push(name);
            }
        }
    }
    let mut mine = HashSet::new();
    control::all_names(&g, &mut mine);
    let mut everywhere = HashSet::new();
    if let Some(main) = model.graph.as_ref() {
        control::all_names(main, &mut everywhere);
    }
    let mut others: Vec<String> = everywhere.difference(&mine).cloned().collect();
    others.sort();
    let reserved = others.len();
    g.value_info
        .extend(others.into_iter().map(|n| ValueInfoProto {
            name: Some(n),
            ..Default::default()
        }));
    Some(ScopeModel {
        scope: scope.to_vec(),
        label: control::label(model, scope),
        model: ModelProto {
            graph: Some(g),
            ..model.clone()
        },
        inputs,
        copied,
        reserved,
    })
}

impl ScopeModel {
    /// The subgraph, with what [`scope_model`] added taken out again.
    fn into_graph(self) -> GraphProto {
        let mut g = self.model.graph.unwrap_or_default();
        let added: HashSet<&String> = self.inputs.iter().collect();
        g.input.retain(|v| !added.contains(&v.name().to_string()));
        let copied: HashSet<&String> = self.copied.iter().collect();
        g.initializer
            .retain(|t| !copied.contains(&t.name().to_string()));
        let keep = g.value_info.len().saturating_sub(self.reserved);
        // the reserved entries are the last ones; a pass may have dropped some of the others
        let reserved: HashSet<String> = g.value_info[keep..]
            .iter()
            .filter(|v| v.r#type.is_none())
            .map(|v| v.name().to_string())
            .collect();
        g.value_info
            .retain(|v| !(v.r#type.is_none() && reserved.contains(v.name())));
        g
    }

    /// Types for planning: the subgraph's own, and those of what it reads from outside.
    fn types(&self, types: &Types) -> HashMap<String, TensorInfo> {
        let mut t = types.scopes.get(&self.scope).cloned().unwrap_or_default();
        for name in self.inputs.iter().chain(&self.copied) {
            if let Some(info) = types.get(&self.scope, name) {
                t.entry(name.clone()).or_insert_with(|| info.clone());
            }
        }
        t
    }
}

fn value_info(name: &str, info: Option<&TensorInfo>) -> ValueInfoProto {
    let elem = info.and_then(|i| i.elem).map_or(0, |e| e.to_onnx());
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem),
                shape: None,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The plan of one subgraph calibration reached.
pub(crate) struct ScopePlan {
    pub model: ScopeModel,
    pub plan: QuantPlan,
}

/// Plans every subgraph of `model` that some copy of the model tract ran reached (`types`
/// has it), parents before children. A subgraph needing an opset the main graph does not get
/// falls back to per-tensor weights (opset 13) or stays float (int4, int16, float8).
pub(crate) fn plan_scopes(
    model: &ModelProto,
    types: &Types,
    config: &Config,
    overrides: &Overrides,
) -> Vec<ScopePlan> {
    let mut out = Vec::new();
    for scope in control::scopes(model) {
        if !types.scopes.contains_key(&scope) {
            continue;
        }
        let Some(sm) = scope_model(model, &scope, types) else {
            continue;
        };
        let ty = sm.types(types);
        let mut plan = policy::plan(&sm.model, &ty, config, overrides);
        if plan.upgrade.take().is_some() || plan.blocked.is_some() {
            plan.blocked = None;
            plan.upgrade = None;
            plan.weights.iter_mut().for_each(|w| w.axis = None);
            plan.notes.push(format!(
                "`{}`: weights per-tensor, the model's opset being below 13 (the main graph was not raised)",
                sm.label
            ));
        }
        out.push(ScopePlan { model: sm, plan });
    }
    out
}

/// The subgraph tensors the plans observe channel by channel.
pub(crate) fn observed_by_channel(plans: &[ScopePlan]) -> std::collections::BTreeSet<Scoped> {
    plans
        .iter()
        .flat_map(|p| {
            p.plan.observed_by_channel().into_iter().map(|name| Scoped {
                scope: p.model.scope.clone(),
                name,
            })
        })
        .collect()
}

/// The subgraph tensors the plans observe.
pub(crate) fn observed(plans: &[ScopePlan]) -> Vec<Scoped> {
    plans
        .iter()
        .flat_map(|p| {
            p.plan.observed().into_iter().map(|name| Scoped {
                scope: p.model.scope.clone(),
                name,
            })
        })
        .collect()
}

/// Why a subgraph no copy tract ran reaches stays float: its control node was kept (with
/// why), or no sample (`data`) or no branch choice the declared shapes allow takes it.
pub(crate) fn untaken_reason(scope: &[Step], label: &str, kept: &Kept, data: bool) -> String {
    let (last, parent) = scope.split_last().expect("a subgraph scope has a step");
    match kept.get(&(parent.to_vec(), last.node.clone())) {
        Some(r) => format!("in `{label}`, which runs unquantized: its control node stays, {r}"),
        None if data => format!("in `{label}`, which no calibration sample takes"),
        None => format!("in `{label}`, which the inputs' declared shapes never take"),
    }
}

/// Control nodes the copies tract ran kept, by (the subgraph they are in, their key): why.
pub(crate) type Kept = BTreeMap<(Vec<Step>, String), String>;

/// What quantizing the subgraphs did.
#[derive(Clone, Debug, Default)]
pub(crate) struct ScopesDone {
    pub nodes: Vec<NodeDecision>,
    pub activations: Vec<ActivationReport>,
    pub weights: Vec<WeightReport>,
    pub subgraphs: Vec<SubgraphReport>,
    pub notes: Vec<String>,
}

impl ScopesDone {
    /// A subgraph left float, its nodes (when `graph` is given) with `reason`.
    fn untaken(&mut self, label: &str, nodes: usize, reason: String, graph: Option<&GraphProto>) {
        if let Some(g) = graph {
            for (id, n) in g.node.iter().enumerate() {
                self.nodes.push(NodeDecision {
                    id: usize::MAX,
                    name: format!("{label}/{}", ir::node_label(n, id)),
                    op_type: n.op_type().to_string(),
                    quantized: false,
                    reason: Some(reason.clone()),
                });
            }
        }
        self.subgraphs.push(SubgraphReport {
            scope: label.to_string(),
            nodes,
            quantized_nodes: 0,
            activations: 0,
            weights: 0,
            reason: Some(reason),
        });
    }

    /// A subgraph quantized by `plan`: its decisions, notes, activations and weights, named
    /// with the subgraph's label.
    fn quantized(
        &mut self,
        label: &str,
        nodes: usize,
        plan: &QuantPlan,
        reports: Vec<ActivationReport>,
        weights: Vec<WeightReport>,
    ) {
        for n in &plan.nodes {
            self.nodes.push(NodeDecision {
                id: usize::MAX,
                name: format!("{label}/{}", n.name),
                ..n.clone()
            });
        }
        self.notes
            .extend(plan.notes.iter().map(|n| format!("`{label}`: {n}")));
        self.activations.extend(reports.into_iter().map(|mut r| {
            r.tensor = format!("{label}::{}", r.tensor);
            r
        }));
        let count = weights.len();
        self.weights.extend(weights.into_iter().map(|mut w| {
            w.name = format!("{label}::{}", w.name);
            w
        }));
        self.subgraphs.push(SubgraphReport {
            scope: label.to_string(),
            nodes,
            quantized_nodes: plan.nodes.iter().filter(|n| n.quantized).count(),
            activations: plan.activations.len(),
            weights: count,
            reason: None,
        });
    }
}

/// The plan of a subgraph's model: weights per tensor where per channel would need a higher
/// opset (a subgraph does not raise the model's).
fn plan_in_scope(
    model: &ModelProto,
    types: &std::collections::HashMap<String, crate::ir::TensorInfo>,
    config: &Config,
    overrides: &Overrides,
) -> QuantPlan {
    let mut p = policy::plan(model, types, config, overrides);
    if p.upgrade.take().is_some() || p.blocked.is_some() {
        p.blocked = None;
        p.weights.iter_mut().for_each(|w| w.axis = None);
    }
    p
}

/// The statistics of a subgraph's planned tensors, by its own names (`Err`: the tensors
/// calibration did not reach).
fn scope_stats(
    plan: &QuantPlan,
    scope: &[Step],
    stats: &StatsTable,
    keys_from: &ModelProto,
) -> Result<StatsTable, Vec<String>> {
    let mut local = StatsTable {
        samples: stats.samples,
        tensors: BTreeMap::new(),
        ..Default::default()
    };
    let mut missing = Vec::new();
    for t in plan.observed() {
        let key = Scoped {
            scope: scope.to_vec(),
            name: t.clone(),
        }
        .key(keys_from);
        match stats.tensors.get(&key) {
            Some(s) => {
                local.tensors.insert(t, s.clone());
            }
            None => missing.push(t),
        }
    }
    if missing.is_empty() {
        Ok(local)
    } else {
        Err(missing)
    }
}

/// Plans and rewrites every subgraph of `model` (already rewritten in its main graph) that
/// calibration reached, from the statistics in `stats` (by [`Scoped::key`] of `keys_from`, the
/// model the keys were made with); the others stay float with the reason.
#[allow(clippy::too_many_arguments)]
pub(crate) fn quantize_scopes(
    model: &mut ModelProto,
    keys_from: &ModelProto,
    types: &Types,
    kept: &Kept,
    data: bool,
    config: &Config,
    overrides: &Overrides,
    stats: &StatsTable,
    source: &Path,
    external: rewrite::ExternalValues,
) -> Result<ScopesDone, Error> {
    let mut done = ScopesDone::default();
    let mut float_scopes: Vec<Vec<Step>> = Vec::new();
    for scope in control::scopes(model) {
        if float_scopes.iter().any(|f| scope.starts_with(f)) {
            continue;
        }
        let label = control::label(model, &scope);
        let graph_nodes = control::subgraph(model, &scope).map_or(0, |g| g.node.len());
        if !types.scopes.contains_key(&scope) {
            let reason = untaken_reason(&scope, &label, kept, data);
            let g = control::subgraph(model, &scope).cloned();
            done.untaken(&label, graph_nodes, reason, g.as_ref());
            float_scopes.push(scope);
            continue;
        }
        let Some(mut sm) = scope_model(model, &scope, types) else {
            continue;
        };
        let ty = sm.types(types);
        let plan = plan_in_scope(&sm.model, &ty, config, overrides);
        let local = match scope_stats(&plan, &scope, stats, keys_from) {
            Ok(local) => local,
            Err(missing) => {
                let reason = format!(
                    "in `{label}`: no statistics for its tensor(s) {} (no calibration sample takes it)",
                    missing
                        .iter()
                        .take(3)
                        .map(|m| format!("`{m}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let g = control::subgraph(model, &scope).cloned();
                done.untaken(&label, graph_nodes, reason, g.as_ref());
                float_scopes.push(scope);
                continue;
            }
        };
        let scope_model = &sm.model;
        let replan = |o: &Overrides| plan_in_scope(scope_model, &ty, config, o);
        let (plan, act, reports) = super::settle_on_statistics(
            plan, &sm.model, &local, config, source, overrides, &replan,
        )?;
        let rewritten = rewrite::run(&mut sm.model, &plan, &act, external)?;
        done.quantized(&label, graph_nodes, &plan, reports, rewritten.weights);
        let copied = sm.copied.clone();
        let g = sm.into_graph();
        *control::subgraph_mut(model, &scope).ok_or_else(|| {
            Error::Internal(format!("subgraph `{label}` vanished during the rewrite"))
        })? = g;
        drop_unread(model, &copied);
    }
    let problems = ir::verify(model);
    if !problems.is_empty() {
        return Err(Error::Internal(format!(
            "quantizing subgraphs broke the model: {}",
            problems.join("; ")
        )));
    }
    Ok(done)
}

/// Removes the main-graph (or enclosing) initializers among `names` that nothing reads any
/// more: float weights a subgraph now stores quantized.
fn drop_unread(model: &mut ModelProto, names: &[String]) {
    fn reads(g: &GraphProto, out: &mut BTreeSet<String>) {
        for n in &g.node {
            out.extend(n.input.iter().cloned());
            for a in &n.attribute {
                for sub in a.g.iter().chain(&a.graphs) {
                    reads(sub, out);
                }
            }
        }
        out.extend(g.output.iter().map(|o| o.name().to_string()));
    }
    fn drop(g: &mut GraphProto, gone: &BTreeSet<&String>) {
        g.initializer
            .retain(|t| !gone.contains(&t.name().to_string()));
        g.input.retain(|v| !gone.contains(&v.name().to_string()));
        for n in &mut g.node {
            for a in &mut n.attribute {
                for sub in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                    drop(sub, gone);
                }
            }
        }
    }
    let Some(main) = model.graph.as_mut() else {
        return;
    };
    let mut read = BTreeSet::new();
    reads(main, &mut read);
    let gone: BTreeSet<&String> = names.iter().filter(|n| !read.contains(*n)).collect();
    if !gone.is_empty() {
        drop(main, &gone);
    }
}
