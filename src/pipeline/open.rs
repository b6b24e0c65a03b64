//! Load: the model opened and typed (input shapes applied, symbolic dims settled), its inputs
//! described for the data readers, and the runners tract compiles from it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::calib::{Elem, InputSpec, Runner, TensorInfo};
use crate::error::{Error, ModelError, UsageError};
use crate::onnx;
use crate::onnx::Loaded;
use crate::proto::tensor_shape_proto::dimension::Value as Dim;
use crate::proto::type_proto;

/// The model inputs a caller feeds, as calibration sees them.
pub fn input_specs(
    model: &crate::proto::ModelProto,
    path: &Path,
) -> Result<Vec<InputSpec>, ModelError> {
    let graph = crate::ir::graph(model);
    let index = crate::ir::Index::new(graph);
    let unsupported = |what: String| ModelError::Unsupported {
        path: path.to_path_buf(),
        what,
    };
    index
        .fed_inputs()
        .map(|v| {
            let Some(type_proto::Value::TensorType(t)) =
                v.r#type.as_ref().and_then(|t| t.value.as_ref())
            else {
                return Err(unsupported(format!(
                    "input `{}` that is not a tensor",
                    v.name()
                )));
            };
            let elem = Elem::from_onnx(t.elem_type()).ok_or_else(|| {
                unsupported(format!(
                    "input `{}` of type {}",
                    v.name(),
                    onnx::tensor::elem_type_name(t.elem_type())
                ))
            })?;
            let dims = t.shape.as_ref().map_or(vec![], |s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(Dim::DimValue(v)) if v > 0 => Some(v as usize),
                        _ => None,
                    })
                    .collect()
            });
            Ok(InputSpec {
                name: v.name().to_string(),
                elem,
                dims,
            })
        })
        .collect()
}

/// A loaded, checked model with its inputs.
pub struct Model {
    pub loaded: Loaded,
    pub inputs: Vec<InputSpec>,
}

/// Loads `path`, checks the graph and the opset, and lists the inputs a caller feeds.
/// Loads `path` for planning and calibration: large external weights stay on disk (tract reads
/// them itself) until [`build`] materializes its copy, so a model over 2 GB is not held twice.
pub fn open_model(path: &Path, shapes: &InputShapes) -> Result<Model, Error> {
    let mut loaded = onnx::load_deferring(path, crate::ir::deferrable_weights)?;
    let problems = crate::ir::verify(&loaded.model);
    if !problems.is_empty() {
        return Err(ModelError::Invalid {
            path: path.to_path_buf(),
            problems,
        }
        .into());
    }
    let opset = crate::ir::default_opset(&loaded.model).unwrap_or(0);
    if opset < 10 {
        let converted = crate::ir::upgrade_in_place(&mut loaded.model).map_err(|blockers| {
            ModelError::OpsetTooOld {
                path: path.to_path_buf(),
                opset,
                blockers,
            }
        })?;
        loaded.warnings.push(format!(
            "`{}` uses opset {opset}, older than QuantizeLinear (10): raised to opset 13{}",
            path.display(),
            if converted.is_empty() {
                String::new()
            } else {
                format!(", converting {}", converted.join(", "))
            }
        ));
    }
    let quantized = quantized_ops(&loaded.model);
    if !quantized.is_empty() {
        return Err(ModelError::AlreadyQuantized {
            path: path.to_path_buf(),
            ops: quantized,
        }
        .into());
    }
    let mut inputs = input_specs(&loaded.model, path)?;
    apply_input_shapes(&mut inputs, shapes, path)?;
    Ok(Model { loaded, inputs })
}

/// The integer ops of an already quantized model (ONNX Runtime's dynamic and QOperator formats,
/// its int4 MatMulNBits), counted per op, any subgraph included. QuantizeLinear and
/// DequantizeLinear are not among them: a QDQ model's float rest can still be quantized.
pub fn quantized_ops(model: &crate::proto::ModelProto) -> Vec<String> {
    const INTEGER: [&str; 12] = [
        "ConvInteger",
        "MatMulInteger",
        "DynamicQuantizeLinear",
        "DynamicQuantizeLSTM",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "MatMulNBits",
        "QGemm",
        "QAttention",
        "QEmbedLayerNormalization",
        "QOrderedMatMul",
        "QuantizeBFP",
    ];
    fn walk(g: &crate::proto::GraphProto, counts: &mut BTreeMap<String, usize>) {
        for n in &g.node {
            let op = n.op_type();
            if op.starts_with("QLinear") || INTEGER.contains(&op) {
                *counts.entry(op.to_string()).or_default() += 1;
            }
            for a in &n.attribute {
                a.g.iter()
                    .chain(&a.graphs)
                    .for_each(|sub| walk(sub, counts));
            }
        }
    }
    let mut counts = BTreeMap::new();
    if let Some(g) = model.graph.as_ref() {
        walk(g, &mut counts);
    }
    counts
        .into_iter()
        .map(|(op, n)| format!("{op} {n}"))
        .collect()
}

/// A runner, the types it found, and a note when it had to ignore the file's value_info.
pub(crate) struct Typed {
    pub runner: Runner,
    pub types: HashMap<String, TensorInfo>,
    pub note: Option<String>,
}

