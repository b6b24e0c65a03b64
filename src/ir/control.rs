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

/// The copy of a model tract runs, with its control flow specialized for a set of samples.
#[derive(Clone, Debug)]
pub struct Flat {
    pub model: ModelProto,
    /// For each subgraph instance inlined or unrolled: each name it defines (node outputs,
    /// initializers, its own inputs) → the flat tensor it became.
    pub instances: BTreeMap<Instance, BTreeMap<String, String>>,
    /// Control nodes left as they are, with why.
    pub kept: Vec<Kept>,
}

impl Flat {
    /// The flat names of `name` of the subgraph `scope`, one per instance (in order, without
    /// repeats: a name read from outside the body of a loop is one tensor for every iteration).
    pub fn flat_names(&self, scope: &[Step], name: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for inst in self.instances.keys().filter(|i| scope_of(i) == scope) {
            let f = self.resolve(inst, name);
            if !out.contains(&f) {
                out.push(f);
            }
        }
        out
    }

    /// The flat tensor `name` denotes in `instance`: its own, or an enclosing scope's (a name
    /// the subgraph reads from outside), or the main graph's.
    pub fn resolve(&self, instance: &[Step], name: &str) -> String {
        for k in (1..=instance.len()).rev() {
            if let Some(to) = self.instances.get(&instance[..k]).and_then(|m| m.get(name)) {
                return to.clone();
            }
        }
        name.to_string()
    }

    /// The subgraphs (steps without iterations) some instance of which is in the flat model.
    pub fn taken(&self) -> BTreeSet<Vec<Step>> {
        self.instances.keys().map(|i| scope_of(i)).collect()
    }
}

/// A control node the flat model keeps.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Kept {
    /// The subgraph instance the node is in (empty: the main graph).
    pub instance: Instance,
    /// The node, as a [`Step`] names it.
    pub node: String,
    pub op: String,
    pub reason: String,
}

/// Computes tensors of a model (a cone of the flat model, fed one sample): each value as
/// integers (booleans 0 or 1), in the order asked.
pub type Evaluate<'a> = &'a mut dyn FnMut(&ModelProto, &[String]) -> Result<Vec<Vec<i64>>, String>;

/// Loops with more iterations stay loops.
pub const MAX_UNROLL: usize = 256;

/// Builds the copy of `model` tract runs for a set of samples on which the inputs `fixed` have
/// one value each (their value, not only their shape, may decide a condition; other inputs'
/// shapes may, their values not). Conditions and trip counts are computed by `eval`.
///
/// With `fork` (planning without samples), an `If` whose condition cannot be computed forks
/// the copy: one takes each branch (at most [`MAX_FORKS`] copies), so that every branch is
/// typed by tract and can be planned; otherwise it stays, with the reason.
pub fn specialize(
    model: &ModelProto,
    fixed: &BTreeSet<String>,
    eval: Evaluate,
    fork: bool,
) -> Vec<Flat> {
    let graph = model.graph.clone().unwrap_or_default();
    let origin = graph
        .node
        .iter()
        .map(|n| Some((Vec::new(), node_key(n))))
        .collect();
    let opset = super::default_opset(model).unwrap_or(0);
    let st = State {
        graph,
        origin,
        opset,
        instances: BTreeMap::new(),
        kept: Vec::new(),
        settled: HashSet::new(),
    };
    let mut budget = if fork { MAX_FORKS - 1 } else { 0 };
    run(st, model, fixed, eval, &mut budget)
        .into_iter()
        .map(|st| {
            let mut out = model.clone();
            out.graph = Some(st.graph);
            Flat {
                model: out,
                instances: st.instances,
                kept: st.kept,
            }
        })
        .collect()
}

/// Copies of a model planned without samples: at most this many.
pub const MAX_FORKS: usize = 16;

