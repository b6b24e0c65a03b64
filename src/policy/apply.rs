//! Applying the user's per-layer overrides to a plan: skips, per-tensor activation settings and
//! per-weight settings, each remembering which override decided it; and finding overrides that
//! select nothing.

use std::collections::{BTreeSet, HashSet};

use super::{ActivationSite, QuantPlan, SiteSettings, WeightSite};
use crate::config::overrides::{Matcher, Override, Pattern};
use crate::config::schema::suggest;
use crate::ir::{self, NodeId};
use crate::proto::GraphProto;

/// The user's overrides and the file they come from.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub file: String,
    pub list: Vec<Override>,
    /// Nodes kept float by what calibration showed (by node label), with why: applied where
    /// no override of the user's decides the node's skip.
    pub automatic: std::collections::BTreeMap<String, String>,
}

impl Overrides {
    /// The first override skipping (or explicitly not skipping) node `id`, by its node conditions.
    pub fn node_skip(&self, graph: &GraphProto, id: NodeId) -> Option<(&Override, bool)> {
        let node = &graph.node[id];
        let name = ir::node_label(node, id);
        self.list
            .iter()
            .filter(|o| o.matcher.tensor.is_none() && o.matcher.node(&name, node.op_type()))
            .find_map(|o| o.skip.map(|s| (o, s)))
    }
}

fn node_matches(m: &Matcher, graph: &GraphProto, id: NodeId) -> bool {
    let node = &graph.node[id];
    m.node(&ir::node_label(node, id), node.op_type())
}

/// Whether `o` applies to `tensor` read by `readers` (or produced by `producer`).
fn selects(
    o: &Override,
    graph: &GraphProto,
    tensor: &str,
    readers: &[NodeId],
    producer: Option<NodeId>,
) -> bool {
    let m = &o.matcher;
    if !m.tensor(tensor) {
        return false;
    }
    !m.has_node_condition()
        || readers
            .iter()
            .chain(producer.as_ref())
            .any(|&n| node_matches(m, graph, n))
}

fn readers(site: &ActivationSite) -> Vec<NodeId> {
    site.consumers.iter().map(|c| c.0).collect()
}

/// Tensor skips, then the settings of every activation and weight site, first match per field.
pub(super) fn apply(plan: &mut QuantPlan, graph: &GraphProto, overrides: &Overrides) {
    let index = ir::Index::new(graph);
    let producer = |t: &str| index.producer(t).map(|p| p.0);
    for o in overrides
        .list
        .iter()
        .filter(|o| o.skip == Some(true) && o.matcher.tensor.is_some())
    {
        let label = o.label(&overrides.file);
        let m = &o.matcher;
        for site in &mut plan.activations {
            if !m.tensor(&site.tensor) {
                continue;
            }
            let before = site.consumers.len();
            site.consumers
                .retain(|c| m.has_node_condition() && !node_matches(m, graph, c.0));
            if !m.has_node_condition() {
                site.all_consumers = false;
            }
            if site.consumers.len() != before || !m.has_node_condition() {
                plan.notes
                    .push(format!("`{}` kept float by {label}", site.tensor));
            }
        }
        for w in &mut plan.weights {
            if m.tensor(&w.initializer) {
                w.consumers
                    .retain(|c| m.has_node_condition() && !node_matches(m, graph, c.0));
            }
        }
    }
    plan.activations
        .retain(|a| !a.consumers.is_empty() || a.all_consumers);
    let kept: HashSet<String> = plan
        .weights
        .iter()
        .filter(|w| !w.consumers.is_empty())
        .map(|w| w.initializer.clone())
        .collect();
    plan.weights.retain(|w| kept.contains(&w.initializer));
    plan.biases.retain(|b| {
        kept.contains(&b.weight) && plan.activations.iter().any(|a| a.tensor == b.activation)
    });
    for site in &mut plan.activations {
        let (r, p) = (readers(site), producer(&site.tensor));
        site.settings = settings_for(overrides, graph, &site.tensor, &r, p);
    }
    for w in &mut plan.weights {
        weight_settings(overrides, graph, w);
    }
}

fn settings_for(
    overrides: &Overrides,
    graph: &GraphProto,
    tensor: &str,
    readers: &[NodeId],
    producer: Option<NodeId>,
) -> SiteSettings {
    let mut s = SiteSettings::default();
    for o in overrides
        .list
        .iter()
        .filter(|o| selects(o, graph, tensor, readers, producer))
    {
        let a = &o.activations;
        let label = o.label(&overrides.file);
        let mut take = |field: &'static str, set: bool| {
            if set && !s.sources.iter().any(|(f, _)| *f == field) {
                s.sources.push((field, label.clone()));
                true
            } else {
                false
            }
        };
        if take("dtype", a.dtype.is_some()) {
            s.qtype = a.dtype;
        }
        if take("symmetric", a.symmetric.is_some()) {
            s.symmetric = a.symmetric;
        }
        if take("method", a.method.is_some()) {
            s.method = a.method.clone();
        }
        if take("percentile", a.percentile.is_some()) {
            s.percentile = a.percentile;
        }
        if take("range", a.range.is_some()) {
            s.range = a.range;
        }
        if take("scale", a.scale.is_some()) {
            s.scale = a.scale.map(|sc| (sc, a.zero_point));
        }
    }
    s
}

