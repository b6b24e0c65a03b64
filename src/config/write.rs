//! Settings files written by onnx-quant (`--write-config`): global settings and overrides
//! rendered as YAML that [`super::parse_user`] reads back to the same values.

use std::fmt::Write;

use super::Layer;
use super::overrides::{Override, Pattern};
use super::schema::Value;

/// A YAML double-quoted string (JSON escapes are valid YAML).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

fn float(x: f64) -> String {
    format!("{x:?}")
}

fn value(v: &Value) -> String {
    match v {
        Value::Bool(b) => b.to_string(),
        Value::Float(x) => float(*x),
        Value::Int(i) => i.to_string(),
        Value::Word(w) => quoted(w),
        Value::Ops(ops) => format!(
            "[{}]",
            ops.iter().map(|o| quoted(o)).collect::<Vec<_>>().join(", ")
        ),
        Value::Ranges(r) => format!(
            "{{{}}}",
            r.iter()
                .map(|(k, [lo, hi])| format!("{}: [{}, {}]", quoted(k), float(*lo), float(*hi)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn pattern(key: &str, p: &Pattern) -> String {
    match p {
        Pattern::Exact(s) | Pattern::Glob(s, _) => format!("{key}: {}", quoted(s)),
        Pattern::Regex(r) => format!("{key}_regex: {}", quoted(r.as_str())),
    }
}

fn override_yaml(o: &Override) -> String {
    let m = &o.matcher;
    let mut conditions = Vec::new();
    if let Some(p) = &m.name {
        conditions.push(pattern("name", p));
    }
    match m.op_types.as_slice() {
        [] => {}
        [one] => conditions.push(format!("op_type: {}", quoted(one))),
        many => conditions.push(format!(
            "op_type: [{}]",
            many.iter()
                .map(|o| quoted(o))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
    if let Some(p) = &m.tensor {
        conditions.push(pattern("tensor", p));
    }
    let mut s = format!("  - match: {{{}}}\n", conditions.join(", "));
    if let Some(skip) = o.skip {
        let _ = writeln!(s, "    skip: {skip}");
    }
    let a = &o.activations;
    let mut act = Vec::new();
    if let Some(t) = a.dtype {
        act.push(format!("dtype: {}", t.name()));
    }
    if let Some(b) = a.symmetric {
        act.push(format!("symmetric: {b}"));
    }
    if let Some(m) = &a.method {
        act.push(format!("method: {m}"));
    }
    if let Some(p) = a.percentile {
        act.push(format!("percentile: {}", float(p)));
    }
    if let Some((lo, hi)) = a.range {
        act.push(format!(
            "range: [{}, {}]",
            float(f64::from(lo)),
            float(f64::from(hi))
        ));
    }
    if let Some(sc) = a.scale {
        act.push(format!("scale: {}", float(f64::from(sc))));
    }
    if let Some(z) = a.zero_point {
        act.push(format!("zero_point: {z}"));
    }
    if !act.is_empty() {
        let _ = writeln!(s, "    activations: {{{}}}", act.join(", "));
    }
    let w = &o.weights;
    let mut wt = Vec::new();
    if let Some(t) = w.dtype {
        wt.push(format!("dtype: {}", t.name()));
    }
    if let Some(pc) = w.per_channel {
        wt.push(format!("per_channel: {pc}"));
    }
    if let Some(ax) = w.axis {
        wt.push(format!("axis: {ax}"));
    }
    if let Some(b) = w.block_size {
        wt.push(format!("block_size: {b}"));
    }
    if !wt.is_empty() {
        let _ = writeln!(s, "    weights: {{{}}}", wt.join(", "));
    }
    s
}

/// A settings file holding `layer`'s values and `overrides`, after `header` (comment lines).
pub fn render(header: &str, layer: Option<&Layer>, overrides: &[Override]) -> String {
    let mut s = String::new();
    for line in header.lines() {
        let _ = writeln!(s, "# {line}");
    }
    let mut section = "";
    for (path, v) in layer.map(|l| l.values.iter()).into_iter().flatten() {
        match path.split_once('.') {
            None => {
                section = "";
                let _ = writeln!(s, "{path}: {}", value(v));
            }
            Some((head, key)) => {
                if head != section {
                    let _ = writeln!(s, "{head}:");
                    section = head;
                }
                let _ = writeln!(s, "  {key}: {}", value(v));
            }
        }
    }
    if !overrides.is_empty() {
        s.push_str("overrides:\n");
        for o in overrides {
            s.push_str(&override_yaml(o));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_user;

    #[test]
    fn written_files_read_back_the_same() {
        let text = r#"
target: ort
activations:
  method: percentile
  percentile: 99.9
  symmetric: false
placement:
  float_ops: [Softmax, "Erf"]
  fixed_ranges: {Sigmoid: [0, 1]}
overrides:
  - match: {name: "/a/b \"q\"", op_type: [Conv, MatMul]}
    skip: true
  - match: {tensor_regex: "^x[0-9]+$"}
    activations: {method: minmax, dtype: uint8}
  - match: {tensor: t1}
    activations: {scale: 0.05, zero_point: 3}
    weights: {per_channel: true, axis: 1}
  - match: {name: "c*"}
    activations: {range: [-1.5, 2], dtype: int16}
    weights: {dtype: int4, block_size: 32}
"#;
        let a = parse_user(text, "a.yaml").unwrap();
        let written = render("generated\nby a test", Some(&a.layer), &a.overrides);
        assert!(written.starts_with("# generated\n# by a test\n"));
        let b = parse_user(&written, "b.yaml").unwrap_or_else(|e| panic!("{e}\n{written}"));
        assert_eq!(a.layer.values, b.layer.values);
        assert_eq!(a.overrides.len(), b.overrides.len());
        for (x, y) in a.overrides.iter().zip(&b.overrides) {
            assert_eq!(x.skip, y.skip);
            assert_eq!(x.activations, y.activations);
            assert_eq!(x.weights, y.weights);
            assert_eq!(
                format!(
                    "{:?}",
                    (&x.matcher.name, &x.matcher.op_types, &x.matcher.tensor)
                )
                .replace(char::is_whitespace, ""),
                format!(
                    "{:?}",
                    (&y.matcher.name, &y.matcher.op_types, &y.matcher.tensor)
                )
                .replace(char::is_whitespace, ""),
                "{written}"
            );
        }
    }
}
