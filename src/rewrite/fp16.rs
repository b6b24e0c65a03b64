//! `high_precision: fp16`: what the plan left float computes in float16.
//!
//! Runs on the finished QDQ model. The opset is raised to 19 (the first whose QuantizeLinear and
//! DequantizeLinear take float16 scales); every float32 initializer, Constant and Cast target
//! becomes float16 (finite values beyond ±65504 are clamped to it and counted); graph inputs and
//! outputs stay float32 behind a Cast, so callers feed and read what they did before. Scales
//! were already chosen as float16 values (`params::f16_ceil`), so converting them loses nothing.
//!
//! Types are inferred locally (no tract run): initializers and graph inputs declare theirs, and
//! each op's outputs follow its inputs except for the ops listed in [`output_types`]. Ops without
//! float16 in their ONNX type constraints, and ops outside the default domain, stay float32
//! between Casts; so do the inputs ONNX fixes to float32 (Resize's `scales`).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::ir::{self, Index, Names, Patch, Placement};
use crate::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, attribute_proto::AttributeType,
    tensor_proto::DataType, type_proto,
};

const F32: i32 = DataType::Float as i32;
const F16: i32 = DataType::Float16 as i32;
/// The first opset whose QuantizeLinear/DequantizeLinear take float16 scales.
pub const FP16_OPSET: i64 = 19;

/// What the conversion did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Fp16Report {
    /// float32 initializers (and Constant values) stored as float16.
    pub initializers: usize,
    /// Finite values beyond float16's range, clamped to ±65504.
    pub clamped_values: usize,
    /// Casts inserted (graph inputs and outputs, float32-only ops and inputs).
    pub casts: usize,
    /// Nodes kept in float32, with the reason.
    pub kept_fp32: Vec<String>,
    /// Concats between DequantizeLinear inputs and a QuantizeLinear output: ONNX Runtime (1.32,
    /// extended graph optimizations) fuses them into QLinearConcat, which takes float32 scales
    /// only, and then refuses the model.
    pub ort_concat_units: Vec<String>,
}

/// Why an op computes in float32 even in a float16 model, if it does.
fn keeps_fp32(node: &NodeProto) -> Option<&'static str> {
    if !ir::is_default_domain(node.domain()) {
        return Some("not a default-domain ONNX op: its float16 support is unknown");
    }
    match node.op_type() {
        "Range" | "NonMaxSuppression" => Some("its ONNX type constraints have no float16"),
        "RandomNormal" | "RandomUniform" | "RandomNormalLike" | "RandomUniformLike"
        | "Multinomial" | "Bernoulli" | "EyeLike" => Some("its output type is an attribute"),
        _ => None,
    }
}

/// Input slots ONNX fixes to float32 whatever the data type.
fn fp32_slot(op: &str, slot: usize) -> bool {
    matches!((op, slot), ("Resize", 2) | ("Upsample", 1))
}

