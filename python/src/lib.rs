//! `onnx_quant._native`: the onnx-quant command line, callable from Python.
//!
//! [`main`] is the `onnx-quant` command of the wheel: the same program as the binary (flags,
//! output, exit codes, Ctrl-C handling). [`run`] runs one command for the Python API
//! (`python/onnx_quant`): the GIL is released while it works, Ctrl-C cancels it cleanly
//! (temporary files removed, destinations untouched) and raises `KeyboardInterrupt`, and the
//! outcome comes back as `(exit code, message)` for the API to raise as a typed exception.

use std::ffi::OsString;
use std::sync::Mutex;
use std::time::Duration;

use onnx_quant::cli::{self, Failure};
use pyo3::prelude::*;

/// Jobs share process-wide state (the cancel flag, the temporary-file registry): one at a time.
static ONE_JOB: Mutex<()> = Mutex::new(());

/// The `onnx-quant` program with `argv` (`argv[0]`: the program name); returns its exit code.
/// For the console script: the process is the command, so Ctrl-C ends it as it ends the binary.
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<String>) -> u8 {
    let args: Vec<OsString> = argv.into_iter().map(OsString::from).collect();
    py.detach(|| cli::main(args))
}

/// Runs the command `argv` (without the program name) in this process; returns `(0, "")` on
/// success, else the exit code and the message the command line would print after `error: `.
/// Raises `KeyboardInterrupt` when Ctrl-C arrives, once the job has stopped and removed its
/// temporary files.
#[pyfunction]
fn run(py: Python<'_>, argv: Vec<String>) -> PyResult<(u8, String)> {
    let mut args: Vec<OsString> = vec!["onnx-quant".into()];
    args.extend(argv.into_iter().map(OsString::from));
    // jobs of other Python threads go first (waiting without the GIL, Ctrl-C still heard)
    let _one = loop {
        match ONE_JOB.try_lock() {
            Ok(guard) => break guard,
            Err(std::sync::TryLockError::Poisoned(e)) => break e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                py.detach(|| std::thread::sleep(Duration::from_millis(20)));
                py.check_signals()?;
            }
        }
    };
    onnx_quant::atomic::clear_cancel();
    let (tx, mut rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let _ = tx.send(cli::run_args(args));
        });
        loop {
            // the GIL is held only to look for signals, ten times a second
            let (outcome, back) = py.detach(move || {
                let outcome = rx.recv_timeout(Duration::from_millis(100));
                (outcome, rx)
            });
            rx = back;
            match outcome {
                Ok(result) => return Ok(outcome_of(result)),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Ok((
                        onnx_quant::ExitCode::Internal as u8,
                        "the job ended without a result".into(),
                    ));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            if let Err(interrupt) = py.check_signals() {
                // stop the job at its next sample, wait for it, delete what it left pending
                onnx_quant::atomic::cancel();
                let _ = py.detach(move || rx.recv());
                onnx_quant::atomic::remove_pending();
                onnx_quant::atomic::clear_cancel();
                return Err(interrupt);
            }
        }
    })
}

fn outcome_of(result: Result<(), Failure>) -> (u8, String) {
    match result {
        Ok(()) => (0, String::new()),
        Err(Failure::Info(text)) => (0, text),
        Err(Failure::Usage(text)) => (
            onnx_quant::ExitCode::Usage as u8,
            text.trim_start_matches("error: ").trim_end().to_string(),
        ),
        Err(Failure::Error(e)) => (e.exit_code() as u8, e.to_string()),
        Err(Failure::Internal) => (
            onnx_quant::ExitCode::Internal as u8,
            "internal error (a bug in onnx-quant, please report it)".into(),
        ),
    }
}

/// The version of the onnx-quant library inside.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    Ok(())
}
