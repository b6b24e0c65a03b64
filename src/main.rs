//! The `onnx-quant` binary: the command line of [`onnx_quant::cli`], its exit code the
//! process's.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(onnx_quant::cli::main(std::env::args_os().collect()))
}
