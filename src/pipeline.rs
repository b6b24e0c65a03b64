//! The quantize job, stage by stage: load → plan → calibrate → parameters → rewrite → save.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::calib::{self, Dataset, Elem, InputSpec, RunOptions, Runner};
use crate::error::{Error, ModelError, UsageError};
use crate::onnx::{self, SaveOptions};
use crate::params::activation_params;
use crate::policy::{self, Settings};
use crate::proto::{ModelProto, tensor_shape_proto::dimension::Value as Dim, type_proto};
use crate::report::{ActivationReport, CalibrationReport, FileReport, Report};
use crate::rewrite::{self, ActivationParams};

/// Everything the quantize job needs.
#[derive(Clone, Debug)]
pub struct QuantizeJob {
    pub input: PathBuf,
    pub output: PathBuf,
    pub calib: PathBuf,
    pub max_samples: Option<usize>,
    pub settings: Settings,
    pub threads: usize,
    pub progress: bool,
}

/// Tensors at least this large go to the side file when the output uses external data.
const EXTERNAL_THRESHOLD: usize = 1024;

struct Clock {
    start: Instant,
    stages: Vec<(String, f64)>,
}

impl Clock {
    fn lap(&mut self, stage: &str) {
        let now = Instant::now();
        self.stages
            .push((stage.to_string(), (now - self.start).as_secs_f64() * 1e3));
        self.start = now;
    }
}

/// Refuses an output that would overwrite the input model or one of its data files, and an
/// output folder that does not exist, before any work is done.
pub fn check_output(input: &Path, side_files: &[PathBuf], output: &Path) -> Result<(), Error> {
    let dir = crate::atomic::parent_dir(output);
    if !dir.is_dir() {
        return Err(crate::error::OutputError::DirMissing(dir).into());
    }
    let canon = |p: &Path| -> Option<PathBuf> {
        let parent = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Some(parent.canonicalize().ok()?.join(p.file_name()?))
    };
    let out = canon(output);
    if out.is_some() && out == canon(input) {
        return Err(UsageError::OutputIsInput(output.to_path_buf()).into());
    }
    let data = out
        .as_ref()
        .map(|o| PathBuf::from(format!("{}.data", o.display())));
    for side in side_files {
        let side_c = canon(side);
        if side_c.is_some() && (side_c == out || side_c == data) {
            return Err(UsageError::OutputIsInputData {
                output: output.to_path_buf(),
                input: side.clone(),
            }
            .into());
        }
    }
    Ok(())
}

/// The model inputs a caller feeds, as calibration sees them.
pub fn input_specs(model: &ModelProto, path: &Path) -> Result<Vec<InputSpec>, ModelError> {
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

/// Runs the whole job. Warnings go to `warn` as soon as they are known (and into the report).
pub fn quantize(job: &QuantizeJob, warn: &dyn Fn(&str)) -> Result<Report, Error> {
    let mut clock = Clock {
        start: Instant::now(),
        stages: Vec::new(),
    };
    check_output(&job.input, &[], &job.output)?;
    let loaded = onnx::load(&job.input)?;
    check_output(&job.input, &loaded.side_files, &job.output)?;
    loaded.warnings.iter().for_each(|w| warn(w));
    let mut model = loaded.model;
    let problems = crate::ir::verify(&model);
    if !problems.is_empty() {
        return Err(ModelError::Invalid {
            path: job.input.clone(),
            problems,
        }
        .into());
    }
    let opset = crate::ir::default_opset(&model).unwrap_or(0);
    if opset < 10 {
        return Err(ModelError::OpsetTooOld {
            path: job.input.clone(),
            opset,
        }
        .into());
    }
    let inputs = input_specs(&model, &job.input)?;
    clock.lap("load");

    let data = Dataset::open(&job.calib, &inputs, job.max_samples)?;
    let shapes = data.fixed_shapes();
    let runner = Runner::new(&model, &job.input)?;
    let types = runner.analyse(&inputs, &shapes)?;
    let plan = policy::plan(&model, &types, &job.settings);
    clock.lap("plan");

    let samples = data.len();
    let skipped_files = data.skipped_files;
    let threads = job.threads.max(1);
    let stats = if plan.activations.is_empty() {
        calib::StatsTable::default()
    } else {
        let opts = RunOptions {
            threads,
            progress: job.progress,
        };
        runner.calibrate(&plan.observed(), &inputs, &shapes, data, &opts)?
    };
    drop(runner);
    clock.lap("calibrate");

    let scheme = job.settings.activation;
    let mut act = ActivationParams {
        qtype: Some(scheme.qtype),
        ..Default::default()
    };
    let mut activations = Vec::new();
    for site in &plan.activations {
        let mm = stats
            .tensors
            .get(&site.tensor)
            .ok_or_else(|| Error::Internal(format!("no statistics for `{}`", site.tensor)))?;
        let p = activation_params(mm.min, mm.max, scheme);
        act.tensors.insert(site.tensor.clone(), p);
        activations.push(ActivationReport {
            tensor: site.tensor.clone(),
            min: mm.min,
            max: mm.max,
            dtype: scheme.qtype.name(),
            scale: p.scale,
            zero_point: p.zero_point,
        });
    }
    let rewritten = rewrite::run(&mut model, &plan, &act)?;
    clock.lap("rewrite");

    let save = SaveOptions {
        external: !loaded.side_files.is_empty(),
        external_threshold: EXTERNAL_THRESHOLD,
    };
    let saved = onnx::save(model, &job.output, &save)?;
    clock.lap("save");

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
        settings: job.settings.clone(),
        calibration: CalibrationReport {
            source: job.calib.clone(),
            samples,
            skipped_files,
            threads,
        },
        opset: rewritten.opset,
        nodes: plan.nodes,
        activations,
        weights: rewritten.weights,
        notes: plan.notes,
        warnings: loaded.warnings,
        timings_ms: clock.stages,
    })
}
