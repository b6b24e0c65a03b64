//! The command line: its flags ([`args`]), how they become library settings (`settings`), what
//! commands write besides their model (`output`), and one module per command family.
//!
//! [`main`] is the whole program: the `onnx-quant` binary and the Python package's `onnx-quant`
//! command both run it, so they take the same flags and exit with the same codes. [`run_args`]
//! runs one command without touching the process (the Python API's functions).

pub mod args;
mod measure;
mod models;
mod output;
mod quantize;
mod settings;

use std::ffi::OsString;

use clap::{CommandFactory, Parser};

use crate::error::Error;

use args::{Cli, Command};

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Quantize(args) => quantize::run_quantize(args),
        Command::Calibrate(args) => quantize::run_calibrate(args),
        Command::MergeStats(args) => quantize::run_merge_stats(args),
        Command::Run(args) => models::run_run(args),
        Command::Inspect(args) => models::run_inspect(args),
        Command::ShowConfig(args) => models::run_show_config(args),
        Command::Check(args) => models::run_check(args),
        Command::Explain(args) => models::run_explain(args),
        Command::InitConfig(args) => models::run_init_config(args),
        Command::Eval(args) => measure::run_eval(args),
        Command::Sensitivity(args) => measure::run_sensitivity(args),
    }
}

/// How a command line ended when it did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// The flags did not parse (clap's message, rendered; exit code `Usage`).
    Usage(String),
    /// `--help` or `--version`: the text to print, exit code 0.
    Info(String),
    /// The command failed.
    Error(Error),
    /// A panic, caught (exit code `Internal`).
    Internal,
}

/// Parses `args` (`args[0]` is the program name) and runs the command, catching panics. The
/// first argument may be a model rather than a command: `onnx-quant IN OUT --calib D` means
/// `onnx-quant quantize IN OUT --calib D`.
pub fn run_args(args: Vec<OsString>) -> Result<(), Failure> {
    let cli = match Cli::try_parse_from(with_default_command(args)) {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => return Err(Failure::Usage(e.render().to_string())),
        Err(e) => return Err(Failure::Info(e.render().to_string())),
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Failure::Error(e)),
        Err(_) => Err(Failure::Internal),
    }
}

/// The program: runs `args`, prints errors, returns the exit code (docs/user-guide.md lists
/// them). Installs the panic message and the Ctrl-C / SIGTERM handler: an interrupted run
/// removes its temporary files and exits with `Interrupted`, leaving destinations untouched.
pub fn main(args: Vec<OsString>) -> u8 {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error (a bug in onnx-quant, please report it): {info}");
    }));
    // outputs are renamed into place only when complete, so destinations keep their old content
    let _ = ctrlc::set_handler(|| {
        let removed = crate::atomic::remove_pending();
        eprintln!("error: interrupted; nothing written ({removed} temporary file(s) removed)");
        std::process::exit(crate::ExitCode::Interrupted as i32);
    });
    match run_args(args) {
        Ok(()) => 0,
        Err(Failure::Info(text)) => {
            print!("{text}");
            0
        }
        Err(Failure::Usage(text)) => {
            eprint!("{text}");
            crate::ExitCode::Usage as u8
        }
        Err(Failure::Error(e)) => {
            eprintln!("error: {e}");
            e.exit_code() as u8
        }
        Err(Failure::Internal) => crate::ExitCode::Internal as u8,
    }
}

/// `onnx-quant IN OUT --calib D` means `onnx-quant quantize IN OUT --calib D`: a first argument
/// that is neither a flag nor a subcommand's name.
fn with_default_command(mut args: Vec<OsString>) -> Vec<OsString> {
    let first = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let is_flag = first.starts_with('-');
    let is_command = Cli::command()
        .get_subcommands()
        .any(|c| c.get_name() == first);
    if args.len() > 1 && !is_flag && !is_command {
        args.insert(1, "quantize".into());
    }
    args
}
