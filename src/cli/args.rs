//! Command-line flags, as clap sees them. [`super::settings`] turns them into library settings.

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
    /// Calibrate a float model (or read statistics) and write its int8 QDQ version (default).
    Quantize(QuantizeArgs),
    /// Run calibration only and write the statistics to a file, for later or merged use.
    Calibrate(CalibrateArgs),
    /// Merge statistics files measured on disjoint calibration shards of one model.
    MergeStats(MergeStatsArgs),
    /// Run the float model over calibration data and report the time: the plain-inference
    /// baseline of calibration.
    Run(RunArgs),
    /// Print a model's graph as text: inputs, outputs, initializers, nodes.
    Inspect(InspectArgs),
    /// Print the resolved settings (preset and flags) and where each one comes from.
    ShowConfig(ShowConfigArgs),
    /// List what a runtime refuses (violations) or cannot fuse (warnings) in a QDQ model.
    Check(CheckArgs),
    /// Show, for every node and tensor, what would be quantized how, and which preset rule,
    /// setting or override decided it (no calibration data needed).
    Explain(ExplainArgs),
    /// Print a commented settings file listing every node the target quantizes.
    InitConfig(ModelArgs),
    /// Compare a quantized model with its float original on data: output SQNR, cosine, top-1
    /// agreement, accuracy with labels, the error of every quantized tensor.
    Eval(EvalArgs),
    /// Rank the quantized layers by the output error each causes: every layer quantized alone,
    /// and all but each one (statistics gathered once; then inference only).
    Sensitivity(SensitivityArgs),
}

/// Calibration data and how to run it.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// Use at most N calibration samples.
    #[arg(long, value_name = "N")]
    pub max_samples: Option<usize>,
    /// Calibration threads (default: the number of CPUs).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Print nothing but errors and warnings.
    #[arg(short, long)]
    pub quiet: bool,
    /// NaN or infinity in an observed tensor: `fail` names the tensor and sample and stops;
    /// `ignore` leaves those values out of the ranges and reports how many per tensor.
    #[arg(long, value_name = "POLICY", default_value = "fail")]
    pub nan_policy: NanPolicy,
    #[command(flatten)]
    pub images: ImageArgs,
}