fn weight_settings(overrides: &Overrides, graph: &GraphProto, w: &mut WeightSite) {
    let consumers: Vec<NodeId> = w.consumers.iter().map(|c| c.0).collect();
    let mut per_channel_set = false;
    let mut axis_set = false;
    let mut dtype_set = false;
    let mut block_set = false;
    let (mut gptq_set, mut bias_set) = (false, false);
    for o in overrides
        .list
        .iter()
        .filter(|o| selects(o, graph, &w.initializer, &consumers, None))
    {
        let label = o.label(&overrides.file);
        if !per_channel_set && let Some(pc) = o.weights.per_channel {
            per_channel_set = true;
            if !pc {
                w.axis = None;
            }
            w.decided_by.push(format!("per_channel: {label}"));
        }
        if !axis_set && let Some(a) = o.weights.axis {
            axis_set = true;
            w.axis = Some(a);
            w.decided_by.push(format!("axis: {label}"));
        }
        if !dtype_set && let Some(d) = o.weights.dtype {
            dtype_set = true;
            w.dtype = d;
            w.decided_by.push(format!("dtype: {label}"));
        }
        if !block_set && let Some(b) = o.weights.block_size {
            block_set = true;
            w.block_size = b;
            w.decided_by.push(format!("block_size: {label}"));
        }
        if !gptq_set && let Some(r) = o.weights.rounding {
            gptq_set = true;
            w.rounding = r;
            w.decided_by.push(format!("rounding: {label}"));
        }
        if !bias_set && let Some(b) = o.weights.bias_correction {
            bias_set = true;
            w.bias_correction = b;
            w.decided_by.push(format!("bias_correction: {label}"));
        }
    }
}

/// Names of the things a pattern can match, for suggestions.
fn closest(pattern: &Pattern, names: &BTreeSet<String>) -> Vec<String> {
    let text = pattern.to_string();
    let mut scored: Vec<&String> = names
        .iter()
        .filter(|n| suggest(&text, [n.as_str()]).is_some())
        .collect();
    if scored.is_empty() {
        // a longer miss: names sharing the most leading characters
        let common = |n: &str| {
            n.chars()
                .zip(text.chars())
                .take_while(|(a, b)| a == b)
                .count()
        };
        let best = names.iter().map(|n| common(n)).max().unwrap_or(0);
        if best >= 2 {
            scored = names.iter().filter(|n| common(n) == best).collect();
        }
    }
    scored
        .into_iter()
        .take(3)
        .map(|n| format!("`{n}`"))
        .collect()
}

/// Every override that selects nothing in `graph`, with the closest names.
/// Whether the matcher selects a node (or tensor) of `graph`.
fn hits(m: &crate::config::overrides::Matcher, graph: &GraphProto) -> bool {
    graph.node.iter().enumerate().any(|(id, n)| {
        let node_ok = node_matches(m, graph, id);
        match &m.tensor {
            None => node_ok,
            Some(_) if !m.has_node_condition() => {
                n.input.iter().chain(&n.output).any(|t| m.tensor(t))
            }
            Some(_) => node_ok && n.input.iter().any(|t| m.tensor(t)),
        }
    })
}

/// [`unmatched`] over a model's main graph and its subgraphs: an override that selects a node
/// of a subgraph (an If branch, a Loop body) matches.
pub fn unmatched_anywhere(
    overrides: &Overrides,
    main: &GraphProto,
    subgraphs: &[&GraphProto],
) -> Vec<String> {
    let mut rest = overrides.clone();
    rest.list
        .retain(|o| !subgraphs.iter().any(|g| hits(&o.matcher, g)));
    unmatched(&rest, main)
}

pub fn unmatched(overrides: &Overrides, graph: &GraphProto) -> Vec<String> {
    let nodes: Vec<(String, &str)> = graph
        .node
        .iter()
        .enumerate()
        .map(|(i, n)| (ir::node_label(n, i), n.op_type()))
        .collect();
    let node_names: BTreeSet<String> = nodes.iter().map(|n| n.0.clone()).collect();
    let op_types: BTreeSet<String> = nodes.iter().map(|n| n.1.to_string()).collect();
    let index = ir::Index::new(graph);
    let tensors: BTreeSet<String> = index
        .names()
        .into_iter()
        .filter(|n| !node_names.contains(n) || index.producer(n).is_some())
        .collect();
    let mut out = Vec::new();
    for o in &overrides.list {
        let m = &o.matcher;
        if hits(m, graph) {
            continue;
        }
        let mut why = Vec::new();
        if let Some(p) = &m.name {
            let c = closest(p, &node_names);
            why.push(format!(
                "no node named {p}{}",
                if c.is_empty() {
                    String::new()
                } else {
                    format!(" (closest: {})", c.join(", "))
                }
            ));
        }
        for op in m.op_types.iter().filter(|op| !op_types.contains(*op)) {
            let c = suggest(op, op_types.iter().map(|s| s.as_str()));
            why.push(format!(
                "no {op} node{}",
                c.map_or(String::new(), |c| format!(" (closest: `{c}`)"))
            ));
        }
        if let Some(p) = &m.tensor {
            let c = closest(p, &tensors);
            why.push(format!(
                "no tensor named {p}{}",
                if c.is_empty() {
                    String::new()
                } else {
                    format!(" (closest: {})", c.join(", "))
                }
            ));
        }
        if why.is_empty() {
            why.push("its conditions exclude each other here".into());
        }
        out.push(format!(
            "{}:{}: override #{} selects nothing: {}",
            overrides.file,
            o.pos.line,
            o.number,
            why.join("; ")
        ));
    }
    out
}
