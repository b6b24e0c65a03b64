//! The placement rules, applied node by node, then propagated to a fixpoint.

use std::collections::{BTreeMap, HashMap};

use super::{ActivationSite, BiasSite, NodeDecision, WeightSite};
use crate::config::{Config, ResidualAdd};
use crate::ir::{self, Index, NodeId};
use crate::ir::{Elem, TensorInfo};
use crate::params::WeightType;
use crate::proto::{GraphProto, ModelProto, NodeProto, tensor_proto::DataType};

/// Ops whose every input is data (the others quantize input 0 only: their further inputs are
/// parameters such as Resize's scales).
const VARIADIC: [&str; 8] = ["Add", "Sub", "Mul", "Div", "Concat", "Sum", "Max", "Min"];

/// Per-channel axis of a weighted op's weight: its output channels, for a weight of rank ≥ 2.
fn weight_axis(node: &NodeProto, rank: usize) -> Option<usize> {
    ir::weight_output_axis(node, rank).filter(|&axis| rank >= 2 && axis < rank)
}

enum Input {
    Activation(String),
    Weight(String, Option<usize>),
}

/// Where one weight is read, gathered over the graph.
struct WeightUse {
    first: NodeId,
    axes: Vec<Option<usize>>,
    /// Input-channel axis at each consumer (`None`: not the weight slot of a weighted op).
    in_axes: Vec<Option<usize>>,
    consumers: Vec<(NodeId, usize)>,
}

pub(super) struct Builder<'a> {
    model: &'a ModelProto,
    graph: &'a GraphProto,
    index: Index<'a>,
    types: &'a HashMap<String, TensorInfo>,
    config: &'a Config,
    overrides: &'a super::Overrides,
    decisions: Vec<NodeDecision>,
    sites: Vec<ActivationSite>,
    site_of: HashMap<String, usize>,
    /// Union-find parents over sites, for shared scales.
    parent: Vec<usize>,
    weights: BTreeMap<String, WeightUse>,
    biases: Vec<BiasSite>,
    /// Tensors carrying a huge constant (an additive attention mask and what it is added to),
    /// with the reason: never quantized.
    masked: HashMap<String, String>,
    /// Tensors whose small values reach a `Log`, with that Log's name.
    log_fed: BTreeMap<String, String>,
}

impl<'a> Builder<'a> {
    pub(super) fn new(
        model: &'a ModelProto,
        graph: &'a GraphProto,
        types: &'a HashMap<String, TensorInfo>,
        config: &'a Config,
        overrides: &'a super::Overrides,
    ) -> Self {
        let decisions = graph
            .node
            .iter()
            .enumerate()
            .map(|(id, n)| NodeDecision {
                id,
                name: ir::node_label(n, id),
                op_type: n.op_type().to_string(),
                quantized: false,
                reason: None,
            })
            .collect();
        Builder {
            model,
            graph,
            index: Index::new(graph),
            types,
            config,
            overrides,
            decisions,
            sites: Vec::new(),
            site_of: HashMap::new(),
            parent: Vec::new(),
            weights: BTreeMap::new(),
            biases: Vec::new(),
            masked: HashMap::new(),
            log_fed: BTreeMap::new(),
        }
        .with_masks()
        .with_log_inputs()
    }

    fn has(list: &[String], op: &str) -> bool {
        list.iter().any(|o| o == op)
    }

    fn float(&mut self, id: NodeId, reason: impl Into<String>) {
        self.decisions[id].reason = Some(reason.into());
    }

    fn quantized(&mut self, id: NodeId, remark: Option<String>) {
        self.decisions[id].quantized = true;
        if remark.is_some() {
            self.decisions[id].reason = remark;
        }
    }

