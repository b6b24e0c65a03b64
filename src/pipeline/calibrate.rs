//! Statistics: the planned tensors observed over calibration data (or read from a statistics
//! file), held-out samples split off; the `calibrate` and `run` jobs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::calib::{Dataset, Extra, Observe, RunOptions};
use crate::config::Config;
use crate::error::{CalibError, Error, ModelError};
use crate::policy::QuantPlan;
use crate::report::CalibrationReport;
use crate::stats;
use crate::stats::{MinMax, StatsFile, StatsTable, TensorStats};

use super::open::{InputShapes, open_model};
use super::plan::{Planned, plan_model};
use super::ranges::{activation_params_of, amax_table};
use super::{CalibrateJob, Clock, DataSource, Engine, Scoped, check_output};

/// What a calibration run measured, and about it.
pub(super) struct Measured {
    pub(super) stats: StatsTable,
    pub(super) report: CalibrationReport,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn calibrate(
    engine: &Engine,
    plan: &QuantPlan,
    (sub_observed, sub_channels): (&[Scoped], &BTreeSet<Scoped>),
    data: Dataset,
    src: &DataSource,
    observe: Observe,
    extra: Option<&dyn Extra>,
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
    let stats = if plan.activations.is_empty() && sub_observed.is_empty() && extra.is_none() {
        StatsTable {
            samples,
            tensors: BTreeMap::new(),
            ..Default::default()
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
        engine.calibrate(&wanted, &channels, data, &opts, observe, extra)?
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

/// The `equalized` record of statistics measured under `config` (`StatsFile::equalized`).
pub(super) fn equalized_record(config: &Config) -> Option<String> {
    config.equalize.map(|m| m.name().to_string())
}

/// Loads statistics from a stats file or a TensorRT calibration cache; a stats file must have
/// been measured on the model prepared as `config` prepares it (equalized or not).
pub(super) fn load_stats(
    path: &Path,
    model: &Path,
    config: &Config,
    warn: &dyn Fn(&str),
) -> Result<StatsTable, Error> {
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
            ..Default::default()
        });
    }
    let file = stats::load(path)?;
    let wanted = equalized_record(config);
    if file.equalized != wanted {
        return Err(CalibError::BadFile {
            path: path.to_path_buf(),
            reason: format!(
                "holds the activations of the model {}, and this run quantizes the model {}: calibrate with the same `--equalize` (and `equalize_clip`) as quantize",
                stats::equalized_as(file.equalized.as_deref()),
                stats::equalized_as(wanted.as_deref())
            ),
        }
        .into());
    }
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
        ..Default::default()
    })
}

/// Splits `set` into samples that calibrate and the last `holdout` (default: a quarter) that
/// measure; `needs` names what needs both, for the error when there is one sample only.
pub(super) fn split_holdout(
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
    let mut model = open_model(&job.input, &job.planning.input_shapes)?;
    check_output(&job.input, &model.loaded.side_files, &job.stats_out, false)?;
    model.loaded.warnings.iter().for_each(|w| warn(w));
    let sha = file_sha256(&job.input)?;
    clock.lap("load");
    // the activations a later `quantize --stats --equalize` quantizes are the equalized
    // model's; absorption is not applied (it measures shifts a run without data cannot repeat)
    let config = &job.planning.config;
    if config.equalize.is_some() {
        let equalize_only = Config {
            bias_absorption: false,
            ..config.clone()
        };
        super::plan::equalize_and_absorb(&equalize_only, &mut model, None)?;
        clock.lap("equalize");
    }
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
        None,
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
        &StatsFile {
            equalized: equalized_record(config),
            ..StatsFile::new(sha, m.stats.samples, m.stats.tensors)
        },
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
    let opts = data.run_options(true);
    let start = Instant::now();
    let n = engine.infer(set, &opts)?;
    Ok((n, start.elapsed().as_secs_f64()))
}