/// Element types of a node's outputs, from its inputs' (`None`: unknown).
fn output_types(node: &NodeProto, input: &dyn Fn(usize) -> Option<i32>) -> Vec<Option<i32>> {
    use DataType as D;
    let n = node.output.len();
    let first = (0..node.input.len()).find_map(|i| {
        if node.input[i].is_empty() {
            None
        } else {
            input(i)
        }
    });
    let attr_tensor_type = |name: &str| {
        ir::attr(node, name)
            .and_then(|a| a.t.as_ref())
            .map(|t| t.data_type())
    };
    let fixed = |t: D| vec![Some(t as i32); n];
    let with_rest = |head: Option<i32>, rest: D| {
        let mut v = vec![Some(rest as i32); n];
        if let Some(x) = v.first_mut() {
            *x = head;
        }
        v
    };
    match node.op_type() {
        "Cast" => vec![ir::attr_int(node, "to").map(|t| t as i32); n],
        "CastLike" | "Where" => vec![input(1); n],
        "OneHot" => vec![input(2); n],
        "Constant" => {
            let t = if let Some(t) = attr_tensor_type("value") {
                Some(t)
            } else if ir::attr(node, "value_float").is_some()
                || ir::attr(node, "value_floats").is_some()
            {
                Some(F32)
            } else if ir::attr(node, "value_int").is_some()
                || ir::attr(node, "value_ints").is_some()
            {
                Some(D::Int64 as i32)
            } else {
                None
            };
            vec![t; n]
        }
        "ConstantOfShape" => vec![Some(attr_tensor_type("value").unwrap_or(F32)); n],
        "QuantizeLinear" => {
            let zp = node.input.get(2).filter(|s| !s.is_empty()).and(input(2));
            let dt = ir::attr_int(node, "output_dtype")
                .filter(|&d| d != 0)
                .map(|d| d as i32);
            vec![zp.or(dt).or(Some(D::Uint8 as i32)); n]
        }
        "DequantizeLinear" => vec![input(1); n],
        "Shape" | "Size" | "NonZero" | "ArgMax" | "ArgMin" | "NonMaxSuppression" => fixed(D::Int64),
        "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "Not" | "And" | "Or"
        | "Xor" | "IsNaN" | "IsInf" => fixed(D::Bool),
        "TopK" | "MaxPool" | "Unique" => with_rest(first, D::Int64),
        "Dropout" => with_rest(first, D::Bool),
        "ConvInteger" | "MatMulInteger" => fixed(D::Int32),
        "QLinearConv" | "QLinearMatMul" => vec![input(7); n],
        "RandomNormal" | "RandomUniform" | "EyeLike" | "RandomNormalLike" | "RandomUniformLike" => {
            vec![
                ir::attr_int(node, "dtype")
                    .map(|t| t as i32)
                    .or(first)
                    .or(Some(F32));
                n
            ]
        }
        "Multinomial" => {
            vec![Some(ir::attr_int(node, "dtype").map_or(D::Int32 as i32, |t| t as i32)); n]
        }
        _ if !ir::is_default_domain(node.domain()) => vec![None; n],
        _ => vec![first; n],
    }
}

fn elem_type(v: &crate::proto::ValueInfoProto) -> Option<i32> {
    match v.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(t) => t.elem_type,
        _ => None,
    }
}

fn set_elem_type(v: &mut crate::proto::ValueInfoProto, elem: i32) {
    if let Some(type_proto::Value::TensorType(t)) = v.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.elem_type = Some(elem);
    }
}

/// float16 bytes of float32 values, clamping finite values beyond ±65504; returns the count
/// clamped.
fn to_f16_raw(values: &[f32]) -> (Vec<u8>, usize) {
    let max = half::f16::MAX.to_f32();
    let mut clamped = 0;
    let raw = values
        .iter()
        .flat_map(|&v| {
            let v = if v.is_finite() && v.abs() > max {
                clamped += 1;
                max.copysign(v)
            } else {
                v
            };
            half::f16::from_f32(v).to_le_bytes()
        })
        .collect();
    (raw, clamped)
}

fn f16_tensor(t: &TensorProto, values: &[f32], report: &mut Fp16Report) -> TensorProto {
    let (raw, clamped) = to_f16_raw(values);
    report.clamped_values += clamped;
    report.initializers += 1;
    TensorProto {
        name: t.name.clone(),
        dims: t.dims.clone(),
        data_type: Some(F16),
        raw_data: Some(raw.into()),
        doc_string: t.doc_string.clone(),
        ..Default::default()
    }
}

fn cast_node(name: String, input: &str, output: &str, to: i32) -> NodeProto {
    NodeProto {
        name: Some(name),
        op_type: Some("Cast".into()),
        input: vec![input.to_string()],
        output: vec![output.to_string()],
        attribute: vec![ir::int_attr("to", i64::from(to))],
        ..Default::default()
    }
}

