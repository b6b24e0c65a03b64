//! Command-line flags, as clap sees them. Resolved into library settings by `main`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Quantize ONNX models to int8 QDQ form for TensorRT, OpenVINO and ONNX Runtime.
///
/// The default command is `quantize`: `onnx-quant IN.onnx OUT.onnx --calib DATA`.
#[derive(Debug, Parser)]
#[command(name = "onnx-quant", version, about, long_about = None, disable_help_subcommand = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Calibrate a float model and write its int8 QDQ version (the default command).
    Quantize(QuantizeArgs),
    /// Print a model's graph as text: inputs, outputs, initializers, nodes.
    Inspect(InspectArgs),
}

/// Subcommand names: any other first argument means `quantize`.
pub const SUBCOMMANDS: [&str; 2] = ["quantize", "inspect"];

#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// Float ONNX model to quantize.
    pub input: PathBuf,
    /// Where to write the quantized model (never the input; written atomically).
    pub output: PathBuf,
    /// Calibration data: a .npy/.npz/.pb file or a directory of them (see the user guide).
    #[arg(long, value_name = "PATH")]
    pub calib: PathBuf,
    /// Use at most N calibration samples.
    #[arg(long, value_name = "N")]
    pub max_samples: Option<usize>,
    /// Asymmetric activation ranges (non-zero zero-points; TensorRT rejects them).
    #[arg(long)]
    pub asymmetric: bool,
    /// Integer type of activations (uint8 is rejected by TensorRT).
    #[arg(long, value_enum, default_value_t = ActivationType::Int8, value_name = "TYPE")]
    pub activation_type: ActivationType,
    /// One scale per weight instead of one per output channel.
    #[arg(long)]
    pub per_tensor: bool,
    /// Calibration threads (default: the number of CPUs).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Also write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Print nothing but errors and warnings.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ActivationType {
    Int8,
    Uint8,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// ONNX model to print.
    pub model: PathBuf,
}