fn run(
    mut st: State,
    model: &ModelProto,
    fixed: &BTreeSet<String>,
    eval: Evaluate,
    budget: &mut usize,
) -> Vec<State> {
    loop {
        let candidates: Vec<usize> = (0..st.graph.node.len())
            .filter(|&i| {
                is_control(&st.graph.node[i])
                    && st.origin[i]
                        .as_ref()
                        .is_some_and(|o| !st.settled.contains(o))
            })
            .collect();
        if candidates.is_empty() {
            return vec![st];
        }
        let mut eligible: Vec<(usize, Vec<String>)> = Vec::new();
        let mut waiting = Vec::new();
        // decidable in principle, not here: (node, reason)
        let mut undecided: Vec<(usize, String)> = Vec::new();
        for &i in &candidates {
            match st.needs(i) {
                Err(reason) => st.keep(i, reason),
                Ok(needs) => {
                    let cone = cone(&st.graph, &needs);
                    if cone.control {
                        waiting.push(i);
                        continue;
                    }
                    let varying: Vec<&String> = cone
                        .value_inputs
                        .iter()
                        .filter(|n| !fixed.contains(*n))
                        .collect();
                    if !varying.is_empty() {
                        let names: Vec<String> = varying.iter().map(|n| format!("`{n}`")).collect();
                        let reason = format!(
                            "its {} depends on input(s) {} whose value varies across the calibration samples",
                            st.what_decides(i),
                            names.join(", ")
                        );
                        undecided.push((i, reason));
                        continue;
                    }
                    eligible.push((i, needs));
                }
            }
        }
        if !eligible.is_empty() {
            let all: Vec<String> = eligible
                .iter()
                .flat_map(|(_, n)| n.iter().cloned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let cone_model = cone_model(model, &st.graph, &all);
            match eval(&cone_model, &all) {
                Ok(values) if values.len() == all.len() => {
                    let value_of: HashMap<&str, &Vec<i64>> =
                        all.iter().map(|s| s.as_str()).zip(&values).collect();
                    // highest index first: a replacement only moves the nodes after it
                    for (i, needs) in eligible.iter().rev() {
                        let v: Vec<&Vec<i64>> =
                            needs.iter().map(|n| value_of[n.as_str()]).collect();
                        st.decide(*i, &v);
                    }
                    continue;
                }
                other => {
                    let e = match other {
                        Err(e) => e,
                        Ok(_) => "no value".into(),
                    };
                    for (i, _) in &eligible {
                        let reason =
                            format!("its {} could not be computed: {e}", st.what_decides(*i));
                        undecided.push((*i, reason));
                    }
                }
            }
        }
        if undecided.is_empty() {
            for i in waiting {
                let reason = format!(
                    "its {} depends on the output of other control flow that stays",
                    st.what_decides(i)
                );
                st.keep(i, reason);
            }
            continue;
        }
        undecided.sort_by_key(|u| u.0);
        let fork_at = undecided
            .iter()
            .find(|(i, _)| st.graph.node[*i].op_type() == "If")
            .map(|u| u.0);
        match fork_at {
            Some(i) if *budget > 0 => {
                *budget -= 1;
                let mut other = st.clone();
                st.inline_if(i, true);
                other.inline_if(i, false);
                let mut out = run(st, model, fixed, eval, budget);
                out.extend(run(other, model, fixed, eval, budget));
                return out;
            }
            _ => {
                for (i, reason) in undecided.into_iter().rev() {
                    st.keep(i, reason);
                }
            }
        }
    }
}

#[derive(Clone)]
struct State {
    graph: GraphProto,
    /// Where each flat node comes from: (instance, its key in that subgraph); `None` for nodes
    /// added by the specialization.
    origin: Vec<Option<(Instance, String)>>,
    opset: i64,
    instances: BTreeMap<Instance, BTreeMap<String, String>>,
    kept: Vec<Kept>,
    /// Control nodes decided to stay.
    settled: HashSet<(Instance, String)>,
}

impl State {
    fn what_decides(&self, i: usize) -> &'static str {
        match self.graph.node[i].op_type() {
            "If" => "condition",
            _ => "trip count",
        }
    }

    fn keep(&mut self, i: usize, reason: String) {
        let node = &self.graph.node[i];
        if let Some(o) = self.origin[i].clone() {
            self.kept.push(Kept {
                instance: o.0.clone(),
                node: o.1.clone(),
                op: node.op_type().to_string(),
                reason,
            });
            self.settled.insert(o);
        }
    }

    /// The tensors whose values decide control node `i`, or why it cannot be specialized.
    fn needs(&self, i: usize) -> Result<Vec<String>, String> {
        let node = &self.graph.node[i];
        match node.op_type() {
            "If" => {
                let cond = node.input.first().filter(|c| !c.is_empty());
                Ok(vec![cond.ok_or("it has no condition")?.clone()])
            }
            "Loop" => {
                let m = node.input.first().filter(|m| !m.is_empty());
                let m = m.ok_or("it has no trip count (it runs until its condition is false)")?;
                let body = graph_attr(node, "body").ok_or("it has no body")?;
                if !cond_stays_true(body) {
                    return Err(
                        "its body computes the condition to go on (it may stop early)".into(),
                    );
                }
                let mut needs = vec![m.clone()];
                if let Some(c) = node.input.get(1).filter(|c| !c.is_empty()) {
                    needs.push(c.clone());
                }
                Ok(needs)
            }
            _ => Err("its body runs in tract as it is (Scan bodies are not unrolled)".into()),
        }
    }

    /// Applies the computed values to control node `i`.
    fn decide(&mut self, i: usize, values: &[&Vec<i64>]) {
        let op = self.graph.node[i].op_type().to_string();
        match op.as_str() {
            "If" => match values[0].as_slice() {
                [v] => self.inline_if(i, *v != 0),
                _ => self.keep(i, "its condition is not a single value".into()),
            },
            _ => {
                let trips = match values[0].as_slice() {
                    [m] => *m,
                    _ => return self.keep(i, "its trip count is not a single value".into()),
                };
                let runs = values
                    .get(1)
                    .is_none_or(|c| c.first().is_some_and(|&c| c != 0));
                if !runs || trips <= 0 {
                    return self.keep(i, "it runs zero times on these samples".into());
                }
                let trips = trips as usize;
                if trips > MAX_UNROLL {
                    let reason = format!(
                        "it runs {trips} times, more than the {MAX_UNROLL} iterations unrolled"
                    );
                    return self.keep(i, reason);
                }
                self.unroll_loop(i, trips);
            }
        }
    }

    /// Every name used in the flat graph except by node `skip` and its subgraphs.
    fn names_outside(&self, skip: usize) -> HashSet<String> {
        let mut g = self.graph.clone();
        g.node.remove(skip);
        let mut out = HashSet::new();
        all_names(&g, &mut out);
        out
    }

    fn child(&self, i: usize, attr: &str, iteration: Option<usize>) -> Instance {
        let (parent, node) = self.origin[i]
            .clone()
            .expect("control nodes have an origin");
        let mut inst = parent;
        inst.push(Step {
            node,
            attr: attr.to_string(),
            iteration,
        });
        inst
    }

    fn inline_if(&mut self, i: usize, cond: bool) {
        let attr = if cond { "then_branch" } else { "else_branch" };
        let node = self.graph.node[i].clone();
        let Some(branch) = graph_attr(&node, attr).cloned() else {
            return self.keep(i, format!("it has no {attr}"));
        };
        let mut used = self.names_outside(i);
        let inst = self.child(i, attr, None);
        let mut rename = BTreeMap::new();
        let mut defined = BTreeMap::new();
        for t in &branch.initializer {
            let to = fresh(&mut used, t.name());
            rename.insert(t.name().to_string(), to.clone());
            defined.insert(t.name().to_string(), to);
        }
        for n in &branch.node {
            for o in n.output.iter().filter(|o| !o.is_empty()) {
                let to = fresh(&mut used, o);
                rename.insert(o.clone(), to.clone());
                defined.insert(o.clone(), to);
            }
        }
        let mut nodes = Vec::new();
        let mut origin = Vec::new();
        for n in &branch.node {
            nodes.push(renamed_node(n, &rename, &mut used));
            origin.push(Some((inst.clone(), node_key(n))));
        }
        for (k, out) in node.output.iter().enumerate() {
            let Some(src) = branch.output.get(k) else {
                continue;
            };
            if out.is_empty() {
                continue;
            }
            let src = rename
                .get(src.name())
                .cloned()
                .unwrap_or_else(|| src.name().into());
            nodes.push(NodeProto {
                name: Some(fresh(&mut used, &format!("{}_output_{k}", label_of(&node)))),
                op_type: Some("Identity".into()),
                input: vec![src],
                output: vec![out.clone()],
                ..Default::default()
            });
            origin.push(None);
        }
        let inits: Vec<TensorProto> = branch
            .initializer
            .iter()
            .map(|t| TensorProto {
                name: Some(rename[t.name()].clone()),
                ..t.clone()
            })
            .collect();
        self.graph.initializer.extend(inits);
        self.graph.node.splice(i..=i, nodes);
        self.origin.splice(i..=i, origin);
        self.instances.insert(inst, defined);
    }

    fn unroll_loop(&mut self, i: usize, trips: usize) {
        let node = self.graph.node[i].clone();
        let Some(body) = graph_attr(&node, "body").cloned() else {
            return self.keep(i, "it has no body".into());
        };
        let carried = node.input.len().saturating_sub(2);
        if body.input.len() != carried + 2 || body.output.len() < carried + 1 {
            return self.keep(
                i,
                "its body's inputs and outputs do not match the loop".into(),
            );
        }
        let scans = body.output.len() - 1 - carried;
        let mut used = self.names_outside(i);
        let mut nodes = Vec::new();
        let mut origin = Vec::new();
        // initializers of the body are constant: inlined once for every iteration
        let mut shared = BTreeMap::new();
        for t in &body.initializer {
            let to = fresh(&mut used, t.name());
            shared.insert(t.name().to_string(), to.clone());
            self.graph.initializer.push(TensorProto {
                name: Some(to),
                ..t.clone()
            });
        }
        let mut prev: Vec<String> = node.input[2..].to_vec();
        let mut scanned: Vec<Vec<String>> = vec![Vec::new(); scans];
        let base = label_of(&node);
        for t in 0..trips {
            let inst = self.child(i, "body", Some(t));
            let mut rename = shared.clone();
            let iter_name = fresh(&mut used, &format!("{}__{t}", body.input[0].name()));
            nodes.push(constant_node(
                fresh(&mut used, &format!("{base}_iteration_{t}")),
                &iter_name,
                scalar_i64(t as i64),
            ));
            origin.push(None);
            rename.insert(body.input[0].name().to_string(), iter_name);
            let cond_name = fresh(&mut used, &format!("{}__{t}", body.input[1].name()));
            nodes.push(constant_node(
                fresh(&mut used, &format!("{base}_condition_{t}")),
                &cond_name,
                scalar_bool(true),
            ));
            origin.push(None);
            rename.insert(body.input[1].name().to_string(), cond_name);
            for (j, v) in body.input[2..].iter().enumerate() {
                rename.insert(v.name().to_string(), prev[j].clone());
            }
            for n in &body.node {
                for o in n.output.iter().filter(|o| !o.is_empty()) {
                    let to = if used.contains(o) {
                        fresh(&mut used, &format!("{o}__{t}"))
                    } else {
                        fresh(&mut used, o)
                    };
                    rename.insert(o.clone(), to);
                }
            }
            for n in &body.node {
                nodes.push(renamed_node(n, &rename, &mut used));
                origin.push(Some((inst.clone(), node_key(n))));
            }
            let out = |k: usize| -> String {
                let name = body.output[k].name();
                rename
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| name.to_string())
            };
            prev = (0..carried).map(|j| out(1 + j)).collect();
            for (s, list) in scanned.iter_mut().enumerate() {
                list.push(out(1 + carried + s));
            }
            self.instances.insert(inst, rename);
        }
        for (j, out) in node.output.iter().enumerate().take(carried) {
            if out.is_empty() {
                continue;
            }
            nodes.push(NodeProto {
                name: Some(fresh(&mut used, &format!("{base}_final_{j}"))),
                op_type: Some("Identity".into()),
                input: vec![prev[j].clone()],
                output: vec![out.clone()],
                ..Default::default()
            });
            origin.push(None);
        }
        let axes = (self.opset >= 13 && scans > 0).then(|| {
            let name = fresh(&mut used, &format!("{base}_axes"));
            self.graph.initializer.push(TensorProto {
                name: Some(name.clone()),
                dims: vec![1],
                data_type: Some(DataType::Int64 as i32),
                int64_data: vec![0],
                ..Default::default()
            });
            name
        });
        for (s, list) in scanned.iter().enumerate() {
            let Some(out) = node.output.get(carried + s).filter(|o| !o.is_empty()) else {
                continue;
            };
            let mut stacked = Vec::new();
            for (t, v) in list.iter().enumerate() {
                let to = fresh(&mut used, &format!("{out}__{t}"));
                let mut u = NodeProto {
                    name: Some(fresh(&mut used, &format!("{base}_stack_{s}_{t}"))),
                    op_type: Some("Unsqueeze".into()),
                    input: vec![v.clone()],
                    output: vec![to.clone()],
                    ..Default::default()
                };
                match &axes {
                    Some(a) => u.input.push(a.clone()),
                    None => u.attribute.push(ints_attr("axes", &[0])),
                }
                nodes.push(u);
                origin.push(None);
                stacked.push(to);
            }
            nodes.push(NodeProto {
                name: Some(fresh(&mut used, &format!("{base}_scan_{s}"))),
                op_type: Some("Concat".into()),
                input: stacked,
                output: vec![out.clone()],
                attribute: vec![super::int_attr("axis", 0)],
                ..Default::default()
            });
            origin.push(None);
        }
        self.graph.node.splice(i..=i, nodes);
        self.origin.splice(i..=i, origin);
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

/// A copy of `n` reading and writing renamed tensors (its subgraphs' captured names too), with
/// a node name not used yet.
fn renamed_node(
    n: &NodeProto,
    rename: &BTreeMap<String, String>,
    used: &mut HashSet<String>,
) -> NodeProto {
    let mut n = n.clone();
    let map = |s: &mut String| {
        if let Some(to) = rename.get(s.as_str()) {
            *s = to.clone();
        }
    };
    n.input.iter_mut().filter(|s| !s.is_empty()).for_each(map);
    n.output.iter_mut().filter(|s| !s.is_empty()).for_each(map);
    for a in &mut n.attribute {
        for g in a.g.iter_mut().chain(a.graphs.iter_mut()) {
            rename_captures(g, rename);
        }
    }
    if !n.name().is_empty() {
        n.name = Some(fresh(used, n.name()));
    }
    n
}

/// Renames, inside `g` and its subgraphs, the names it reads from outside (those it defines
/// shadow the map).
pub fn rename_captures(g: &mut GraphProto, rename: &BTreeMap<String, String>) {
    let mut own: HashSet<String> = g.input.iter().map(|v| v.name().to_string()).collect();
    own.extend(g.initializer.iter().map(|t| t.name().to_string()));
    own.extend(g.node.iter().flat_map(|n| n.output.iter().cloned()));
    let map: BTreeMap<String, String> = rename
        .iter()
        .filter(|(k, _)| !own.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if map.is_empty() {
        return;
    }
    for n in &mut g.node {
        for s in n.input.iter_mut() {
            if let Some(to) = map.get(s.as_str()) {
                *s = to.clone();
            }
        }
        for a in &mut n.attribute {
            for sub in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                rename_captures(sub, &map);
            }
        }
    }
    for o in &mut g.output {
        if let Some(to) = map.get(o.name()) {
            o.name = Some(to.clone());
        }
    }
}

/// Whether a loop body's condition output always repeats its condition input (or is a
/// constant true): the loop then runs its trip count exactly.
fn cond_stays_true(body: &GraphProto) -> bool {
    let (Some(cond_in), Some(cond_out)) = (body.input.get(1), body.output.first()) else {
        return false;
    };
    let mut name = cond_out.name().to_string();
    for _ in 0..body.node.len() + 1 {
        if name == cond_in.name() {
            return true;
        }
        let Some(p) = body.node.iter().find(|n| n.output.contains(&name)) else {
            return false;
        };
        match p.op_type() {
            "Identity" => name = p.input.first().cloned().unwrap_or_default(),
            "Constant" => {
                return super::attr(p, "value")
                    .and_then(|a| a.t.as_ref())
                    .is_some_and(|t| {
                        crate::onnx::tensor::ints(t)
                            .is_ok_and(|v| v.first().is_some_and(|&b| b != 0))
                    });
            }
            _ => return false,
        }
    }
    false
}

/// The nodes a set of tensors depends on.
struct Cone {
    nodes: BTreeSet<usize>,
    /// Graph inputs whose value (not only shape) reaches the tensors.
    value_inputs: BTreeSet<String>,
    /// A control node is among the nodes.
    control: bool,
}

/// Ops whose output depends on their input's shape only.
const SHAPE_ONLY: [&str; 2] = ["Shape", "Size"];

/// Whether input `slot` of `op` gives the output's shape by its value (not only its shape):
/// a Reshape's target, a Slice's bounds, an Expand's shape, a NonZero's data, ... Any other
/// input passes its shape alone.
fn shape_from_value(op: &str, slot: usize) -> bool {
    match op {
        "Reshape" | "Expand" | "Tile" | "Pad" | "Upsample" | "TopK" | "OneHot" | "Compress"
        | "Squeeze" | "Unsqueeze" | "Split" | "CenterCropPad" => slot == 1,
        "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1"
        | "ReduceL2" | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceSumSquare" => slot == 1,
        "Slice" => slot >= 1,
        "Resize" => slot >= 1,
        "ConstantOfShape" | "NonZero" | "Range" | "NonMaxSuppression" | "Unique" => true,
        // a node whose outputs' shapes its subgraphs decide
        "If" | "Loop" | "Scan" => true,
        _ => false,
    }
}

fn cone(graph: &GraphProto, needs: &[String]) -> Cone {
    let producer: HashMap<&str, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name()).collect();
    let inputs: HashSet<&str> = graph.input.iter().map(|v| v.name()).collect();
    let mut out = Cone {
        nodes: BTreeSet::new(),
        value_inputs: BTreeSet::new(),
        control: false,
    };
    // (tensor, whether its value matters or only its shape)
    let mut todo: Vec<(String, bool)> = needs.iter().map(|n| (n.clone(), true)).collect();
    let mut seen: HashSet<(String, bool)> = HashSet::new();
    while let Some((t, value)) = todo.pop() {
        if t.is_empty() || !seen.insert((t.clone(), value)) {
            continue;
        }
        if let Some(&p) = producer.get(t.as_str()) {
            out.nodes.insert(p);
            let node = &graph.node[p];
            if is_control(node) {
                out.control = true;
            }
            let op = node.op_type();
            let reads: Vec<String> = node
                .input
                .iter()
                .cloned()
                .chain(super::captures(node))
                .collect();
            for (slot, i) in reads.into_iter().enumerate() {
                let v = if SHAPE_ONLY.contains(&op) {
                    false
                } else if value {
                    true
                } else {
                    // only the output's shape matters: inputs pass their shape, except the
                    // parameters whose value makes it (a Reshape's shape, a Slice's starts)
                    shape_from_value(op, slot)
                };
                todo.push((i, v));
            }
        } else if inputs.contains(t.as_str()) && !inits.contains(t.as_str()) && value {
            out.value_inputs.insert(t);
        }
    }
    out
}

