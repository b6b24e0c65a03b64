//! Control flow as tract can run it, and as calibration can see inside it.
//!
//! tract types both branches of an `If` with the shapes it is given, so a branch the data never
//! takes (the 8 kHz half of a speech model run at 16 kHz) can fail the whole analysis; and it
//! runs no `Loop` at all. [`specialize`] makes the copy tract runs: every `If` whose condition
//! is known for a set of samples (computed from constants, from inputs whose value is the same
//! in every sample of the set, and from shapes) is replaced by the branch taken, inlined, and
//! every `Loop` with a known trip count and a condition that stays true is unrolled. What was
//! inside a subgraph becomes tensors of the main graph that tract can observe; [`Flat`] says,
//! for every instance of a subgraph (an unrolled loop body has one per iteration), which flat
//! tensor each of its names became. The written model keeps its control flow: only the copy
//! tract runs is specialized.
//!
//! Pure: the conditions are computed by a caller-supplied function (tract, in `calib`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use super::NodeId;
use crate::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto,
    attribute_proto::AttributeType, tensor_proto::DataType,
};

/// One step from a graph into a subgraph of one of its nodes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Step {
    /// The control node: its first output (outputs are unique in a model, and survive the
    /// folds that move nodes).
    pub node: String,
    /// The attribute holding the subgraph: `then_branch`, `else_branch`, `body`.
    pub attr: String,
    /// The iteration, for an unrolled loop body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iteration: Option<usize>,
}

/// Where a subgraph instance sits: the steps from the main graph (empty for the main graph).
pub type Instance = Vec<Step>;

/// The subgraph an instance is an instance of (the steps without iterations).
pub fn scope_of(instance: &[Step]) -> Vec<Step> {
    instance
        .iter()
        .map(|s| Step {
            iteration: None,
            ..s.clone()
        })
        .collect()
}

/// How a [`Step`] names a control node: its first output.
pub fn node_key(node: &NodeProto) -> String {
    node.output
        .iter()
        .find(|o| !o.is_empty())
        .cloned()
        .unwrap_or_else(|| format!("#{}", node.op_type()))
}

/// The node of `g` a step names.
pub fn find_step<'g>(g: &'g GraphProto, step: &Step) -> Option<(NodeId, &'g NodeProto)> {
    g.node
        .iter()
        .enumerate()
        .find(|(_, n)| node_key(n) == step.node)
}

/// Whether the node is a control-flow node tract or calibration must treat specially.
pub fn is_control(node: &NodeProto) -> bool {
    super::is_default_domain(node.domain())
        && matches!(node.op_type(), "If" | "Loop" | "Scan")
        && super::has_subgraphs(node)
}

/// Whether any graph of the model holds a subgraph.
pub fn has_subgraphs(model: &ModelProto) -> bool {
    model
        .graph
        .as_ref()
        .is_some_and(|g| g.node.iter().any(super::has_subgraphs))
}

/// The graph attribute `attr` of `node`.
pub fn graph_attr<'a>(node: &'a NodeProto, attr: &str) -> Option<&'a GraphProto> {
    node.attribute
        .iter()
        .find(|a| a.name() == attr && a.r#type() == AttributeType::Graph)
        .and_then(|a| a.g.as_ref())
}

/// The subgraph at `scope` (steps without iterations) of `model`.
pub fn subgraph<'m>(model: &'m ModelProto, scope: &[Step]) -> Option<&'m GraphProto> {
    let mut g = model.graph.as_ref()?;
    for step in scope {
        g = graph_attr(find_step(g, step)?.1, &step.attr)?;
    }
    Some(g)
}

/// The same, to change it.
pub fn subgraph_mut<'m>(model: &'m mut ModelProto, scope: &[Step]) -> Option<&'m mut GraphProto> {
    let mut g = model.graph.as_mut()?;
    for step in scope {
        let id = find_step(g, step)?.0;
        let node = &mut g.node[id];
        g = node
            .attribute
            .iter_mut()
            .find(|a| a.name() == step.attr && a.r#type() == AttributeType::Graph)
            .and_then(|a| a.g.as_mut())?;
    }
    Some(g)
}

