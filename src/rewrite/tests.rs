//! The passes as "graph text in -> graph text out" (`ir::dump`): each test builds a small
//! model, runs a pass and compares the dump of the result with the text it should be.

use crate::config::Config;
use crate::ir::dump;
use crate::ir::testnet::Net;
use crate::onnx::tensor::f32_tensor;
use crate::params::{QParams, QType};
use crate::policy::{Overrides, plan};

use super::{ActivationParams, fold_batchnorm, fold_relu, run};

fn no_external(t: &crate::proto::TensorProto) -> Result<Vec<f32>, crate::error::Error> {
    panic!("no external data here: {}", t.name())
}

/// Conv -> BatchNormalization folded: one Conv with the folded weight and a bias.
const FOLDED: &str = "model ir_version=8 opset=ai.onnx:13
input x: (non-tensor)
output y: (non-tensor)
init w_bn_folded: float32[2,2,1,1]
init a_bn_folded_bias: float32[2]
node conv: Conv(x, w_bn_folded, a_bn_folded_bias) -> y
";

/// Conv [2, 2, 1, 1] -> BatchNormalization.
fn conv_bn() -> Net {
    let mut n = Net::new(&["x"]);
    n.init(f32_tensor("w", &[2, 2, 1, 1], &[1.0, 2.0, 3.0, 4.0]))
        .init(f32_tensor("gamma", &[2], &[2.0, 0.5]))
        .init(f32_tensor("beta", &[2], &[1.0, -1.0]))
        .init(f32_tensor("mean", &[2], &[0.0, 2.0]))
        .init(f32_tensor("var", &[2], &[1.0, 4.0]))
        .node("Conv", "conv", &["x", "w"], &["a"])
        .node(
            "BatchNormalization",
            "bn",
            &["a", "gamma", "beta", "mean", "var"],
            &["y"],
        )
        .attr_float("epsilon", 0.0)
        .output("y");
    n
}

fn values(m: &crate::proto::ModelProto, name: &str) -> Vec<f32> {
    let g = m.graph.as_ref().unwrap();
    let t = g.initializer.iter().find(|t| t.name() == name).unwrap();
    crate::onnx::tensor::floats(t)
        .or_else(|_| {
            crate::onnx::tensor::ints(t).map(|v| v.into_iter().map(|x| x as f32).collect())
        })
        .unwrap()
}

/// Conv -> BatchNormalization becomes one Conv: each output channel's weights times
/// gamma / sqrt(var + eps), a bias beta - mean · that factor.
#[test]
fn golden_fold_batchnorm() {
    let (folded, count) = fold_batchnorm(&conv_bn().model()).unwrap();
    assert_eq!(count, 1);
    assert_eq!(dump(&folded), FOLDED);
    // factors 2 / 1 and 0.5 / 2
    assert_eq!(values(&folded, "w_bn_folded"), [2.0, 4.0, 0.75, 1.0]);
    assert_eq!(values(&folded, "a_bn_folded_bias"), [1.0, -1.5]);
}

/// A Relu that is a Conv's only reader folds into it (the Conv writes the Relu's output); the
/// Relu is remembered, to be put back where the plan does not clamp the unit's output.
#[test]
fn golden_fold_relu() {
    let n = conv_relu();
    let (m, folded) = fold_relu(&n.model(), &["Conv".to_string()]).unwrap();
    assert_eq!(
        dump(&m),
        "model ir_version=8 opset=ai.onnx:13
input x: (non-tensor)
output y: (non-tensor)
init w: float32[2,2,1,1]
node conv: Conv(x, w) -> y
"
    );
    assert_eq!(folded.len(), 1);
    assert_eq!(
        (folded[0].label.as_str(), folded[0].tensor.as_str()),
        ("relu", "y")
    );
}

fn conv_relu() -> Net {
    let mut n = Net::new(&["x"]);
    n.init(f32_tensor("w", &[2, 2, 1, 1], &[1.0, -2.0, 0.5, 4.0]))
        .node("Conv", "conv", &["x", "w"], &["a"])
        .node("Relu", "relu", &["a"], &["y"])
        .output("y");
    n
}

/// The tensorrt plan of Conv -> Relu, rewritten: a Q/DQ pair on the Conv's data input, the
/// weight stored as int8 per output channel behind a DequantizeLinear (axis 0), nothing on
/// the output.
#[test]
fn golden_rewrite_of_a_conv() {
    let n = conv_relu();
    let mut m = n.model();
    let p = plan(
        &m,
        &n.types,
        &Config::preset("tensorrt"),
        &Overrides::default(),
    );
    let mut act = ActivationParams::default();
    for a in &p.activations {
        let q = QParams {
            scale: 0.5,
            zero_point: 0,
        };
        act.tensors.insert(a.tensor.clone(), (QType::Int8, q));
    }
    let report = run(&mut m, &p, &act, &no_external).unwrap();
    assert_eq!(
        dump(&m),
        "model ir_version=8 opset=ai.onnx:13
input x: (non-tensor)
output y: (non-tensor)
init w_quantized: int8[2,2,1,1]
init w_scale: float32[2]
init w_zero_point: int8[2]
init x_scale: float32[] = 5e-1
init x_zero_point: int8[] = 0
node x_QuantizeLinear: QuantizeLinear(x, x_scale, x_zero_point) -> x_quantized
node x_DequantizeLinear: DequantizeLinear(x_quantized, x_scale, x_zero_point) -> x_dequantized
node w_DequantizeLinear: DequantizeLinear(w_quantized, w_scale, w_zero_point) -> w_dequantized {axis=0}
node conv: Conv(x_dequantized, w_dequantized) -> a
node relu: Relu(a) -> y
"
    );
    // channel amax 2 and 4 onto ±127; 63.5 rounds half to even
    assert_eq!(values(&m, "w_quantized"), [64.0, -127.0, 16.0, 127.0]);
    assert_eq!(values(&m, "w_scale"), [2.0 / 127.0, 4.0 / 127.0]);
    assert_eq!((report.activations, report.weights.len()), (1, 1));
}

/// The preparation passes in order for the ort preset: Conv -> BatchNormalization -> Relu
/// becomes one Conv writing the Relu's output, with a note per pass; tensorrt prepares nothing.
#[test]
fn golden_prepare_folds_batchnorm_then_relu_for_ort() {
    let mut n = conv_bn();
    let y = n.nodes.last_mut().unwrap();
    y.output = vec!["b".into()];
    n.node("Relu", "relu", &["b"], &["y"]);
    let (m, prep) = super::prepare(&n.model(), &Config::preset("ort")).unwrap();
    assert_eq!(dump(&m), FOLDED);
    assert_eq!(prep.notes.len(), 2, "{:?}", prep.notes);
    assert!(prep.notes[0].contains("BatchNormalization"));
    assert_eq!(prep.folded_relus.len(), 1);
    let (same, none) = super::prepare(&n.model(), &Config::preset("tensorrt")).unwrap();
    assert_eq!(same, n.model());
    assert!(none.notes.is_empty() && none.folded_relus.is_empty());
    let names: Vec<&str> = super::PREPARE.iter().map(|p| p.0).collect();
    assert_eq!(names, ["fold-batchnorm", "fold-relu"]);
}
