//! The jobs, stage by stage: `quantize` (load → plan → statistics → ranges → rewrite → save),
//! `calibrate` (load → plan → statistics → stats file) and `run` (plain inference timing).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::atomic::Clash;
use crate::calib::{Dataset, Elem, InputSpec, Observe, RunOptions, Runner, TensorInfo};
use crate::config::Config;
use crate::error::{CalibError, Error, ModelError, UsageError};
use crate::onnx::{self, Loaded, SaveOptions};
use crate::params::{ActivationScheme, Method, QParams, QType, activation_params, select_range};
use crate::policy::{self, Overrides, QuantPlan, SiteSettings};
use crate::proto::{tensor_shape_proto::dimension::Value as Dim, type_proto};
use crate::report::explain::{Explained, ExplainedSubgraph};
use crate::report::{ActivationReport, CalibrationReport, FileReport, Report};
use crate::rewrite::{self, ActivationParams};
use crate::stats::{self, MinMax, StatsFile, StatsTable, TensorStats};

mod engine;
mod eval;
mod scopes;
mod smooth;
mod tune;

pub(crate) use engine::{Engine, Scoped, Types};

pub use eval::{EvalJob, EvalReport, evaluate};
pub use tune::{SensitivityJob, SensitivityReport, sensitivity};

/// Calibration data to run.
#[derive(Clone, Debug)]
pub struct DataSource {
    pub path: PathBuf,
    pub max_samples: Option<usize>,
    pub threads: usize,
    pub progress: bool,
    /// `--nan-policy ignore`: NaN and ±infinity in observed tensors are skipped and counted
    /// instead of ending the run.
    pub skip_non_finite: bool,
    /// How image files among the data are read.
    pub images: crate::calib::ImageOptions,
}

/// Where activation statistics come from.
#[derive(Clone, Debug)]
pub enum StatsSource {
    /// Run the model over calibration data.
    Calibrate(DataSource),
    /// A statistics file from `onnx-quant calibrate`, or a TensorRT calibration cache.
    File(PathBuf),
    /// Nothing to calibrate (`weight_only`).
    None,
}

/// Everything the quantize job needs.
#[derive(Clone, Debug)]
pub struct QuantizeJob {
    pub input: PathBuf,
    pub output: PathBuf,
    pub stats: StatsSource,
    pub planning: Planning,
    /// Where each global setting comes from (key → layer), for the report.
    pub sources: BTreeMap<String, String>,
    /// Also write the chosen ranges as a TensorRT calibration cache.
    pub trt_cache: Option<PathBuf>,
    /// Labels of the calibration samples (for top-1 targets and figures).
    pub labels: Option<PathBuf>,
    /// Keep layers float until an accuracy target holds.
    pub mixed: Option<MixedJob>,
    /// Compare the written model with the input (outputs and every quantized tensor).
    pub per_layer: bool,
}

/// Automatic mixed precision settings.
#[derive(Clone, Debug)]
pub struct MixedJob {
    pub target: crate::accuracy::mixed::Target,
    pub strategy: crate::accuracy::mixed::Strategy,
    /// What the chosen layers fall back to.
    pub fallback: Fallback,
    /// Samples held out of range calibration to measure the target on (default: a quarter).
    pub holdout: Option<usize>,
}

/// Everything the calibrate job needs.
#[derive(Clone, Debug)]
pub struct CalibrateJob {
    pub input: PathBuf,
    pub data: DataSource,
    pub planning: Planning,
    pub stats_out: PathBuf,
    pub trt_cache: Option<PathBuf>,
}

/// Tensors at least this large go to the side file when the output uses external data.
const EXTERNAL_THRESHOLD: usize = 1024;

struct Clock {
    start: Instant,
    stages: Vec<(String, f64)>,
}

impl Clock {
    fn new() -> Self {
        Clock {
            start: Instant::now(),
            stages: Vec::new(),
        }
    }

    fn lap(&mut self, stage: &str) {
        let now = Instant::now();
        self.stages
            .push((stage.to_string(), (now - self.start).as_secs_f64() * 1e3));
        self.start = now;
    }
}

/// Refuses an output that would overwrite the input model or, once the model is loaded, one of
/// its data files (`side_files`), and an output folder that does not exist. `model`: the
/// output is a model, which may write `OUTPUT.data` too.
pub fn check_output(
    input: &Path,
    side_files: &[PathBuf],
    output: &Path,
    model: bool,
) -> Result<(), Error> {
    let protected: Vec<&Path> = std::iter::once(input)
        .chain(side_files.iter().map(PathBuf::as_path))
        .collect();
    match crate::atomic::check_destination(output, model, &protected) {
        Ok(()) => Ok(()),
        Err(Clash::DirMissing(dir)) => Err(crate::error::OutputError::DirMissing(dir).into()),
        Err(Clash::Protected(0)) => Err(UsageError::OutputIsInput(output.to_path_buf()).into()),
        Err(Clash::Protected(i)) => Err(UsageError::OutputIsInputData {
            output: output.to_path_buf(),
            input: protected[i].to_path_buf(),
        }
        .into()),
    }
}