    /// Classifies input `slot` of `node`; a constant gets `axis` as its per-channel axis.
    fn classify(
        &self,
        node: &NodeProto,
        slot: usize,
        axis: impl Fn(usize) -> Option<usize>,
    ) -> Result<Input, String> {
        let name = node
            .input
            .get(slot)
            .filter(|n| !n.is_empty())
            .ok_or(format!("input {slot} is missing"))?;
        if let Some(r) = self.masked.get(name) {
            return Err(format!("`{name}` {r}"));
        }
        if let Some((p, _)) = self.index.producer(name)
            && self.index.node(p).op_type() == "DequantizeLinear"
        {
            return Err(format!(
                "input `{name}` is already quantized (it comes from DequantizeLinear)"
            ));
        }
        if let Some(init) = self.index.initializer(name) {
            if self.index.is_graph_input(name) && self.model.ir_version() >= 4 {
                return Err(format!(
                    "weight `{name}` is also a graph input, so callers may override it"
                ));
            }
            if init.data_type() != DataType::Float as i32 {
                let ty = crate::onnx::tensor::elem_type_name(init.data_type());
                return Err(format!(
                    "constant `{name}` is {ty}; only float32 is quantized"
                ));
            }
            return Ok(Input::Weight(name.clone(), axis(init.dims.len())));
        }
        if let Some((c, _)) = ir::constant::evaluate(&self.index, name) {
            return Ok(Input::Weight(name.clone(), axis(c.dims.len())));
        }
        match self.types.get(name).and_then(|t| t.elem) {
            Some(Elem::F32) => Ok(Input::Activation(name.clone())),
            Some(e) => Err(format!(
                "input `{name}` is {}; only float32 activations are quantized",
                e.name()
            )),
            None => Err(format!("the type of input `{name}` is unknown")),
        }
    }

    fn site(&mut self, tensor: &str) -> usize {
        if let Some(&i) = self.site_of.get(tensor) {
            return i;
        }
        let i = self.sites.len();
        self.sites.push(ActivationSite {
            tensor: tensor.to_string(),
            consumers: vec![],
            all_consumers: false,
            group: None,
            fixed_range: None,
            settings: Default::default(),
        });
        self.parent.push(i);
        self.site_of.insert(tensor.to_string(), i);
        i
    }

    fn use_activation(&mut self, tensor: &str, node: NodeId, slot: usize) {
        let i = self.site(tensor);
        if !self.sites[i].consumers.contains(&(node, slot)) {
            self.sites[i].consumers.push((node, slot));
        }
    }

    /// Dims of a constant weight (an initializer or computed by Constant-like nodes).
    fn weight_dims(&self, name: &str) -> Option<Vec<usize>> {
        match self.index.initializer(name) {
            Some(t) => t.dims.iter().map(|&d| usize::try_from(d).ok()).collect(),
            None => ir::constant::evaluate(&self.index, name).map(|(c, _)| c.dims),
        }
    }

    fn use_weight(&mut self, name: &str, node: NodeId, slot: usize, axis: Option<usize>) {
        let in_axis = if slot == 1 {
            let rank = self.weight_dims(name).map_or(0, |d| d.len());
            ir::weight_input_axis(&self.graph.node[node], rank).filter(|&a| rank >= 2 && a < rank)
        } else {
            None
        };
        let e = self.weights.entry(name.to_string()).or_insert(WeightUse {
            first: node,
            axes: vec![],
            in_axes: vec![],
            consumers: vec![],
        });
        if !e.consumers.contains(&(node, slot)) {
            e.axes.push(axis);
            e.in_axes.push(in_axis);
            e.consumers.push((node, slot));
        }
    }

