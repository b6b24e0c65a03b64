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
                attribute: vec![crate::ir::int_attr("axis", 0)],
                ..Default::default()
            });
            origin.push(None);
        }
        self.graph.node.splice(i..=i, nodes);
        self.origin.splice(i..=i, origin);
    }
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