/// The model inputs a caller feeds, as calibration sees them.
pub fn input_specs(
    model: &crate::proto::ModelProto,
    path: &Path,
) -> Result<Vec<InputSpec>, ModelError> {
    let graph = model.graph.as_ref().expect("loaded models have a graph");
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
fn untyped(
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

/// The plan, the model it is made for, and what is needed to calibrate it.
struct Planned {
    engine: Engine,
    plan: QuantPlan,
    /// The model to rewrite: the input, with the folds the preset asks for.
    written: crate::proto::ModelProto,
    data: Option<Dataset>,
    /// Tensor types found by tract (to plan again with other overrides).
    types: Types,
    /// Control nodes the copies tract runs keep, with why.
    kept: scopes::Kept,
    /// The plans of the subgraphs the copies tract runs reach.
    sub_plans: Vec<scopes::ScopePlan>,
    /// The tensors the subgraphs' plans observe.
    sub_observed: Vec<Scoped>,
    /// Those observed channel by channel.
    sub_channels: BTreeSet<Scoped>,
    /// Whether some subgraph site needs histograms or averaged extremes.
    sub_observe: Observe,
    /// What preparing `written` did (folds).
    prep: Prep,
}

/// What preparing the written model did: notes for the report, and the Relus folded into node
/// units (restored by the rewrite where the plan does not quantize that output exactly).
#[derive(Clone, Debug, Default)]
pub struct Prep {
    pub notes: Vec<String>,
    pub folded_relus: Vec<crate::ir::FoldedRelu>,
}

/// The model the quantized one is made from: the input, with BatchNormalization folded into
/// Convs and Relus folded into complete node units where the preset says so.
fn model_to_write(
    model: &crate::proto::ModelProto,
    config: &Config,
    prep: &mut Prep,
) -> Result<crate::proto::ModelProto, Error> {
    let notes = &mut prep.notes;
    let p = &config.placement;
    let mut m = if p.fold_batchnorm {
        let (m, n) = rewrite::fold_batchnorm(model)?;
        if n > 0 {
            notes.push(format!(
                "{n} BatchNormalization node(s) folded into the Conv before them"
            ));
        }
        m
    } else {
        model.clone()
    };
    if p.fold_relu && !config.activation.symmetric {
        let (folded, relus) = rewrite::fold_relu(&m, &p.output_ops)?;
        if !relus.is_empty() {
            let names: Vec<&str> = relus.iter().map(|r| r.label.as_str()).collect();
            notes.push(format!(
                "{} Relu (or Clip from 0) node(s) folded into the quantized output before them (asymmetric ranges clamp at 0, and at a Clip's bound, exactly): {}",
                relus.len(),
                names.join(", ")
            ));
        }
        prep.folded_relus = relus;
        m = folded;
    }
    Ok(m)
}

/// The settings and overrides a model is planned with.
#[derive(Clone, Debug)]
pub struct Planning {
    pub config: Config,
    pub overrides: Overrides,
    /// Overrides that select nothing are warnings instead of errors.
    pub allow_unmatched: bool,
    /// Shapes given for inputs (`--input-shape`), fixing their symbolic dims.
    pub input_shapes: InputShapes,
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
fn apply_input_shapes(
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

impl Planning {
    pub fn rules<'a>(&'a self, warn: &'a dyn Fn(&str)) -> Rules<'a> {
        Rules {
            config: &self.config,
            overrides: &self.overrides,
            allow_unmatched: self.allow_unmatched,
            input_shapes: &self.input_shapes,
            warn,
        }
    }
}

/// Plans `model` under `config` and the user's overrides. An override selecting nothing is an
/// error, or a warning with `allow_unmatched`.
pub struct Rules<'a> {
    pub config: &'a Config,
    pub overrides: &'a Overrides,
    pub allow_unmatched: bool,
    pub input_shapes: &'a InputShapes,
    pub warn: &'a dyn Fn(&str),
}

fn plan_model(model: &Model, data: Option<&DataSource>, rules: &Rules) -> Result<Planned, Error> {
    let config = rules.config;
    let data = match data {
        Some(d) => Some(Dataset::open(
            &d.path,
            &model.inputs,
            d.max_samples,
            &d.images,
        )?),
        None => None,
    };
    let engine = Engine::new(&model.loaded.model, &model.loaded.path, &model.inputs);
    let legs = engine.all_legs(data.as_ref())?;
    let types = Types::of(&legs);
    let kept: scopes::Kept = legs
        .iter()
        .flat_map(|(_, l)| l.flat.kept.iter())
        .map(|k| {
            (
                (crate::ir::control::scope_of(&k.instance), k.node.clone()),
                k.reason.clone(),
            )
        })
        .collect();
    let mut prep = Prep::default();
    if let Some(note) = legs.iter().find_map(|(_, l)| l.note.clone()) {
        prep.notes.push(note);
    }
    let written = model_to_write(&model.loaded.model, config, &mut prep)?;
    let subgraphs: Vec<&crate::proto::GraphProto> = crate::ir::control::scopes(&written)
        .iter()
        .filter_map(|s| crate::ir::control::subgraph(&written, s))
        .collect();
    let missing = policy::unmatched_anywhere(
        rules.overrides,
        written.graph.as_ref().expect("loaded models have a graph"),
        &subgraphs,
    );
    if !missing.is_empty() {
        if !rules.allow_unmatched {
            return Err(UsageError::Unmatched {
                file: rules.overrides.file.clone(),
                problems: missing,
            }
            .into());
        }
        missing.iter().for_each(|m| (rules.warn)(m));
    }
    let plan = replan(&written, &types.main, config, rules.overrides, &prep);
    if let Some(reason) = &plan.blocked {
        return Err(ModelError::OpsetBlocked {
            path: model.loaded.path.clone(),
            reason: reason.clone(),
        }
        .into());
    }
    let sub_plans = scopes::plan_scopes(&written, &types, config, rules.overrides);
    let sub_observed = scopes::observed(&sub_plans);
    let sub_channels = scopes::observed_by_channel(&sub_plans);
    let sub_observe = sub_plans
        .iter()
        .map(|p| observe_for(config, &p.plan))
        .fold(Observe::default(), Observe::union);
    Ok(Planned {
        engine,
        plan,
        written,
        data,
        types,
        kept,
        sub_plans,
        sub_observed,
        sub_channels,
        sub_observe,
        prep,
    })
}

/// Plans `written` under `overrides`, the preparation notes first.
fn replan(
    written: &crate::proto::ModelProto,
    types: &HashMap<String, TensorInfo>,
    config: &Config,
    overrides: &Overrides,
    prep: &Prep,
) -> QuantPlan {
    let mut plan = policy::plan(written, types, config, overrides);
    let mut notes = prep.notes.clone();
    notes.append(&mut plan.notes);
    plan.notes = notes;
    plan.folded_relus = prep.folded_relus.clone();
    // a unit's folded Relu or Clip output is clamped: the guard weighs the channels before it
    // (calibration runs the model with its activations, so that tensor is there)
    for probe in &mut plan.depthwise {
        if let Some(f) = prep.folded_relus.iter().find(|f| f.tensor == probe.output) {
            probe.output = f.relu.input[0].clone();
        }
    }
    plan
}

/// A quantized model built in memory, and what went into it.
struct Built {
    model: crate::proto::ModelProto,
    plan: QuantPlan,
    activations: Vec<ActivationReport>,
    rewritten: rewrite::RewriteReport,
    subgraphs: Vec<crate::report::SubgraphReport>,
}

/// What building needs besides the plan: the types (to plan again), the preparation, the
/// control nodes kept, the overrides the plan was made with.
#[derive(Clone, Copy)]
struct Subs<'a> {
    types: &'a Types,
    kept: &'a scopes::Kept,
    overrides: &'a Overrides,
    prep: &'a Prep,
    /// Whether calibration samples decided the branches (else the declared shapes did).
    data: bool,
}

/// Rounds of planning again with the nodes statistics showed should stay float.
const STATISTICS_ROUNDS: usize = 3;

/// Chooses every range from `stats` and rewrites a copy of `written` after `plan`, then the
/// subgraphs calibration reached.
fn build(
    written: &crate::proto::ModelProto,
    input: &Path,
    mut plan: QuantPlan,
    stats: &StatsTable,
    config: &Config,
    source: &Path,
    subs: Subs,
) -> Result<Built, Error> {
    let (plan_, act, activations) = settle_on_statistics(
        plan,
        written,
        stats,
        config,
        source,
        subs.overrides,
        &|o: &Overrides| replan(written, &subs.types.main, config, o, subs.prep),
    )?;
    plan = plan_;
    let mut model = written.clone();
    // the weights `open_model` left on disk (`written` is a copy of that model): each weight
    // quantized is read as its turn comes, what stays float afterwards
    let external = |t: &crate::proto::TensorProto| -> Result<Vec<f32>, Error> {
        Ok(onnx::read_external_f32(t, input)?)
    };
    let mut rewritten = rewrite::run(&mut model, &plan, &act, &external)?;
    let mut activations = activations;
    let mut subgraphs = Vec::new();
    if crate::ir::control::has_subgraphs(&model) {
        let done = scopes::quantize_scopes(
            &mut model,
            written,
            subs.types,
            subs.kept,
            subs.data,
            config,
            subs.overrides,
            stats,
            source,
            &external,
        )?;
        plan.nodes.extend(done.nodes);
        plan.notes.extend(done.notes);
        activations.extend(done.activations);
        rewritten.activations += done.subgraphs.iter().map(|s| s.activations).sum::<usize>();
        rewritten.weights.extend(done.weights);
        subgraphs = done.subgraphs;
    }
    onnx::materialize(&mut model, input)?;
    if !rewritten.restored_relus.is_empty() {
        plan.notes.push(format!(
            "{} folded Relu node(s) put back, their unit's output not being quantized with the zero-point at the type's minimum (kept float, or another range): {}",
            rewritten.restored_relus.len(),
            rewritten.restored_relus.join(", ")
        ));
    }
    Ok(Built {
        model,
        plan,
        activations,
        rewritten,
        subgraphs,
    })
}

/// What a calibration run measured, and about it.
struct Measured {
    stats: StatsTable,
    report: CalibrationReport,
}

fn calibrate(
    engine: &Engine,
    plan: &QuantPlan,
    (sub_observed, sub_channels): (&[Scoped], &BTreeSet<Scoped>),
    data: Dataset,
    src: &DataSource,
    observe: Observe,
    warn: &dyn Fn(&str),
) -> Result<Measured, Error> {
    let observe = Observe {
        skip_non_finite: src.skip_non_finite,
        ..observe
    };
    data.notes.iter().for_each(|n| warn(n));
    let samples = data.len();
    let skipped_files = data.skipped_files;
    let threads = src.threads.max(1);
    let stats = if plan.activations.is_empty() && sub_observed.is_empty() {
        StatsTable {
            samples,
            tensors: BTreeMap::new(),
        }
    } else {
        let opts = RunOptions {
            threads,
            progress: src.progress,
        };
        let mut wanted: Vec<Scoped> = plan.observed().iter().map(|t| Scoped::main(t)).collect();
        wanted.extend(sub_observed.iter().cloned());
        let mut channels: BTreeSet<Scoped> = plan
            .observed_by_channel()
            .iter()
            .map(|t| Scoped::main(t))
            .collect();
        channels.extend(sub_channels.iter().cloned());
        engine.calibrate(&wanted, &channels, data, &opts, observe)?
    };
    let skipped: Vec<String> = stats
        .tensors
        .iter()
        .filter(|(_, t)| t.non_finite > 0)
        .map(|(n, t)| format!("`{n}` {}", t.non_finite))
        .collect();
    if !skipped.is_empty() {
        warn(&format!(
            "--nan-policy ignore: NaN or infinite values left out of the ranges of {} tensor(s): {}",
            skipped.len(),
            skipped.join(", ")
        ));
    }
    Ok(Measured {
        stats,
        report: CalibrationReport {
            source: src.path.clone(),
            samples,
            skipped_files,
            threads,
        },
    })
}

/// SHA-256 of a file, in hex.
pub fn file_sha256(path: &Path) -> Result<String, ModelError> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).map_err(|source| ModelError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Loads statistics from a stats file or a TensorRT calibration cache.
fn load_stats(path: &Path, model: &Path, warn: &dyn Fn(&str)) -> Result<StatsTable, Error> {
    if !path.exists() {
        return Err(CalibError::NotFound(path.to_path_buf()).into());
    }
    if stats::is_trt_cache(path) {
        let amax = stats::read_trt_cache(path)?;
        let tensors = amax
            .into_iter()
            .map(|(name, a)| {
                let minmax = MinMax {
                    min: -a,
                    max: a,
                    count: 1,
                };
                (
                    name,
                    TensorStats {
                        minmax,
                        averaged: None,
                        histogram: None,
                        non_finite: 0,
                        channels: None,
                    },
                )
            })
            .collect();
        return Ok(StatsTable {
            samples: 0,
            tensors,
        });
    }
    let file = stats::load(path)?;
    if file.model_sha256 != file_sha256(model)? {
        warn(&format!(
            "statistics `{}` were measured on a model file with another SHA-256 than `{}`",
            path.display(),
            model.display()
        ));
    }
    Ok(StatsTable {
        samples: file.samples,
        tensors: file.tensors,
    })
}

/// Range, parameters and report line of every planned activation.
/// The method a site's range is chosen with: its override's, or the global one.
fn site_method(config: &Config, s: &SiteSettings) -> Method {
    let percentile = s.percentile.unwrap_or(config.percentile);
    match s.method.as_deref() {
        None => match config.method {
            Method::Percentile { .. } => Method::Percentile { percentile },
            m => m,
        },
        Some("minmax") => Method::MinMax { averaged: false },
        Some("percentile") => Method::Percentile { percentile },
        Some("entropy") => Method::Entropy,
        Some(_) => Method::Mse,
    }
}

fn activation_params_of(
    plan: &mut QuantPlan,
    model: &crate::proto::ModelProto,
    stats: &StatsTable,
    config: &Config,
    source: &Path,
) -> Result<(ActivationParams, Vec<ActivationReport>), Error> {
    let missing: Vec<String> = plan
        .activations
        .iter()
        .filter(|a| a.needs_stats() && !stats.tensors.contains_key(&a.tensor))
        .map(|a| format!("`{}`", a.tensor))
        .collect();
    if !missing.is_empty() {
        return Err(CalibError::BadFile {
            path: source.to_path_buf(),
            reason: format!(
                "holds no statistics for planned tensor(s) {}",
                missing.join(", ")
            ),
        }
        .into());
    }
    let scheme_of = |s: &SiteSettings| ActivationScheme {
        qtype: s.qtype.unwrap_or(config.activation.qtype),
        symmetric: s.symmetric.unwrap_or(config.activation.symmetric),
    };
    // each site's own range: set by an override, fixed by its producer, or chosen from its
    // statistics (a fixed scale needs none: its observed extremes stand in)
    let mut own: HashMap<String, (f32, f32)> = HashMap::new();
    for site in &plan.activations {
        let observed = stats.tensors.get(&site.tensor);
        let r = match (site.settings.range, site.fixed_range, observed) {
            (Some(r), _, _) | (None, Some(r), _) => r,
            (None, None, Some(s)) if site.settings.scale.is_some() => (s.minmax.min, s.minmax.max),
            (None, None, None) => (0.0, 0.0),
            (None, None, Some(s)) => select_range(
                s,
                site_method(config, &site.settings),
                scheme_of(&site.settings),
            )
            .map_err(|reason| CalibError::BadFile {
                path: source.to_path_buf(),
                reason: format!("tensor `{}`: {reason}", site.tensor),
            })?,
        };
        own.insert(site.tensor.clone(), r);
    }
    let mut notes = plan.split_disparate_concats(model, &own);
    plan.notes.append(&mut notes);
    let ranges: Vec<(f32, f32)> = plan.activations.iter().map(|a| own[&a.tensor]).collect();
    // tensors sharing a scale cover the union of their ranges
    let mut union: BTreeMap<usize, (f32, f32)> = BTreeMap::new();
    for (site, r) in plan.activations.iter().zip(&ranges) {
        if let Some(g) = site.group {
            let u = union.entry(g).or_insert(*r);
            *u = (u.0.min(r.0), u.1.max(r.1));
        }
    }
    let concat_groups = if config.concat_uint8 {
        plan.concat_conv_groups(model)
    } else {
        Default::default()
    };
    let mut act = ActivationParams {
        f16_scales: config.fp16,
        clip_search: config.clip_search,
        cpu_overflow: config.cpu_overflow,
        float_reads_per_axis: config.placement.float_reads_per_axis,
        ..ActivationParams::default()
    };
    let mut reports = Vec::new();
    for (site, own) in plan.activations.iter().zip(ranges) {
        let (lo, hi) = site.group.map_or(own, |g| union[&g]);
        let set = &site.settings;
        let unsigned = set.qtype.is_none()
            && ((config.unsigned_when_nonnegative
                && config.activation.qtype != QType::Int16
                && lo >= 0.0)
                || (config.concat_uint8
                    && config.activation.qtype == QType::Int8
                    && site.group.is_some_and(|g| concat_groups.contains(&g))));
        let scheme = if unsigned {
            ActivationScheme {
                qtype: QType::Uint8,
                symmetric: false,
            }
        } else {
            scheme_of(set)
        };
        let p = match set.scale {
            Some((scale, zp)) => {
                let natural = if scheme.qtype == QType::Uint8 && scheme.symmetric {
                    128
                } else {
                    0
                };
                QParams {
                    scale,
                    zero_point: zp.unwrap_or(natural),
                }
            }
            None => activation_params(lo, hi, scheme),
        };
        let p = if config.fp16 {
            crate::params::with_f16_scale(p, scheme, lo)
        } else {
            p
        };
        act.tensors.insert(site.tensor.clone(), (scheme.qtype, p));
        let (min, max) = stats
            .tensors
            .get(&site.tensor)
            .map_or((lo, hi), |s| (s.minmax.min, s.minmax.max));
        reports.push(ActivationReport {
            tensor: site.tensor.clone(),
            min,
            max,
            range: [lo, hi],
            dtype: scheme.qtype.name(),
            scale: p.scale,
            zero_point: p.zero_point,
            sqnr_db: stats
                .tensors
                .get(&site.tensor)
                .and_then(|s| s.histogram.as_ref())
                .and_then(|h| crate::params::histogram_sqnr_db(h, p, scheme.qtype)),
            decided_by: set
                .sources
                .iter()
                .map(|(f, o)| format!("{f}: {o}"))
                .collect(),
        });
    }
    Ok((act, reports))
}

/// Chooses every range of `plan` from `stats`; when the statistics show nodes that should stay
/// float ([`kept_float_by_statistics`]), plans again (`replan`, with them as automatic skips
/// over `overrides`) so that nothing quantized only for their sake stays, and chooses again.
/// A tensor the new plan needs and the statistics lack keeps its readers float too.
pub(crate) fn settle_on_statistics(
    mut plan: QuantPlan,
    model: &crate::proto::ModelProto,
    stats: &StatsTable,
    config: &Config,
    source: &Path,
    overrides: &Overrides,
    replan: &dyn Fn(&Overrides) -> QuantPlan,
) -> Result<(QuantPlan, ActivationParams, Vec<ActivationReport>), Error> {
    let (mut act, mut reports) = activation_params_of(&mut plan, model, stats, config, source)?;
    let mut overrides = overrides.clone();
    let graph = model.graph.as_ref().expect("loaded models have a graph");
    for _ in 0..STATISTICS_ROUNDS {
        let more: Vec<(String, String)> =
            kept_float_by_statistics(&plan, model, &act, stats, config)
                .into_iter()
                .filter(|(k, _)| !overrides.automatic.contains_key(k))
                .collect();
        if more.is_empty() {
            break;
        }
        overrides.automatic.extend(more);
        loop {
            plan = replan(&overrides);
            let unmeasured: Vec<(String, String)> = plan
                .activations
                .iter()
                .filter(|a| a.needs_stats() && !stats.tensors.contains_key(&a.tensor))
                .flat_map(|a| {
                    a.consumers.iter().map(move |&(id, _)| {
                        (
                            crate::ir::node_label(&graph.node[id], id),
                            format!(
                                "`{}` was not calibrated (planned after calibration)",
                                a.tensor
                            ),
                        )
                    })
                })
                .filter(|(k, _)| !overrides.automatic.contains_key(k))
                .collect();
            if unmeasured.is_empty() {
                break;
            }
            overrides.automatic.extend(unmeasured);
        }
        (act, reports) = activation_params_of(&mut plan, model, stats, config, source)?;
    }
    Ok((plan, act, reports))
}

/// The nodes calibration shows should stay float, with why: convolutions whose quiet
/// channels one int8 scale leaves in noise, and what would lose the small values a `Log`
/// reads. By node label, for [`Overrides::automatic`].
fn kept_float_by_statistics(
    plan: &QuantPlan,
    model: &crate::proto::ModelProto,
    act: &ActivationParams,
    stats: &StatsTable,
    config: &Config,
) -> BTreeMap<String, String> {
    let steps: HashMap<String, f32> = act
        .tensors
        .iter()
        .map(|(t, (_, p))| (t.clone(), p.scale))
        .collect();
    let spread =
        |t: &str| -> Option<Vec<f64>> { Some(stats.tensors.get(t)?.channels.as_ref()?.std()) };
    let share = |t: &str, below: f64| -> Option<f64> {
        let h = stats.tensors.get(t)?.histogram.as_ref()?;
        Some(h.share_below(below))
    };
    let amax = |t: &str| -> Option<f32> {
        let m = &stats.tensors.get(t)?.minmax;
        Some(m.min.abs().max(m.max.abs()))
    };
    let mut decided =
        plan.noisy_convolutions(model, &steps, &spread, config.placement.min_conv_sqnr);
    decided.extend(plan.small_log_inputs(model, &steps, &share, &amax));
    let graph = model.graph.as_ref().expect("loaded models have a graph");
    let mut out = BTreeMap::new();
    for (id, why) in decided {
        out.entry(crate::ir::node_label(&graph.node[id], id))
            .or_insert(why);
    }
    out
}

/// Absolute maximum of each chosen range, for a TensorRT calibration cache.
fn amax_table(reports: &[ActivationReport]) -> BTreeMap<String, f32> {
    reports
        .iter()
        .map(|r| (r.tensor.clone(), r.range[0].abs().max(r.range[1].abs())))
        .collect()
}

fn observe_for(config: &Config, plan: &QuantPlan) -> Observe {
    let methods: Vec<Method> = plan
        .activations
        .iter()
        .filter(|a| a.needs_stats())
        .map(|a| site_method(config, &a.settings))
        .collect();
    // a tensor whose small values reach a Log is quantized only if its histogram shows few
    let log_fed = !plan.log_probes.is_empty()
        || plan
            .activations
            .iter()
            .any(|a| a.needs_stats() && plan.log_fed.contains_key(&a.tensor));
    Observe {
        histogram_bins: (log_fed || methods.iter().any(|m| m.needs_histogram()))
            .then_some(config.bins),
        averaged: methods
            .iter()
            .any(|m| matches!(m, Method::MinMax { averaged: true })),
        skip_non_finite: false,
    }
}

/// Splits `set` into samples that calibrate and the last `holdout` (default: a quarter) that
/// measure; `needs` names what needs both, for the error when there is one sample only.
fn split_holdout(
    set: Dataset,
    holdout: Option<usize>,
    path: &Path,
    needs: &str,
) -> Result<(Dataset, Dataset), Error> {
    let n = set.len();
    if n < 2 {
        return Err(CalibError::BadFile {
            path: path.to_path_buf(),
            reason: format!("holds 1 sample: {needs} needs some to calibrate and some to measure"),
        }
        .into());
    }
    Ok(set.split_last(holdout.unwrap_or(n / 4).clamp(1, n - 1)))
}

/// Runs the quantize job. Warnings go to `warn` as soon as they are known (and into the report).
pub fn quantize(job: &QuantizeJob, warn: &dyn Fn(&str)) -> Result<Report, Error> {
    let mut clock = Clock::new();
    // before loading, which may take long; then with the data files loading found
    check_output(&job.input, &[], &job.output, true)?;
    let mut model = open_model(&job.input, &job.planning.input_shapes)?;
    check_output(&job.input, &model.loaded.side_files, &job.output, true)?;
    model.loaded.warnings.iter().for_each(|w| warn(w));
    let labels = job
        .labels
        .as_deref()
        .map(crate::calib::read_labels)
        .transpose()?;
    clock.lap("load");

    let data_src = match &job.stats {
        StatsSource::Calibrate(d) => Some(d),
        StatsSource::File(_) | StatsSource::None => None,
    };
    let smooth_notes = match (job.planning.config.smoothquant, data_src) {
        (Some(alpha), Some(d)) => {
            let notes = smooth::smooth_model(&mut model, d, alpha)?;
            clock.lap("smoothquant");
            notes
        }
        _ => Vec::new(),
    };
    let Planned {
        engine,
        plan,
        written,
        data,
        types,
        kept,
        sub_observed,
        sub_channels,
        sub_observe,
        prep,
        ..
    } = plan_model(&model, data_src, &job.planning.rules(warn))?;
    clock.lap("plan");
    let subs = Subs {
        types: &types,
        kept: &kept,
        overrides: &job.planning.overrides,
        prep: &prep,
        data: data.is_some(),
    };

    // with a target, the last samples are held out of calibration to measure it on
    let (data, holdout) = match (data, &job.mixed) {
        (Some(set), Some(mixed)) => {
            let path = data_src.map(|d| d.path.clone()).unwrap_or_default();
            let (head, tail) = split_holdout(set, mixed.holdout, &path, "an accuracy target")?;
            (Some(head), Some(tail))
        }
        (data, _) => (data, None),
    };
    let calib_part = data.clone();
    let (mut stats, calibration, source) = match (&job.stats, data) {
        (StatsSource::Calibrate(d), Some(data)) => {
            let m = calibrate(
                &engine,
                &plan,
                (&sub_observed, &sub_channels),
                data,
                d,
                observe_for(&job.planning.config, &plan).union(sub_observe),
                warn,
            )?;
            (m.stats, m.report, d.path.clone())
        }
        (StatsSource::None, _) => (
            StatsTable {
                samples: 0,
                tensors: BTreeMap::new(),
            },
            CalibrationReport {
                source: PathBuf::new(),
                samples: 0,
                skipped_files: 0,
                threads: 0,
            },
            PathBuf::new(),
        ),
        (_, _) => {
            let path = match &job.stats {
                StatsSource::File(p) => p,
                StatsSource::Calibrate(d) => &d.path,
                StatsSource::None => unreachable!("matched above"),
            };
            let stats = load_stats(path, &job.input, warn)?;
            let report = CalibrationReport {
                source: path.clone(),
                samples: stats.samples,
                skipped_files: 0,
                threads: 0,
            };
            (stats, report, path.clone())
        }
    };
    clock.lap("calibrate");

    let config = &job.planning.config;
    // tract's copy of the weights goes before the rewrite reads them (unless mixed precision
    // still runs versions of the model)
    let engine = job.mixed.is_some().then_some(engine);
    let mut built = build(&written, &job.input, plan, &stats, config, &source, subs)?;
    built.plan.notes.splice(0..0, smooth_notes);
    clock.lap("rewrite");

    let opts = |d: &DataSource| RunOptions {
        threads: d.threads.max(1),
        progress: false,
    };
    let label_ref = match (&job.labels, &labels) {
        (Some(path), Some(values)) => Some(crate::accuracy::compare::Labels { path, values }),
        _ => None,
    };
    let mut mixed_report = None;
    if let (Some(mixed), Some(holdout), Some(d), Some(engine)) =
        (&job.mixed, holdout.as_ref(), data_src, engine.as_ref())
    {
        let input = crate::accuracy::compare::Source {
            model: &model.loaded.model,
            path: &job.input,
        };
        let units = tune::units(&built.plan);
        let mut bench = tune::Bench {
            fallback: mixed.fallback,
            input: &job.input,
            written: &written,
            types: &types.main,
            subs,
            prep: &prep,
            config,
            user: &job.planning.overrides,
            engine,
            inputs: &model.inputs,
            calib: calib_part.clone(),
            src: d,
            stats: &mut stats,
            source: &source,
            reference: crate::accuracy::compare::Reference::new(
                input,
                &model.inputs,
                holdout.clone(),
                &opts(d),
            )?,
            labels: label_ref,
            output: &job.output,
        };
        let mut search =
            crate::accuracy::mixed::search(&units, mixed.target, mixed.strategy, &mut |f| {
                bench.score(f)
            })?;
        search.samples = bench.reference.samples();
        search.fallback = mixed.fallback.name();
        let chosen = search.chosen().float.clone();
        if !chosen.is_empty() {
            built = bench.build(&chosen)?;
        }
        built.plan.notes.push(format!(
            "mixed precision ({}, on {} held-out sample(s)): {} of {} quantized layer(s) kept {} by `{}` ({} configurations measured)",
            search.target,
            search.samples,
            chosen.len(),
            units.len(),
            mixed.fallback.name(),
            search.chosen().strategy,
            search.evaluations
        ));
        if !search.chosen().met {
            warn(&format!(
                "mixed precision: no choice of {} layers met {} on the held-out samples; written: the closest ({}, {} {} layer(s))",
                mixed.fallback.name(),
                search.target,
                search.chosen().score,
                chosen.len(),
                mixed.fallback.name()
            ));
        }
        mixed_report = Some(search);
        clock.lap("mixed-precision");
    }
    drop(engine);

    if let Some(cache) = &job.trt_cache {
        stats::write_trt_cache(cache, &amax_table(&built.activations))?;
    }
    let Model { loaded, inputs } = model;
    let save = SaveOptions {
        external: !loaded.side_files.is_empty(),
        external_threshold: EXTERNAL_THRESHOLD,
    };
    // accuracy is measured before the float16 conversion (the simulation is float32)
    let kept_model = job.per_layer.then(|| built.model.clone());
    let mut fp16 = None;
    let mut opset = built.rewritten.opset;
    if job.planning.config.fp16 {
        let r =
            crate::rewrite::fp16::convert(&mut built.model).map_err(|reason| ModelError::Fp16 {
                path: job.input.clone(),
                reason,
            })?;
        if !r.ort_concat_units.is_empty() {
            warn(&format!(
                "ONNX Runtime 1.32 with extended graph optimizations fuses {} into QLinearConcat, which rejects float16 scales: run `{}` there at ORT_ENABLE_BASIC, or quantize without --high-precision fp16 for ONNX Runtime",
                r.ort_concat_units.join(", "),
                job.output.display()
            ));
        }
        opset = Some(crate::rewrite::fp16::FP16_OPSET);
        clock.lap("float16");
        fp16 = Some(r);
    }
    let verdict = crate::check::check(&built.model, &config.target);
    if let Some(first) = verdict.violations.first() {
        let rules: Vec<String> = verdict
            .counts()
            .iter()
            .map(|(rule, n)| format!("{rule} {n}"))
            .collect();
        warn(&format!(
            "the output breaks {} rule(s) of its target, {} ({}; `onnx-quant check --target {}` lists them), e.g. `{}`: {}",
            verdict.violations.len(),
            config.target,
            rules.join(", "),
            config.target,
            first.node,
            first.message
        ));
    }
    let risky: Vec<&str> = verdict
        .warnings
        .iter()
        .filter(|w| w.rule == "cpu_pair_overflow")
        .map(|w| w.node.as_str())
        .collect();
    if let Some(first) = risky.first() {
        warn(&format!(
            "{} weighted op(s) of the output, e.g. `{first}`, have int8 weight pairs that x86 CPUs without VNNI (AVX2) can saturate in {}: set weights.cpu_overflow: auto (`onnx-quant check --target {}` lists them)",
            risky.len(),
            if config.target == "ort" {
                "ONNX Runtime"
            } else {
                "OpenVINO"
            },
            config.target
        ));
    }
    let saved = onnx::save(built.model, &job.output, &save)?;
    clock.lap("save");

    let mut accuracy = None;
    if let (Some(q), Some(d)) = (kept_model, data_src) {
        // held-out samples when there are some, else the calibration samples themselves
        let set = match holdout {
            Some(h) => h,
            None => Dataset::open(&d.path, &inputs, d.max_samples, &d.images)?,
        };
        let c = crate::accuracy::compare::compare(
            crate::accuracy::compare::Source {
                model: &loaded.model,
                path: &job.input,
            },
            crate::accuracy::compare::Source {
                model: &q,
                path: &job.output,
            },
            &inputs,
            set,
            &opts(d),
            label_ref,
            crate::accuracy::compare::Measure {
                per_layer: true,
                keep_outputs: false,
                labels_window: job.mixed.is_some(),
            },
        )?;
        accuracy = Some(c);
        clock.lap("evaluate");
    }

    let (data_files, data_bytes) = saved.data_file.map_or((vec![], 0), |(p, n)| (vec![p], n));
    Ok(Report {
        tool: format!("onnx-quant {}", env!("CARGO_PKG_VERSION")),
        input: FileReport {
            path: job.input.clone(),
            bytes: loaded.file_bytes,
            data_files: loaded.side_files,
            data_bytes: loaded.side_bytes,
        },
        output: Some(FileReport {
            path: saved.path,
            bytes: saved.file_bytes,
            data_files,
            data_bytes,
        }),
        config: job.planning.config.clone(),
        sources: job.sources.clone(),
        calibration,
        opset,
        nodes: built.plan.nodes,
        subgraphs: built.subgraphs,
        activations: built.activations,
        weights: built.rewritten.weights,
        notes: built.plan.notes,
        warnings: loaded.warnings,
        accuracy,
        mixed_precision: mixed_report,
        fp16,
        timings_ms: clock.stages,
    })
}

/// What mixed precision does with the layers it takes out of 8 bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// `skip: true`: the layer stays float.
    #[default]
    Float,
    /// `activations: {dtype: int16}`: the layer reads its activations in int16 (weights stay
    /// as they are); opset 21, ONNX Runtime and OpenVINO only.
    Int16,
}

impl Fallback {
    pub fn name(self) -> &'static str {
        match self {
            Fallback::Float => "float",
            Fallback::Int16 => "int16",
        }
    }
}

