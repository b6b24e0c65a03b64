//! Unit tests of `simulate`.

use super::*;
use crate::onnx::tensor::{i8_tensor, u8_tensor};

fn dq_node(axis: Option<i64>, block: Option<i64>) -> NodeProto {
    let mut n = node("DequantizeLinear", &["w", "s", "z"], "y", "dq".into());
    for (k, v) in [("axis", axis), ("block_size", block)] {
        if let Some(v) = v {
            n.attribute.push(ir::int_attr(k, v));
        }
    }
    n
}

fn p(scale: Vec<f32>, scale_dims: Vec<usize>, zp: Vec<i32>) -> Params {
    Params {
        scale,
        scale_dims,
        zero_point: zp,
        grid: Grid::Int(-128, 127),
    }
}

#[test]
fn dequantizes_per_tensor_axis_and_block() {
    let q = i8_tensor("w", &[2, 4], &[1, 2, 3, 4, -1, -2, -3, -4]);
    let per_tensor = dequantize(
        &dq_node(None, None),
        "dq",
        &q,
        &p(vec![0.5], vec![], vec![1]),
    )
    .unwrap();
    assert_eq!(per_tensor, vec![0.0, 0.5, 1.0, 1.5, -1.0, -1.5, -2.0, -2.5]);
    let axis0 = dequantize(
        &dq_node(Some(0), None),
        "dq",
        &q,
        &p(vec![1.0, 2.0], vec![2], vec![0, 0]),
    )
    .unwrap();
    assert_eq!(axis0, vec![1.0, 2.0, 3.0, 4.0, -2.0, -4.0, -6.0, -8.0]);
    // blocks of 2 along axis 1: scale [2, 2]
    let blocks = dequantize(
        &dq_node(Some(1), Some(2)),
        "dq",
        &q,
        &p(vec![1.0, 10.0, 2.0, 20.0], vec![2, 2], vec![0; 4]),
    )
    .unwrap();
    assert_eq!(blocks, vec![1.0, 2.0, 30.0, 40.0, -2.0, -4.0, -60.0, -80.0]);
    // a last, shorter block
    let ragged = dequantize(
        &dq_node(Some(1), Some(3)),
        "dq",
        &q,
        &p(vec![1.0, 10.0, 2.0, 20.0], vec![2, 2], vec![0; 4]),
    )
    .unwrap();
    assert_eq!(ragged, vec![1.0, 2.0, 3.0, 40.0, -2.0, -4.0, -6.0, -80.0]);
    let wrong = dequantize(
        &dq_node(Some(1), Some(4)),
        "dq",
        &q,
        &p(vec![1.0, 10.0, 2.0, 20.0], vec![2, 2], vec![0; 4]),
    );
    assert!(wrong.unwrap_err().contains("block-wise scale"));
}

#[test]
fn reads_packed_int4_and_typed_fields() {
    let t = TensorProto {
        dims: vec![3],
        data_type: Some(DataType::Int4 as i32),
        raw_data: Some(vec![0x8f, 0x07].into()),
        ..Default::default()
    };
    assert_eq!(int_values(&t).unwrap(), vec![-1, -8, 7]);
    let u = u8_tensor("z", &[2], &[0, 255]);
    assert_eq!(int_values(&u).unwrap(), vec![0, 255]);
    let typed = TensorProto {
        dims: vec![2],
        data_type: Some(DataType::Int16 as i32),
        int32_data: vec![-300, 300],
        ..Default::default()
    };
    assert_eq!(int_values(&typed).unwrap(), vec![-300, 300]);
    let f8 = TensorProto {
        dims: vec![1],
        data_type: Some(DataType::Float8e4m3fn as i32),
        raw_data: Some(vec![0].into()),
        ..Default::default()
    };
    assert!(int_values(&f8).unwrap_err().contains("not simulated"));
}

fn tiny_qdq_model() -> ModelProto {
    use crate::proto::{GraphProto, ValueInfoProto};
    let vi = |n: &str| ValueInfoProto {
        name: Some(n.into()),
        ..Default::default()
    };
    let graph = GraphProto {
        node: vec![
            node("QuantizeLinear", &["x", "x_s", "x_z"], "x_q", "q".into()),
            node(
                "DequantizeLinear",
                &["x_q", "x_s", "x_z"],
                "x_dq",
                "dq".into(),
            ),
            {
                let mut n = node(
                    "DequantizeLinear",
                    &["w_q", "w_s", "w_z"],
                    "w",
                    "wdq".into(),
                );
                n.attribute.push(ir::int_attr("axis", 0));
                n
            },
            node("MatMul", &["x_dq", "w"], "y", "mm".into()),
        ],
        initializer: vec![
            f32_tensor("x_s", &[], &[0.5]),
            u8_tensor("x_z", &[], &[10]),
            i8_tensor("w_q", &[2, 2], &[1, -2, 3, 4]),
            f32_tensor("w_s", &[2], &[0.25, 2.0]),
            i8_tensor("w_z", &[2], &[0, 0]),
        ],
        input: vec![vi("x")],
        output: vec![vi("y")],
        ..Default::default()
    };
    crate::ir::testnet::model_of(graph)
}

