//! The `onnx-quant` binary: parse flags, run the command, map errors to exit codes. The
//! commands themselves are in `cli/`.

mod cli;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cli::args::Cli;

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error (a bug in onnx-quant, please report it): {info}");
    }));
    // Ctrl-C or SIGTERM: no half-written file stays behind (outputs are renamed into place only
    // when complete, so destinations keep their old content)
    let _ = ctrlc::set_handler(|| {
        let removed = onnx_quant::atomic::remove_pending();
        eprintln!("error: interrupted; nothing written ({removed} temporary file(s) removed)");
        std::process::exit(onnx_quant::ExitCode::Interrupted as i32);
    });
    let cli = match Cli::try_parse_from(with_default_command(std::env::args_os().collect())) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            let code = if e.use_stderr() {
                onnx_quant::ExitCode::Usage as u8
            } else {
                0
            };
            return ExitCode::from(code);
        }
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cli::run(cli))) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
        Err(_) => ExitCode::from(onnx_quant::ExitCode::Internal as u8),
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
