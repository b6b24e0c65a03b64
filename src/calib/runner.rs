//! The only module that knows tract: it types the float model (element types and shapes of every
//! tensor, for planning) and runs it over the calibration samples, observing every planned
//! tensor by its ONNX name.
//!
//! Observed tensors are selected as model outputs before tract optimises the graph, so fusion
//! never hides them. Samples run in parallel, one tract state per thread; statistics are merged
//! at the end (min/max merging is order-independent, so results do not depend on the thread
//! count).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use prost::Message;
use tract_onnx::prelude::*;

use super::array::InputSpec;
use super::array::{Array, Elem};
use super::observer::{Observe, Observer};
use super::source::Dataset;
use super::source::Sample;
use crate::error::{CalibError, Error, ModelError};
use crate::ir::TensorInfo;
use crate::proto::{GraphProto, ModelProto};
use crate::stats::{StatsTable, TensorStats};

/// A caller's collectors riding along a calibration run: each thread's collector receives
/// `tensors()` (float32) of every sample it runs.
pub trait Extra: Sync {
    fn tensors(&self) -> &[String];
    fn collector(&self) -> Box<dyn Collect + '_>;
}

/// The model, ready to hand to tract.
pub struct Runner {
    path: PathBuf,
    source: Source,
    /// The parser: with or without the file's `value_info` ([`Runner::relaxed`]).
    onnx: tract_onnx::Onnx,
    /// The outlet of every ONNX tensor name (the same in every parse).
    outlets: HashMap<String, OutletId>,
}

/// What each use of the runner starts from.
enum Source {
    /// The parsed model, cloned for each use (its tensors are shared, so a clone is cheap).
    Parsed(InferenceModel),
    /// tract's protobuf, parsed again for each use, when its weights stay in external files:
    /// a parsed model kept here would hold every weight next to the packed copies of an
    /// optimized plan. `first` is the parse `new` made, for the first use.
    Proto {
        proto: Box<tract_onnx::pb::ModelProto>,
        dir: Option<String>,
        first: std::sync::Mutex<Option<InferenceModel>>,
    },
}

/// A protobuf at most this large, or one whose weights are in external files, is kept and
/// parsed for each use.
const REPARSE_MAX_BYTES: usize = 16 << 20;

/// Knobs of a calibration run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub threads: usize,
    pub progress: bool,
}

fn runtime_err(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::Runtime {
        path: path.to_path_buf(),
        message: format!("{e:#}"),
    }
}

impl Runner {
    /// Checks that tract implements every op (reporting all that it lacks at once) and converts
    /// the model to tract's protobuf types.
    pub fn new(model: &ModelProto, path: &Path) -> Result<Runner, ModelError> {
        Self::with_parser(model, path, tract_onnx::onnx())
    }

    /// The same, ignoring the shapes and types the file records for intermediate tensors
    /// (`value_info`): exporters record them for the shapes they traced with (batch 1, one
    /// image size), or as symbols tract cannot unify with the concrete shapes of the data.
    /// tract then infers every tensor from the inputs alone.
    pub fn relaxed(model: &ModelProto, path: &Path) -> Result<Runner, ModelError> {
        Self::with_parser(model, path, tract_onnx::onnx().with_ignore_value_info(true))
    }

    /// Whether the model records facts about intermediate tensors a relaxed runner would ignore.
    pub fn records_value_info(model: &ModelProto) -> bool {
        fn any(g: &GraphProto) -> bool {
            !g.value_info.is_empty()
                || g.node.iter().any(|n| {
                    n.attribute
                        .iter()
                        .any(|a| a.g.iter().chain(&a.graphs).any(any))
                })
        }
        model.graph.as_ref().is_some_and(any)
    }

