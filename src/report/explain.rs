//! Text for `onnx-quant explain` (every node's fate and every quantized tensor's settings, each
//! with what decided it) and `onnx-quant init-config` (a commented settings template).

use std::fmt::Write;

use crate::config::Resolved;
use crate::ir;
use crate::params::WeightType;
use crate::policy::{ActivationSite, QuantPlan};
use crate::proto::ModelProto;

/// A plan made without calibration data: what `explain` and `init-config` show.
pub struct Explained {
    pub plan: QuantPlan,
    pub model: ModelProto,
    /// Every subgraph, in model order: its plan (and the graph as a model of its own), or why
    /// it stays float.
    pub subgraphs: Vec<ExplainedSubgraph>,
}

/// One subgraph of an [`Explained`] model.
pub struct ExplainedSubgraph {
    pub label: String,
    pub plan: Option<(QuantPlan, ModelProto)>,
    pub reason: Option<String>,
}

/// Where a global setting comes from (`preset tensorrt`, `quant.yaml`, `command line`).
fn source<'a>(resolved: &'a Resolved, key: &str) -> &'a str {
    resolved.values.get(key).map_or("?", |(_, s)| s.as_str())
}

fn activation_line(site: &ActivationSite, resolved: &Resolved) -> String {
    let s = &site.settings;
    let from = |field: &str, key: &str| -> String {
        s.sources
            .iter()
            .find(|(f, _)| *f == field)
            .map_or_else(|| source(resolved, key).to_string(), |(_, o)| o.clone())
    };
    let value = |field: &str, key: &str, set: Option<String>| {
        let v = set.unwrap_or_else(|| {
            resolved
                .values
                .get(key)
                .map_or("?".into(), |(v, _)| v.to_string())
        });
        format!("{field} {v} ({})", from(field, key))
    };
    let mut parts = vec![
        value(
            "dtype",
            "activations.dtype",
            s.qtype.map(|q| q.name().to_string()),
        ),
        value(
            "symmetric",
            "activations.symmetric",
            s.symmetric.map(|b| b.to_string()),
        ),
    ];
    if let Some((scale, zp)) = s.scale {
        parts.push(format!(
            "scale {scale}{} ({})",
            zp.map_or(String::new(), |z| format!(", zero-point {z}")),
            from("scale", "")
        ));
    } else if let Some((lo, hi)) = s.range {
        parts.push(format!("range [{lo}, {hi}] ({})", from("range", "")));
    } else if let Some((lo, hi)) = site.fixed_range {
        parts.push(format!(
            "range [{lo}, {hi}] (fixed by its producer: placement.fixed_ranges)"
        ));
    } else {
        parts.push(value("method", "activations.method", s.method.clone()));
    }
    if site.group.is_some() {
        parts.push("scale shared with its Concat / shape-op neighbours".into());
    }
    parts.join(", ")
}

/// Every node, in graph order, with its decision and reason; under each quantized node, the
/// tensors it reads quantized and their settings. Then each subgraph (If branch, Loop body):
/// its own plan, or why it stays float.
/// One node's fate, as `explain` prints it: the graph it is in (`""`: the main graph, else the
/// subgraph's label), whether it is quantized and why, and a line per quantized tensor it
/// reads, weight, bias or output.
#[derive(Debug, serde::Serialize)]
pub struct NodeFate {
    pub graph: String,
    pub name: String,
    pub op_type: String,
    pub quantized: bool,
    pub reason: String,
    pub details: Vec<String>,
}

/// A subgraph `explain` names: planned as a graph of its own, or float and why.
#[derive(Debug, serde::Serialize)]
pub struct SubgraphFate {
    pub label: String,
    pub planned: bool,
    pub reason: Option<String>,
}

/// What `explain` shows, as data (`explain --json`).
#[derive(Debug, serde::Serialize)]
pub struct Explanation {
    pub nodes: Vec<NodeFate>,
    pub subgraphs: Vec<SubgraphFate>,
    /// The planner's notes, each with the graph it concerns.
    pub notes: Vec<(String, String)>,
}

