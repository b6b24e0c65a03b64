//! What a condition depends on: the nodes, inputs read by value, and the model computing it.

use super::*;

/// The nodes a set of tensors depends on.
pub(super) struct Cone {
    pub(super) nodes: BTreeSet<usize>,
    /// Graph inputs whose value (not only shape) reaches the tensors.
    pub(super) value_inputs: BTreeSet<String>,
    /// A control node is among the nodes.
    pub(super) control: bool,
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

pub(super) fn cone(graph: &GraphProto, needs: &[String]) -> Cone {
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
                .chain(crate::ir::captures(node))
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
pub(super) fn cone_model(model: &ModelProto, graph: &GraphProto, needs: &[String]) -> ModelProto {
    let c = cone(graph, needs);
    let nodes: Vec<NodeProto> = c.nodes.iter().map(|&i| graph.node[i].clone()).collect();
    let mut read: HashSet<String> = HashSet::new();
    for n in &nodes {
        read.extend(n.input.iter().cloned());
        read.extend(crate::ir::captures(n));
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
                for i in p.input.iter().cloned().chain(crate::ir::captures(p)) {
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

/// Whether a loop body's condition output always repeats its condition input (or is a
/// constant true): the loop then runs its trip count exactly.
pub(super) fn cond_stays_true(body: &GraphProto) -> bool {
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
                return crate::ir::attr(p, "value")
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