    fn with_parser(
        model: &ModelProto,
        path: &Path,
        onnx: tract_onnx::Onnx,
    ) -> Result<Runner, ModelError> {
        let mut missing = Vec::new();
        if let Some(g) = model.graph.as_ref() {
            unsupported_ops(g, &onnx.op_register.0, &mut missing);
        }
        if !missing.is_empty() {
            return Err(ModelError::UnsupportedOps {
                path: path.to_path_buf(),
                nodes: missing,
            });
        }
        // Our types carry every field; tract's older schema ignores what it does not know.
        let bytes = model.encode_to_vec();
        let mut proto = tract_onnx::pb::ModelProto::decode(bytes.as_slice())
            .map_err(|e| runtime_err(path, e))?;
        drop(bytes);
        if let Some(g) = proto.graph.as_mut() {
            default_constant_of_shape(g);
        }
        let dir = path.parent().and_then(|d| d.to_str()).map(str::to_string);
        let parsed = onnx
            .parse(&proto, dir.as_deref())
            .map_err(|e| runtime_err(path, e))?;
        let external = proto.graph.as_ref().is_some_and(|g| {
            g.initializer.iter().any(|t| {
                t.data_location == Some(tract_onnx::pb::tensor_proto::DataLocation::External as i32)
            })
        });
        let source = if external || proto.encoded_len() <= REPARSE_MAX_BYTES {
            Source::Proto {
                proto: Box::new(proto),
                dir,
                first: std::sync::Mutex::new(Some(parsed.model)),
            }
        } else {
            Source::Parsed(parsed.model)
        };
        Ok(Runner {
            path: path.to_path_buf(),
            source,
            onnx,
            outlets: parsed.outlets_by_name,
        })
    }

    fn parse(
        &self,
        inputs: &[InputSpec],
        shapes: &[Option<Vec<usize>>],
    ) -> TractResult<(InferenceModel, HashMap<String, OutletId>)> {
        let mut model = match &self.source {
            Source::Parsed(m) => m.clone(),
            Source::Proto { proto, dir, first } => {
                match first.lock().ok().and_then(|mut f| f.take()) {
                    Some(m) => m,
                    None => self.onnx.parse(proto, dir.as_deref())?.model,
                }
            }
        };
        let sources = model.input_outlets()?.to_vec();
        for (spec, shape) in inputs.iter().zip(shapes) {
            let (Some(shape), Some(outlet)) = (shape, self.outlets.get(&spec.name)) else {
                continue;
            };
            let Some(pos) = sources.iter().position(|s| s == outlet) else {
                continue;
            };
            model.set_input_fact(
                pos,
                InferenceFact::dt_shape(datum_type(spec.elem), shape.clone()),
            )?;
        }
        Ok((model, self.outlets.clone()))
    }

    /// Element type and shape of every named tensor, with the inputs fixed to `shapes`
    /// (`None`: leave that input's dims as the model declares them).
    pub fn analyse(
        &self,
        inputs: &[InputSpec],
        shapes: &[Option<Vec<usize>>],
    ) -> Result<HashMap<String, TensorInfo>, ModelError> {
        let run = || -> TractResult<HashMap<String, TensorInfo>> {
            let (mut model, outlets) = self.parse(inputs, shapes)?;
            let mut names: Vec<&String> = outlets.keys().collect();
            names.sort();
            let selected: Vec<OutletId> = names.iter().map(|n| outlets[*n]).collect();
            model.select_output_outlets(&selected)?;
            let typed = model.into_typed()?;
            let mut out = HashMap::new();
            for (i, name) in names.iter().enumerate() {
                let fact = typed.output_fact(i)?;
                let info = TensorInfo {
                    elem: elem_of(fact.datum_type),
                    shape: fact
                        .shape
                        .iter()
                        .map(|d| d.to_i64().ok().and_then(|v| usize::try_from(v).ok()))
                        .collect(),
                };
                out.insert((*name).clone(), info);
            }
            Ok(out)
        };
        run().map_err(|e| runtime_err(&self.path, e))
    }

