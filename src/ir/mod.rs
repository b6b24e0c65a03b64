//! The graph as onnx-quant reasons about it: the ONNX `GraphProto` itself (attributes verbatim,
//! so nothing is lost) plus an [`Index`] of producers, consumers and initializers by name.
//!
//! The IR mirrors ONNX and knows nothing of targets or quantization choices: `policy` decides,
//! `rewrite` expresses the decision as a [`Patch`], and [`apply`] is the only code that changes a
//! graph's structure.

pub mod constant;
pub mod control;
mod dump;
mod opset;
mod patch;
#[cfg(test)]
pub(crate) mod testnet;
mod topo;
mod types;
mod verify;

use std::collections::{HashMap, HashSet};

use crate::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, attribute_proto::AttributeType,
};

pub use dump::dump;
pub use opset::{OpsetUpgrade, plan_upgrade, upgrade_in_place};
pub use patch::{Patch, Placement, apply};
pub use topo::topo_sort;
pub use types::{Elem, TensorInfo};
pub use verify::verify;

/// Position of a node in `GraphProto::node`.
pub type NodeId = usize;

/// Ops that reduce a tensor along axes to one value (or index) per slice.
pub const REDUCTIONS: [&str; 6] = [
    "ReduceMax",
    "ReduceMin",
    "ReduceMean",
    "ReduceSum",
    "ArgMax",
    "ArgMin",
];

/// Whether a reduction ([`REDUCTIONS`]) reads `tensor`.
pub fn read_by_reduction(index: &Index, tensor: &str) -> bool {
    index
        .consumers(tensor)
        .iter()
        .any(|&(r, _)| REDUCTIONS.contains(&index.node(r).op_type()))
}

/// Whether `domain` names the default ONNX operator set.
pub fn is_default_domain(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}

/// The model's default-domain opset version, if it imports one.
pub fn default_opset(model: &ModelProto) -> Option<i64> {
    model
        .opset_import
        .iter()
        .find(|o| is_default_domain(o.domain()))
        .map(|o| o.version())
}

/// Sets the default-domain opset version, adding the import if missing.
pub fn set_default_opset(model: &mut ModelProto, version: i64) {
    match model
        .opset_import
        .iter_mut()
        .find(|o| is_default_domain(o.domain()))
    {
        Some(o) => o.version = Some(version),
        None => model.opset_import.push(crate::proto::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(version),
        }),
    }
}

/// The node named `name` (or, for a node without a name, whose first output is `name`), in the
/// main graph or any subgraph.
pub fn find_node<'m>(model: &'m ModelProto, name: &str) -> Option<&'m NodeProto> {
    fn walk<'g>(g: &'g GraphProto, name: &str) -> Option<&'g NodeProto> {
        for n in &g.node {
            let own = if n.name().is_empty() {
                n.output.first().map_or("", |s| s.as_str())
            } else {
                n.name()
            };
            if own == name {
                return Some(n);
            }
            for a in &n.attribute {
                if let Some(found) = a.g.iter().chain(&a.graphs).find_map(|sub| walk(sub, name)) {
                    return Some(found);
                }
            }
        }
        None
    }
    walk(model.graph.as_ref()?, name)
}

/// A readable name for a node: its name, or `#id op_type(first output)` when it has none.
pub fn node_label(node: &NodeProto, id: NodeId) -> String {
    match node.name() {
        "" => format!(
            "#{id} {}({})",
            node.op_type(),
            node.output.first().map_or("", |s| s)
        ),
        name => name.to_string(),
    }
}

/// The attribute `name` of `node`, if present.
pub fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name() == name)
}

/// An integer attribute `name = v`.
pub fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(crate::proto::attribute_proto::AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

/// A string attribute `name = v`.
pub fn string_attr(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(crate::proto::attribute_proto::AttributeType::String as i32),
        s: Some(v.as_bytes().to_vec().into()),
        ..Default::default()
    }
}