/// How PNG and JPEG files among the data become input tensors (docs/user-guide.md).
const IMAGES: &str = "Image data (PNG, JPEG)";

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Height and width images are brought to [default: the input's own]: `224x224`, or `224`.
    #[arg(long, help_heading = IMAGES, value_name = "HxW", value_parser = parse_size)]
    pub image_size: Option<(usize, usize)>,
    /// `center-crop`: scale the shorter side to fit, cut the centre; `stretch`: scale each axis.
    #[arg(long, help_heading = IMAGES, value_enum, value_name = "MODE", default_value = "center-crop")]
    pub resize: ResizeArg,
    /// With center-crop, scale to cover size / RATIO first (0.875: 256 then the centre 224).
    #[arg(long, help_heading = IMAGES, value_name = "RATIO", default_value = "1")]
    pub crop_ratio: f32,
    /// Pixel values before --mean/--std: `0-1` or `0-255`.
    #[arg(long, help_heading = IMAGES, value_enum, value_name = "RANGE", default_value = "0-1")]
    pub pixel_range: PixelRangeArg,
    /// Subtracted per channel after --pixel-range: one value or one per channel
    /// (ImageNet: 0.485,0.456,0.406).
    #[arg(long, help_heading = IMAGES, value_name = "LIST", value_delimiter = ',', allow_negative_numbers = true)]
    pub mean: Vec<f32>,
    /// Divided by per channel after --mean (ImageNet: 0.229,0.224,0.225).
    #[arg(long, help_heading = IMAGES, value_name = "LIST", value_delimiter = ',')]
    pub std: Vec<f32>,
    /// Channels in BGR order (Caffe- and OpenCV-trained models) instead of RGB.
    #[arg(long, help_heading = IMAGES)]
    pub bgr: bool,
    /// Where the channels are [default: the axis of size 1 or 3 in the input's shape].
    #[arg(long, help_heading = IMAGES, value_enum, value_name = "LAYOUT")]
    pub image_layout: Option<LayoutArg>,
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let parts: Vec<&str> = s.split(['x', 'X', ',']).collect();
    let n = |p: &str| p.trim().parse::<usize>().ok().filter(|&v| v > 0);
    match parts.as_slice() {
        [a] => n(a).map(|v| (v, v)),
        [h, w] => n(h).zip(n(w)),
        _ => None,
    }
    .ok_or_else(|| format!("expected HxW or one size, both positive, got `{s}`"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ResizeArg {
    CenterCrop,
    Stretch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PixelRangeArg {
    #[value(name = "0-1")]
    Unit,
    #[value(name = "0-255")]
    Byte,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LayoutArg {
    Nchw,
    Nhwc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NanPolicy {
    Fail,
    Ignore,
}

/// Input shapes, for models whose symbolic dims the data cannot fix.
#[derive(Debug, Args)]
pub struct ShapeArgs {
    /// The shape of input NAME, fixing its symbolic dims (repeat for several inputs): for
    /// models tract cannot type from their declared shapes, without data or with data of
    /// another shape.
    #[arg(long = "input-shape", value_name = "NAME:D0,D1,...")]
    pub input_shape: Vec<String>,
}

/// The target and the settings that override its preset.
#[derive(Debug, Args)]
pub struct RangeArgs {
    /// Runtime the model is quantized for: sets the placement and defaults (see `show-config`)
    /// [default: the config file's `target`, else tensorrt].
    #[arg(long, value_enum, value_name = "TARGET")]
    pub target: Option<TargetArg>,
    /// Settings file: global settings and per-layer overrides (docs/config.md). Flags override
    /// its global settings.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// An override that matches nothing is a warning instead of an error.
    #[arg(long)]
    pub allow_unmatched: bool,
    /// How activation ranges are chosen from the calibration statistics [preset: mse; with a
    /// TensorRT calibration cache as `--stats`: minmax, the cache's own ranges].
    #[arg(long, value_enum, value_name = "METHOD")]
    pub method: Option<MethodArg>,
    /// Percentile of |x| kept by `--method percentile` (of x on each side when asymmetric)
    /// [preset: 99.99].
    #[arg(long, value_name = "P")]
    pub percentile: Option<f64>,
    /// Histogram bins per side of zero (percentile, entropy, mse) [preset: 4096].
    #[arg(long, value_name = "N")]
    pub bins: Option<usize>,
    /// With `--method minmax`: the mean of per-sample minima and maxima instead of the extremes.
    #[arg(long)]
    pub moving_average: bool,
    /// Asymmetric activation ranges (non-zero zero-points; TensorRT rejects them).
    #[arg(long)]
    pub asymmetric: bool,
    /// Type of activations (uint8 and int16 are rejected by TensorRT; int16 needs opset 21;
    /// fp8 is float8 e4m3fn, symmetric, opset 19) [preset: int8].
    #[arg(long, value_enum, value_name = "TYPE")]
    pub activation_type: Option<ActivationType>,
    /// One scale per weight instead of one per output channel.
    #[arg(long)]
    pub per_tensor: bool,
    /// Type of weights (int4: opset 21, two values per byte; fp8: float8 e4m3fn, opset 19)
    /// [preset: int8].
    #[arg(long, value_enum, value_name = "TYPE")]
    pub weight_type: Option<WeightTypeArg>,
    /// int4 weights: one scale per block of N values along the input-channel axis (N must
    /// divide it; 0: per channel) [preset: 0].
    #[arg(long, value_name = "N")]
    pub block_size: Option<usize>,
    /// Quantize weights only; activations stay float and no calibration data is needed.
    #[arg(long)]
    pub weight_only: bool,
    /// SmoothQuant with strength ALPHA (0-1, typically 0.5): activation outliers after each
    /// LayerNormalization that feeds MatMul/Gemm move into their weights (needs --calib).
    #[arg(long, value_name = "ALPHA")]
    pub smoothquant: Option<f64>,
    /// How weights are rounded: nearest, gptq (levels chosen to minimise each layer's output
    /// error on the calibration data), or auto (gptq for 4-bit weights) [preset: auto]
    #[arg(long, value_name = "HOW")]
    pub rounding: Option<Rounding>,
    /// Cross-layer equalization: the channels of Conv/Gemm pairs joined by a Relu rescaled so
    /// their weight ranges match (a ReLU6 between them becomes a Relu and a Min with each
    /// channel's bound: exact)
    #[arg(long)]
    pub equalize: bool,
    /// High-bias absorption: where a Relu joins two layers, each channel's pre-activation floor
    /// (on the first 16 calibration samples) moves into the next layer's bias, narrowing the
    /// activation between them (needs --calib) [preset: auto, on with --equalize]
    #[arg(long)]
    pub bias_absorption: bool,
    /// Bias correction: each layer's bias absorbs the mean output shift its rounded weights
    /// cause on the calibration data (needs --calib)
    #[arg(long)]
    pub bias_correction: bool,
    /// Type of what stays unquantized: fp16 converts it to float16 (float16 scales, opset 19,
    /// fp32 graph inputs and outputs) [preset: fp32]
    #[arg(long, value_name = "TYPE")]
    pub high_precision: Option<HighPrecision>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Rounding {
    Auto,
    Nearest,
    Gptq,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HighPrecision {
    Fp32,
    Fp16,
}

#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// Float ONNX model to quantize.
    pub input: PathBuf,
    /// Where to write the quantized model (never the input; written atomically).
    pub output: PathBuf,
    /// Calibration data: a .npy/.npz/.pb file or a directory of them (see the user guide).
    /// Required unless --stats is given or only weights are quantized (`--weight-only`).
    #[arg(long, value_name = "PATH", conflicts_with = "stats")]
    pub calib: Option<PathBuf>,
    /// Ranges from a statistics file (`onnx-quant calibrate`) or a TensorRT calibration cache,
    /// instead of running the model.
    #[arg(long, value_name = "FILE")]
    pub stats: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub ranges: RangeArgs,
    /// Also write the chosen ranges as a TensorRT calibration cache.
    #[arg(long, value_name = "FILE")]
    pub trt_cache: Option<PathBuf>,
    /// Also write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write the weights to OUTPUT.data beside the model even when the input keeps them inside
    /// (a model read with external data is always written with it).
    #[arg(long)]
    pub external_data: bool,
    #[command(flatten)]
    pub accuracy: AccuracyArgs,
    #[command(flatten)]
    pub shapes: ShapeArgs,
}

/// Measuring the result, and automatic mixed precision.
#[derive(Debug, Args)]
pub struct AccuracyArgs {
    /// Integer labels of the calibration samples (.npy, one per row of the first classifying
    /// output): top-1 figures and `--max-top1-drop`.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Compare the written model with the input, output and every quantized tensor (on the
    /// held-out samples with a target, else on the calibration samples); in the report.
    #[arg(long)]
    pub per_layer: bool,
    /// Draw the per-layer error as an SVG chart to FILE (implies --per-layer).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Keep layers float, as few as possible, until the output SQNR on held-out samples is at
    /// least DB.
    #[arg(long, value_name = "DB", conflicts_with = "max_top1_drop")]
    pub target_sqnr: Option<f64>,
    /// Keep layers float, as few as possible, until top-1 accuracy on held-out samples drops by
    /// at most POINTS (needs --labels).
    #[arg(long, value_name = "POINTS", requires = "labels")]
    pub max_top1_drop: Option<f64>,
    /// Samples held out of calibration to measure the target on [default: a quarter].
    #[arg(long, value_name = "N")]
    pub holdout: Option<usize>,
    /// How layers to keep float are chosen (`all` runs every strategy and keeps the fewest
    /// float layers).
    #[arg(long, value_enum, default_value_t = StrategyArg::All, value_name = "STRATEGY")]
    pub mixed_strategy: StrategyArg,
    /// What the layers the target needs taken out of 8 bits become: float, or int16
    /// activations (opset 21; ONNX Runtime and OpenVINO, not TensorRT).
    #[arg(long, value_enum, default_value_t = FallbackArg::Float, value_name = "TYPE")]
    pub mixed_fallback: FallbackArg,
    /// Write the settings file that reproduces the result: the --config given (if any) plus
    /// one override per layer taken out of 8 bits (`skip: true`, or int16 activations).
    #[arg(long, value_name = "FILE")]
    pub write_config: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    All,
    Sensitivity,
    LeaveOneOut,
    Greedy,
}

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// Float ONNX model.
    pub input: PathBuf,
    /// Calibration data (as for `quantize`).
    #[arg(long, value_name = "PATH")]
    pub calib: PathBuf,
    /// Where to write the statistics (JSON).
    #[arg(long, value_name = "FILE")]
    pub stats: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub ranges: RangeArgs,
    /// Also write the ranges `--method` chooses as a TensorRT calibration cache.
    #[arg(long, value_name = "FILE")]
    pub trt_cache: Option<PathBuf>,
    #[command(flatten)]
    pub shapes: ShapeArgs,
}

#[derive(Debug, Args)]
pub struct MergeStatsArgs {
    /// Statistics files of one model, measured on disjoint samples.
    #[arg(required = true, num_args = 2..)]
    pub inputs: Vec<PathBuf>,
    /// Where to write the merged statistics.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Float ONNX model.
    pub model: PathBuf,
    /// Calibration data (as for `quantize`).
    #[arg(long, value_name = "PATH")]
    pub calib: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub shapes: ShapeArgs,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// QDQ model to check (from any tool).
    pub model: PathBuf,
    /// Runtime whose rules apply.
    #[arg(long, value_enum, default_value_t = TargetArg::Tensorrt, value_name = "TARGET")]
    pub target: TargetArg,
    /// Also write the findings as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The float model.
    pub reference: PathBuf,
    /// Its quantized version (a QDQ model, from onnx-quant or another tool).
    pub quantized: PathBuf,
    /// Input data, as for `--calib` (a held-out set, ideally).
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    /// Integer class labels (.npy), one per row of the first classifying output: adds top-1
    /// accuracy of both models.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Also measure the error of every quantized tensor (worst first).
    #[arg(long)]
    pub per_layer: bool,
    /// Draw the per-layer error as an SVG chart to FILE (implies --per-layer).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the quantized model's simulated outputs to FILE (.npz, one array per output,
    /// samples stacked on axis 0): to compare with a runtime.
    #[arg(long, value_name = "FILE")]
    pub save_outputs: Option<PathBuf>,
    /// Fail (exit code 7) when an output's SQNR is below DB.
    #[arg(long, value_name = "DB")]
    pub min_sqnr: Option<f64>,
    /// Fail (exit code 7) when top-1 accuracy drops by more than POINTS (needs --labels).
    #[arg(long, value_name = "POINTS", requires = "labels")]
    pub max_top1_drop: Option<f64>,
    #[command(flatten)]
    pub data_args: DataArgs,
    #[command(flatten)]
    pub shapes: ShapeArgs,
}

#[derive(Debug, Args)]
pub struct SensitivityArgs {
    /// Float ONNX model.
    pub model: PathBuf,
    /// Samples: the last `--holdout` measure, the others calibrate (unless --stats).
    #[arg(long, value_name = "PATH")]
    pub calib: PathBuf,
    /// Ranges from a statistics file (`onnx-quant calibrate`): every sample then measures.
    #[arg(long, value_name = "FILE")]
    pub stats: Option<PathBuf>,
    /// Integer labels of the samples (.npy): adds the top-1 drop.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Samples held out of calibration to measure on [default: a quarter].
    #[arg(long, value_name = "N", conflicts_with = "stats")]
    pub holdout: Option<usize>,
    /// Also write the ranking as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub ranges: RangeArgs,
    #[command(flatten)]
    pub shapes: ShapeArgs,
}

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Float ONNX model.
    pub model: PathBuf,
    #[command(flatten)]
    pub ranges: RangeArgs,
    #[command(flatten)]
    pub shapes: ShapeArgs,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Also write every node's fate as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ShowConfigArgs {
    #[command(flatten)]
    pub ranges: RangeArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TargetArg {
    Tensorrt,
    Openvino,
    Ort,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    Minmax,
    Percentile,
    Entropy,
    Mse,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ActivationType {
    Int8,
    Uint8,
    Int16,
    Fp8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FallbackArg {
    Float,
    Int16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WeightTypeArg {
    Int8,
    Int4,
    Uint4,
    Fp8,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// ONNX model to print.
    pub model: PathBuf,
}