#[test]
fn a_qdq_model_becomes_float_ops_and_dequantized_weights() {
    let sim = simulate(&tiny_qdq_model()).unwrap();
    let g = sim.model.graph.as_ref().unwrap();
    let ops: Vec<&str> = g.node.iter().map(|n| n.op_type()).collect();
    assert!(
        !ops.contains(&"QuantizeLinear") && !ops.contains(&"DequantizeLinear"),
        "{ops:?}"
    );
    for op in ["Div", "Round", "Add", "Min", "Max", "Sub", "Mul", "MatMul"] {
        assert!(ops.contains(&op), "{op} missing in {ops:?}");
    }
    // weights: (q - 0) * scale of their row (axis 0)
    let w = g.initializer.iter().find(|t| t.name() == "w").unwrap();
    assert_eq!(
        crate::onnx::tensor::f32_data(w).unwrap(),
        vec![0.25, -0.5, 6.0, 8.0]
    );
    // nothing left of the integer tensors and the Q/DQ parameters
    let names: Vec<&str> = g.initializer.iter().map(|t| t.name()).collect();
    for gone in ["w_q", "w_s", "w_z", "x_s", "x_z"] {
        assert!(!names.contains(&gone), "{gone} left in {names:?}");
    }
    assert_eq!(
        sim.activations,
        vec![SimSite {
            node: "q".into(),
            input: "x".into(),
            output: "x_dq".into()
        }]
    );
    assert_eq!(sim.constants, 1);
    assert!(crate::ir::verify(&sim.model).is_empty());
}

/// The float8 rounding graph, run in tract, gives what `to_fp8` (the quantizer's own
/// conversion) gives, bit for bit: ties, subnormals, powers of two and their neighbours,
/// saturation.
#[test]
fn float8_activations_round_as_quantize_linear_does() {
    use crate::onnx::tensor::fp8_tensor;
    use crate::params::{from_fp8, to_fp8};
    use prost::Message;
    use tract_onnx::prelude::*;
    let mut m = tiny_qdq_model();
    let g = m.graph.as_mut().unwrap();
    g.node.truncate(2); // x -> Q -> DQ -> x_dq
    g.initializer = vec![
        f32_tensor("x_s", &[], &[0.37]),
        fp8_tensor("x_z", &[], &[0]),
    ];
    g.output[0].name = Some("x_dq".into());
    g.input[0].r#type = Some(crate::proto::TypeProto {
        value: Some(crate::proto::type_proto::Value::TensorType(
            crate::proto::type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: None,
            },
        )),
        ..Default::default()
    });
    m.opset_import[0].version = Some(19);
    let sim = simulate(&m).unwrap();
    let mut xs: Vec<f32> = Vec::new();
    for b in 0u8..=0x7e {
        // every float8 value, the midpoints between neighbours, and a hair either side
        let (v, next) = (f64::from(from_fp8(b)), f64::from(from_fp8(b + 1)));
        let mid = if b == 0x7e { 464.0 } else { (v + next) / 2.0 };
        for t in [
            v,
            mid,
            mid * (1.0 - 1e-6),
            mid * (1.0 + 1e-6),
            v * (1.0 + 3e-7),
        ] {
            xs.push((t * 0.37) as f32);
            xs.push((-t * 0.37) as f32);
        }
    }
    xs.extend([1e4, -1e4, 500.0 * 0.37, 1e-12, 0.0]);
    let bytes = sim.model.encode_to_vec();
    let plan = tract_onnx::onnx()
        .model_for_read(&mut bytes.as_slice())
        .unwrap()
        .with_input_fact(0, f32::fact([xs.len()]).into())
        .unwrap()
        .into_runnable()
        .unwrap();
    let input = tract_ndarray::Array1::from(xs.clone()).into_tensor();
    let out = plan.run(tvec![input.into()]).unwrap();
    let got = out[0]
        .try_as_plain_ram()
        .unwrap()
        .as_slice::<f32>()
        .unwrap()
        .to_vec();
    for (x, g) in xs.iter().zip(&got) {
        let q = ((f64::from(*x) / f64::from(0.37f32)) as f32).clamp(-1e30, 1e30);
        let want = from_fp8(to_fp8(q)) * 0.37;
        assert_eq!(g.to_bits(), want.to_bits(), "x = {x}: {g} vs {want}");
    }
}

#[test]
fn quantized_tensors_read_by_other_ops_are_refused() {
    let mut m = tiny_qdq_model();
    let g = m.graph.as_mut().unwrap();
    g.node
        .push(node("Identity", &["x_q"], "z", "qlinear_reader".into()));
    let e = simulate(&m).unwrap_err();
    assert!(
        e.contains("`qlinear_reader` (Identity) reads the quantized tensor `x_q`"),
        "{e}"
    );
}
