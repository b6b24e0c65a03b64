//! The placement rules on hand-built graphs: each test builds a small model, plans it with a
//! preset (and overrides where it says so) and asserts what is quantized, what shares a scale
//! and why the rest stays float.

use super::{Overrides, QuantPlan, plan};
use crate::config::Config;
use crate::ir::testnet::Net;
use crate::onnx::tensor::{f32_tensor, i8_tensor};

/// Plans `net` with `target`'s preset and `yaml`'s overrides (the `overrides:` list of a
/// settings file, or nothing).
fn plan_of(net: &Net, target: &str, yaml: &str) -> QuantPlan {
    let list = if yaml.is_empty() {
        Vec::new()
    } else {
        crate::config::parse_user(yaml, "test.yaml")
            .expect("valid overrides")
            .overrides
    };
    let overrides = Overrides {
        file: "test.yaml".into(),
        list,
        automatic: Default::default(),
    };
    plan(
        &net.model(),
        &net.types,
        &Config::preset(target),
        &overrides,
    )
}

fn decision<'p>(plan: &'p QuantPlan, node: &str) -> &'p super::NodeDecision {
    plan.nodes
        .iter()
        .find(|d| d.name == node)
        .unwrap_or_else(|| panic!("no decision for {node}"))
}

fn reason(plan: &QuantPlan, node: &str) -> String {
    decision(plan, node).reason.clone().unwrap_or_default()
}

fn planned(plan: &QuantPlan) -> Vec<&str> {
    plan.activations.iter().map(|a| a.tensor.as_str()).collect()
}

fn group(plan: &QuantPlan, tensor: &str) -> Option<usize> {
    plan.activations
        .iter()
        .find(|a| a.tensor == tensor)
        .unwrap_or_else(|| panic!("{tensor} not planned"))
        .group
}

/// Conv -> Relu -> Conv: both convs read quantized data and per-channel weights (axis 0, the
/// output channels); the Relu between them is not a quantized op of the tensorrt placement.
#[test]
fn a_conv_chain_quantizes_each_conv_input_and_weight() {
    let mut n = Net::new(&["x"]);
    n.conv("c1", "x", "a", false)
        .node("Relu", "r", &["a"], &["b"])
        .conv("c2", "b", "y", false)
        .output("y");
    let p = plan_of(&n, "tensorrt", "");
    assert!(decision(&p, "c1").quantized && decision(&p, "c2").quantized);
    assert!(!decision(&p, "r").quantized, "{}", reason(&p, "r"));
    assert_eq!(planned(&p), ["x", "b"]);
    let w: Vec<(&str, Option<usize>)> = p
        .weights
        .iter()
        .map(|w| (w.initializer.as_str(), w.axis))
        .collect();
    assert_eq!(w, [("c1.w", Some(0)), ("c2.w", Some(0))]);
    // Q/DQ go on inputs only: a conv output is no site in tensorrt.
    assert!(p.activations.iter().all(|a| !a.all_consumers));
}

/// The same chain for ONNX Runtime: each Conv is a complete node unit (its output quantized
/// for every reader) and its bias becomes int32 (QLinearConv).
#[test]
fn the_ort_placement_makes_node_units_with_int32_biases() {
    let mut n = Net::new(&["x"]);
    n.conv("c1", "x", "a", true)
        .node("Sigmoid", "s", &["a"], &["b"])
        .conv("c2", "b", "y", true)
        .output("y");
    let p = plan_of(&n, "ort", "");
    let a = p.activations.iter().find(|s| s.tensor == "a").expect("a");
    assert!(a.all_consumers, "{a:?}");
    assert!(
        reason(&p, "c1").contains("node unit"),
        "{}",
        reason(&p, "c1")
    );
    let biases: Vec<&str> = p.biases.iter().map(|b| b.bias.as_str()).collect();
    assert_eq!(biases, ["c1.b", "c2.b"]);
    assert!(decision(&p, "s").quantized, "{}", reason(&p, "s"));
    let tensorrt = plan_of(&n, "tensorrt", "");
    assert!(tensorrt.biases.is_empty(), "tensorrt keeps float biases");
}

/// A residual Add (conv branch + skip): TensorRT fuses the Add into the conv producing one
/// input, so only the skip input is quantized.
#[test]
fn a_residual_add_quantizes_its_skip_input_only() {
    let mut n = Net::new(&["x"]);
    n.node("Relu", "r0", &["x"], &["s"])
        .conv("c1", "s", "a", false)
        .node("Add", "add", &["a", "s"], &["y"])
        .output("y");
    let p = plan_of(&n, "tensorrt", "");
    assert!(decision(&p, "add").quantized);
    assert!(
        reason(&p, "add").contains("fuses into `c1`"),
        "{}",
        reason(&p, "add")
    );
    let s = p.activations.iter().find(|a| a.tensor == "s").expect("s");
    let add = p.nodes.iter().position(|d| d.name == "add").unwrap();
    assert!(s.consumers.contains(&(add, 1)), "{s:?}");
    assert!(!planned(&p).contains(&"a"), "{:?}", planned(&p));
}

