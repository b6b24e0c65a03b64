//! Unit tests of `opset`.

use super::*;
use crate::proto::GraphProto;
use crate::proto::attribute_proto::AttributeType;

fn node(op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec!["y".into()],
        attribute: attrs,
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

fn i64s(t: &TensorProto) -> Vec<i64> {
    t.raw_data
        .as_ref()
        .unwrap()
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Converts `n` from `from` to 13; returns it and the initializers it added.
fn convert(n: NodeProto, from: i64) -> Result<(NodeProto, Vec<TensorProto>), String> {
    convert_to(n, from, 13)
}

fn convert_to(
    mut n: NodeProto,
    from: i64,
    target: i64,
) -> Result<(NodeProto, Vec<TensorProto>), String> {
    let g = GraphProto::default();
    let mut names = crate::ir::Names::new(&crate::ir::Index::new(&g));
    let mut inits = Vec::new();
    convert_node(&mut n, (from, target), &mut inits, &mut names)?;
    Ok((n, inits))
}

#[test]
fn raising_to_21_keeps_or_refuses_what_changed_since_13() {
    let mode = |v: &str| string_attr("mode", v);
    // RoiAlign-10 sampled without the half-pixel shift, which opset 16 made the default
    let (n, _) = convert_to(node("RoiAlign", &["x", "r", "i"], vec![]), 13, 21).unwrap();
    let ctm = n
        .attribute
        .iter()
        .find(|a| a.name() == "coordinate_transformation_mode")
        .unwrap();
    assert_eq!(ctm.s(), b"output_half_pixel");
    // GridSample-16 `bilinear` is GridSample-20 `linear`
    let (n, _) = convert_to(
        node("GridSample", &["x", "g"], vec![mode("bilinear")]),
        16,
        21,
    )
    .unwrap();
    assert_eq!(n.attribute[0].s(), b"linear");
    let (n, _) = convert_to(
        node("GridSample", &["x", "g"], vec![mode("nearest")]),
        16,
        21,
    )
    .unwrap();
    assert_eq!(n.attribute[0].s(), b"nearest");
    // scale and bias per group (opset 18) mean something else per channel (opset 21)
    let e = convert_to(node("GroupNormalization", &["x", "s", "b"], vec![]), 18, 21).unwrap_err();
    assert!(e.contains("per channel"), "{e}");
    assert!(convert_to(node("DFT", &["x"], vec![]), 17, 21).is_err());
    // raising to 19 only touches what changed before 19
    assert!(convert_to(node("GroupNormalization", &["x", "s", "b"], vec![]), 18, 19).is_ok());
}

fn attr_names(n: &NodeProto) -> Vec<&str> {
    n.attribute.iter().map(|a| a.name()).collect()
}

#[test]
fn attributes_that_became_inputs_land_in_their_slots() {
    let (n, inits) = convert(
        node(
            "Slice",
            &["x"],
            vec![ints("starts", &[0]), ints("ends", &[4])],
        ),
        9,
    )
    .unwrap();
    assert_eq!(n.input, ["x", "y_starts", "y_ends"]);
    assert!(n.attribute.is_empty());
    assert_eq!(i64s(&inits[1]), [4]);

    // Clip-6 with only `max`: `min` stays an empty optional input
    let (n, inits) = convert(node("Clip", &["x"], vec![float("max", 6.0)]), 6).unwrap();
    assert_eq!(n.input, ["x", "", "y_max"]);
    assert!(inits[0].dims.is_empty(), "a scalar bound");

    let (n, _) = convert(
        node(
            "Pad",
            &["x"],
            vec![ints("pads", &[1, 1, 1, 1]), float("value", 0.5)],
        ),
        2,
    )
    .unwrap();
    assert_eq!(n.input, ["x", "y_pads", "y_value"]);

    let (n, inits) = convert(node("TopK", &["x"], vec![int_attr("k", 3)]), 1).unwrap();
    assert_eq!(n.input, ["x", "y_k"]);
    assert_eq!(
        (inits[0].dims.as_slice(), i64s(&inits[0])),
        (&[1][..], vec![3])
    );

    let (n, _) = convert(node("Reshape", &["x"], vec![ints("shape", &[1, -1])]), 1).unwrap();
    assert_eq!(n.input, ["x", "y_shape"]);
}

#[test]
fn upsample_becomes_the_equivalent_resize() {
    let scales = AttributeProto {
        name: Some("scales".into()),
        r#type: Some(AttributeType::Floats as i32),
        floats: vec![1.0, 1.0, 2.0, 2.0],
        ..Default::default()
    };
    let (n, inits) = convert(node("Upsample", &["x"], vec![scales]), 8).unwrap();
    assert_eq!(n.op_type(), "Resize");
    assert_eq!(n.input, ["x", "", "y_scales"]);
    assert_eq!(
        crate::onnx::tensor::f32_data(&inits[0]).unwrap(),
        [1.0, 1.0, 2.0, 2.0]
    );
    assert_eq!(
        attr_names(&n),
        ["coordinate_transformation_mode", "nearest_mode"]
    );
    // Upsample-9 already takes scales as an input
    let (n, _) = convert(node("Upsample", &["x", "s"], vec![]), 9).unwrap();
    assert_eq!(n.input, ["x", "", "s"]);
    // at opset 10 and later, Upsample is deprecated: blocked
    assert!(convert(node("Upsample", &["x", "s"], vec![]), 10).is_err());
}

#[test]
fn no_op_attributes_are_dropped_and_changed_meanings_block() {
    let (n, _) = convert(
        node("BatchNormalization", &["x"], vec![int_attr("spatial", 1)]),
        8,
    )
    .unwrap();
    assert!(n.attribute.is_empty());
    assert!(
        convert(
            node("BatchNormalization", &["x"], vec![int_attr("spatial", 0)]),
            8
        )
        .is_err()
    );

    let (n, _) = convert(node("Relu", &["x"], vec![ints("consumed_inputs", &[0])]), 1).unwrap();
    assert!(n.attribute.is_empty());
    let (n, _) = convert(node("Concat", &["a", "b"], vec![]), 1).unwrap();
    assert_eq!(attr_names(&n), ["axis"]);
    assert!(convert(node("ImageScaler", &["x"], vec![]), 8).is_err());
    assert!(convert(node("Cast", &["x"], vec![]), 5).is_err());
    // the same ops from a recent opset are left alone
    let (n, _) = convert(node("Concat", &["a", "b"], vec![]), 11).unwrap();
    assert!(n.attribute.is_empty());
}
