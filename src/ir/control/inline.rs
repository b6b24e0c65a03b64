//! Inlining an `If`'s branch and unrolling a `Loop`, with the renaming they need.

use super::specialize::State;
use super::*;

impl State {
    pub(super) fn inline_if(&mut self, i: usize, cond: bool) {
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

    pub(super) fn unroll_loop(&mut self, i: usize, trips: usize) {
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
        let mut e = Emitted {
            used: self.names_outside(i),
            nodes: Vec::new(),
            origin: Vec::new(),
        };
        // initializers of the body are constant: inlined once for every iteration
        let mut shared = BTreeMap::new();
        for t in &body.initializer {
            let to = fresh(&mut e.used, t.name());
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
            let rename = iteration(&body, t, &base, shared.clone(), &prev, &inst, &mut e);
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
            let name = fresh(&mut e.used, &format!("{base}_final_{j}"));
            e.push(NodeProto {
                name: Some(name),
                op_type: Some("Identity".into()),
                input: vec![prev[j].clone()],
                output: vec![out.clone()],
                ..Default::default()
            });
        }
        self.stack_scans(&node, carried, &scanned, &base, &mut e);
        self.graph.node.splice(i..=i, e.nodes);
        self.origin.splice(i..=i, e.origin);
    }

    /// Each scan output of the loop `node` as the Concat of its iterations' values, each
    /// Unsqueezed on a new first axis.
    fn stack_scans(
        &mut self,
        node: &NodeProto,
        carried: usize,
        scanned: &[Vec<String>],
        base: &str,
        e: &mut Emitted,
    ) {
        let axes = (self.opset >= 13 && !scanned.is_empty()).then(|| {
            let name = fresh(&mut e.used, &format!("{base}_axes"));
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
                let to = fresh(&mut e.used, &format!("{out}__{t}"));
                let mut u = NodeProto {
                    name: Some(fresh(&mut e.used, &format!("{base}_stack_{s}_{t}"))),
                    op_type: Some("Unsqueeze".into()),
                    input: vec![v.clone()],
                    output: vec![to.clone()],
                    ..Default::default()
                };
                match &axes {
                    Some(a) => u.input.push(a.clone()),
                    None => u.attribute.push(ints_attr("axes", &[0])),
                }
                e.push(u);
                stacked.push(to);
            }
            let name = fresh(&mut e.used, &format!("{base}_scan_{s}"));
            e.push(NodeProto {
                name: Some(name),
                op_type: Some("Concat".into()),
                input: stacked,
                output: vec![out.clone()],
                attribute: vec![crate::ir::int_attr("axis", 0)],
                ..Default::default()
            });
        }
    }
}

/// Nodes an unrolling emits, with their origin, and the names taken so far.
struct Emitted {
    used: HashSet<String>,
    nodes: Vec<NodeProto>,
    origin: Vec<Option<(Instance, String)>>,
}

impl Emitted {
    /// A node the unrolling adds (no subgraph node is its origin).
    fn push(&mut self, n: NodeProto) {
        self.nodes.push(n);
        self.origin.push(None);
    }
}

/// Iteration `t` of a loop `body`: constants for the iteration number and the condition, the
/// carried values read from `prev`, every body node copied under fresh names. The renaming of
/// the body's names for this iteration.
fn iteration(
    body: &GraphProto,
    t: usize,
    base: &str,
    mut rename: BTreeMap<String, String>,
    prev: &[String],
    inst: &Instance,
    e: &mut Emitted,
) -> BTreeMap<String, String> {
    let iter_name = fresh(&mut e.used, &format!("{}__{t}", body.input[0].name()));
    let name = fresh(&mut e.used, &format!("{base}_iteration_{t}"));
    e.push(constant_node(name, &iter_name, scalar_i64(t as i64)));
    rename.insert(body.input[0].name().to_string(), iter_name);
    let cond_name = fresh(&mut e.used, &format!("{}__{t}", body.input[1].name()));
    let name = fresh(&mut e.used, &format!("{base}_condition_{t}"));
    e.push(constant_node(name, &cond_name, scalar_bool(true)));
    rename.insert(body.input[1].name().to_string(), cond_name);
    for (j, v) in body.input[2..].iter().enumerate() {
        rename.insert(v.name().to_string(), prev[j].clone());
    }
    for n in &body.node {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            let to = if e.used.contains(o) {
                fresh(&mut e.used, &format!("{o}__{t}"))
            } else {
                fresh(&mut e.used, o)
            };
            rename.insert(o.clone(), to);
        }
    }
    for n in &body.node {
        e.nodes.push(renamed_node(n, &rename, &mut e.used));
        e.origin.push(Some((inst.clone(), node_key(n))));
    }
    rename
}

/// A copy of `n` reading and writing renamed tensors (its subgraphs' captured names too), with
/// a node name not used yet.
pub(super) fn renamed_node(
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