/// A readable path to a scope or instance: `If_25/then_branch/Loop_3/body[2]`.
pub fn label(model: &ModelProto, steps: &[Step]) -> String {
    let mut parts = Vec::new();
    let mut g = model.graph.as_ref();
    for step in steps {
        let found = g.and_then(|g| find_step(g, step));
        let node = found.map(|f| f.1);
        // a node without a name goes by its first output: positions move when nodes are folded
        let name = match node.map(|n| n.name()) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => step.node.clone(),
        };
        let attr = match step.iteration {
            Some(i) => format!("{}[{i}]", step.attr),
            None => step.attr.clone(),
        };
        parts.push(format!("{name}/{attr}"));
        g = node.and_then(|n| graph_attr(n, &step.attr));
    }
    parts.join("/")
}

/// Every subgraph of the model (any depth), parents before children, in graph order.
pub fn scopes(model: &ModelProto) -> Vec<Vec<Step>> {
    fn walk(g: &GraphProto, at: &[Step], out: &mut Vec<Vec<Step>>) {
        for n in &g.node {
            for a in &n.attribute {
                if let (Some(sub), AttributeType::Graph) = (a.g.as_ref(), a.r#type()) {
                    let mut here = at.to_vec();
                    here.push(Step {
                        node: node_key(n),
                        attr: a.name().to_string(),
                        iteration: None,
                    });
                    out.push(here.clone());
                    walk(sub, &here, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    if let Some(g) = model.graph.as_ref() {
        walk(g, &[], &mut out);
    }
    out
}

/// Names a subgraph reads from its enclosing graphs (any depth): used inside and defined by
/// neither the subgraph nor a subgraph of its own.
pub fn captured_by(g: &GraphProto) -> Vec<String> {
    let node = NodeProto {
        attribute: vec![AttributeProto {
            name: Some("g".into()),
            r#type: Some(AttributeType::Graph as i32),
            g: Some(g.clone()),
            ..Default::default()
        }],
        ..Default::default()
    };
    super::captures(&node)
}

/// Every name a graph and its subgraphs use: tensors, node names, value_info.
pub fn all_names(g: &GraphProto, out: &mut HashSet<String>) {
    for n in &g.node {
        out.extend(
            n.input
                .iter()
                .chain(&n.output)
                .filter(|s| !s.is_empty())
                .cloned(),
        );
        if !n.name().is_empty() {
            out.insert(n.name().to_string());
        }
        for a in &n.attribute {
            for sub in a.g.iter().chain(&a.graphs) {
                all_names(sub, out);
            }
        }
    }
    out.extend(g.initializer.iter().map(|t| t.name().to_string()));
    out.extend(
        g.input
            .iter()
            .chain(&g.output)
            .chain(&g.value_info)
            .map(|v| v.name().to_string()),
    );
}
mod cone;
mod inline;
mod specialize;

pub use cone::control_inputs;
pub use inline::rename_captures;
pub use specialize::{Evaluate, Flat, Kept, specialize};
fn constant_node(name: String, output: &str, value: TensorProto) -> NodeProto {
    NodeProto {
        name: Some(name),
        op_type: Some("Constant".into()),
        output: vec![output.to_string()],
        attribute: vec![AttributeProto {
            name: Some("value".into()),
            r#type: Some(AttributeType::Tensor as i32),
            t: Some(value),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn scalar_i64(v: i64) -> TensorProto {
    TensorProto {
        data_type: Some(DataType::Int64 as i32),
        int64_data: vec![v],
        ..Default::default()
    }
}

fn scalar_bool(v: bool) -> TensorProto {
    TensorProto {
        data_type: Some(DataType::Bool as i32),
        int32_data: vec![i32::from(v)],
        ..Default::default()
    }
}

fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn label_of(node: &NodeProto) -> String {
    match node.name() {
        "" => node.op_type().to_string(),
        n => n.to_string(),
    }
}

/// `base` if no name in `used` is, else `base_1`, `base_2`, ...; reserved.
fn fresh(used: &mut HashSet<String>, base: &str) -> String {
    let mut name = base.to_string();
    let mut k = 0;
    while used.contains(&name) {
        k += 1;
        name = format!("{base}_{k}");
    }
    used.insert(name.clone());
    name
}
