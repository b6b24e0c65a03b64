//! A small builder of ONNX models for unit tests: nodes in order, initializers, every tensor
//! typed float32 of shape [1, 8, 4, 4] unless given another.

use std::collections::HashMap;

use crate::ir::{Elem, TensorInfo};
use crate::onnx::tensor::{f32_tensor, i8_tensor};
use crate::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto, attribute_proto::AttributeType,
};

/// A model under construction: nodes in order, initializers, and every tensor typed float32
/// of shape [1, 8, 4, 4] unless given another.
#[derive(Default)]
pub(crate) struct Net {
    pub nodes: Vec<NodeProto>,
    pub inits: Vec<TensorProto>,
    inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub types: HashMap<String, TensorInfo>,
}

fn info(shape: &[usize]) -> TensorInfo {
    TensorInfo {
        elem: Some(Elem::F32),
        shape: shape.iter().map(|&d| Some(d)).collect(),
    }
}

impl Net {
    pub fn new(inputs: &[&str]) -> Net {
        let mut n = Net::default();
        for i in inputs {
            n.inputs.push(i.to_string());
            n.types.insert(i.to_string(), info(&[1, 8, 4, 4]));
        }
        n
    }

    pub fn node(&mut self, op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> &mut Self {
        self.nodes.push(NodeProto {
            op_type: Some(op.into()),
            name: Some(name.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        });
        for o in outputs {
            self.types
                .entry(o.to_string())
                .or_insert_with(|| info(&[1, 8, 4, 4]));
        }
        self
    }

    pub fn attr_int(&mut self, name: &str, v: i64) -> &mut Self {
        let n = self.nodes.last_mut().expect("a node");
        n.attribute.push(AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Int as i32),
            i: Some(v),
            ..Default::default()
        });
        self
    }

    pub fn attr_ints(&mut self, name: &str, v: &[i64]) -> &mut Self {
        let n = self.nodes.last_mut().expect("a node");
        n.attribute.push(AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Ints as i32),
            ints: v.to_vec(),
            ..Default::default()
        });
        self
    }

    pub fn attr_float(&mut self, name: &str, v: f32) -> &mut Self {
        let n = self.nodes.last_mut().expect("a node");
        n.attribute.push(AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Float as i32),
            f: Some(v),
            ..Default::default()
        });
        self
    }

    /// `x` -> QuantizeLinear -> DequantizeLinear with scale `scale` and the zero-point `zp`
    /// (an initializer named `{x}.zp`): `{x}.q`, then `{x}.dq`.
    pub fn qdq(&mut self, x: &str, scale: f32, mut zp: TensorProto) -> &mut Self {
        let (s, z) = (format!("{x}.s"), format!("{x}.zp"));
        zp.name = Some(z.clone());
        self.inits.push(f32_tensor(&s, &[], &[scale]));
        self.inits.push(zp);
        let (q, dq) = (format!("{x}.q"), format!("{x}.dq"));
        self.node("QuantizeLinear", &format!("{x}_Q"), &[x, &s, &z], &[&q]);
        self.node(
            "DequantizeLinear",
            &format!("{x}_DQ"),
            &[&q, &s, &z],
            &[&dq],
        )
    }

    /// An int8 weight `name` of `dims` behind a per-output-channel DequantizeLinear (axis 0,
    /// scale 0.01, zero-points 0): `{name}.dq`.
    pub fn int8_weight(&mut self, name: &str, dims: &[usize], values: &[i8]) -> &mut Self {
        let (s, z, dq) = (
            format!("{name}.s"),
            format!("{name}.zp"),
            format!("{name}.dq"),
        );
        self.inits.push(i8_tensor(name, dims, values));
        self.inits
            .push(f32_tensor(&s, &[dims[0]], &vec![0.01; dims[0]]));
        self.inits
            .push(i8_tensor(&z, &[dims[0]], &vec![0; dims[0]]));
        self.node(
            "DequantizeLinear",
            &format!("{name}_DQ"),
            &[name, &s, &z],
            &[&dq],
        )
        .attr_int("axis", 0)
    }

    pub fn domain(&mut self, d: &str) -> &mut Self {
        self.nodes.last_mut().expect("a node").domain = Some(d.into());
        self
    }

    /// A 1x1 Conv weight [8, 8, 1, 1] (and its bias [8] when `bias`).
    pub fn conv(&mut self, name: &str, x: &str, y: &str, bias: bool) -> &mut Self {
        let w = format!("{name}.w");
        let values: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) / 32.0).collect();
        self.inits.push(f32_tensor(&w, &[8, 8, 1, 1], &values));
        let mut inputs = vec![x.to_string(), w];
        if bias {
            let b = format!("{name}.b");
            self.inits.push(f32_tensor(&b, &[8], &[0.1; 8]));
            inputs.push(b);
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.node("Conv", name, &refs, &[y])
    }

    pub fn init(&mut self, t: TensorProto) -> &mut Self {
        self.inits.push(t);
        self
    }

    pub fn typed(&mut self, tensor: &str, shape: &[usize]) -> &mut Self {
        self.types.insert(tensor.into(), info(shape));
        self
    }

    pub fn output(&mut self, o: &str) -> &mut Self {
        self.outputs.push(o.into());
        self
    }

    pub fn model(&self) -> ModelProto {
        let vi = |n: &String| ValueInfoProto {
            name: Some(n.clone()),
            ..Default::default()
        };
        model_of(GraphProto {
            name: Some("g".into()),
            node: self.nodes.clone(),
            initializer: self.inits.clone(),
            input: self.inputs.iter().map(vi).collect(),
            output: self.outputs.iter().map(vi).collect(),
            ..Default::default()
        })
    }
}

/// A model of IR 8 and opset 13 holding `graph`.
pub fn model_of(graph: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(graph),
        ..Default::default()
    }
}