/// A runner for `model` and the type and shape of every tensor with the inputs fixed to
/// `shapes`. When tract's analysis fails and the file records shapes for intermediate tensors
/// (`value_info`: often stale, traced at batch 1 or as symbols), they are ignored and tract
/// infers every shape from the inputs alone; the note says so. A failure then names the node,
/// its op and what tract knew of its inputs.
pub(crate) fn typed_runner(
    model: &crate::proto::ModelProto,
    path: &Path,
    inputs: &[InputSpec],
    shapes: &[Option<Vec<usize>>],
) -> Result<Typed, Error> {
    let runner = Runner::new(model, path)?;
    let first = match runner.analyse(inputs, shapes) {
        Ok(types) => {
            return Ok(Typed {
                runner,
                types,
                note: None,
            });
        }
        Err(e) => e,
    };
    if !Runner::records_value_info(model) {
        return Err(untyped(&runner, model, first, inputs, shapes, false));
    }
    let relaxed = Runner::relaxed(model, path)?;
    match relaxed.analyse(inputs, shapes) {
        Ok(types) => {
            let why = match &first {
                ModelError::Runtime { message, .. } => {
                    message.lines().next().unwrap_or("").to_string()
                }
                other => other.to_string(),
            };
            let note = format!(
                "the shapes `{}` records for intermediate tensors (value_info) contradict the inputs' and were ignored; tract inferred every shape from the inputs (tract: {why})",
                path.display()
            );
            Ok(Typed {
                runner: relaxed,
                types,
                note: Some(note),
            })
        }
        Err(e) => Err(untyped(&relaxed, model, e, inputs, shapes, true)),
    }
}

/// A failed analysis as an error naming the node, when tract's message names one.
pub(super) fn untyped(
    runner: &Runner,
    model: &crate::proto::ModelProto,
    err: ModelError,
    inputs: &[InputSpec],
    shapes: &[Option<Vec<usize>>],
    relaxed: bool,
) -> Error {
    let ModelError::Runtime { path, message } = &err else {
        return err.into();
    };
    let Some((node, facts)) = runner.diagnose(message, inputs, shapes) else {
        return err.into();
    };
    let op =
        crate::ir::find_node(model, &node).map_or_else(String::new, |n| n.op_type().to_string());
    ModelError::Untyped(Box::new(crate::error::UntypedNode {
        path: path.clone(),
        node,
        op,
        inputs: facts,
        message: message.clone(),
        relaxed,
    }))
    .into()
}

/// The shape of each input when the model declares every dim (`None` where a dim is symbolic:
/// tract keeps the model's own symbols there).
pub fn declared_shapes(inputs: &[InputSpec]) -> Vec<Option<Vec<usize>>> {
    inputs
        .iter()
        .map(|i| i.dims.iter().copied().collect::<Option<Vec<usize>>>())
        .collect()
}

/// Shapes given for model inputs, by input name (`--input-shape NAME:D0,D1,...`).
pub type InputShapes = BTreeMap<String, Vec<usize>>;

/// Parses `NAME:D0,D1,...` (also `NAME:D0xD1x...`; `NAME:` for a scalar): the name is
/// everything before the last `:` (tensor names may hold `:` themselves).
pub fn parse_input_shape(s: &str) -> Result<(String, Vec<usize>), String> {
    let (name, dims) = s
        .rsplit_once(':')
        .filter(|(n, _)| !n.is_empty())
        .ok_or_else(|| format!("`{s}`: expected NAME:D0,D1,... (e.g. images:1,3,640,640)"))?;
    let dims = dims
        .split([',', 'x'])
        .filter(|d| !d.trim().is_empty())
        .map(|d| d.trim().parse::<usize>().ok().filter(|&v| v > 0))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| format!("`{s}`: every dim must be a positive integer"))?;
    Ok((name.to_string(), dims))
}

/// Applies the given shapes to the inputs: each must name an input, have its rank and agree
/// with the dims it declares.
pub(super) fn apply_input_shapes(
    inputs: &mut [InputSpec],
    shapes: &InputShapes,
    path: &Path,
) -> Result<(), Error> {
    for (name, dims) in shapes {
        let Some(spec) = inputs.iter_mut().find(|i| &i.name == name) else {
            let names: Vec<String> = inputs.iter().map(|i| format!("`{}`", i.name)).collect();
            return Err(UsageError::Invalid(format!(
                "--input-shape names `{name}`, which is not an input of `{}` (its inputs: {})",
                path.display(),
                names.join(", ")
            ))
            .into());
        };
        let declared: Vec<String> = spec
            .dims
            .iter()
            .map(|d| d.map_or("?".into(), |v| v.to_string()))
            .collect();
        let agrees = spec.dims.len() == dims.len()
            && spec
                .dims
                .iter()
                .zip(dims)
                .all(|(d, v)| d.is_none_or(|d| d == *v));
        if !agrees {
            return Err(UsageError::Invalid(format!(
                "--input-shape {name}:{} contradicts the shape `{}` declares for it, [{}]",
                dims.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                path.display(),
                declared.join(",")
            ))
            .into());
        }
        spec.dims = dims.iter().map(|&d| Some(d)).collect();
    }
    Ok(())
}

/// Shows the warnings loading `model` gave and reads the labels file, if any.
pub(super) fn warnings_and_labels(
    model: &Model,
    labels: Option<&Path>,
    warn: &dyn Fn(&str),
) -> Result<Option<Vec<i64>>, Error> {
    model.loaded.warnings.iter().for_each(|w| warn(w));
    Ok(labels.map(crate::calib::read_labels).transpose()?)
}