    /// What tract knew about the inputs of the node its analysis failed on, when the message
    /// names one: (tract's node name, each input as `name: facts`). The analysis is run again
    /// without stopping at the failure, so the facts are the ones tract had inferred.
    pub fn diagnose(
        &self,
        message: &str,
        inputs: &[InputSpec],
        shapes: &[Option<Vec<usize>>],
    ) -> Option<(String, Vec<String>)> {
        let start = message.find("node #")?;
        let rest = &message[start..];
        let open = rest.find('"')? + 1;
        let close = open + rest[open..].find('"')?;
        let name = rest[open..close].to_string();
        let (mut model, _) = self.parse(inputs, shapes).ok()?;
        let _ = model.analyse(true);
        let node = model.node_by_name(&name).ok()?;
        let facts = node
            .inputs
            .iter()
            .map(|i| {
                let label = model.node(i.node).name.clone();
                let label = if model.node(i.node).outputs.len() > 1 {
                    format!("{label}:{}", i.slot)
                } else {
                    label
                };
                let fact = model
                    .outlet_fact(*i)
                    .map_or_else(|_| "?".to_string(), |f| format!("{f:?}"));
                format!("`{label}` {fact}")
            })
            .collect();
        Some((name, facts))
    }

    /// Runs every sample of `data` and returns the statistics `observe` asks for, of `tensors`.
    /// Tensors in `channels` also get per-channel moments along axis 1. `extra`'s collectors
    /// see their tensors of every sample in the same run.
    #[allow(clippy::too_many_arguments)]
    pub fn calibrate(
        &self,
        tensors: &[String],
        channels: &std::collections::BTreeSet<String>,
        inputs: &[InputSpec],
        shapes: &[Option<Vec<usize>>],
        data: Dataset,
        opts: &RunOptions,
        observe: Observe,
        extra: Option<&dyn Extra>,
    ) -> Result<StatsTable, Error> {
        // the observed tensors first, then those only the extra collector reads
        let mut computed = tensors.to_vec();
        let mut at = Vec::new();
        for t in extra.map_or(&[][..], |e| e.tensors()) {
            at.push(match computed.iter().position(|c| c == t) {
                Some(i) => i,
                None => {
                    computed.push(t.clone());
                    computed.len() - 1
                }
            });
        }
        let plan = self.compile(Some(&computed), inputs, shapes)?;
        let total = data.len();
        let observer = |t: &String| {
            let o = Observer::new(observe);
            if channels.contains(t) {
                o.with_channels(1)
            } else {
                o
            }
        };
        let make = || CalibSink {
            tensors,
            observers: tensors.iter().map(observer).collect(),
            extra: extra.map(|e| (&at[..], e.collector())),
        };
        let sinks = drive(&[&plan], data, opts, make)?;
        let mut merged: Vec<Observer> = tensors.iter().map(observer).collect();
        for sink in sinks {
            for (m, o) in merged.iter_mut().zip(sink.observers) {
                m.merge(o);
            }
        }
        let stats: Vec<TensorStats> = merged.into_iter().map(Observer::finish).collect();
        let unobserved: Vec<String> = tensors
            .iter()
            .zip(&stats)
            .filter(|(_, s)| !s.minmax.is_observed())
            .map(|(t, _)| format!("`{t}`"))
            .collect();
        CalibError::unless_all_observed(unobserved)?;
        Ok(StatsTable {
            samples: total,
            tensors: tensors.iter().cloned().zip(stats).collect(),
            ..Default::default()
        })
    }

    /// Runs the model as it is (its own outputs, nothing observed) over `data`: the baseline
    /// calibration is compared with. Returns the number of samples run.
    pub fn infer(
        &self,
        inputs: &[InputSpec],
        shapes: &[Option<Vec<usize>>],
        data: Dataset,
        opts: &RunOptions,
    ) -> Result<usize, Error> {
        let plan = self.compile(None, inputs, shapes)?;
        let sinks = drive(&[&plan], data, opts, || CountSink(0))?;
        Ok(sinks.iter().map(|s| s.0).sum())
    }