/// The user's overrides followed by one override per layer in `layers`: `skip: true`, or
/// int16 activations.
pub fn with_exceptions(user: &Overrides, layers: &[String], fallback: Fallback) -> Overrides {
    use crate::config::overrides::{ActivationOverride, Matcher, Override, Pattern};
    let mut o = user.clone();
    let first = o.list.len();
    o.list
        .extend(layers.iter().enumerate().map(|(i, name)| Override {
            number: first + i + 1,
            pos: Default::default(),
            matcher: Matcher {
                name: Some(Pattern::Exact(name.clone())),
                ..Default::default()
            },
            skip: (fallback == Fallback::Float).then_some(true),
            activations: match fallback {
                Fallback::Float => Default::default(),
                Fallback::Int16 => ActivationOverride {
                    dtype: Some(QType::Int16),
                    ..Default::default()
                },
            },
            weights: Default::default(),
        }));
    o
}

/// What `calibrate` wrote.
#[derive(Clone, Debug, Serialize)]
pub struct CalibrateReport {
    pub stats: PathBuf,
    pub tensors: usize,
    pub calibration: CalibrationReport,
    pub timings_ms: Vec<(String, f64)>,
}

/// Runs the model over calibration data and writes every statistic (min/max, per-sample
/// extremes, histograms) of the planned tensors, so any method can use the file later.
pub fn calibrate_job(job: &CalibrateJob, warn: &dyn Fn(&str)) -> Result<CalibrateReport, Error> {
    let mut clock = Clock::new();
    check_output(&job.input, &[], &job.stats_out, false)?;
    let model = open_model(&job.input, &job.planning.input_shapes)?;
    check_output(&job.input, &model.loaded.side_files, &job.stats_out, false)?;
    model.loaded.warnings.iter().for_each(|w| warn(w));
    let sha = file_sha256(&job.input)?;
    clock.lap("load");
    let Planned {
        engine,
        mut plan,
        written,
        data,
        sub_observed,
        sub_channels,
        ..
    } = plan_model(&model, Some(&job.data), &job.planning.rules(warn))?;
    clock.lap("plan");
    let data = data.expect("planned with data");
    let m = calibrate(
        &engine,
        &plan,
        (&sub_observed, &sub_channels),
        data,
        &job.data,
        Observe::all(job.planning.config.bins),
        warn,
    )?;
    clock.lap("calibrate");
    if let Some(cache) = &job.trt_cache {
        let (_, reports) = activation_params_of(
            &mut plan,
            &written,
            &m.stats,
            &job.planning.config,
            &job.data.path,
        )?;
        stats::write_trt_cache(cache, &amax_table(&reports))?;
    }
    let tensors = m.stats.tensors.len();
    stats::save(
        &job.stats_out,
        &StatsFile::new(sha, m.stats.samples, m.stats.tensors),
    )?;
    clock.lap("save");
    Ok(CalibrateReport {
        stats: job.stats_out.clone(),
        tensors,
        calibration: m.report,
        timings_ms: clock.stages,
    })
}

