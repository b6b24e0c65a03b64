//! The quantize job, as its stages: load, SmoothQuant, plan, statistics, rewrite, mixed
//! precision, float16, check, save, accuracy, report. `quantize` calls them in order; each
//! stage is a function of what the earlier ones produced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::accuracy::compare::{self, Comparison, Labels, Measure, Source};
use crate::calib::{Dataset, Extra};
use crate::config::Config;
use crate::error::{Error, ModelError};
use crate::onnx::{SaveOptions, Saved};
use crate::proto::ModelProto;
use crate::report::{CalibrationReport, FileReport, Report};
use crate::rewrite::fp16::{self, Fp16Report};
use crate::stats::{self, StatsTable};

use super::build::{Built, Subs, build};
use super::calibrate::{calibrate, load_stats, split_holdout};
use super::layers::LayerProbe;
use super::open::{Model, open_model};
use super::plan::{Planned, plan_model};
use super::ranges::amax_table;
use super::ranges::observe_for;
use super::{
    Clock, DataSource, EXTERNAL_THRESHOLD, QuantizeJob, StatsSource, check_output, smooth, tune,
};

/// Runs the quantize job. Warnings go to `warn` as soon as they are known (and into the report).
// The job's stages in order, one call each (load, smoothquant, plan, hold_out, calibrate,
// build, mixed precision, finish); what stays inline threads their results to the next.
pub fn quantize(job: &QuantizeJob, warn: &dyn Fn(&str)) -> Result<Report, Error> {
    job.check()?;
    let mut clock = Clock::new();
    let (mut model, labels) = load(job, warn)?;
    clock.lap("load");
    let data_src = match &job.stats {
        StatsSource::Calibrate(d) => Some(d),
        StatsSource::File(_) | StatsSource::None => None,
    };
    let mut smooth_notes = smoothquant(job, &mut model, data_src, &mut clock)?;
    let config = &job.planning.config;
    if config.equalize.is_some() || config.bias_absorption {
        let notes = super::plan::equalize_and_absorb(config, &mut model, data_src)?;
        smooth_notes.extend(notes);
        clock.lap("equalize");
    }
    let p: Planned = plan_model(&model, data_src, &job.planning.rules(warn))?;
    clock.lap("plan");
    let (engine, plan, written) = (p.engine, p.plan, p.written);
    let subs = Subs {
        types: &p.types,
        kept: &p.kept,
        overrides: &job.planning.overrides,
        prep: &p.prep,
        data: p.data.is_some(),
    };
    let (calib_part, holdout) = hold_out(job, p.data, data_src)?;
    let observe = observe_for(&job.planning.config, &plan).union(p.sub_observe);
    let observed = (p.sub_observed.as_slice(), &p.sub_channels);
    // bias correction and GPTQ measure the layers' inputs in the same run
    let samples = calib_part.as_ref().map_or(0, |d| d.len());
    let probe = LayerProbe::new(&written, &plan, samples);
    if probe.is_some()
        && calib_part.is_none()
        && (config.bias_correction || config.rounding == crate::params::Rounding::Gptq)
    {
        warn(
            "bias correction and GPTQ measure the layers' inputs on calibration data (--calib): without it, weights are rounded to nearest and biases left as they are",
        );
    }
    let (mut stats, calibration, source) = match (&job.stats, calib_part.clone()) {
        (StatsSource::Calibrate(d), Some(data)) => {
            let extra = probe.as_ref().map(|p| p as &dyn Extra);
            let m = calibrate(&engine, &plan, observed, data, d, observe, extra, warn)?;
            (m.stats, m.report, d.path.clone())
        }
        (stats, _) => read_statistics(stats, &job.input, config, warn)?,
    };
    clock.lap("calibrate");
    if let Some(p) = probe {
        stats.layers = p.finish();
    }

    // tract's copy of the weights goes before the rewrite reads them (unless mixed precision
    // still runs versions of the model)
    let engine = job.mixed.is_some().then_some(engine);
    let mut built = build(&written, &job.input, plan, &stats, config, &source, subs)?;
    clock.lap("rewrite");

    let labels = match (&job.labels, &labels) {
        (Some(path), Some(values)) => Some(Labels { path, values }),
        _ => None,
    };
    let mut mixed_report = None;
    if let (Some(mixed), Some(holdout), Some(d), Some(engine)) =
        (&job.mixed, holdout.as_ref(), data_src, engine.as_ref())
    {
        let versions = tune::Versions {
            written: &written,
            subs,
            config,
            engine,
            fallback: mixed.fallback,
        };
        let scoring = tune::Scoring {
            calib: calib_part,
            src: d,
            stats: &mut stats,
            source: &source,
            labels,
        };
        let scoring = (scoring, holdout.clone());
        let bench = tune::Bench::new(&model, (&job.input, &job.output), versions, scoring)?;
        mixed_report = Some(tune::mixed_precision(bench, mixed, &mut built, warn)?);
        clock.lap("mixed-precision");
    }
    drop(engine);
    // what SmoothQuant and equalization did, before the plan's notes (of the version chosen)
    built.plan.notes.splice(0..0, smooth_notes);
    finish(
        job,
        model,
        built,
        Finish {
            holdout,
            labels,
            data_src,
            calibration,
            mixed_report,
        },
        clock,
        warn,
    )
}

