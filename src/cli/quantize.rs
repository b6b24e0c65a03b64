//! `quantize`, `calibrate` and `merge-stats`: the commands that write a model or statistics.

use std::path::{Path, PathBuf};

use crate::atomic::Clash;
use crate::config;
use crate::error::{Error, OutputError};
use crate::pipeline::{CalibrateJob, MixedJob, QuantizeJob, StatsSource, calibrate_job, quantize};
use crate::stats;

use super::args::{self, CalibrateArgs, MergeStatsArgs, QuantizeArgs};
use super::output::{check_side_output, warn, write_json, write_text};
use super::settings::{data_source, input_shapes, resolve_config, usage};

// The flags turned into the job (the checks in check_combinations), the job run, then its side
// outputs (plot, settings file, report, summary) in order.
pub fn run_quantize(args: QuantizeArgs) -> Result<(), Error> {
    let from_cache = args.stats.as_deref().is_some_and(stats::is_trt_cache);
    let mut settings = resolve_config(&args.ranges, from_cache)?;
    settings.planning.input_shapes = input_shapes(&args.shapes)?;
    let acc = &args.accuracy;
    let models = [args.input.as_path(), args.output.as_path()];
    check_side_output(args.report.as_deref(), "--report", &models)?;
    check_side_output(args.trt_cache.as_deref(), "--trt-cache", &models)?;
    check_side_output(acc.plot.as_deref(), "--plot", &models)?;
    check_side_output(acc.write_config.as_deref(), "--write-config", &models)?;
    let target = match (acc.target_sqnr, acc.max_top1_drop) {
        (Some(db), _) => Some(crate::accuracy::mixed::Target::Sqnr(db)),
        (None, Some(p)) => Some(crate::accuracy::mixed::Target::Top1Drop(p)),
        (None, None) => None,
    };
    let per_layer = acc.per_layer || acc.plot.is_some();
    check_combinations(
        &args,
        &settings.planning.config,
        target.is_some(),
        per_layer,
    )?;
    let stats = match (args.calib.clone(), args.stats.clone()) {
        (None, None) if settings.planning.config.weight_only => StatsSource::None,
        (Some(calib), None) => StatsSource::Calibrate(data_source(calib, &args.data)?),
        (None, Some(file)) => StatsSource::File(file),
        _ => {
            return Err(usage(
                "give --calib DATA (or --stats FILE); without them only --weight-only runs",
            ));
        }
    };
    let strategy = match acc.mixed_strategy {
        args::StrategyArg::All => crate::accuracy::mixed::Strategy::All,
        args::StrategyArg::Sensitivity => crate::accuracy::mixed::Strategy::Sensitivity,
        args::StrategyArg::LeaveOneOut => crate::accuracy::mixed::Strategy::LeaveOneOut,
        args::StrategyArg::Greedy => crate::accuracy::mixed::Strategy::Greedy,
    };
    let user_overrides = settings.planning.overrides.clone();
    // what a written settings file must hold to reproduce the run: the target and every value
    // the settings file or the command line changed
    let mut chosen_settings = config::Layer::new("written");
    for (k, (v, src)) in &settings.resolved.values {
        if *k == "target" || !src.starts_with("preset ") {
            chosen_settings.values.insert(k, v.clone());
        }
    }
    let fallback = match acc.mixed_fallback {
        args::FallbackArg::Float => crate::pipeline::Fallback::Float,
        args::FallbackArg::Int16 => crate::pipeline::Fallback::Int16,
    };
    let job = QuantizeJob {
        input: args.input.clone(),
        output: args.output.clone(),
        stats,
        planning: settings.planning,
        sources: settings
            .resolved
            .values
            .iter()
            .map(|(k, (_, src))| (k.to_string(), src.clone()))
            .collect(),
        trt_cache: args.trt_cache.clone(),
        labels: acc.labels.clone(),
        mixed: target.map(|target| MixedJob {
            target,
            strategy,
            fallback,
            holdout: acc.holdout,
        }),
        per_layer,
        external_data: args.external_data,
    };
    let report = quantize(&job, &warn)?;
    if let Some(path) = &acc.plot
        && let Some(a) = &report.accuracy
    {
        let title = format!("{} vs {}", job.output.display(), job.input.display());
        let svg = crate::accuracy::layers_svg(&title, &a.layers_in_graph_order);
        write_text(path, &svg)?;
    }
    if let (Some(path), Some(m)) = (&acc.write_config, &report.mixed_precision) {
        let overrides =
            crate::pipeline::with_exceptions(&user_overrides, &m.chosen().float, fallback).list;
        let header = chosen_header(&args, &report, m, fallback);
        let text = config::write::render(&header, Some(&chosen_settings), &overrides);
        write_text(path, &text)?;
    }
    if let Some(path) = &args.report {
        write_json(path, &report)?;
    }
    if !args.data.quiet {
        eprint!("{}", report.summary());
    }
    Ok(())
}