    /// `model` compiled to compute `tensors` (or its own outputs): with the shapes the file
    /// records for intermediate tensors, or, when that fails and it records some, without them.
    pub fn compiled(
        model: &ModelProto,
        path: &Path,
        tensors: Option<&[String]>,
        inputs: &[InputSpec],
        shapes: &[Option<Vec<usize>>],
    ) -> Result<Compiled, Error> {
        match Runner::new(model, path)?.compile(tensors, inputs, shapes) {
            Err(Error::Model(ModelError::Runtime { .. })) if Runner::records_value_info(model) => {
                Runner::relaxed(model, path)?.compile(tensors, inputs, shapes)
            }
            other => other,
        }
    }

    /// The model compiled to compute `tensors` (or its own outputs), in that order.
    pub fn compile(
        &self,
        tensors: Option<&[String]>,
        inputs: &[InputSpec],
        shapes: &[Option<Vec<usize>>],
    ) -> Result<Compiled, Error> {
        let (mut model, outlets) = self
            .parse(inputs, shapes)
            .map_err(|e| runtime_err(&self.path, e))?;
        if let Some(tensors) = tensors {
            let missing: Vec<String> = tensors
                .iter()
                .filter(|t| !outlets.contains_key(*t))
                .map(|t| format!("`{t}`"))
                .collect();
            if !missing.is_empty() {
                return Err(CalibError::Unobserved { tensors: missing }.into());
            }
            let selected: Vec<OutletId> = tensors.iter().map(|t| outlets[t]).collect();
            model
                .select_output_outlets(&selected)
                .map_err(|e| runtime_err(&self.path, e))?;
        }
        let build = || -> TractResult<Arc<TypedRunnableModel>> {
            model.into_typed()?.into_optimized()?.into_runnable()
        };
        let plan = build().map_err(|e| runtime_err(&self.path, e))?;
        Ok(Compiled {
            plan,
            path: self.path.clone(),
        })
    }
}

/// Computes `needs` of a small model (a control-flow condition's cone) on one feed: each value
/// as integers (booleans as 0 and 1). `feed` gives an array for each of the model's inputs,
/// by name.
pub fn evaluate_once(
    model: &ModelProto,
    path: &Path,
    feed: &HashMap<String, Array>,
    needs: &[String],
) -> Result<Vec<Vec<i64>>, String> {
    let graph = model.graph.as_ref().ok_or("no graph")?;
    let inits: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name()).collect();
    let mut specs = Vec::new();
    let mut shapes = Vec::new();
    let mut values = TVec::new();
    for v in graph.input.iter().filter(|v| !inits.contains(v.name())) {
        let a = feed
            .get(v.name())
            .ok_or_else(|| format!("input `{}` has no value here", v.name()))?;
        specs.push(InputSpec {
            name: v.name().to_string(),
            elem: a.elem,
            dims: a.shape.iter().map(|&d| Some(d)).collect(),
        });
        shapes.push(Some(a.shape.clone()));
        values.push(to_tensor(a).map_err(|e| format!("{e:#}"))?);
    }
    let plan =
        Runner::compiled(model, path, Some(needs), &specs, &shapes).map_err(|e| e.to_string())?;
    let out = plan
        .plan
        .spawn()
        .and_then(|mut s| s.run(values))
        .map_err(|e| format!("{e:#}"))?;
    out.iter()
        .map(|v| {
            let t = if v.datum_type() == DatumType::Bool {
                v.cast_to::<u8>()?.cast_to::<i64>()?.into_owned()
            } else {
                v.cast_to::<i64>()?.into_owned()
            };
            Ok(t.try_as_plain_ram()?.as_slice::<i64>()?.to_vec())
        })
        .collect::<TractResult<Vec<Vec<i64>>>>()
        .map_err(|e| format!("{e:#}"))
}

/// A model ready to run, computing chosen tensors.
pub struct Compiled {
    plan: Arc<TypedRunnableModel>,
    path: PathBuf,
}