/// What the last stages need of the earlier ones besides the model and its version.
struct Finish<'a> {
    holdout: Option<Dataset>,
    labels: Option<Labels<'a>>,
    data_src: Option<&'a DataSource>,
    calibration: CalibrationReport,
    mixed_report: Option<crate::accuracy::mixed::Search>,
}

/// The last stages: the TensorRT cache, float16, the target's check, save, the per-layer
/// accuracy of the written model, the report.
fn finish(
    job: &QuantizeJob,
    model: Model,
    mut built: Built,
    f: Finish,
    mut clock: Clock,
    warn: &dyn Fn(&str),
) -> Result<Report, Error> {
    if let Some(cache) = &job.trt_cache {
        stats::write_trt_cache(cache, &amax_table(&built.activations))?;
    }
    let Model { loaded, inputs } = model;
    // accuracy is measured before the float16 conversion (the simulation is float32)
    let kept_model = job.per_layer.then(|| built.model.clone());
    let (fp16, opset) = to_float16(job, &mut built, warn)?;
    if fp16.is_some() {
        clock.lap("float16");
    }
    warn_of_findings(&built.model, &job.planning.config, warn);
    let save = SaveOptions {
        external: job.external_data || !loaded.side_files.is_empty(),
        external_threshold: EXTERNAL_THRESHOLD,
    };
    let saved = crate::onnx::save(std::mem::take(&mut built.model), &job.output, &save)?;
    clock.lap("save");

    let mut accuracy = None;
    if let (Some(q), Some(d)) = (kept_model, f.data_src) {
        // held-out samples when there are some, else the calibration samples themselves
        let set = match f.holdout {
            Some(h) => h,
            None => Dataset::open(&d.path, &inputs, d.max_samples, &d.images)?,
        };
        let original = Source {
            model: &loaded.model,
            path: &job.input,
        };
        accuracy = Some(per_layer(job, original, &q, &inputs, set, d, f.labels)?);
        clock.lap("evaluate");
    }

    let input = FileReport {
        path: job.input.clone(),
        bytes: loaded.file_bytes,
        data_files: loaded.side_files,
        data_bytes: loaded.side_bytes,
    };
    Ok(Report {
        calibration: f.calibration,
        opset,
        accuracy,
        mixed_precision: f.mixed_report,
        fp16,
        timings_ms: clock.stages,
        ..report(job, input, saved, built, loaded.warnings)
    })
}

/// SmoothQuant (`smoothquant: true` with calibration data): the factors folded into the model
/// before planning, with notes for the report.
fn smoothquant(
    job: &QuantizeJob,
    model: &mut Model,
    data_src: Option<&DataSource>,
    clock: &mut Clock,
) -> Result<Vec<String>, Error> {
    let (Some(alpha), Some(d)) = (job.planning.config.smoothquant, data_src) else {
        return Ok(Vec::new());
    };
    let notes = smooth::smooth_model(model, d, alpha)?;
    clock.lap("smoothquant");
    Ok(notes)
}

/// With an accuracy target, the last samples are held out of calibration to measure it on:
/// (samples that calibrate, held-out samples).
fn hold_out(
    job: &QuantizeJob,
    data: Option<Dataset>,
    data_src: Option<&DataSource>,
) -> Result<(Option<Dataset>, Option<Dataset>), Error> {
    match (data, &job.mixed) {
        (Some(set), Some(mixed)) => {
            let path = data_src.map(|d| d.path.clone()).unwrap_or_default();
            let (head, tail) = split_holdout(set, mixed.holdout, &path, "an accuracy target")?;
            Ok((Some(head), Some(tail)))
        }
        (data, _) => Ok((data, None)),
    }
}

