//! The `onnx-quant` binary: parse flags, run the library, print, map errors to exit codes.

mod cli;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use onnx_quant::error::{Error, OutputError, UsageError};
use onnx_quant::params::{ActivationScheme, Method, QType};
use onnx_quant::pipeline::{
    CalibrateJob, DataSource, QuantizeJob, RangeSettings, StatsSource, calibrate_job, quantize,
    run_job,
};
use onnx_quant::policy::Settings;
use onnx_quant::stats;

use cli::{
    ActivationType, CalibrateArgs, Cli, Command, DataArgs, InspectArgs, MergeStatsArgs, MethodArg,
    QuantizeArgs, RangeArgs, RunArgs,
};

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error (a bug in onnx-quant, please report it): {info}");
    }));
    let cli = match Cli::try_parse_from(with_default_command(std::env::args_os().collect())) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                onnx_quant::ExitCode::Usage as u8
            } else {
                0
            });
        }
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli))) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
        Err(_) => ExitCode::from(onnx_quant::ExitCode::Internal as u8),
    }
}

/// `onnx-quant IN OUT --calib D` means `onnx-quant quantize IN OUT --calib D`.
fn with_default_command(mut args: Vec<OsString>) -> Vec<OsString> {
    let first = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let is_flag = first.starts_with('-');
    if args.len() > 1 && !is_flag && !cli::SUBCOMMANDS.contains(&first) {
        args.insert(1, "quantize".into());
    }
    args
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Quantize(args) => run_quantize(args),
        Command::Calibrate(args) => run_calibrate(args),
        Command::MergeStats(args) => run_merge_stats(args),
        Command::Run(args) => run_run(args),
        Command::Inspect(args) => run_inspect(args),
    }
}

fn usage(msg: impl Into<String>) -> Error {
    UsageError::Invalid(msg.into()).into()
}

fn data_source(path: PathBuf, args: &DataArgs) -> Result<DataSource, Error> {
    if args.max_samples == Some(0) {
        return Err(usage("--max-samples must be at least 1"));
    }
    if args.threads == Some(0) {
        return Err(usage("--threads must be at least 1"));
    }
    Ok(DataSource {
        path,
        max_samples: args.max_samples,
        threads: args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        progress: !args.quiet,
    })
}

/// Resolves range flags; `default` is the method used when `--method` is absent.
fn settings(args: &RangeArgs, default: MethodArg) -> Result<(Settings, RangeSettings), Error> {
    let chosen = args.method.unwrap_or(default);
    let qtype = match args.activation_type {
        ActivationType::Int8 => QType::Int8,
        ActivationType::Uint8 => QType::Uint8,
    };
    if !(args.percentile > 0.0 && args.percentile <= 100.0) {
        return Err(usage(format!(
            "--percentile must be in (0, 100], got {}",
            args.percentile
        )));
    }
    if !(16..=1 << 20).contains(&args.bins) {
        return Err(usage(format!(
            "--bins must be between 16 and 1048576, got {}",
            args.bins
        )));
    }
    if args.moving_average && chosen != MethodArg::Minmax {
        return Err(usage("--moving-average goes with --method minmax"));
    }
    let method = match chosen {
        MethodArg::Minmax => Method::MinMax {
            averaged: args.moving_average,
        },
        MethodArg::Percentile => Method::Percentile {
            percentile: args.percentile,
        },
        MethodArg::Entropy => Method::Entropy,
        MethodArg::Mse => Method::Mse,
    };
    let activation = ActivationScheme {
        qtype,
        symmetric: !args.asymmetric,
    };
    let settings = Settings {
        activation,
        per_channel: !args.per_tensor,
    };
    Ok((
        settings,
        RangeSettings {
            method,
            bins: args.bins,
        },
    ))
}

