//! A [`Patch`] describes a change to a graph; [`apply`] is the one place that performs it and
//! re-establishes the invariants (topological order, then [`super::verify`]).

use std::collections::{HashMap, HashSet};

use crate::proto::{ModelProto, NodeProto, TensorProto, ValueInfoProto};

use super::NodeId;

/// Where a new node goes in the node list (topological order is restored afterwards anyway;
/// this keeps new nodes next to the wires they touch, which makes dumps readable).
#[derive(Clone, Debug)]
pub enum Placement {
    /// Right after the node producing this tensor (at the start for graph inputs/initializers).
    After(String),
    /// Right before this node.
    Before(NodeId),
}

/// Changes to one graph, expressed against node ids of the graph it was computed from.
#[derive(Clone, Debug, Default)]
pub struct Patch {
    /// New nodes.
    pub nodes: Vec<(Placement, NodeProto)>,
    /// Nodes replaced in place (same position), e.g. by an opset conversion.
    pub replace: Vec<(NodeId, NodeProto)>,
    /// Nodes deleted (their outputs must be produced by another node of the patch).
    pub remove: Vec<NodeId>,
    /// Input `slot` of node `id` now reads `tensor`.
    pub rewire: Vec<(NodeId, usize, String)>,
    pub add_initializers: Vec<TensorProto>,
    /// Initializers to delete (also removed from `graph.input` and `value_info`).
    pub remove_initializers: Vec<String>,
    /// Raise the default-domain opset to this version.
    pub opset: Option<i64>,
    /// Raise the IR version to at least this.
    pub min_ir_version: Option<i64>,
    /// Graph inputs to drop (models before IR 4 list their initializers as inputs).
    pub remove_inputs: Vec<String>,
    /// `value_info` entries replaced, by the name they had (a tensor renamed or retyped).
    pub value_info: Vec<(String, ValueInfoProto)>,
}

impl Patch {
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
            && self.replace.is_empty()
            && self.remove.is_empty()
            && self.rewire.is_empty()
            && self.add_initializers.is_empty()
            && self.remove_initializers.is_empty()
            && self.opset.is_none()
            && self.min_ir_version.is_none()
            && self.remove_inputs.is_empty()
            && self.value_info.is_empty()
    }
}

/// Applies `patch` to the model's main graph, sorts it and verifies it. Returns where each
/// node of the graph before the patch now stands (new nodes shift ids). On error the message
/// names the broken invariant; the model must then be considered corrupt (callers stop).
/// Removed nodes map to `usize::MAX`.
// One transaction: replace, rewire, insert, remove, re-sort, initializers, declarations,
// opset, verify; the steps share the producer map and the node-id bookkeeping.
pub fn apply(model: &mut ModelProto, patch: Patch) -> Result<Vec<NodeId>, String> {
    let graph = model.graph.as_mut().ok_or("model has no graph")?;
    let n = graph.node.len();
    for (id, node) in patch.replace {
        *graph
            .node
            .get_mut(id)
            .ok_or(format!("replace: no node #{id}"))? = node;
    }
    for (id, slot, tensor) in patch.rewire {
        let node = graph
            .node
            .get_mut(id)
            .ok_or(format!("rewire: no node #{id}"))?;
        *node
            .input
            .get_mut(slot)
            .ok_or(format!("rewire: node #{id} has no input {slot}"))? = tensor;
    }
    let producer: HashMap<&str, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, nd)| nd.output.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let mut keyed: Vec<((usize, usize), NodeProto)> = Vec::with_capacity(n + patch.nodes.len());
    for (seq, (place, node)) in patch.nodes.into_iter().enumerate() {
        let key = match place {
            Placement::After(t) => producer
                .get(t.as_str())
                .map_or((0, seq), |&p| (2 * p + 2, seq)),
            Placement::Before(id) if id < n => (2 * id, seq),
            Placement::Before(id) => return Err(format!("placement before missing node #{id}")),
        };
        keyed.push((key, node));
    }
    let added = keyed.len();
    let removed_nodes: HashSet<NodeId> = patch.remove.into_iter().collect();
    let kept: Vec<NodeId> = (0..n).filter(|i| !removed_nodes.contains(i)).collect();
    let mut old_nodes: Vec<Option<NodeProto>> = std::mem::take(&mut graph.node)
        .into_iter()
        .map(Some)
        .collect();
    keyed.extend(
        kept.iter()
            .map(|&i| ((2 * i + 1, 0), old_nodes[i].take().expect("each node once"))),
    );
    let (sorted, order) = super::topo_sort(keyed)?;
    graph.node = sorted;
    let mut moved = vec![usize::MAX; n];
    for (new, &old) in order.iter().enumerate() {
        if old >= added {
            moved[kept[old - added]] = new;
        }
    }

    let removed: HashSet<String> = patch.remove_initializers.into_iter().collect();
    graph.initializer.retain(|t| !removed.contains(t.name()));
    graph.input.retain(|v| !removed.contains(v.name()));
    graph.value_info.retain(|v| !removed.contains(v.name()));
    graph.initializer.extend(patch.add_initializers);
    let dropped: HashSet<String> = patch.remove_inputs.into_iter().collect();
    graph.input.retain(|v| !dropped.contains(v.name()));
    let declared: HashMap<String, ValueInfoProto> = patch.value_info.into_iter().collect();
    for v in &mut graph.value_info {
        if let Some(new) = declared.get(v.name()) {
            *v = new.clone();
        }
    }

    if let Some(v) = patch.opset {
        super::set_default_opset(model, v);
    }
    if let Some(ir) = patch.min_ir_version
        && model.ir_version() < ir
    {
        model.ir_version = Some(ir);
    }
    let problems = super::verify(model);
    if problems.is_empty() {
        Ok(moved)
    } else {
        Err(problems.join("; "))
    }
}