/// Load: the destination checked (before loading, which may take long; then with the data
/// files loading found), the model opened, its warnings shown, the labels read.
fn load(job: &QuantizeJob, warn: &dyn Fn(&str)) -> Result<(Model, Option<Vec<i64>>), Error> {
    check_output(&job.input, &[], &job.output, true)?;
    let model = open_model(&job.input, &job.planning.input_shapes)?;
    check_output(&job.input, &model.loaded.side_files, &job.output, true)?;
    let labels = super::open::warnings_and_labels(&model, job.labels.as_deref(), warn)?;
    Ok((model, labels))
}

/// Statistics without calibration: read from a file, or none at all (weight-only).
fn read_statistics(
    stats: &StatsSource,
    model: &Path,
    config: &Config,
    warn: &dyn Fn(&str),
) -> Result<(StatsTable, CalibrationReport, PathBuf), Error> {
    let path = match stats {
        StatsSource::File(p) | StatsSource::Calibrate(DataSource { path: p, .. }) => p,
        StatsSource::None => {
            let none = StatsTable {
                samples: 0,
                tensors: BTreeMap::new(),
                ..Default::default()
            };
            let report = CalibrationReport {
                source: PathBuf::new(),
                samples: 0,
                skipped_files: 0,
                threads: 0,
            };
            return Ok((none, report, PathBuf::new()));
        }
    };
    let stats = load_stats(path, model, config, warn)?;
    let report = CalibrationReport {
        source: path.clone(),
        samples: stats.samples,
        skipped_files: 0,
        threads: 0,
    };
    Ok((stats, report, path.clone()))
}

/// `--high-precision fp16`: the unquantized rest in float16, and the opset the output has.
fn to_float16(
    job: &QuantizeJob,
    built: &mut Built,
    warn: &dyn Fn(&str),
) -> Result<(Option<Fp16Report>, Option<i64>), Error> {
    if !job.planning.config.fp16 {
        return Ok((None, built.rewritten.opset));
    }
    let r = fp16::convert(&mut built.model).map_err(|reason| ModelError::Fp16 {
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
    Ok((Some(r), Some(fp16::FP16_OPSET)))
}

/// The output checked against its target's rules: violations, and weight pairs that x86 CPUs
/// without VNNI saturate, are warned about (the output is written all the same).
fn warn_of_findings(model: &ModelProto, config: &Config, warn: &dyn Fn(&str)) {
    let verdict = crate::check::check(model, &config.target);
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
}

/// `--per-layer`: the written model (before float16) against the input, outputs and every
/// quantized tensor.
fn per_layer(
    job: &QuantizeJob,
    original: Source,
    quantized: &ModelProto,
    inputs: &[crate::calib::InputSpec],
    set: Dataset,
    d: &DataSource,
    labels: Option<Labels>,
) -> Result<Comparison, Error> {
    let quantized = Source {
        model: quantized,
        path: &job.output,
    };
    let measure = Measure {
        per_layer: true,
        keep_outputs: false,
        labels_window: job.mixed.is_some(),
    };
    compare::compare(
        original,
        quantized,
        inputs,
        set,
        &d.run_options(false),
        labels,
        measure,
    )
}

/// The report of what was read, written and decided; the caller adds what later stages measured.
fn report(
    job: &QuantizeJob,
    input: FileReport,
    saved: Saved,
    built: Built,
    warnings: Vec<String>,
) -> Report {
    let (data_files, data_bytes) = saved.data_file.map_or((vec![], 0), |(p, n)| (vec![p], n));
    Report {
        tool: format!("onnx-quant {}", env!("CARGO_PKG_VERSION")),
        input,
        output: Some(FileReport {
            path: saved.path,
            bytes: saved.file_bytes,
            data_files,
            data_bytes,
        }),
        config: job.planning.config.clone(),
        sources: job.sources.clone(),
        calibration: CalibrationReport {
            source: PathBuf::new(),
            samples: 0,
            skipped_files: 0,
            threads: 0,
        },
        opset: None,
        nodes: built.plan.nodes,
        subgraphs: built.subgraphs,
        activations: built.activations,
        weights: built.rewritten.weights,
        notes: built.plan.notes,
        warnings,
        accuracy: None,
        mixed_precision: None,
        fp16: None,
        timings_ms: Vec::new(),
    }
}
