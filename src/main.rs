//! The `onnx-quant` binary: parse flags, run the library, print, map errors to exit codes.

mod cli;

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use onnx_quant::error::{Error, OutputError, UsageError};
use onnx_quant::params::{ActivationScheme, QType};
use onnx_quant::pipeline::{QuantizeJob, quantize};
use onnx_quant::policy::Settings;

use cli::{ActivationType, Cli, Command, InspectArgs, QuantizeArgs};

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
        Command::Inspect(args) => run_inspect(args),
    }
}

fn run_quantize(args: QuantizeArgs) -> Result<(), Error> {
    let qtype = match args.activation_type {
        ActivationType::Int8 => QType::Int8,
        ActivationType::Uint8 => QType::Uint8,
    };
    if args.max_samples == Some(0) {
        return Err(UsageError::Invalid("--max-samples must be at least 1".into()).into());
    }
    if args.threads == Some(0) {
        return Err(UsageError::Invalid("--threads must be at least 1".into()).into());
    }
    if let Some(r) = &args.report
        && (same_file(r, &args.input) || same_file(r, &args.output))
    {
        return Err(UsageError::Invalid(format!(
            "--report `{}` would overwrite a model",
            r.display()
        ))
        .into());
    }
    if let Some(dir) = args
        .report
        .as_deref()
        .and_then(Path::parent)
        .filter(|d| !d.as_os_str().is_empty() && !d.is_dir())
    {
        return Err(OutputError::DirMissing(dir.to_path_buf()).into());
    }
    let job = QuantizeJob {
        input: args.input,
        output: args.output,
        calib: args.calib,
        max_samples: args.max_samples,
        settings: Settings {
            activation: ActivationScheme {
                qtype,
                symmetric: !args.asymmetric,
            },
            per_channel: !args.per_tensor,
        },
        threads: args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        progress: !args.quiet,
    };
    let report = quantize(&job, &|w| eprintln!("warning: {w}"))?;
    if let Some(path) = &args.report {
        let json =
            serde_json::to_vec_pretty(&report).map_err(|e| Error::Internal(e.to_string()))?;
        onnx_quant::atomic::write(path, &json)?;
    }
    if !args.quiet {
        eprint!("{}", report.summary());
    }
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
