//! A deterministic, line-per-item text rendering of a model, for `onnx-quant inspect` and for
//! golden tests (diffs of it are what reviewers read).

use std::fmt::Write;

use crate::onnx::tensor::{elem_type_name, f32_data};
use crate::proto::{
    AttributeProto, ModelProto, TensorProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_proto::DataType, tensor_shape_proto::dimension::Value as Dim, type_proto,
};

/// Renders the main graph: header, inputs, outputs, initializers (type, shape, scalar values)
/// and nodes with attributes, in stored order.
pub fn dump(model: &ModelProto) -> String {
    let mut s = String::new();
    let opsets: Vec<String> = model
        .opset_import
        .iter()
        .map(|o| {
            format!(
                "{}:{}",
                if o.domain().is_empty() {
                    "ai.onnx"
                } else {
                    o.domain()
                },
                o.version()
            )
        })
        .collect();
    let _ = writeln!(
        s,
        "model ir_version={} opset={}",
        model.ir_version(),
        opsets.join(",")
    );
    let Some(g) = model.graph.as_ref() else {
        return s;
    };
    for v in &g.input {
        let _ = writeln!(s, "input {}", value_info(v));
    }
    for v in &g.output {
        let _ = writeln!(s, "output {}", value_info(v));
    }
    for t in &g.initializer {
        let _ = writeln!(s, "init {}", tensor(t));
    }
    for n in &g.node {
        let domain = if n.domain().is_empty() {
            String::new()
        } else {
            format!("{}::", n.domain())
        };
        let attrs: Vec<String> = n.attribute.iter().map(attribute).collect();
        let _ = write!(
            s,
            "node {}: {domain}{}({}) -> {}",
            n.name(),
            n.op_type(),
            n.input.join(", "),
            n.output.join(", ")
        );
        if !attrs.is_empty() {
            let _ = write!(s, " {{{}}}", attrs.join(", "));
        }
        s.push('\n');
    }
    s
}

fn value_info(v: &ValueInfoProto) -> String {
    let ty = v.r#type.as_ref().and_then(|t| t.value.as_ref());
    match ty {
        Some(type_proto::Value::TensorType(t)) => {
            let dims: Vec<String> = t
                .shape
                .as_ref()
                .map(|sh| {
                    sh.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(Dim::DimValue(v)) => v.to_string(),
                            Some(Dim::DimParam(p)) => p.clone(),
                            None => "?".into(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "{}: {}[{}]",
                v.name(),
                elem_type_name(t.elem_type()),
                dims.join(",")
            )
        }
        _ => format!("{}: (non-tensor)", v.name()),
    }
}

fn tensor(t: &TensorProto) -> String {
    let dims: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
    let mut s = format!(
        "{}: {}[{}]",
        t.name(),
        elem_type_name(t.data_type()),
        dims.join(",")
    );
    if t.dims.is_empty() {
        let _ = write!(s, " = {}", scalar(t));
    }
    s
}

fn scalar(t: &TensorProto) -> String {
    let first = |v: Result<Vec<i64>, String>| {
        v.ok()
            .and_then(|v| v.first().copied())
            .map_or("?".into(), |v| v.to_string())
    };
    match DataType::try_from(t.data_type()) {
        Ok(DataType::Float) => f32_data(t)
            .ok()
            .and_then(|v| v.first().copied())
            .map_or("?".into(), |v| format!("{v:e}")),
        Ok(DataType::Int8 | DataType::Uint8) => first(crate::onnx::tensor::ints(t)),
        _ => "…".into(),
    }
}

fn attribute(a: &AttributeProto) -> String {
    let v = match a.r#type() {
        AttributeType::Int => a.i().to_string(),
        AttributeType::Float => format!("{:e}", a.f()),
        AttributeType::String => format!("{:?}", String::from_utf8_lossy(a.s())),
        AttributeType::Ints => format!("{:?}", a.ints),
        AttributeType::Floats => format!("{:?}", a.floats),
        AttributeType::Tensor => a.t.as_ref().map_or("?".into(), tensor),
        AttributeType::Graph => format!("<graph {}>", a.g.as_ref().map_or("", |g| g.name())),
        other => format!("<{}>", other.as_str_name()),
    };
    format!("{}={v}", a.name())
}