/// An integer attribute.
pub fn attr_int(node: &NodeProto, name: &str) -> Option<i64> {
    attr(node, name)
        .filter(|a| a.r#type() == AttributeType::Int)
        .map(|a| a.i())
}

/// The output-channel axis of the weight a Conv, ConvTranspose, Gemm or MatMul reads at input
/// 1, for a weight of `rank` (ONNX's layouts: Conv `[M, C/g, ...]`, ConvTranspose `[C, M/g, ...]`,
/// Gemm `[K, N]` or `[N, K]` with `transB`, MatMul `[..., K, N]`). `None` for other ops.
pub fn weight_output_axis(node: &NodeProto, rank: usize) -> Option<usize> {
    Some(match node.op_type() {
        "Conv" => 0,
        "ConvTranspose" => 1,
        "Gemm" if attr_int(node, "transB").unwrap_or(0) != 0 => 0,
        "Gemm" => 1,
        "MatMul" => rank.checked_sub(1)?,
        _ => return None,
    })
}

/// Initializers whose values nothing needs before the rewrite: read only as the weight (input 1)
/// of MatMul, Gemm, Conv or ConvTranspose, where no Conv feeds a BatchNormalization (folding it
/// reads the weight), and not graph inputs, outputs or captured by subgraphs. A large model can
/// leave these on disk while it is planned and calibrated (`onnx::load_deferring`).
pub fn deferrable_weights(model: &ModelProto) -> HashSet<String> {
    let Some(graph) = model.graph.as_ref() else {
        return HashSet::new();
    };
    let index = Index::new(graph);
    let weighted = |id: NodeId, slot: usize| {
        let node = index.node(id);
        slot == 1
            && is_default_domain(node.domain())
            && matches!(node.op_type(), "MatMul" | "Gemm" | "Conv" | "ConvTranspose")
            && !(node.op_type() == "Conv"
                && node.output.first().is_some_and(|o| {
                    index
                        .consumers(o)
                        .iter()
                        .any(|&(c, _)| index.node(c).op_type() == "BatchNormalization")
                }))
    };
    graph
        .initializer
        .iter()
        .map(|t| t.name())
        .filter(|&name| {
            let readers = index.consumers(name);
            !readers.is_empty()
                && readers.iter().all(|&(id, slot)| weighted(id, slot))
                && !index.is_graph_input(name)
                && !index.is_graph_output(name)
                && !index.is_captured(name)
        })
        .map(str::to_string)
        .collect()
}

/// A Relu, or a Clip from 0 (ReLU6), folded into the node unit before it.
#[derive(Clone, Debug)]
pub struct FoldedRelu {
    /// The Relu or Clip as it was (its input is the unit's original output).
    pub relu: NodeProto,
    /// A Clip's upper bound: the quantized range must end at or below it.
    pub upper: Option<f32>,
    /// Its name in reports (`ir::node_label`).
    pub label: String,
    /// Its output, which the unit now writes.
    pub tensor: String,
}

/// The input-channel axis of the same weights (the axis the product sums over): Conv 1,
/// ConvTranspose 0, Gemm 0 or 1 with `transB`, MatMul `rank - 2`. `None` for other ops.
pub fn weight_input_axis(node: &NodeProto, rank: usize) -> Option<usize> {
    Some(match node.op_type() {
        "Conv" => 1,
        "ConvTranspose" => 0,
        "Gemm" if attr_int(node, "transB").unwrap_or(0) != 0 => 1,
        "Gemm" => 0,
        "MatMul" => rank.checked_sub(2)?,
        _ => return None,
    })
}

/// Whether the node carries subgraphs (If, Loop, Scan, ...).
pub fn has_subgraphs(node: &NodeProto) -> bool {
    node.attribute
        .iter()
        .any(|a| a.g.is_some() || !a.graphs.is_empty())
}

/// Outer-scope tensors the subgraphs of `node` read (any depth): names used inside that the
/// subgraphs do not define themselves.
pub fn captures(node: &NodeProto) -> Vec<String> {
    fn walk(g: &GraphProto, defined: &mut HashSet<String>, used: &mut Vec<String>) {
        let own = g
            .input
            .iter()
            .map(|v| v.name())
            .chain(g.initializer.iter().map(|t| t.name()));
        defined.extend(own.map(str::to_string));
        for n in &g.node {
            used.extend(n.input.iter().filter(|i| !i.is_empty()).cloned());
            for a in &n.attribute {
                for sub in a.g.iter().chain(&a.graphs) {
                    walk(sub, defined, used);
                }
            }
            defined.extend(n.output.iter().cloned());
        }
        used.extend(g.output.iter().map(|v| v.name().to_string()));
    }
    let (mut defined, mut used) = (HashSet::new(), Vec::new());
    for a in &node.attribute {
        for g in a.g.iter().chain(&a.graphs) {
            walk(g, &mut defined, &mut used);
        }
    }
    let mut seen = HashSet::new();
    used.retain(|u| !defined.contains(u) && seen.insert(u.clone()));
    used
}

/// Name-based lookups over one graph. Borrowed: rebuild it after the graph changes.
pub struct Index<'g> {
    pub graph: &'g GraphProto,
    producer: HashMap<&'g str, (NodeId, usize)>,
    consumers: HashMap<&'g str, Vec<(NodeId, usize)>>,
    initializers: HashMap<&'g str, &'g TensorProto>,
    inputs: HashSet<&'g str>,
    outputs: HashSet<&'g str>,
    captured: HashSet<String>,
}