/// Converts `model` (a finished QDQ model) as the module documentation says. `Err` names what
/// prevents it: a subgraph, an op whose meaning changed before opset 19, a float32 tensor of
/// unknown origin.
pub fn convert(model: &mut ModelProto) -> Result<Fp16Report, String> {
    let graph = model.graph.as_ref().ok_or("model has no graph")?;
    if let Some((id, n)) = graph
        .node
        .iter()
        .enumerate()
        .find(|(_, n)| ir::has_subgraphs(n))
    {
        return Err(format!(
            "node `{}` ({}) has subgraphs, which the float16 conversion does not handle yet",
            ir::node_label(n, id),
            n.op_type()
        ));
    }
    // 1. opset 19
    {
        let index = Index::new(graph);
        let mut names = Names::new(&index);
        let up = ir::plan_upgrade(model, &mut names, FP16_OPSET).map_err(|b| {
            format!(
                "float16 scales need opset {FP16_OPSET}, and raising the opset is blocked by {}",
                b.join("; ")
            )
        })?;
        ir::apply(model, up.patch)
            .map_err(|e| format!("raising the opset broke the graph: {e}"))?;
    }
    let graph = model.graph.as_ref().expect("checked above");
    let index = Index::new(graph);
    let mut c = Conversion::new(graph, &index);
    c.initializers()?; // 3. the type each float32 tensor gets
    c.nodes();
    c.casts(); // 4. Casts where a reader wants the other type
    c.outputs(); // 5. graph outputs stay float32
    let (patch, report) = c.finish(); // 6. declared types follow
    ir::apply(model, patch).map_err(|e| format!("the float16 conversion broke the graph: {e}"))?;
    Ok(report)
}

/// The conversion of one graph under way: what is known of its tensors and what the patch
/// holds so far.
struct Conversion<'g> {
    graph: &'g GraphProto,
    index: &'g Index<'g>,
    names: Names,
    /// 2. the element type of every tensor, inferred locally
    types: HashMap<String, i32>,
    /// ops kept float32 that touch a float32 tensor, with why
    kept: BTreeMap<usize, &'static str>,
    /// float32 tensors that become float16 (the others stay float32)
    to_f16: HashSet<&'g str>,
    patch: Patch,
    replaced: BTreeMap<usize, NodeProto>,
    /// graph outputs whose producer now writes a float16 tensor of another name
    renamed_outputs: Vec<(String, String)>,
    report: Fp16Report,
}