/// Every node's fate in `ex` (the main graph's nodes, then each planned subgraph's).
pub fn explanation(ex: &Explained, resolved: &Resolved) -> Explanation {
    let mut out = Explanation {
        nodes: Vec::new(),
        subgraphs: Vec::new(),
        notes: Vec::new(),
    };
    let graph = crate::ir::graph(&ex.model);
    fates(&mut out, "", &ex.plan, graph, resolved);
    for sub in &ex.subgraphs {
        out.subgraphs.push(SubgraphFate {
            label: sub.label.clone(),
            planned: sub.plan.is_some(),
            reason: sub.reason.clone(),
        });
        if let Some((plan, model)) = &sub.plan {
            let g = model.graph.as_ref().expect("a subgraph model has a graph");
            fates(&mut out, &sub.label, plan, g, resolved);
        }
    }
    out
}

/// An [`Explanation`] as `explain` prints it.
pub fn render(e: &Explanation) -> String {
    let mut out = String::new();
    render_graph(&mut out, e, "", "");
    for sub in &e.subgraphs {
        if sub.planned {
            let _ = writeln!(
                out,
                "subgraph `{}`: planned as a graph of its own",
                sub.label
            );
            render_graph(&mut out, e, &sub.label, "  ");
        } else {
            let _ = writeln!(
                out,
                "subgraph `{}`: float: {}",
                sub.label,
                sub.reason.as_deref().unwrap_or("")
            );
        }
    }
    out
}

/// The lines of one graph's nodes and notes, each prefixed with `indent`.
fn render_graph(out: &mut String, e: &Explanation, graph: &str, indent: &str) {
    for n in e.nodes.iter().filter(|n| n.graph == graph) {
        let verdict = if n.quantized { "quantized" } else { "float" };
        let _ = writeln!(
            out,
            "{indent}node `{}` ({}): {verdict}: {}",
            n.name, n.op_type, n.reason
        );
        for d in &n.details {
            let _ = writeln!(out, "{indent}  {d}");
        }
    }
    for (_, note) in e.notes.iter().filter(|(g, _)| g == graph) {
        let _ = writeln!(out, "{indent}note: {note}");
    }
}

fn fates(
    out: &mut Explanation,
    label: &str,
    plan: &QuantPlan,
    graph: &crate::proto::GraphProto,
    resolved: &Resolved,
) {
    for d in &plan.nodes {
        let mut details = Vec::new();
        let node = &graph.node[d.id];
        for site in plan
            .activations
            .iter()
            .filter(|a| a.consumers.iter().any(|c| c.0 == d.id))
        {
            details.push(format!(
                "reads `{}` quantized: {}",
                site.tensor,
                activation_line(site, resolved)
            ));
        }
        for w in plan
            .weights
            .iter()
            .filter(|w| w.consumers.iter().any(|c| c.0 == d.id))
        {
            details.push(weight_line(w, resolved));
        }
        for b in plan.biases.iter().filter(|b| b.node == d.id) {
            details.push(format!(
                "bias `{}`: int32, scale s_x·s_w (bias: {})",
                b.bias,
                source(resolved, "bias")
            ));
        }
        if let Some(site) = node
            .output
            .first()
            .and_then(|o| plan.site(o))
            .filter(|s| s.all_consumers)
        {
            details.push(format!(
                "writes `{}` quantized (complete node unit): {}",
                site.tensor,
                activation_line(site, resolved)
            ));
        }
        out.nodes.push(NodeFate {
            graph: label.to_string(),
            name: d.name.clone(),
            op_type: d.op_type.clone(),
            quantized: d.quantized,
            reason: d.reason.clone().unwrap_or_default(),
            details,
        });
    }
    for note in &plan.notes {
        out.notes.push((label.to_string(), note.clone()));
    }
}

/// A commented YAML settings file for `model`: the global settings that matter most, and a
/// commented override per node the target quantizes.
pub fn init_config(ex: &Explained, resolved: &Resolved, model: &str) -> String {
    let target = source_value(resolved, "target");
    let mut out = format!(
        "# onnx-quant settings for `{model}`, target {target}.\n\
         # Use: onnx-quant {model} OUT.onnx --calib DATA --config THIS_FILE\n\
         # Every setting and its default: onnx-quant show-config --target {target}\n\
         # Reference: docs/config.md\n\n\
         target: {target}\n\n"
    );
    let _ = writeln!(out, "# Global settings (the {target} preset's values):");
    let mut section = "";
    for key in [
        "activations.method",
        "activations.symmetric",
        "activations.dtype",
        "weights.dtype",
        "weights.per_channel",
        "weights.block_size",
        "weight_only",
    ] {
        let Some((head, leaf)) = key.split_once('.') else {
            let _ = writeln!(out, "# {key}: {}", source_value(resolved, key));
            continue;
        };
        if head != section {
            let _ = writeln!(out, "# {head}:");
            section = head;
        }
        let _ = writeln!(out, "#   {leaf}: {}", source_value(resolved, key));
    }
    let _ = writeln!(
        out,
        "\n# Per-layer overrides: the first entry that matches and sets a setting wins.\n\
         # `match:` takes `name` (exact or glob), `name_regex`, `op_type`, `tensor`, `tensor_regex`.\n\
         # Settings: `skip: true`, `activations: {{dtype, symmetric, method, percentile, range, scale,\n\
         # zero_point}}`, `weights: {{dtype, per_channel, axis, block_size}}`. The nodes the {target} placement quantizes:\n\
         overrides:"
    );
    let graph = crate::ir::graph(&ex.model);
    override_lines(&mut out, &ex.plan, graph, None);
    for sub in &ex.subgraphs {
        if let Some((plan, model)) = &sub.plan {
            let g = model.graph.as_ref().expect("a subgraph model has a graph");
            override_lines(&mut out, plan, g, Some(&sub.label));
        }
    }
    out
}