/// Refuses an extra output (report, cache) that is a model, or whose folder is missing.
fn check_side_output(extra: Option<&Path>, flag: &str, models: &[&Path]) -> Result<(), Error> {
    let Some(path) = extra else { return Ok(()) };
    if models.iter().any(|m| same_file(path, m)) {
        return Err(usage(format!(
            "{flag} `{}` would overwrite a model",
            path.display()
        )));
    }
    let dir = onnx_quant::atomic::parent_dir(path);
    if !dir.is_dir() {
        return Err(OutputError::DirMissing(dir).into());
    }
    Ok(())
}

fn warn(w: &str) {
    eprintln!("warning: {w}");
}

fn run_quantize(args: QuantizeArgs) -> Result<(), Error> {
    let from_cache = args.stats.as_deref().is_some_and(stats::is_trt_cache);
    let default = if from_cache {
        MethodArg::Minmax
    } else {
        MethodArg::Mse
    };
    let (settings, ranges) = settings(&args.ranges, default)?;
    let models = [args.input.as_path(), args.output.as_path()];
    check_side_output(args.report.as_deref(), "--report", &models)?;
    check_side_output(args.trt_cache.as_deref(), "--trt-cache", &models)?;
    let stats = match (args.calib, args.stats) {
        (Some(calib), None) => StatsSource::Calibrate(data_source(calib, &args.data)?),
        (None, Some(file)) => StatsSource::File(file),
        _ => return Err(usage("give exactly one of --calib and --stats")),
    };
    let job = QuantizeJob {
        input: args.input,
        output: args.output,
        stats,
        settings,
        ranges,
        trt_cache: args.trt_cache,
    };
    let report = quantize(&job, &warn)?;
    if let Some(path) = &args.report {
        let json =
            serde_json::to_vec_pretty(&report).map_err(|e| Error::Internal(e.to_string()))?;
        onnx_quant::atomic::write(path, &json)?;
    }
    if !args.data.quiet {
        eprint!("{}", report.summary());
    }
    Ok(())
}

fn run_calibrate(args: CalibrateArgs) -> Result<(), Error> {
    let (settings, ranges) = settings(&args.ranges, MethodArg::Mse)?;
    let models = [args.input.as_path(), args.stats.as_path()];
    check_side_output(args.trt_cache.as_deref(), "--trt-cache", &models)?;
    let job = CalibrateJob {
        data: data_source(args.calib, &args.data)?,
        input: args.input,
        settings,
        ranges,
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

fn run_merge_stats(args: MergeStatsArgs) -> Result<(), Error> {
    if args.inputs.iter().any(|i| same_file(i, &args.output)) {
        return Err(usage(format!(
            "output `{}` is one of the inputs",
            args.output.display()
        )));
    }
    let files = args
        .inputs
        .iter()
        .map(|p| stats::load(p).map(|f| (p.clone(), f)))
        .collect::<Result<Vec<_>, _>>()?;
    let merged = stats::merge_files(files)?;
    stats::save(&args.output, &merged)?;
    eprintln!(
        "onnx-quant: merged {} files ({} samples, {} tensors) -> {}",
        args.inputs.len(),
        merged.samples,
        merged.tensors.len(),
        args.output.display()
    );
    Ok(())
}

fn run_run(args: RunArgs) -> Result<(), Error> {
    let data = data_source(args.calib, &args.data)?;
    let threads = data.threads;
    let (n, secs) = run_job(&args.model, &data)?;
    let per = secs * 1e3 / n.max(1) as f64;
    println!("{n} samples in {secs:.3} s ({per:.2} ms per sample, {threads} threads)");
    Ok(())
}

fn run_inspect(args: InspectArgs) -> Result<(), Error> {
    let loaded = onnx_quant::onnx::load(&args.model)?;
    loaded
        .warnings
        .iter()
        .for_each(|w| eprintln!("warning: {w}"));
    let text = onnx_quant::ir::dump(&loaded.model);
    // A closed pipe (`| head`) is not an error.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