/// Flags that do not go together (`target`: an accuracy target was given), checked before
/// the calibration data is looked at.
fn check_combinations(
    args: &QuantizeArgs,
    config: &config::Config,
    target: bool,
    per_layer: bool,
) -> Result<(), Error> {
    let c = crate::pipeline::Combination {
        stats_file: args.stats.is_some(),
        calib: args.calib.is_some(),
        target,
        per_layer,
        holdout: args.accuracy.holdout,
        write_config: args.accuracy.write_config.is_some(),
    };
    crate::pipeline::combinations(&c, config)
}

/// The header of the settings file `--write-config` writes: what chose its layers.
fn chosen_header(
    args: &QuantizeArgs,
    report: &crate::report::Report,
    m: &crate::accuracy::mixed::Search,
    fallback: crate::pipeline::Fallback,
) -> String {
    format!(
        "written by onnx-quant {}: {} on {} held-out sample(s) of `{}`\n{} of {} quantized layer(s) kept {} (strategy {}){}",
        env!("CARGO_PKG_VERSION"),
        m.target,
        m.samples,
        report.calibration.source.display(),
        m.chosen().float.len(),
        m.candidates,
        fallback.name(),
        m.chosen().strategy,
        args.ranges
            .config
            .as_ref()
            .map_or(String::new(), |c| format!(
                "\nsettings and overrides of `{}` first",
                c.display()
            ))
    )
}

pub fn run_calibrate(args: CalibrateArgs) -> Result<(), Error> {
    if args.ranges.high_precision.is_some() {
        return Err(usage(
            "--high-precision changes the written model, not the statistics: give it to the quantize run",
        ));
    }
    let mut settings = resolve_config(&args.ranges, false)?;
    settings.planning.input_shapes = input_shapes(&args.shapes)?;
    let models = [args.input.as_path(), args.stats.as_path()];
    check_side_output(args.trt_cache.as_deref(), "--trt-cache", &models)?;
    let job = CalibrateJob {
        data: data_source(args.calib, &args.data)?,
        input: args.input,
        planning: settings.planning,
        stats_out: args.stats,
        trt_cache: args.trt_cache,
    };
    let r = calibrate_job(&job, &warn)?;
    if !args.data.quiet {
        let times: Vec<String> = r
            .timings_ms
            .iter()
            .map(|(k, v)| format!("{k} {v:.0} ms"))
            .collect();
        eprintln!(
            "onnx-quant: statistics of {} tensors over {} samples -> {}\n  time: {}",
            r.tensors,
            r.calibration.samples,
            r.stats.display(),
            times.join(", ")
        );
    }
    Ok(())
}

pub fn run_merge_stats(args: MergeStatsArgs) -> Result<(), Error> {
    let inputs: Vec<&Path> = args.inputs.iter().map(PathBuf::as_path).collect();
    match crate::atomic::check_destination(&args.output, false, &inputs) {
        Ok(()) => {}
        Err(Clash::DirMissing(dir)) => return Err(OutputError::DirMissing(dir).into()),
        Err(Clash::Protected(_)) => {
            return Err(usage(format!(
                "output `{}` is one of the inputs",
                args.output.display()
            )));
        }
    }
    let files = args
        .inputs
        .iter()
        .map(|p| stats::load(p).map(|f| (p.clone(), f)))
        .collect::<Result<Vec<_>, _>>()?;
    let merged = stats::merge_files(files)?;
    stats::save(&args.output, &merged)?;
    if args.quiet {
        return Ok(());
    }
    eprintln!(
        "onnx-quant: merged {} files ({} samples, {} tensors) -> {}",
        args.inputs.len(),
        merged.samples,
        merged.tensors.len(),
        args.output.display()
    );
    Ok(())
}
