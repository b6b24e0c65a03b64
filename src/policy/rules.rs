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

/// Ops through which the small values of every input reach a `Log` reading their output.
const LOG_TRANSPARENT: [&str; 19] = [
    "Sum",
    "Mean",
    "Clip",
    "Max",
    "Min",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Relu",
    "Abs",
    "Identity",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Cast",
    "Concat",
];

/// Constants of this magnitude (or infinite) make additive masks: BERT's -10000, `finfo.min`.
const HUGE: f32 = 1e4;

/// Ops through which a huge value passes from an input to the output.
const CARRY_HUGE: [&str; 14] = [
    "Add",
    "Sub",
    "Mul",
    "Where",
    "Min",
    "Max",
    "Neg",
    "Unsqueeze",
    "Squeeze",
    "Reshape",
    "Expand",
    "Cast",
    "Transpose",
    "Concat",
];

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

    /// Finds the tensors whose small values reach a `Log`: its input, and up from there
    /// through the ops that keep small values small (element-wise ops, powers, sums, the data
    /// input of weighted ops, shape ops). An int8 step is constant, so a tensor most of whose
    /// values are under half a step (a power spectrum, a probability) loses them, and Log
    /// turns that into errors of many dB; whether that is so is known from the statistics
    /// (`QuantPlan::drop_small_log_inputs`).
    fn with_log_inputs(mut self) -> Self {
        let mut todo: Vec<(String, String)> = Vec::new();
        for (id, node) in self.graph.node.iter().enumerate() {
            if ir::is_default_domain(node.domain())
                && node.op_type() == "Log"
                && let Some(x) = node.input.first()
            {
                todo.push((x.clone(), ir::node_label(node, id)));
            }
        }
        while let Some((t, log)) = todo.pop() {
            if t.is_empty() || self.log_fed.contains_key(&t) || self.index.initializer(&t).is_some()
            {
                continue;
            }
            self.log_fed.insert(t.clone(), log.clone());
            let Some((p, _)) = self.index.producer(&t) else {
                continue;
            };
            let node = &self.graph.node[p];
            if !ir::is_default_domain(node.domain()) {
                continue;
            }
            // (a weighted op's constant weight is skipped below, a second activation followed:
            // an STFT as a MatMul of a computed basis and the frames)
            let follow: Vec<usize> = match node.op_type() {
                op if LOG_TRANSPARENT.contains(&op) => (0..node.input.len()).collect(),
                "MatMul" | "Gemm" | "Conv" | "ConvTranspose" => vec![0, 1],
                "Pow" | "Sqrt" | "ReduceSum" | "ReduceMean" | "GlobalAveragePool"
                | "AveragePool" | "Slice" | "Split" | "Gather" | "Expand" | "Tile" | "Pad"
                | "Neg" => vec![0],
                _ => vec![],
            };
            for slot in follow {
                if let Some(i) = node.input.get(slot)
                    && ir::constant::evaluate(&self.index, i).is_none()
                {
                    todo.push((i.clone(), log.clone()));
                }
            }
        }
        self
    }

    /// Finds the tensors a huge constant reaches through element-wise and shape ops (in graph
    /// order, so one pass suffices): an additive mask and the scores it is added to, whose
    /// quantized range would be all mask.
    fn with_masks(mut self) -> Self {
        for node in &self.graph.node {
            if !ir::is_default_domain(node.domain()) || !CARRY_HUGE.contains(&node.op_type()) {
                continue;
            }
            let reason = node.input.iter().find_map(|i| {
                if let Some(r) = self.masked.get(i) {
                    return Some(r.clone());
                }
                let (lo, hi) = self.constant_range(i)?;
                let big = if lo.abs() >= hi.abs() { lo } else { hi };
                (!big.is_finite() || big.abs() >= HUGE).then(|| {
                    format!(
                        "carries an additive mask (constant `{i}` = {big:e}): quantized, its range would be all mask"
                    )
                })
            });
            if let Some(r) = reason {
                for o in node.output.iter().filter(|o| !o.is_empty()) {
                    self.masked.insert(o.clone(), r.clone());
                }
            }
        }
        self
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

    /// A Gather from a constant float table of rank 2 (an embedding): the table becomes an int8
    /// weight with one scale per row (axis 0), so each looked-up vector keeps its own scale.
    fn embedding(&mut self, id: NodeId) {
        let node = &self.graph.node[id];
        let target = self.config.target.clone();
        let rank2 = |rank: usize| (rank == 2).then_some(0);
        match self.classify(node, 0, rank2) {
            Ok(Input::Weight(w, axis)) if axis.is_some() => {
                self.use_weight(&w, id, 0, axis);
                self.quantized(
                    id,
                    Some("embedding table int8, one scale per row (placement.embeddings)".into()),
                );
            }
            _ => self.float(id, format!("not quantized by the {target} placement")),
        }
    }

    /// The dims of `name`, `None` where unknown or symbolic.
    fn shape_of(&self, name: &str) -> Vec<Option<usize>> {
        if let Some(t) = self.index.initializer(name) {
            return t.dims.iter().map(|&d| usize::try_from(d).ok()).collect();
        }
        self.types.get(name).map_or(vec![], |t| t.shape.clone())
    }

    /// K and N of a MatMul / Gemm, when shapes are known.
    fn matmul_dims(&self, node: &NodeProto) -> Option<(usize, usize)> {
        let a = self.shape_of(node.input.first()?);
        let b = self.shape_of(node.input.get(1)?);
        let trans = |attr: &str| ir::attr_int(node, attr).unwrap_or(0) != 0;
        let (k, n) = match node.op_type() {
            "Gemm" => (
                if trans("transA") {
                    *a.first()?
                } else {
                    *a.last()?
                },
                if trans("transB") {
                    *b.first()?
                } else {
                    *b.last()?
                },
            ),
            _ => (*a.last()?, *b.last()?),
        };
        Some((k?, n?))
    }

    fn weighted(&mut self, id: NodeId) {
        let node = &self.graph.node[id];
        let p = &self.config.placement;
        if matches!(node.op_type(), "MatMul" | "Gemm")
            && p.min_matmul_dim > 0
            && let Some((k, n)) = self.matmul_dims(node)
            && k.min(n) < p.min_matmul_dim
        {
            return self.float(
                id,
                format!(
                    "K = {k}, N = {n}: below min_matmul_dim {}",
                    p.min_matmul_dim
                ),
            );
        }
        let inputs: Result<Vec<Input>, String> = (0..2)
            .map(|slot| {
                self.classify(node, slot, |rank| {
                    if slot == 1 {
                        weight_axis(node, rank)
                    } else {
                        None
                    }
                })
            })
            .collect();
        let inputs = match inputs {
            Ok(i) => i,
            Err(why) => return self.float(id, why),
        };
        let mut act = None;
        let mut weight = None;
        let mut has_weight = false;
        for (slot, input) in inputs.into_iter().enumerate() {
            match input {
                Input::Activation(t) => {
                    if slot == 0 {
                        act = Some(t.clone());
                    }
                    self.use_activation(&t, id, slot)
                }
                Input::Weight(w, axis) => {
                    has_weight = true;
                    if slot == 1 {
                        weight = Some(w.clone());
                    }
                    self.use_weight(&w, id, slot, axis)
                }
            }
        }
        if Self::has(&p.output_ops, node.op_type()) {
            self.quantize_output(node);
        }
        if self.config.bias_int32
            && let (Some(activation), Some(weight)) = (act, weight)
            && let Some(bias) = self.int32_bias(node)
        {
            self.biases.push(BiasSite {
                node: id,
                bias,
                activation,
                weight,
            });
        }
        let unit = Self::has(&self.config.placement.output_ops, node.op_type());
        let remark = match (unit, has_weight) {
            (true, _) => "weighted op, complete node unit (placement.weighted_ops, output_ops)",
            (false, true) => "data and weight inputs (placement.weighted_ops)",
            // attention: Q·Kᵀ and P·V read two activations
            (false, false) => "both data inputs (placement.weighted_ops)",
        };
        self.quantized(id, Some(remark.into()));
    }

    /// The bias of a Conv / Gemm that can become int32: a rank-1 float32 initializer.
    fn int32_bias(&self, node: &NodeProto) -> Option<String> {
        if !matches!(node.op_type(), "Conv" | "Gemm") {
            return None;
        }
        let name = node.input.get(2).filter(|n| !n.is_empty())?;
        let t = self.index.initializer(name)?;
        let only_here = self.index.consumers(name).len() == 1 && !self.index.is_graph_input(name);
        (only_here && t.data_type() == DataType::Float as i32 && t.dims.len() == 1)
            .then(|| name.clone())
    }

    fn input_op(&mut self, id: NodeId) {
        let node = &self.graph.node[id];
        let unit = Self::has(&self.config.placement.output_ops, node.op_type());
        let slots: Vec<usize> = if VARIADIC.contains(&node.op_type()) {
            (0..node.input.len()).collect()
        } else {
            vec![0]
        };
        let mut uses = Vec::new();
        for slot in slots {
            match self.classify(node, slot, |_| None) {
                Ok(Input::Activation(t)) => uses.push((t, slot, None)),
                // constants join a complete unit quantized like the activation they meet
                // (their own range, the activation type); else they stay float
                Ok(Input::Weight(w, _)) if unit => uses.push((w, slot, Some(()))),
                Ok(Input::Weight(..)) => {}
                Err(why) => return self.float(id, why),
            }
        }
        let activations = uses.iter().filter(|(_, _, w)| w.is_none()).count();
        if activations == 0 {
            return self.float(id, "no activation input");
        }
        if !unit
            && activations < 2
            && VARIADIC.contains(&node.op_type())
            && node.op_type() != "Concat"
        {
            // a bias or scale: runtimes fold it into the op that produces the other operand
            return self.float(
                id,
                "one operand is constant (a bias or scale the runtime fuses)",
            );
        }
        for (t, slot, constant) in uses {
            self.use_activation(&t, id, slot);
            if constant.is_some() {
                let range = self.constant_range(&t);
                let i = self.site_of[&t];
                self.sites[i].fixed_range = range;
            }
        }
        if unit {
            self.quantize_output(node);
        }
        let remark = if unit {
            "complete node unit (placement.input_ops, output_ops)"
        } else {
            "activation inputs (placement.input_ops)"
        };
        self.quantized(id, Some(remark.into()));
    }

    /// The range of a constant's values, widened to include 0.
    fn constant_range(&self, name: &str) -> Option<(f32, f32)> {
        let data = match self.index.initializer(name) {
            Some(t) => crate::onnx::tensor::f32_data(t).ok()?,
            None => ir::constant::evaluate(&self.index, name)?.0.data,
        };
        Some(
            data.iter()
                .fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v))),
        )
    }

    /// Whether `tensor` comes straight from a Conv (through an optional BatchNormalization)
    /// and feeds nothing else: the branch an Add fuses into.
    fn conv_branch(&self, tensor: &str) -> Option<NodeId> {
        let single = |t: &str| self.index.consumers(t).len() == 1 && !self.index.is_graph_output(t);
        let (p, _) = self.index.producer(tensor)?;
        let node = self.index.node(p);
        let conv = match node.op_type() {
            "Conv" | "ConvTranspose" => p,
            "BatchNormalization" => {
                let (c, _) = self.index.producer(node.input.first()?)?;
                let ok = matches!(self.index.node(c).op_type(), "Conv" | "ConvTranspose")
                    && single(&node.input[0]);
                ok.then_some(c)?
            }
            _ => return None,
        };
        single(tensor).then_some(conv)
    }

    fn residual(&mut self, id: NodeId) {
        let node = &self.graph.node[id];
        if node.input.len() != 2 {
            return self.float(id, "not a two-input Add");
        }
        let mut acts = Vec::new();
        for slot in 0..2 {
            match self.classify(node, slot, |_| None) {
                Ok(Input::Activation(t)) => acts.push(t),
                Ok(Input::Weight(..)) => {
                    return self.float(id, "an input is constant: not a residual connection");
                }
                Err(why) => return self.float(id, why),
            }
        }
        if self.config.placement.residual_add == ResidualAdd::AllInputs {
            for (slot, t) in acts.iter().enumerate() {
                self.use_activation(t, id, slot);
            }
            return self.quantized(
                id,
                Some("residual Add: every input (placement.residual_add)".into()),
            );
        }
        let branches: Vec<Option<NodeId>> = acts.iter().map(|t| self.conv_branch(t)).collect();
        let fused = match (branches[0], branches[1]) {
            (Some(a), Some(b)) => usize::from(b > a),
            (Some(_), None) => 0,
            (None, Some(_)) => 1,
            (None, None) => return self.float(id, "no conv branch for the Add to fuse into"),
        };
        let skip = 1 - fused;
        self.use_activation(&acts[skip].clone(), id, skip);
        let conv = ir::node_label(
            self.index.node(branches[fused].expect("fused branch")),
            branches[fused].expect("fused branch"),
        );
        self.quantized(
            id,
            Some(format!("skip input quantized; the Add fuses into `{conv}`")),
        );
    }

    /// Propagates quantization across Concat, pooling and shape ops until nothing changes.
    pub(super) fn propagate(&mut self) {
        let p = self.config.placement.clone();
        let mut i = 0;
        while i < self.sites.len() {
            let tensor = self.sites[i].tensor.clone();
            i += 1;
            let Some((pid, _)) = self.index.producer(&tensor) else {
                continue;
            };
            let producer = self.index.node(pid);
            let op = producer.op_type();
            if !ir::is_default_domain(producer.domain()) || Self::has(&p.float_ops, op) {
                continue;
            }
            let (share, slots): (bool, Vec<usize>) = if op == "Concat" && p.concat_shared_scale {
                (true, (0..producer.input.len()).collect())
            } else if Self::has(&p.shape_ops, op) {
                (true, vec![0])
            } else if p.pooling_with_neighbours && Self::has(&p.pooling_ops, op) {
                (false, vec![0])
            } else {
                continue;
            };
            let mut inputs = Vec::new();
            for slot in slots {
                match self.classify(producer, slot, |_| None) {
                    Ok(Input::Activation(x)) => inputs.push((x, slot)),
                    _ => {
                        inputs.clear();
                        break;
                    }
                }
            }
            if inputs.is_empty() {
                continue;
            }
            let me = self.site_of[&tensor];
            for (x, slot) in inputs {
                self.use_activation(&x, pid, slot);
                if share {
                    let other = self.site_of[&x];
                    self.union(me, other);
                }
            }
            if !self.decisions[pid].quantized {
                let remark = if share {
                    "int8 between quantized neighbours, one shared scale"
                } else {
                    "int8 between quantized neighbours"
                };
                self.quantized(pid, Some(remark.into()));
            }
        }
    }

    /// Gives tensors produced by ops with a fixed output range (Softmax) that range.
    pub(super) fn fix_ranges(&mut self) {
        for site in &mut self.sites {
            if let Some((pid, _)) = self.index.producer(&site.tensor)
                && let Some(r) = self
                    .config
                    .placement
                    .fixed_ranges
                    .get(self.index.node(pid).op_type())
            {
                site.fixed_range = Some(*r);
            }
        }
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