/// A commented override per node of `plan` the target quantizes (`scope`: the subgraph's).
fn override_lines(
    out: &mut String,
    plan: &QuantPlan,
    graph: &crate::proto::GraphProto,
    scope: Option<&str>,
) {
    for d in plan.nodes.iter().filter(|d| d.quantized) {
        let reads: Vec<String> = plan
            .activations
            .iter()
            .filter(|a| a.consumers.iter().any(|c| c.0 == d.id))
            .map(|a| format!("`{}`", a.tensor))
            .collect();
        let weights: Vec<String> = plan
            .weights
            .iter()
            .filter(|w| w.consumers.iter().any(|c| c.0 == d.id))
            .map(|w| {
                format!(
                    "`{}` {} {}",
                    w.initializer,
                    w.dtype.name(),
                    weight_layout(w)
                )
            })
            .collect();
        let mut what = vec![d.op_type.clone()];
        if !reads.is_empty() {
            what.push(format!("reads {}", reads.join(", ")));
        }
        if !weights.is_empty() {
            what.push(format!("weight {}", weights.join(", ")));
        }
        let name = ir::node_label(&graph.node[d.id], d.id);
        let place = scope.map_or(String::new(), |s| format!(" (in subgraph `{s}`)"));
        let _ = writeln!(
            out,
            "#  - match: {{name: {}}}   # {}{place}\n#    skip: true",
            yaml_string(&name),
            what.join("; ")
        );
    }
}

fn source_value(resolved: &Resolved, key: &str) -> String {
    resolved
        .values
        .get(key)
        .map_or("?".into(), |(v, _)| v.to_string())
}

/// A YAML scalar for `s`, quoted when needed.
fn yaml_string(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars().all(|c| c.is_alphanumeric() || "_./-".contains(c))
        && !s.starts_with(['-', '.']);
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// "per tensor", "per channel on axis 0", "blocks of 32 along axis 1".
fn weight_layout(w: &crate::policy::WeightSite) -> String {
    match (w.block, w.axis) {
        (Some((axis, size)), _) => format!("blocks of {size} along axis {axis}"),
        (None, Some(a)) => format!("per channel on axis {a}"),
        (None, None) => "per tensor".into(),
    }
}

/// How a weight is quantized, and which setting or override decided it.
fn weight_line(w: &crate::policy::WeightSite, resolved: &Resolved) -> String {
    let layout = weight_layout(w);
    let mut by = w.decided_by.clone();
    let keys = match (w.dtype, w.block) {
        (WeightType::Int8, _) => &["weights.per_channel"][..],
        (WeightType::Int4 | WeightType::Uint4 | WeightType::Fp8, None) => {
            &["weights.dtype", "weights.per_channel"]
        }
        (_, Some(_)) => &["weights.dtype", "weights.block_size"],
    };
    for key in keys {
        let leaf = key.trim_start_matches("weights.");
        if !by.iter().any(|b| b.starts_with(leaf)) {
            by.push(format!("{key}: {}", source(resolved, key)));
        }
    }
    let range = match w.dtype {
        WeightType::Int8 => "int8 [-127, 127]",
        WeightType::Int4 => "int4 [-8, 7]",
        WeightType::Uint4 => "uint4 [0, 15] with zero-points",
        WeightType::Fp8 => "fp8 e4m3 [-448, 448]",
    };
    format!(
        "weight `{}`: {range}, {layout} ({})",
        w.initializer,
        by.join(", ")
    )
}