/// Runs the float model as it is over calibration data (no observation): the baseline the
/// calibration overhead is measured against. Returns (samples, seconds of inference).
pub fn run_job(
    input: &Path,
    data: &DataSource,
    shapes: &InputShapes,
) -> Result<(usize, f64), Error> {
    let model = open_model(input, shapes)?;
    let set = Dataset::open(&data.path, &model.inputs, data.max_samples, &data.images)?;
    let engine = Engine::new(&model.loaded.model, input, &model.inputs);
    // every part's copy compiled before the clock starts
    engine.all_legs(Some(&set))?;
    let opts = RunOptions {
        threads: data.threads.max(1),
        progress: data.progress,
    };
    let start = Instant::now();
    let n = engine.infer(set, &opts)?;
    Ok((n, start.elapsed().as_secs_f64()))
}

/// Plans `input` under `rules` without running calibration.
pub fn plan_only(input: &Path, rules: &Rules) -> Result<Explained, Error> {
    let model = open_model(input, rules.input_shapes)?;
    model.loaded.warnings.iter().for_each(|w| (rules.warn)(w));
    let Planned {
        plan,
        written,
        sub_plans,
        kept,
        ..
    } = plan_model(&model, None, rules)?;
    let mut subgraphs = Vec::new();
    let mut sub_plans: HashMap<_, _> = sub_plans
        .into_iter()
        .map(|p| (p.model.scope.clone(), p))
        .collect();
    for scope in crate::ir::control::scopes(&written) {
        let label = crate::ir::control::label(&written, &scope);
        match sub_plans.remove(&scope) {
            Some(p) => subgraphs.push(ExplainedSubgraph {
                label,
                plan: Some((p.plan, p.model.model)),
                reason: None,
            }),
            None => {
                let reason = scopes::untaken_reason(&scope, &label, &kept, false);
                subgraphs.push(ExplainedSubgraph {
                    label,
                    plan: None,
                    reason: Some(reason),
                })
            }
        }
    }
    Ok(Explained {
        plan,
        model: written,
        subgraphs,
    })
}
