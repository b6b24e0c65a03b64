//! The rules of `check` on small QDQ graphs built by hand: what each target rejects or warns
//! about, and that a clean graph passes.

use super::{CheckReport, check};
use crate::ir::testnet::Net;
use crate::onnx::tensor::{i8_tensor, i16_tensor, u8_tensor};

/// A QDQ Conv: `x` through Q/DQ with zero-point `zp`, an int8 per-channel weight [8, 8, 1, 1]
/// of `w`, output `y`.
fn qdq_conv(zp: crate::proto::TensorProto, w: &[i8]) -> Net {
    let mut n = Net::new(&["x"]);
    n.qdq("x", 0.05, zp)
        .int8_weight("w", &[8, 8, 1, 1], w)
        .node("Conv", "conv", &["x.dq", "w.dq"], &["y"])
        .output("y");
    n
}

fn rules(findings: &[super::Finding]) -> Vec<&str> {
    findings.iter().map(|f| f.rule).collect()
}

fn run(n: &Net, target: &str) -> CheckReport {
    check(&n.model(), target)
}

#[test]
fn a_symmetric_int8_conv_passes_tensorrt() {
    let n = qdq_conv(i8_tensor("", &[], &[0]), &[1; 64]);
    let r = run(&n, "tensorrt");
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!((r.quantize_nodes, r.dequantize_nodes), (1, 2));
    assert!(
        r.notes.iter().any(|n| n.contains("do not apply")),
        "{:?}",
        r.notes
    );
}

#[test]
fn tensorrt_rejects_zero_points_uint8_and_int16() {
    let r = run(&qdq_conv(i8_tensor("", &[], &[3]), &[1; 64]), "tensorrt");
    assert!(
        rules(&r.violations).contains(&"zero_point_nonzero"),
        "{:?}",
        r.violations
    );
    let r = run(&qdq_conv(u8_tensor("", &[], &[128]), &[1; 64]), "tensorrt");
    assert!(
        rules(&r.violations).contains(&"uint8"),
        "{:?}",
        r.violations
    );
    let r = run(&qdq_conv(i16_tensor("", &[], &[0]), &[1; 64]), "tensorrt");
    assert!(rules(&r.violations).contains(&"type"), "{:?}", r.violations);
    // ONNX Runtime takes all three.
    for zp in [u8_tensor("", &[], &[128]), i16_tensor("", &[], &[0])] {
        let r = run(&qdq_conv(zp, &[1; 64]), "ort");
        assert!(r.violations.is_empty(), "{:?}", r.violations);
    }
}

#[test]
fn tensorrt_rejects_scales_that_are_not_positive_constants() {
    let mut n = qdq_conv(i8_tensor("", &[], &[0]), &[1; 64]);
    let s = n.inits.iter_mut().find(|t| t.name() == "x.s").unwrap();
    *s = crate::onnx::tensor::f32_tensor("x.s", &[], &[-0.05]);
    let r = run(&n, "tensorrt");
    assert!(
        rules(&r.violations).contains(&"scale_not_positive"),
        "{:?}",
        r.violations
    );
    // a scale computed at run time
    let mut n = Net::new(&["x", "scale"]);
    n.init(i8_tensor("zp", &[], &[0]))
        .node("QuantizeLinear", "q", &["x", "scale", "zp"], &["xq"])
        .node("DequantizeLinear", "dq", &["xq", "scale", "zp"], &["y"])
        .output("y");
    let r = run(&n, "tensorrt");
    assert!(
        rules(&r.violations).contains(&"scale_not_constant"),
        "{:?}",
        r.violations
    );
}

#[test]
fn qoperator_ops_are_not_for_tensorrt() {
    let mut n = Net::new(&["x"]);
    n.node("QLinearConv", "qconv", &["x"], &["y"]).output("y");
    let r = run(&n, "tensorrt");
    assert_eq!(rules(&r.violations), ["qoperator"]);
}

/// ONNX Runtime fuses a node unit only when the unit's output is quantized too: a QDQ Conv
/// whose output stays float is an incomplete unit.
#[test]
fn ort_warns_of_incomplete_node_units() {
    let n = qdq_conv(u8_tensor("", &[], &[128]), &[1; 64]);
    let r = run(&n, "ort");
    assert!(
        rules(&r.warnings).contains(&"incomplete_unit"),
        "{:?}",
        r.warnings
    );
    let mut done = qdq_conv(u8_tensor("", &[], &[128]), &[1; 64]);
    done.outputs.clear();
    done.qdq("y", 0.1, u8_tensor("", &[], &[0])).output("y.dq");
    let r = run(&done, "ort");
    assert!(
        !rules(&r.warnings).contains(&"incomplete_unit"),
        "{:?}",
        r.warnings
    );
}