impl<'g> Conversion<'g> {
    fn new(graph: &'g GraphProto, index: &'g Index<'g>) -> Self {
        let mut types: HashMap<String, i32> = HashMap::new();
        for v in &graph.input {
            if let Some(t) = elem_type(v) {
                types.insert(v.name().to_string(), t);
            }
        }
        for t in &graph.initializer {
            types.insert(t.name().to_string(), t.data_type());
        }
        for node in &graph.node {
            let outs = output_types(node, &|i| {
                node.input
                    .get(i)
                    .and_then(|n| types.get(n.as_str()).copied())
            });
            for (o, t) in node.output.iter().zip(outs) {
                if let Some(t) = t {
                    types.insert(o.clone(), t);
                }
            }
        }
        let is_f32 = |t: &str| types.get(t) == Some(&F32);
        let kept = graph
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| n.input.iter().chain(&n.output).any(|t| is_f32(t)))
            .filter_map(|(id, n)| keeps_fp32(n).map(|why| (id, why)))
            .collect();
        Conversion {
            graph,
            index,
            names: Names::new(index),
            types,
            kept,
            to_f16: HashSet::new(),
            patch: Patch::default(),
            replaced: BTreeMap::new(),
            renamed_outputs: Vec::new(),
            report: Fp16Report::default(),
        }
    }

    fn is_f32(&self, t: &str) -> bool {
        self.types.get(t) == Some(&F32)
    }

    /// The type input `slot` of node `id` wants.
    fn wants(&self, id: usize, slot: usize) -> i32 {
        let n = &self.graph.node[id];
        if self.kept.contains_key(&id) || fp32_slot(n.op_type(), slot) {
            F32
        } else {
            F16
        }
    }

    fn current(&self, t: &str) -> i32 {
        if self.to_f16.contains(t) { F16 } else { F32 }
    }

    /// float32 initializers some reader wants in float16 become float16.
    fn initializers(&mut self) -> Result<(), String> {
        let graph = self.graph;
        let graph_inputs: HashSet<&str> = graph.input.iter().map(|v| v.name()).collect();
        let graph_outputs: HashSet<&str> = graph.output.iter().map(|v| v.name()).collect();
        for t in &graph.initializer {
            let name = t.name();
            if t.data_type() != F32 || graph_inputs.contains(name) || graph_outputs.contains(name) {
                continue;
            }
            let readers = self.index.consumers(name);
            if readers.is_empty() || readers.iter().all(|&(r, s)| self.wants(r, s) == F32) {
                continue;
            }
            let values = crate::onnx::tensor::f32_data(t)
                .map_err(|e| format!("initializer `{name}` {e}"))?;
            self.patch.remove_initializers.push(name.to_string());
            let t16 = f16_tensor(t, &values, &mut self.report);
            self.patch.add_initializers.push(t16);
            self.to_f16.insert(name);
        }
        Ok(())
    }

    /// The float32 outputs of every node not kept float32 become float16 (ops whose output
    /// type an attribute sets are rewritten).
    fn nodes(&mut self) {
        let graph = self.graph;
        for (id, node) in graph.node.iter().enumerate() {
            if self.kept.contains_key(&id) || !node.output.iter().any(|o| self.is_f32(o)) {
                continue;
            }
            for o in &node.output {
                if self.is_f32(o) {
                    self.to_f16.insert(o);
                }
            }
            let n = retyped(node, &mut self.report);
            if n != *node {
                self.replaced.insert(id, n);
            }
        }
    }

    /// A Cast where a reader wants the other type, one per tensor and type.
    fn casts(&mut self) {
        let graph = self.graph;
        let mut casts: HashMap<(String, i32), String> = HashMap::new();
        for (id, node) in graph.node.iter().enumerate() {
            for (slot, input) in node.input.iter().enumerate() {
                if input.is_empty() || !self.is_f32(input) {
                    continue;
                }
                let want = self.wants(id, slot);
                if self.current(input) == want {
                    continue;
                }
                let key = (input.clone(), want);
                let cast = match casts.get(&key) {
                    Some(c) => c.clone(),
                    None => {
                        let suffix = if want == F16 { "fp16" } else { "fp32" };
                        let out = self.names.fresh(&format!("{input}_{suffix}"));
                        let name = self.names.fresh(&format!("{input}_cast_{suffix}"));
                        self.patch.nodes.push((
                            Placement::After(input.clone()),
                            cast_node(name, input, &out, want),
                        ));
                        self.report.casts += 1;
                        casts.insert(key, out.clone());
                        out
                    }
                };
                self.replaced
                    .entry(id)
                    .or_insert_with(|| node.clone())
                    .input[slot] = cast;
            }
        }
    }

    /// Graph outputs stay float32: the producer writes a float16 tensor, a Cast restores the
    /// name.
    fn outputs(&mut self) {
        let graph = self.graph;
        for out in &graph.output {
            let name = out.name();
            if self.current(name) != F16 {
                continue;
            }
            let Some((p, _)) = self.index.producer(name) else {
                continue;
            };
            let inner = self.names.fresh(&format!("{name}_fp16"));
            let n = self
                .replaced
                .entry(p)
                .or_insert_with(|| graph.node[p].clone());
            for o in n.output.iter_mut().filter(|o| o.as_str() == name) {
                *o = inner.clone();
            }
            for &(r, slot) in self.index.consumers(name) {
                let rn = self
                    .replaced
                    .entry(r)
                    .or_insert_with(|| graph.node[r].clone());
                if rn.input[slot] == name {
                    rn.input[slot] = inner.clone();
                }
            }
            let cname = self.names.fresh(&format!("{name}_cast_fp32"));
            self.patch.nodes.push((
                Placement::After(inner.clone()),
                cast_node(cname, &inner, name, F32),
            ));
            self.report.casts += 1;
            self.renamed_outputs.push((name.to_string(), inner));
        }
    }

    /// The patch, its declared types following, and the report (the Concat units ONNX Runtime
    /// would fuse, the ops kept float32 and why).
    fn finish(mut self) -> (Patch, Fp16Report) {
        let graph = self.graph;
        let index = self.index;
        self.report.ort_concat_units = graph
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                n.op_type() == "Concat"
                    && n.input.iter().all(|i| {
                        index
                            .producer(i)
                            .is_some_and(|(p, _)| graph.node[p].op_type() == "DequantizeLinear")
                    })
                    && n.output.first().is_some_and(|o| {
                        index
                            .consumers(o)
                            .iter()
                            .any(|&(c, _)| graph.node[c].op_type() == "QuantizeLinear")
                    })
            })
            .map(|(id, n)| format!("`{}`", ir::node_label(n, id)))
            .collect();
        self.report.kept_fp32 = self
            .kept
            .iter()
            .map(|(&id, why)| {
                format!(
                    "`{}` ({}): {why}",
                    ir::node_label(&graph.node[id], id),
                    graph.node[id].op_type()
                )
            })
            .collect();
        self.patch.replace.extend(self.replaced);
        let renamed: HashMap<String, String> = self.renamed_outputs.into_iter().collect();
        for v in &graph.value_info {
            let mut new = v.clone();
            if let Some(inner) = renamed.get(v.name()) {
                new.name = Some(inner.clone());
            }
            if self.to_f16.contains(v.name()) && elem_type(v) == Some(F32) {
                set_elem_type(&mut new, F16);
            }
            if &new != v {
                self.patch.value_info.push((v.name().to_string(), new));
            }
        }
        (self.patch, self.report)
    }
}