    fn find(&mut self, i: usize) -> usize {
        let mut r = i;
        while self.parent[r] != r {
            r = self.parent[r];
        }
        self.parent[i] = r;
        r
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[ra.max(rb)] = ra.min(rb);
        }
    }

    /// A float32 activation `output` of a node unit: every reader reads it dequantized. A graph
    /// output too (the model then returns it quantized, as ONNX Runtime's own tool does), except
    /// after MatMul/Gemm, which ONNX Runtime fuses with a float output.
    fn quantize_output(&mut self, node: &NodeProto) {
        if let Some(out) = node.output.first().filter(|o| !o.is_empty())
            && !(self.index.is_graph_output(out) && matches!(node.op_type(), "MatMul" | "Gemm"))
            && self.types.get(out).and_then(|t| t.elem) == Some(Elem::F32)
        {
            let i = self.site(out);
            self.sites[i].all_consumers = true;
        }
    }

    /// Applies the node rules to node `id`.
    pub(super) fn node(&mut self, id: NodeId) {
        let node = &self.graph.node[id];
        let op = node.op_type();
        let p = &self.config.placement;
        let target = self.config.target.clone();
        if !ir::is_default_domain(node.domain()) {
            return self.float(id, format!("op of domain `{}`", node.domain()));
        }
        if ir::has_subgraphs(node) {
            return self.float(
                id,
                "control flow: the op stays float; its subgraphs are planned as graphs of their own (`subgraphs`)",
            );
        }
        match self.overrides.node_skip(self.graph, id) {
            Some((o, true)) => {
                return self.float(id, format!("skipped by {}", o.label(&self.overrides.file)));
            }
            Some((_, false)) => {}
            None => {
                if let Some(r) = self.overrides.automatic.get(&ir::node_label(node, id)) {
                    return self.float(id, r.clone());
                }
            }
        }
        if Self::has(&p.float_ops, op) {
            return self.float(id, format!("kept float by the {target} preset (float_ops)"));
        }
        let masked = node
            .input
            .iter()
            .chain(&node.output)
            .find_map(|t| self.masked.get(t).map(|r| (t, r)));
        if let Some((t, r)) = masked {
            let reason = format!("`{t}` {r}");
            return self.float(id, reason);
        }
        if Self::has(&p.weighted_ops, op) {
            return self.weighted(id);
        }
        if Self::has(&p.input_ops, op) {
            return self.input_op(id);
        }
        if op == "Add" && p.residual_add != ResidualAdd::None {
            return self.residual(id);
        }
        if op == "Gather" && p.embeddings {
            return self.embedding(id);
        }
        self.float(id, format!("not quantized by the {target} placement"));
    }

    pub(super) fn weight_sites(&mut self, notes: &mut Vec<String>) -> Vec<WeightSite> {
        let per_channel = self.config.per_channel;
        let weights = std::mem::take(&mut self.weights);
        let mut out: Vec<(NodeId, WeightSite)> = weights
            .into_iter()
            .map(
                |(
                    w,
                    WeightUse {
                        first,
                        axes,
                        in_axes,
                        consumers,
                    },
                )| {
                    // int4 is for the weights of weighted ops; other constants stay int8
                    let input_axis =
                        in_axes[0].filter(|_| in_axes.iter().all(|a| *a == in_axes[0]));
                    let weight_slot = in_axes.iter().all(Option::is_some);
                    let dtype = if weight_slot {
                        self.config.weight_type
                    } else {
                        WeightType::Int8
                    };
                    let dims = self.weight_dims(&w).unwrap_or_default();
                    let agree = axes.iter().all(|a| *a == axes[0]);
                    if per_channel && !agree {
                        notes.push(format!(
                            "weight `{w}` is per-tensor: its consumers disagree on the channel axis"
                        ));
                    }
                    let axis = if per_channel && agree { axes[0] } else { None };
                    (
                        first,
                        WeightSite {
                            initializer: w,
                            axis,
                            consumers,
                            decided_by: vec![],
                            dtype,
                            block_size: self.config.block_size,
                            input_axis,
                            dims,
                            block: None,
                            rounding: self.config.rounding,
                            bias_correction: self.config.bias_correction,
                        },
                    )
                },
            )
            .collect();
        out.sort_by(|(a, x), (b, y)| (a, &x.initializer).cmp(&(b, &y.initializer)));
        out.into_iter().map(|(_, w)| w).collect()
    }

    /// The tensors whose small values reach a `Log` (see [`Builder::with_log_inputs`]).
    pub(super) fn log_fed(&self) -> BTreeMap<String, String> {
        self.log_fed.clone()
    }

    pub(super) fn finish(mut self) -> (Vec<NodeDecision>, Vec<ActivationSite>, Vec<BiasSite>) {
        if self.config.placement.concat_inputs_shared {
            for (id, node) in self.graph.node.iter().enumerate() {
                if node.op_type() != "Concat" || !ir::is_default_domain(node.domain()) {
                    continue;
                }
                let reduced = node
                    .output
                    .first()
                    .is_some_and(|o| ir::read_by_reduction(&self.index, o));
                if !reduced {
                    continue;
                }
                let read: Vec<usize> = node
                    .input
                    .iter()
                    .filter_map(|t| self.site_of.get(t.as_str()).copied())
                    .filter(|&i| self.sites[i].consumers.iter().any(|&(n, _)| n == id))
                    .collect();
                for w in read.windows(2) {
                    self.union(w[0], w[1]);
                }
            }
        }
        let mut sizes: HashMap<usize, usize> = HashMap::new();
        for i in 0..self.sites.len() {
            *sizes.entry(self.find(i)).or_default() += 1;
        }
        for i in 0..self.sites.len() {
            let root = self.find(i);
            if sizes[&root] > 1 {
                self.sites[i].group = Some(root);
            }
        }
        (self.decisions, self.sites, self.biases)
    }
}

mod ops;
mod propagate;
mod scan;