/// OpenVINO runs a Conv in int8 only when both data and weight are quantized: a Conv with an
/// int8 weight reading float data (in a model whose activations are quantized elsewhere) is
/// half quantized; a float weight read through a DequantizeLinear on purpose is not.
#[test]
fn openvino_warns_of_half_quantized_convs() {
    let mut n = qdq_conv(i8_tensor("", &[], &[0]), &[1; 64]);
    n.int8_weight("w2", &[8, 8, 1, 1], &[1; 64])
        .node("Conv", "conv2", &["x", "w2.dq"], &["y2"])
        .output("y2");
    let r = run(&n, "openvino");
    let half: Vec<&str> = r
        .warnings
        .iter()
        .filter(|f| f.rule == "half_quantized")
        .map(|f| f.node.as_str())
        .collect();
    assert_eq!(half, ["conv2"], "{:?}", r.warnings);
    let full = qdq_conv(i8_tensor("", &[], &[0]), &[1; 64]);
    let r = run(&full, "openvino");
    assert!(
        !rules(&r.warnings).contains(&"half_quantized"),
        "{:?}",
        r.warnings
    );
}

/// Two large same-sign int8 weights along the input channels make a pair that a saturating
/// int16 cannot hold for every uint8 input (255 · (100 + 100) > 32767): flagged for the CPU
/// targets with the worst pair, not for small weights.
#[test]
fn cpu_targets_flag_weight_pairs_over_the_int16_bound() {
    let mut w = [1i8; 64];
    w[0] = 100; // output channel 0, input channels 0 and 1: a pair
    w[1] = 100;
    for target in ["ort", "openvino"] {
        let r = run(&qdq_conv(u8_tensor("", &[], &[0]), &w), target);
        let pairs: Vec<_> = r
            .warnings
            .iter()
            .filter(|f| f.rule == "cpu_pair_overflow")
            .collect();
        assert_eq!(pairs.len(), 1, "{target}: {:?}", r.warnings);
        assert!(pairs[0].message.contains("200"), "{}", pairs[0].message);
        assert_eq!(r.cpu_pairs.len(), 1);
        let r = run(&qdq_conv(u8_tensor("", &[], &[0]), &[60; 64]), target);
        assert!(
            !rules(&r.warnings).contains(&"cpu_pair_overflow"),
            "{:?}",
            r.warnings
        );
    }
    let r = run(&qdq_conv(i8_tensor("", &[], &[0]), &w), "tensorrt");
    assert!(!rules(&r.warnings).contains(&"cpu_pair_overflow"));
}

/// int4 blocks feeding a MatMul whose data input is quantized: TensorRT takes int4 for
/// weight-only quantization (TensorRT-RTX 1.7 fails to build it); weight-only is fine.
#[test]
fn tensorrt_rejects_int4_blocks_read_with_a_quantized_input() {
    use crate::onnx::tensor::{f32_tensor, i4_tensor};
    for quantized in [true, false] {
        let mut n = Net::new(&["x"]);
        let x = if quantized {
            n.qdq("x", 0.05, i8_tensor("", &[], &[0]));
            "x.dq"
        } else {
            "x"
        };
        n.init(i4_tensor("w", &[32, 8], &[1; 256]))
            .init(f32_tensor("w.s", &[1, 8], &[0.1; 8]))
            .node("DequantizeLinear", "w_dq", &["w", "w.s"], &["w.dq"])
            .attr_int("axis", 0)
            .attr_int("block_size", 32)
            .node("MatMul", "mm", &[x, "w.dq"], &["y"])
            .output("y");
        let r = run(&n, "tensorrt");
        let found = rules(&r.violations).contains(&"int4_blocks_with_quantized_input");
        assert_eq!(found, quantized, "{:?}", r.violations);
        if quantized {
            let v = r
                .violations
                .iter()
                .find(|v| v.rule == "int4_blocks_with_quantized_input");
            assert!(v.unwrap().message.contains("`mm`"), "{v:?}");
        }
    }
}
