//! The jobs, stage by stage: `quantize` (load → plan → statistics → ranges → rewrite → save),
//! `calibrate` (load → plan → statistics → stats file) and `run` (plain inference timing).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::atomic::Clash;
use crate::error::{Error, UsageError};

mod absorb;
mod build;
mod calibrate;
mod engine;
mod eval;
mod layers;
mod open;
mod plan;
mod quantize;
mod ranges;
mod scopes;
mod smooth;
mod tune;

pub(crate) use engine::{Engine, Scoped, Types};

pub use eval::{EvalJob, EvalReport, evaluate};
pub use tune::{SensitivityJob, SensitivityReport, sensitivity};

pub use crate::rewrite::Prep;
pub use calibrate::{CalibrateReport, calibrate_job, file_sha256, run_job};
pub(crate) use open::typed_runner;
pub use open::{
    InputShapes, Model, declared_shapes, input_specs, open_model, parse_input_shape, quantized_ops,
};
pub use plan::{Planning, Rules, plan_only};
pub use quantize::quantize;
pub(crate) use ranges::settle_on_statistics;
pub use tune::{Fallback, with_exceptions};

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

impl DataSource {
    /// How to run models over this data: its threads (at least one), a progress bar when
    /// `progress` and the data asks for one.
    pub(crate) fn run_options(&self, progress: bool) -> crate::calib::RunOptions {
        crate::calib::RunOptions {
            threads: self.threads.max(1),
            progress: progress && self.progress,
        }
    }
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
    /// Write the weights to `OUTPUT.data` even when the input model keeps them inside
    /// (`--external-data`; models with external data are always written with it).
    pub external_data: bool,
}

impl QuantizeJob {
    /// Refuses settings of the job that do not go together, as the command line does: library
    /// callers get the same checks (`pipeline::quantize` runs it first).
    pub fn check(&self) -> Result<(), Error> {
        combinations(
            &Combination {
                stats_file: matches!(self.stats, StatsSource::File(_)),
                calib: matches!(self.stats, StatsSource::Calibrate(_)),
                target: self.mixed.is_some(),
                per_layer: self.per_layer,
                holdout: self.mixed.as_ref().and_then(|m| m.holdout),
                write_config: false,
            },
            &self.planning.config,
        )
    }
}

/// What a quantize run asks for, as far as which settings go together.
pub struct Combination {
    /// Statistics from a file (`--stats`).
    pub stats_file: bool,
    /// Calibration data (`--calib`).
    pub calib: bool,
    /// An accuracy target (`--target-sqnr`, `--max-top1-drop`).
    pub target: bool,
    /// Per-layer accuracy (`--per-layer`, `--plot`).
    pub per_layer: bool,
    /// Held-out samples asked for (`--holdout`).
    pub holdout: Option<usize>,
    /// A settings file of the chosen layers asked for (`--write-config`).
    pub write_config: bool,
}

/// Refuses what does not go together in a quantize run (one message, the first that applies).
pub fn combinations(c: &Combination, config: &crate::config::Config) -> Result<(), Error> {
    let usage = |m: &str| Err(UsageError::Invalid(m.into()).into());
    if c.stats_file && (c.target || c.per_layer) {
        return usage(
            "--target-sqnr, --max-top1-drop, --per-layer and --plot measure the model on data: give --calib, not --stats",
        );
    }
    if !c.target && (c.holdout.is_some() || c.write_config) {
        return usage("--holdout and --write-config go with --target-sqnr or --max-top1-drop");
    }
    if c.holdout == Some(0) {
        return usage("--holdout must be at least 1");
    }
    if config.smoothquant.is_some() && (config.weight_only || !c.calib) {
        return usage(
            "SmoothQuant measures activations and changes the float model: it needs --calib (not --stats), and quantized activations (not weight_only)",
        );
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job(stats: StatsSource, per_layer: bool, config: crate::config::Config) -> QuantizeJob {
        QuantizeJob {
            input: "in.onnx".into(),
            output: "out.onnx".into(),
            stats,
            planning: Planning {
                config,
                overrides: Default::default(),
                allow_unmatched: false,
                input_shapes: Default::default(),
            },
            sources: Default::default(),
            trt_cache: None,
            labels: None,
            mixed: None,
            per_layer,
            external_data: false,
        }
    }

    /// Library callers get the command line's checks: per-layer accuracy needs data, not a
    /// statistics file; SmoothQuant needs calibration data.
    #[test]
    fn a_job_refuses_what_does_not_go_together() {
        let tensorrt = crate::config::Config::preset("tensorrt");
        let e = job(StatsSource::File("s.json".into()), true, tensorrt.clone())
            .check()
            .unwrap_err();
        assert!(e.to_string().contains("give --calib, not --stats"), "{e}");
        assert!(matches!(e, Error::Usage(_)), "{e:?}");
        assert!(
            job(StatsSource::File("s.json".into()), false, tensorrt.clone())
                .check()
                .is_ok()
        );
        let mut smooth = tensorrt;
        smooth.smoothquant = Some(0.5);
        let e = job(StatsSource::File("s.json".into()), false, smooth)
            .check()
            .unwrap_err();
        assert!(e.to_string().contains("SmoothQuant"), "{e}");
    }
}