/// `ConstantOfShape` without a `value` makes float32 zeros (the ONNX spec); tract 0.23 makes
/// float64 zeros, which then meet float32 tensors (a MatMul fails to type). The value is made
/// explicit in tract's copy.
fn default_constant_of_shape(g: &mut tract_onnx::pb::GraphProto) {
    use tract_onnx::pb::{AttributeProto, TensorProto, attribute_proto::AttributeType};
    for node in &mut g.node {
        if node.op_type == "ConstantOfShape" && !node.attribute.iter().any(|a| a.name == "value") {
            node.attribute.push(AttributeProto {
                name: "value".into(),
                r#type: AttributeType::Tensor as i32,
                t: Some(TensorProto {
                    dims: vec![1],
                    data_type: tract_onnx::pb::tensor_proto::DataType::Float as i32,
                    float_data: vec![0.0],
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        for a in &mut node.attribute {
            for sub in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                default_constant_of_shape(sub);
            }
        }
    }
}

fn unsupported_ops(g: &GraphProto, known: &HashMap<String, impl Sized>, out: &mut Vec<String>) {
    for (id, node) in g.node.iter().enumerate() {
        if !known.contains_key(node.op_type()) {
            out.push(format!(
                "`{}` ({})",
                crate::ir::node_label(node, id),
                node.op_type()
            ));
        }
        for a in &node.attribute {
            for sub in a.g.iter().chain(&a.graphs) {
                unsupported_ops(sub, known, out);
            }
        }
    }
}

fn progress_bar(total: usize, visible: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !visible || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    let style = indicatif::ProgressStyle::with_template(
        "calibrating {bar:30} {pos}/{len} samples  {per_sec}  ETA {eta}",
    )
    .expect("static template");
    bar.set_style(style);
    bar
}

fn datum_type(elem: Elem) -> DatumType {
    match elem {
        Elem::F16 => DatumType::F16,
        Elem::F32 => DatumType::F32,
        Elem::F64 => DatumType::F64,
        Elem::I8 => DatumType::I8,
        Elem::I16 => DatumType::I16,
        Elem::I32 => DatumType::I32,
        Elem::I64 => DatumType::I64,
        Elem::U8 => DatumType::U8,
        Elem::U16 => DatumType::U16,
        Elem::U32 => DatumType::U32,
        Elem::U64 => DatumType::U64,
        Elem::Bool => DatumType::Bool,
    }
}

fn elem_of(dt: DatumType) -> Option<Elem> {
    Some(match dt {
        DatumType::F16 => Elem::F16,
        DatumType::F32 => Elem::F32,
        DatumType::F64 => Elem::F64,
        DatumType::I8 => Elem::I8,
        DatumType::I16 => Elem::I16,
        DatumType::I32 => Elem::I32,
        DatumType::I64 | DatumType::TDim => Elem::I64,
        DatumType::U8 => Elem::U8,
        DatumType::U16 => Elem::U16,
        DatumType::U32 => Elem::U32,
        DatumType::U64 => Elem::U64,
        DatumType::Bool => Elem::Bool,
        _ => return None,
    })
}

fn to_tensor(a: &Array) -> TractResult<TValue> {
    macro_rules! typed {
        ($t:ty, $n:expr) => {{
            let v: Vec<$t> = a
                .data
                .chunks_exact($n)
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size")))
                .collect();
            Tensor::from_shape(&a.shape, &v)?
        }};
    }
    let t = match a.elem {
        Elem::F16 => typed!(half::f16, 2),
        Elem::F32 => typed!(f32, 4),
        Elem::F64 => typed!(f64, 8),
        Elem::I8 => typed!(i8, 1),
        Elem::I16 => typed!(i16, 2),
        Elem::I32 => typed!(i32, 4),
        Elem::I64 => typed!(i64, 8),
        Elem::U8 => typed!(u8, 1),
        Elem::U16 => typed!(u16, 2),
        Elem::U32 => typed!(u32, 4),
        Elem::U64 => typed!(u64, 8),
        Elem::Bool => {
            let v: Vec<bool> = a.data.iter().map(|&b| b != 0).collect();
            Tensor::from_shape(&a.shape, &v)?
        }
    };
    Ok(t.into_tvalue())
}

mod drive;

use drive::{CalibSink, CountSink, drive};
pub use drive::{Collect, Floats, run_models};