/// An Add with no conv branch has nothing to fuse into, and one with a constant input is no
/// residual connection: both stay float, saying which.
#[test]
fn adds_that_are_not_residual_stay_float_with_the_reason() {
    let mut n = Net::new(&["x", "z"]);
    n.init(f32_tensor("k", &[1], &[2.0]))
        .node("Add", "plain", &["x", "z"], &["a"])
        .node("Add", "bias", &["a", "k"], &["y"])
        .output("y");
    let p = plan_of(&n, "tensorrt", "");
    assert!(
        reason(&p, "plain").contains("no conv branch"),
        "{}",
        reason(&p, "plain")
    );
    assert!(
        reason(&p, "bias").contains("constant"),
        "{}",
        reason(&p, "bias")
    );
    assert!(p.activations.is_empty());
}

/// A Concat between quantized neighbours is quantized across, its inputs and output sharing
/// one scale (TensorRT requires it); in ort each input keeps its own.
#[test]
fn a_concat_read_by_a_conv_shares_one_scale_with_its_inputs() {
    let mut n = Net::new(&["x", "z"]);
    n.node("Relu", "r1", &["x"], &["a"])
        .node("Relu", "r2", &["z"], &["b"])
        .node("Concat", "cat", &["a", "b"], &["c"])
        .typed("c", &[1, 16, 4, 4]);
    n.inits
        .push(f32_tensor("c1.w", &[8, 16, 1, 1], &[0.25; 128]));
    n.node("Conv", "c1", &["c", "c1.w"], &["y"]).output("y");
    let p = plan_of(&n, "tensorrt", "");
    assert!(decision(&p, "cat").quantized, "{}", reason(&p, "cat"));
    let g = group(&p, "c");
    assert!(g.is_some());
    assert_eq!(group(&p, "a"), g);
    assert_eq!(group(&p, "b"), g);
    let ort = plan_of(&n, "ort", "");
    assert!(
        ort.activations.iter().all(|a| a.group.is_none()),
        "{:?}",
        ort.activations
    );
}

/// Shape ops pass quantization to their input in ort (MaxPool, Reshape, ... are int8 in and
/// out), with one scale; tensorrt has no shape ops and quantizes the conv input only.
#[test]
fn shape_ops_carry_quantization_to_their_input_in_ort() {
    let mut n = Net::new(&["x"]);
    n.init(crate::onnx::tensor::i64_tensor(
        "shape",
        &[4],
        &[1, 8, 4, 4],
    ))
    .node("Relu", "r", &["x"], &["a"])
    .node("Reshape", "reshape", &["a", "shape"], &["b"])
    .conv("c1", "b", "y", false)
    .output("y");
    let p = plan_of(&n, "ort", "");
    assert!(
        decision(&p, "reshape").quantized,
        "{}",
        reason(&p, "reshape")
    );
    assert!(planned(&p).contains(&"a"), "{:?}", planned(&p));
    assert_eq!(group(&p, "a"), group(&p, "b"));
    let t = plan_of(&n, "tensorrt", "");
    assert_eq!(planned(&t), ["b"]);
}

/// Overrides: `skip: true` keeps a node float naming the override; a per-tensor override of
/// a weight turns its per-channel axis off and says which override decided it.
#[test]
fn overrides_skip_nodes_and_set_weights_naming_themselves() {
    let mut n = Net::new(&["x"]);
    n.conv("c1", "x", "a", false)
        .conv("c2", "a", "y", false)
        .output("y");
    let p = plan_of(
        &n,
        "tensorrt",
        "overrides:\n  - match: {name: c1}\n    skip: true\n  - match: {name: c2}\n    weights: {per_channel: false}\n",
    );
    assert!(!decision(&p, "c1").quantized);
    assert!(
        reason(&p, "c1").contains("skipped by override #1"),
        "{}",
        reason(&p, "c1")
    );
    assert!(decision(&p, "c2").quantized);
    assert_eq!(planned(&p), ["a"]);
    let w = &p.weights[0];
    assert_eq!((w.initializer.as_str(), w.axis), ("c2.w", None));
    assert!(
        w.decided_by.iter().any(|d| d.contains("#2")),
        "{:?}",
        w.decided_by
    );
}