/// `node` with its output type set to float16 where an attribute sets it (Cast's `to`,
/// Constant's and ConstantOfShape's value).
fn retyped(node: &NodeProto, report: &mut Fp16Report) -> NodeProto {
    let mut n = node.clone();
    match node.op_type() {
        "Cast" => {
            for a in &mut n.attribute {
                if a.name() == "to" {
                    a.i = Some(i64::from(F16));
                }
            }
        }
        "Constant" | "ConstantOfShape" => {
            let mut value = None;
            for a in &n.attribute {
                let v = match a.name() {
                    "value" => {
                        a.t.as_ref()
                            .and_then(crate::ir::constant::float_values)
                            .map(|v| (v, a.t.as_ref().map_or(vec![], |t| t.dims.clone())))
                    }
                    "value_float" => Some((vec![a.f()], vec![])),
                    "value_floats" => Some((a.floats.clone(), vec![a.floats.len() as i64])),
                    _ => None,
                };
                if v.is_some() {
                    value = v;
                }
            }
            // ConstantOfShape without `value` fills float32 zeros
            let (values, dims) = value.unwrap_or((vec![0.0], vec![1]));
            let proto = TensorProto {
                dims,
                ..Default::default()
            };
            let t = f16_tensor(&proto, &values, report);
            n.attribute
                .retain(|a| !matches!(a.name(), "value" | "value_float" | "value_floats"));
            n.attribute.push(AttributeProto {
                name: Some("value".into()),
                r#type: Some(AttributeType::Tensor as i32),
                t: Some(t),
                ..Default::default()
            });
        }
        _ => {}
    }
    n
}
