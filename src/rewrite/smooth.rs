//! SmoothQuant: activation outliers moved into the weights that read them.
//!
//! Where a LayerNormalization's output `X` (channels on the last axis) is read only as the data
//! input of MatMul/Gemm nodes with constant 2-D weights, each channel `j` gets a factor
//! `s_j = max|X_j|^α / max|W_j|^(1-α)` (`W_j`: input row `j` of every weight reading `X`). The
//! LayerNormalization's scale and bias are divided by `s` and every weight's row `j` multiplied
//! by `s_j`: the float function is unchanged (up to rounding), while per-tensor activation
//! ranges no longer stretch to the few outlier channels. No node is added: the division folds
//! into the normalization. Elsewhere (a MatMul reading a GELU, an attention product, a weight
//! shared with other readers) there is no fold, and nothing changes. Pure: the per-channel
//! maxima come from the caller.

use std::collections::HashMap;

use crate::ir::{self, Index, NodeId};
use crate::onnx::tensor::{f32_data, f32_tensor};
use crate::proto::ModelProto;

/// One place SmoothQuant applies: a LayerNormalization and the linear layers reading it.
#[derive(Clone, Debug)]
pub struct Group {
    pub norm: NodeId,
    /// The normalization's output, whose per-channel maxima are needed.
    pub tensor: String,
    /// (consumer, its weight, whether the weight is `[N, C]`: Gemm with `transB`).
    pub linears: Vec<(NodeId, String, bool)>,
}

/// The groups of `model`, in graph order.
pub fn groups(model: &ModelProto) -> Vec<Group> {
    let graph = crate::ir::graph(model);
    let index = Index::new(graph);
    let single_use = |t: &str| {
        index.consumers(t).len() == 1 && !index.is_graph_output(t) && !index.is_captured(t)
    };
    let mut out = Vec::new();
    for (id, node) in graph.node.iter().enumerate() {
        if node.op_type() != "LayerNormalization" || !ir::is_default_domain(node.domain()) {
            continue;
        }
        let last_axis = ir::attr_int(node, "axis").unwrap_or(-1) == -1;
        let params_ok = node
            .input
            .iter()
            .skip(1)
            .filter(|i| !i.is_empty())
            .all(|p| {
                index
                    .initializer(p)
                    .is_some_and(|t| t.dims.len() == 1 && f32_data(t).is_ok())
                    && single_use(p)
            });
        let Some(x) = node.output.first() else {
            continue;
        };
        if !last_axis || !params_ok || node.input.get(1).is_none_or(|s| s.is_empty()) {
            continue;
        }
        if index.is_graph_output(x) || index.consumers(x).is_empty() {
            continue;
        }
        let linears: Option<Vec<(NodeId, String, bool)>> = index
            .consumers(x)
            .iter()
            .map(|&(c, slot)| {
                let n = index.node(c);
                let w = n.input.get(1)?;
                let t = index.initializer(w)?;
                let transposed = match n.op_type() {
                    "MatMul" => false,
                    "Gemm" if ir::attr_int(n, "transA").unwrap_or(0) == 0 => {
                        ir::attr_int(n, "transB").unwrap_or(0) != 0
                    }
                    _ => return None,
                };
                (slot == 0 && t.dims.len() == 2 && single_use(w) && f32_data(t).is_ok())
                    .then(|| (c, w.clone(), transposed))
            })
            .collect();
        if let Some(linears) = linears {
            out.push(Group {
                norm: id,
                tensor: x.clone(),
                linears,
            });
        }
    }
    out
}