/// A model computing `needs` from the flat graph: the nodes they depend on, the inputs and
/// initializers those nodes read.
fn cone_model(model: &ModelProto, graph: &GraphProto, needs: &[String]) -> ModelProto {
    let c = cone(graph, needs);
    let nodes: Vec<NodeProto> = c.nodes.iter().map(|&i| graph.node[i].clone()).collect();
    let mut read: HashSet<String> = HashSet::new();
    for n in &nodes {
        read.extend(n.input.iter().cloned());
        read.extend(super::captures(n));
    }
    read.extend(needs.iter().cloned());
    let inits: Vec<TensorProto> = graph
        .initializer
        .iter()
        .filter(|t| read.contains(t.name()))
        .cloned()
        .collect();
    let init_names: HashSet<&str> = graph.initializer.iter().map(|t| t.name()).collect();
    let g = GraphProto {
        name: Some("cone".into()),
        node: nodes,
        initializer: inits,
        input: graph
            .input
            .iter()
            .filter(|v| !init_names.contains(v.name()) && read.contains(v.name()))
            .cloned()
            .collect(),
        output: needs
            .iter()
            .map(|n| ValueInfoProto {
                name: Some(n.clone()),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    ModelProto {
        graph: Some(g),
        ..model.clone()
    }
}

/// Main-graph inputs whose value (not only their shape) some condition or trip count of the
/// model depends on, at any depth: the inputs calibration samples must agree on to specialize
/// the control flow.
pub fn control_inputs(model: &ModelProto) -> BTreeSet<String> {
    fn walk(stack: &mut Vec<&GraphProto>, out: &mut BTreeSet<String>) {
        let g = *stack.last().expect("a graph");
        for n in &g.node {
            if is_control(n) {
                let needs: Vec<String> = match n.op_type() {
                    "If" => n.input.iter().take(1).cloned().collect(),
                    "Loop" => n.input.iter().take(2).cloned().collect(),
                    _ => Vec::new(),
                };
                trace(stack, &needs, out);
            }
            for a in &n.attribute {
                for sub in a.g.iter().chain(&a.graphs) {
                    stack.push(sub);
                    walk(stack, out);
                    stack.pop();
                }
            }
        }
    }
    /// Follows `needs` back through the graph at the top of `stack` and the graphs around it.
    fn trace(stack: &[&GraphProto], needs: &[String], out: &mut BTreeSet<String>) {
        let mut todo: Vec<(usize, String)> =
            needs.iter().map(|n| (stack.len() - 1, n.clone())).collect();
        let mut seen = HashSet::new();
        while let Some((level, t)) = todo.pop() {
            if t.is_empty() || !seen.insert((level, t.clone())) {
                continue;
            }
            let g = stack[level];
            if let Some(p) = g.node.iter().find(|n| n.output.contains(&t)) {
                if SHAPE_ONLY.contains(&p.op_type()) {
                    continue;
                }
                for i in p.input.iter().cloned().chain(super::captures(p)) {
                    todo.push((level, i));
                }
            } else if g.initializer.iter().any(|i| i.name() == t) {
                continue;
            } else if g.input.iter().any(|i| i.name() == t) {
                if level == 0 {
                    out.insert(t);
                }
                // a loop body's inputs (iteration, carried values) are known once unrolled
            } else if level > 0 {
                todo.push((level - 1, t));
            }
        }
    }
    let mut out = BTreeSet::new();
    if let Some(g) = model.graph.as_ref() {
        walk(&mut vec![g], &mut out);
    }
    out
}

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
