//! [`specialize`]: the copy of a model tract runs, control node by control node.

use super::cone::{cond_stays_true, cone, cone_model};
use super::*;

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
    let opset = crate::ir::default_opset(model).unwrap_or(0);
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
        let Sorted {
            eligible,
            waiting,
            mut undecided,
        } = st.sort(&candidates, fixed);
        if !eligible.is_empty() {
            match st.compute(model, &eligible, eval) {
                Ok(()) => continue,
                Err(e) => {
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

/// The undecided control nodes of one round, sorted.
struct Sorted {
    /// Decidable now: (node, the tensors deciding it).
    eligible: Vec<(usize, Vec<String>)>,
    /// Waiting for other control flow to be decided first.
    waiting: Vec<usize>,
    /// Decidable in principle, not here: (node, reason).
    undecided: Vec<(usize, String)>,
}

impl State {
    /// Sorts `candidates` by what decides them; those that can never be decided are kept.
    fn sort(&mut self, candidates: &[usize], fixed: &BTreeSet<String>) -> Sorted {
        let mut out = Sorted {
            eligible: Vec::new(),
            waiting: Vec::new(),
            undecided: Vec::new(),
        };
        for &i in candidates {
            match self.needs(i) {
                Err(reason) => self.keep(i, reason),
                Ok(needs) => {
                    let cone = cone(&self.graph, &needs);
                    if cone.control {
                        out.waiting.push(i);
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
                            self.what_decides(i),
                            names.join(", ")
                        );
                        out.undecided.push((i, reason));
                        continue;
                    }
                    out.eligible.push((i, needs));
                }
            }
        }
        out
    }

    /// Computes what decides the `eligible` nodes (one run of the model of their cone) and
    /// decides them; `Err` says why it could not be computed.
    fn compute(
        &mut self,
        model: &ModelProto,
        eligible: &[(usize, Vec<String>)],
        eval: Evaluate,
    ) -> Result<(), String> {
        let all: Vec<String> = eligible
            .iter()
            .flat_map(|(_, n)| n.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let cone_model = cone_model(model, &self.graph, &all);
        let values = eval(&cone_model, &all)?;
        if values.len() != all.len() {
            return Err("no value".into());
        }
        let value_of: HashMap<&str, &Vec<i64>> =
            all.iter().map(|s| s.as_str()).zip(&values).collect();
        // highest index first: a replacement only moves the nodes after it
        for (i, needs) in eligible.iter().rev() {
            let v: Vec<&Vec<i64>> = needs.iter().map(|n| value_of[n.as_str()]).collect();
            self.decide(*i, &v);
        }
        Ok(())
    }
}

#[derive(Clone)]
pub(super) struct State {
    pub(super) graph: GraphProto,
    /// Where each flat node comes from: (instance, its key in that subgraph); `None` for nodes
    /// added by the specialization.
    pub(super) origin: Vec<Option<(Instance, String)>>,
    pub(super) opset: i64,
    pub(super) instances: BTreeMap<Instance, BTreeMap<String, String>>,
    pub(super) kept: Vec<Kept>,
    /// Control nodes decided to stay.
    pub(super) settled: HashSet<(Instance, String)>,
}

impl State {
    pub(super) fn what_decides(&self, i: usize) -> &'static str {
        match self.graph.node[i].op_type() {
            "If" => "condition",
            _ => "trip count",
        }
    }

    pub(super) fn keep(&mut self, i: usize, reason: String) {
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
    pub(super) fn needs(&self, i: usize) -> Result<Vec<String>, String> {
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
    pub(super) fn decide(&mut self, i: usize, values: &[&Vec<i64>]) {
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
    pub(super) fn names_outside(&self, skip: usize) -> HashSet<String> {
        let mut g = self.graph.clone();
        g.node.remove(skip);
        let mut out = HashSet::new();
        all_names(&g, &mut out);
        out
    }

    pub(super) fn child(&self, i: usize, attr: &str, iteration: Option<usize>) -> Instance {
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
}