impl<'g> Index<'g> {
    pub fn new(graph: &'g GraphProto) -> Self {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<&str, Vec<_>> = HashMap::new();
        for (id, node) in graph.node.iter().enumerate() {
            for (slot, out) in node
                .output
                .iter()
                .enumerate()
                .filter(|(_, o)| !o.is_empty())
            {
                producer.insert(out.as_str(), (id, slot));
            }
            for (slot, inp) in node.input.iter().enumerate().filter(|(_, i)| !i.is_empty()) {
                consumers.entry(inp.as_str()).or_default().push((id, slot));
            }
        }
        Index {
            graph,
            producer,
            consumers,
            initializers: graph.initializer.iter().map(|t| (t.name(), t)).collect(),
            inputs: graph.input.iter().map(|v| v.name()).collect(),
            outputs: graph.output.iter().map(|v| v.name()).collect(),
            captured: graph.node.iter().flat_map(captures).collect(),
        }
    }

    /// Whether a subgraph of some node reads `tensor` from this graph.
    pub fn is_captured(&self, tensor: &str) -> bool {
        self.captured.contains(tensor)
    }

    pub fn node(&self, id: NodeId) -> &'g NodeProto {
        &self.graph.node[id]
    }

    /// The node and output slot producing `tensor`, if a node does.
    pub fn producer(&self, tensor: &str) -> Option<(NodeId, usize)> {
        self.producer.get(tensor).copied()
    }

    /// Every (node, input slot) reading `tensor`, in graph order.
    pub fn consumers(&self, tensor: &str) -> &[(NodeId, usize)] {
        self.consumers.get(tensor).map_or(&[], |v| v.as_slice())
    }

    pub fn initializer(&self, name: &str) -> Option<&'g TensorProto> {
        self.initializers.get(name).copied()
    }

    /// Whether `name` is listed in `graph.input` (an initializer listed there can be overridden
    /// by the caller from IR version 4 on).
    pub fn is_graph_input(&self, name: &str) -> bool {
        self.inputs.contains(name)
    }

    pub fn is_graph_output(&self, name: &str) -> bool {
        self.outputs.contains(name)
    }

    /// Graph inputs that are not initializers: what a caller feeds.
    pub fn fed_inputs(&self) -> impl Iterator<Item = &'g crate::proto::ValueInfoProto> + '_ {
        self.graph
            .input
            .iter()
            .filter(|v| !self.initializers.contains_key(v.name()))
    }

    /// Every name used by a tensor or a node of this graph, its value_info and its subgraphs
    /// (a new tensor must not take a name a subgraph uses, nor one the file records a type for).
    pub fn names(&self) -> HashSet<String> {
        let mut out = HashSet::new();
        control::all_names(self.graph, &mut out);
        out
    }
}

/// Hands out names not yet used in a graph.
pub struct Names {
    used: HashSet<String>,
}

impl Names {
    pub fn new(index: &Index) -> Self {
        Names {
            used: index.names(),
        }
    }

    /// `base` if free, else `base_1`, `base_2`, ...; the result is reserved.
    pub fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 0;
        while self.used.contains(&name) {
            k += 1;
            name = format!("{base}_{k}");
        }
        self.used.insert(name.clone());
        name
    }
}

/// The main graph of a loaded model (`onnx::load` refuses a model without one).
pub fn graph(model: &ModelProto) -> &GraphProto {
    model.graph.as_ref().expect("loaded models have a graph")
}

/// The main graph of a loaded model, to change it.
pub fn graph_mut(model: &mut ModelProto) -> &mut GraphProto {
    model.graph.as_mut().expect("loaded models have a graph")
}
