//! Structural checks every graph must pass after every rewrite (and that the input must pass
//! before we touch it): single assignment, topological order, defined inputs and outputs, and
//! well-formed quantization parameters.

use std::collections::HashSet;

use crate::onnx::tensor::element_count;
use crate::proto::{ModelProto, NodeProto, TensorProto, tensor_proto::DataType};

use super::{Index, node_label};

/// Every problem found, as messages naming the node or tensor; empty when the graph is sound.
pub fn verify(model: &ModelProto) -> Vec<String> {
    let Some(graph) = model.graph.as_ref() else {
        return vec!["model has no graph".into()];
    };
    let mut problems = Vec::new();
    let mut defined: HashSet<&str> = HashSet::new();
    let mut inits = HashSet::new();
    for t in &graph.initializer {
        if !inits.insert(t.name()) {
            problems.push(format!("initializer `{}` is defined twice", t.name()));
        }
        if let Some(p) = payload_problem(t) {
            problems.push(format!("initializer `{}` {p}", t.name()));
        }
    }
    defined.extend(inits.iter().copied());
    defined.extend(graph.input.iter().map(|v| v.name()));
    for (id, node) in graph.node.iter().enumerate() {
        let label = node_label(node, id);
        let captured = super::captures(node);
        let reads = node.input.iter().chain(&captured).filter(|i| !i.is_empty());
        for input in reads {
            if !defined.contains(input.as_str()) {
                problems.push(format!(
                    "node `{label}` reads `{input}` before it is defined"
                ));
            }
        }
        for out in node.output.iter().filter(|o| !o.is_empty()) {
            if !defined.insert(out.as_str()) {
                problems.push(format!("node `{label}` redefines tensor `{out}`"));
            }
        }
    }
    for out in &graph.output {
        if !defined.contains(out.name()) {
            problems.push(format!("graph output `{}` is never produced", out.name()));
        }
    }
    let index = Index::new(graph);
    for (id, node) in graph.node.iter().enumerate() {
        if matches!(node.op_type(), "QuantizeLinear" | "DequantizeLinear")
            && super::is_default_domain(node.domain())
        {
            check_qdq_params(&index, node, id, &mut problems);
        }
    }
    problems
}

/// Whether a fixed-size tensor's stored values match its dims.
fn payload_problem(t: &TensorProto) -> Option<String> {
    if t.data_location == Some(crate::proto::tensor_proto::DataLocation::External as i32) {
        return None; // left on disk by `onnx::load_deferring`, its size checked there
    }
    let n = element_count(&t.dims)?;
    let (stored, what) = match DataType::try_from(t.data_type()).ok()? {
        _ if t.raw_data.as_ref().is_some_and(|r| !r.is_empty()) => {
            let bytes = match DataType::try_from(t.data_type()).ok()? {
                DataType::Float | DataType::Int32 | DataType::Uint32 => 4 * n,
                DataType::Int64 | DataType::Double | DataType::Uint64 => 8 * n,
                DataType::Float16 | DataType::Bfloat16 | DataType::Int16 | DataType::Uint16 => {
                    2 * n
                }
                DataType::Int8 | DataType::Uint8 | DataType::Bool => n,
                DataType::Int4 | DataType::Uint4 => n.div_ceil(2),
                _ => return None,
            };
            return (t.raw_data.as_ref()?.len() != bytes).then(|| {
                format!(
                    "holds {} bytes where its dims {:?} need {bytes}",
                    t.raw_data.as_ref().map_or(0, |r| r.len()),
                    t.dims,
                )
            });
        }
        DataType::Float => (t.float_data.len(), "values"),
        DataType::Int64 => (t.int64_data.len(), "values"),
        DataType::Double => (t.double_data.len(), "values"),
        _ => return None,
    };
    (stored != n).then(|| format!("holds {stored} {what} where its dims {:?} need {n}", t.dims))
}

fn check_qdq_params(index: &Index, node: &NodeProto, id: usize, problems: &mut Vec<String>) {
    let label = node_label(node, id);
    let init = |slot: usize| node.input.get(slot).and_then(|n| index.initializer(n));
    if let Some(scale) = init(1) {
        match super::constant::float_values(scale) {
            Some(v) if v.iter().all(|s| s.is_finite() && *s > 0.0) => {}
            Some(_) => problems.push(format!(
                "node `{label}`: scale `{}` is not finite and positive",
                scale.name()
            )),
            None => problems.push(format!(
                "node `{label}`: scale `{}` is not a float32 or float16 tensor of its dims",
                scale.name()
            )),
        }
        if let Some(zp) = init(2) {
            check_zero_point(zp, scale, &label, problems);
        }
    }
}

fn check_zero_point(
    zp: &TensorProto,
    scale: &TensorProto,
    label: &str,
    problems: &mut Vec<String>,
) {
    let per_byte = match DataType::try_from(zp.data_type()) {
        Ok(DataType::Int8 | DataType::Uint8) => 1,
        Ok(DataType::Int16 | DataType::Uint16) => 2,
        Ok(DataType::Int4 | DataType::Uint4) => 0,
        _ => return, // other quantized types are checked by their consumers
    };
    if zp.dims != scale.dims {
        problems.push(format!(
            "node `{label}`: zero-point `{}` has dims {:?} but scale `{}` has {:?}",
            zp.name(),
            zp.dims,
            scale.name(),
            scale.dims
        ));
    }
    let n = element_count(&zp.dims).unwrap_or(usize::MAX);
    let (stored, needed) = match &zp.raw_data {
        Some(r) if per_byte == 0 => (r.len(), n.div_ceil(2)),
        Some(r) => (r.len(), n.saturating_mul(per_byte)),
        None => (zp.int32_data.len(), n),
    };
    if stored != needed {
        problems.push(format!(
            "node `{label}`: zero-point `{}` holds {stored} stored values, needs {needed}",
            zp.name()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::tensor::{f32_tensor, i8_tensor};
    use crate::proto::{GraphProto, ValueInfoProto};

    fn vi(name: &str) -> ValueInfoProto {
        ValueInfoProto {
            name: Some(name.into()),
            ..Default::default()
        }
    }

    fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn model(nodes: Vec<NodeProto>, inits: Vec<TensorProto>) -> ModelProto {
        ModelProto {
            graph: Some(GraphProto {
                node: nodes,
                initializer: inits,
                input: vec![vi("x")],
                output: vec![vi("y")],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn sound_graph_passes() {
        let m = model(vec![node("Relu", &["x"], &["y"])], vec![]);
        assert!(verify(&m).is_empty());
    }

    #[test]
    fn order_redefinition_and_missing_output_are_found() {
        let m = model(
            vec![
                node("Relu", &["a"], &["b"]),
                node("Relu", &["x"], &["a"]),
                node("Relu", &["x"], &["a"]),
            ],
            vec![],
        );
        let p = verify(&m).join("\n");
        assert!(p.contains("reads `a` before it is defined"), "{p}");
        assert!(p.contains("redefines tensor `a`"), "{p}");
        assert!(p.contains("graph output `y` is never produced"), "{p}");
    }

    #[test]
    fn bad_quantization_parameters_are_found() {
        let inits = vec![
            f32_tensor("s", &[2], &[0.5, 0.0]),
            i8_tensor("z", &[], &[0]),
        ];
        let m = model(
            vec![node("QuantizeLinear", &["x", "s", "z"], &["y"])],
            inits,
        );
        let p = verify(&m).join("\n");
        assert!(p.contains("scale `s` is not finite and positive"), "{p}");
        assert!(
            p.contains("zero-point `z` has dims [] but scale `s` has [2]"),
            "{p}"
        );
    }
}