/// Applies SmoothQuant with strength `alpha` to `groups` of `model`, given the per-channel
/// maxima of each group's tensor (`amax[tensor]`, one value per channel). Returns a note per
/// group smoothed (its largest and median factor).
// One group after another: factors from the maxima, then the LayerNormalization and every
// weight reading it rescaled in one patch; the steps share the group's channel count.
pub fn apply(
    model: &mut ModelProto,
    groups: &[Group],
    amax: &HashMap<String, Vec<f32>>,
    alpha: f64,
) -> Result<Vec<String>, String> {
    let graph = crate::ir::graph_mut(model);
    let position: HashMap<String, usize> = graph
        .initializer
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name().to_string(), i))
        .collect();
    let values = |graph: &crate::proto::GraphProto, name: &str| -> Result<Vec<f32>, String> {
        f32_data(&graph.initializer[position[name]]).map_err(|e| format!("`{name}` {e}"))
    };
    let mut notes = Vec::new();
    for g in groups {
        let Some(a) = amax.get(&g.tensor) else {
            continue;
        };
        let c = a.len();
        let mut w_max = vec![0f32; c];
        let mut weights = Vec::new();
        for (_, w, transposed) in &g.linears {
            let t = &graph.initializer[position[w]];
            let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
            let rows = if *transposed { dims[1] } else { dims[0] };
            if rows != c {
                return Err(format!(
                    "weight `{w}` has {rows} input channels where `{}` has {c}",
                    g.tensor
                ));
            }
            let v = values(graph, w)?;
            for (i, x) in v.iter().enumerate() {
                let j = if *transposed {
                    i % dims[1]
                } else {
                    i / dims[1]
                };
                w_max[j] = w_max[j].max(x.abs());
            }
            weights.push((w.clone(), dims, v, *transposed));
        }
        let s: Vec<f32> = a
            .iter()
            .zip(&w_max)
            .map(|(&a, &w)| {
                if a > 0.0 && w > 0.0 {
                    let f = f64::from(a).powf(alpha) / f64::from(w).powf(1.0 - alpha);
                    f.clamp(1e-5, 1e5) as f32
                } else {
                    1.0
                }
            })
            .collect();
        let norm = &graph.node[g.norm];
        for p in norm
            .input
            .iter()
            .skip(1)
            .filter(|i| !i.is_empty())
            .cloned()
            .collect::<Vec<_>>()
        {
            let v = values(graph, &p)?;
            if v.len() != c {
                return Err(format!("`{p}` has {} values for {c} channels", v.len()));
            }
            let scaled: Vec<f32> = v.iter().zip(&s).map(|(x, f)| x / f).collect();
            graph.initializer[position[&p]] = f32_tensor(&p, &[c], &scaled);
        }
        for (w, dims, v, transposed) in weights {
            let scaled: Vec<f32> = v
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    let j = if transposed { i % dims[1] } else { i / dims[1] };
                    x * s[j]
                })
                .collect();
            graph.initializer[position[&w]] = f32_tensor(&w, &dims, &scaled);
        }
        let mut sorted = s.clone();
        sorted.sort_by(f32::total_cmp);
        notes.push(format!(
            "SmoothQuant on `{}` ({} reader(s)): channel factors up to {:.3}, median {:.3}",
            g.tensor,
            g.linears.len(),
            sorted.last().copied().unwrap_or(1.0),
            sorted[sorted.len() / 2]
        ));
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{GraphProto, NodeProto};

    fn node(
        op: &str,
        inputs: &[&str],
        out: &str,
        attrs: Vec<crate::proto::AttributeProto>,
    ) -> NodeProto {
        NodeProto {
            name: Some(out.into()),
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.into()],
            attribute: attrs,
            ..Default::default()
        }
    }

    /// LayerNormalization (scale g, bias b) read by a MatMul [3, 2] and a Gemm with transB
    /// [2, 3]; a second normalization feeds a Relu (not smoothed).
    fn model() -> ModelProto {
        ModelProto {
            graph: Some(GraphProto {
                node: vec![
                    node("LayerNormalization", &["x", "g", "b"], "n", vec![]),
                    node("MatMul", &["n", "w1"], "y1", vec![]),
                    node("Gemm", &["n", "w2"], "y2", vec![ir::int_attr("transB", 1)]),
                    node("LayerNormalization", &["x", "g2"], "n2", vec![]),
                    node("Relu", &["n2"], "r", vec![]),
                ],
                initializer: vec![
                    f32_tensor("g", &[3], &[1.0, 20.0, 0.5]),
                    f32_tensor("b", &[3], &[0.1, -0.2, 0.3]),
                    f32_tensor("g2", &[3], &[1.0, 1.0, 1.0]),
                    f32_tensor("w1", &[3, 2], &[0.5, -1.0, 0.05, 0.02, 2.0, 1.0]),
                    f32_tensor("w2", &[2, 3], &[1.0, 0.01, -0.5, 0.3, -0.04, 0.7]),
                ],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn init(m: &ModelProto, name: &str) -> Vec<f32> {
        let g = m.graph.as_ref().unwrap();
        f32_data(g.initializer.iter().find(|t| t.name() == name).unwrap()).unwrap()
    }

    /// (n·g + b) @ W for a normalized row `n`, through both readers.
    fn outputs(m: &ModelProto, n: &[f32]) -> Vec<f32> {
        let (g, b, w1, w2) = (init(m, "g"), init(m, "b"), init(m, "w1"), init(m, "w2"));
        let h: Vec<f32> = (0..3).map(|j| n[j] * g[j] + b[j]).collect();
        let mut y = vec![0f32; 4];
        for k in 0..2 {
            for j in 0..3 {
                y[k] += h[j] * w1[j * 2 + k];
                y[2 + k] += h[j] * w2[k * 3 + j];
            }
        }
        y
    }

    #[test]
    fn factors_fold_into_the_norm_and_the_weights_without_changing_the_function() {
        let mut m = model();
        let groups = groups(&m);
        assert_eq!(
            groups.len(),
            1,
            "the normalization feeding a Relu is left alone"
        );
        assert_eq!(groups[0].tensor, "n");
        assert_eq!(groups[0].linears.len(), 2);
        let rows = [[0.3f32, -1.2, 0.9], [1.1, 0.2, -1.3]];
        let before: Vec<Vec<f32>> = rows.iter().map(|r| outputs(&m, r)).collect();
        let amax = HashMap::from([("n".to_string(), vec![0.8f32, 25.0, 0.6])]);
        let notes = apply(&mut m, &groups, &amax, 0.5).unwrap();
        assert!(
            notes[0].contains("SmoothQuant on `n` (2 reader(s))"),
            "{notes:?}"
        );
        for (r, b) in rows.iter().zip(&before) {
            for (x, y) in outputs(&m, r).iter().zip(b) {
                assert!((x - y).abs() < 1e-5, "{x} vs {y}");
            }
        }
        // the outlier channel's scale comes down most: the channel ranges even out
        let g = init(&m, "g");
        assert!(g[1] / g[0] < 20.0 / 1.0 / 2.0, "{g:?}");
        assert_eq!(init(&m, "g2"), vec![1.0, 1.0, 1.0]);
    }
}