/// `skip: true` on a pass-through op (MaxPool, Reshape) keeps it float: quantization is not
/// carried across it, as it is when no override names it.
#[test]
fn a_skipped_pass_through_op_is_not_quantized_by_propagation() {
    let mut n = Net::new(&["x"]);
    n.conv("c1", "x", "a", false)
        .node("MaxPool", "pool", &["a"], &["b"])
        .conv("c2", "b", "y", false)
        .output("y");
    let free = plan_of(&n, "ort", "");
    assert!(
        decision(&free, "pool").quantized,
        "{}",
        reason(&free, "pool")
    );
    let p = plan_of(
        &n,
        "ort",
        "overrides:\n  - match: {name: pool}\n    skip: true\n",
    );
    assert!(!decision(&p, "pool").quantized, "{}", reason(&p, "pool"));
    assert!(reason(&p, "pool").contains("skipped by override #1"));
}

/// Rules are directional: a data input that already comes from DequantizeLinear is never
/// planned again, so a quantized model gains nothing.
#[test]
fn an_input_already_dequantized_is_not_planned_again() {
    let mut n = Net::new(&["x"]);
    n.init(f32_tensor("s", &[], &[0.1]))
        .init(i8_tensor("zp", &[], &[0]))
        .node("QuantizeLinear", "q", &["x", "s", "zp"], &["xq"])
        .node("DequantizeLinear", "dq", &["xq", "s", "zp"], &["xd"])
        .conv("c1", "xd", "y", false)
        .output("y");
    let p = plan_of(&n, "tensorrt", "");
    assert!(!decision(&p, "c1").quantized);
    assert!(
        reason(&p, "c1").contains("already quantized"),
        "{}",
        reason(&p, "c1")
    );
    assert!(p.activations.is_empty() && p.weights.is_empty());
}

/// Ops of another domain and control flow stay float, each with its reason; a Softmax is a
/// float op of tensorrt, and in ort its output has the fixed range [0, 1] (no statistics).
#[test]
fn foreign_ops_stay_float_and_softmax_has_a_fixed_range_in_ort() {
    let mut n = Net::new(&["x"]);
    n.node("Custom", "custom", &["x"], &["a"])
        .domain("com.example")
        .node("Softmax", "sm", &["a"], &["b"])
        .node("Sigmoid", "sg", &["b"], &["y"])
        .output("y");
    let p = plan_of(&n, "ort", "");
    assert!(
        reason(&p, "custom").contains("com.example"),
        "{}",
        reason(&p, "custom")
    );
    let b = p.activations.iter().find(|a| a.tensor == "b").expect("b");
    assert_eq!(b.fixed_range, Some((0.0, 1.0)));
    assert!(!b.needs_stats());
    let t = plan_of(&n, "tensorrt", "");
    assert!(
        reason(&t, "sm").contains("float_ops"),
        "{}",
        reason(&t, "sm")
    );
}

/// An additive attention mask (a huge negative constant) and what it is added to are never
/// quantized: their range would be all mask.
#[test]
fn an_additive_mask_keeps_what_it_reaches_float() {
    let mut n = Net::new(&["q", "k"]);
    n.typed("q", &[1, 16, 32])
        .typed("k", &[1, 32, 16])
        .init(f32_tensor("mask", &[1, 16, 16], &[-10000.0; 256]))
        .node("MatMul", "qk", &["q", "k"], &["s"])
        .typed("s", &[1, 16, 16])
        .node("Add", "masked", &["s", "mask"], &["m"])
        .typed("m", &[1, 16, 16])
        .node("MatMul", "pv", &["m", "k"], &["y"])
        .typed("y", &[1, 16, 16])
        .output("y");
    let p = plan_of(&n, "ort", "");
    assert!(decision(&p, "qk").quantized, "{}", reason(&p, "qk"));
    assert!(!decision(&p, "pv").quantized);
    assert!(reason(&p, "pv").contains("`m`"), "{}", reason(&p, "pv"));
    assert!(!planned(&p).contains(&"m"), "{:?}", planned(&p));
}

/// MatMuls too small to gain from int8 stay float in tensorrt (min_matmul_dim), saying K and
/// N; a constant operand of a large one is a weight with one scale per output column.
#[test]
fn small_matmuls_stay_float_and_large_ones_get_per_column_weights() {
    let mut n = Net::new(&["x"]);
    n.typed("x", &[1, 32])
        .init(f32_tensor("w_small", &[32, 4], &[0.5; 128]))
        .init(f32_tensor("w_big", &[32, 32], &[0.5; 1024]))
        .node("MatMul", "small", &["x", "w_small"], &["a"])
        .typed("a", &[1, 4])
        .node("MatMul", "big", &["x", "w_big"], &["b"])
        .typed("b", &[1, 32])
        .output("a")
        .output("b");
    let p = plan_of(&n, "tensorrt", "");
    assert!(
        reason(&p, "small").contains("K = 32, N = 4"),
        "{}",
        reason(&p, "small")
    );
    assert!(decision(&p, "big").quantized);
    let w = p
        .weights
        .iter()
        .find(|w| w.initializer == "w_big")
        .expect("w_big");
    assert_eq!(w.axis, Some(1));
}
