//! Typed errors, one enum per stage, and the documented exit codes they map to.
//!
//! Messages are lowercase fragments naming the file, input, node or tensor concerned; `main`
//! prints them after `error: `. Every variant maps to one [`ExitCode`] class, pinned by CLI tests
//! and documented in `docs/user-guide.md`.

use std::path::PathBuf;

/// Process exit codes. Stable: scripts depend on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// The output was written.
    Ok = 0,
    /// A bug in onnx-quant (an internal check failed, or a panic).
    Internal = 1,
    /// Bad command line (unknown flag, output path equal to the input, ...).
    Usage = 2,
    /// The model cannot be read, is invalid, or uses something onnx-quant or tract cannot handle.
    Model = 3,
    /// Calibration data is missing, unreadable, mis-shaped or produced non-finite activations.
    Calibration = 4,
    /// The output (or report) cannot be written.
    Output = 5,
    /// `onnx-quant check` found violations of the target's rules.
    CheckFailed = 6,
    /// An accuracy gate of `eval` (`--min-sqnr`, `--max-top1-drop`) was missed.
    AccuracyMissed = 7,
    /// Interrupted (Ctrl-C, SIGTERM): temporary files removed, nothing written.
    Interrupted = 130,
}

/// Any error onnx-quant reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Calibration(#[from] CalibError),
    #[error(transparent)]
    Output(#[from] OutputError),
    /// A broken invariant: the message says which. Always a bug.
    #[error("internal error: {0}")]
    Internal(String),
    /// `check` found this many violations (they are printed before).
    #[error("{0} violation(s) of the target's rules")]
    CheckFailed(usize),
    /// Accuracy gates missed, each described.
    #[error("accuracy target missed: {}", .0.join("; "))]
    AccuracyMissed(Vec<String>),
    /// The run was cancelled ([`crate::atomic::cancel`]: Ctrl-C in the Python API).
    #[error("interrupted; nothing written")]
    Interrupted,
}

impl Error {
    /// The exit code class of this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) => ExitCode::Usage,
            Error::Model(_) => ExitCode::Model,
            Error::Calibration(_) => ExitCode::Calibration,
            Error::Output(OutputError::Interrupted) => ExitCode::Interrupted,
            Error::Output(_) => ExitCode::Output,
            Error::Internal(_) => ExitCode::Internal,
            Error::CheckFailed(_) => ExitCode::CheckFailed,
            Error::AccuracyMissed(_) => ExitCode::AccuracyMissed,
            Error::Interrupted => ExitCode::Interrupted,
        }
    }
}

/// Command-line mistakes found before any work is done.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("output path `{0}` is the input model: refusing to overwrite it")]
    OutputIsInput(PathBuf),
    #[error(
        "output path `{output}` is a file the input model reads (`{input}`): refusing to overwrite it"
    )]
    OutputIsInputData { output: PathBuf, input: PathBuf },
    #[error("{0}")]
    Invalid(String),
    #[error("config `{file}` has {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  {file}:{p}")).collect::<Vec<_>>().join("\n"))]
    Config { file: String, problems: Vec<String> },
    #[error("{} override(s) of `{file}` match nothing (--allow-unmatched makes this a warning):\n{}", problems.len(), problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Unmatched { file: String, problems: Vec<String> },
}

/// Problems with the model file or its content.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model `{path}` is empty")]
    Empty { path: PathBuf },
    #[error("model `{path}` is not a valid ONNX file (truncated or not ONNX): {source}")]
    Decode {
        path: PathBuf,
        source: prost::DecodeError,
    },
    #[error("model `{path}` is not an ONNX model: {reason}")]
    NotOnnx { path: PathBuf, reason: String },
    #[error("external data of tensor `{tensor}` in `{path}`: {reason}")]
    ExternalData {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    #[error("model `{path}` is invalid: {}", problems.join("; "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error(
        "model `{path}` uses default-domain opset {opset}; QuantizeLinear needs opset 10 or newer, \
         and raising it to 13 is blocked by {}",
        blockers.join("; ")
    )]
    OpsetTooOld {
        path: PathBuf,
        opset: i64,
        blockers: Vec<String>,
    },
    #[error("tract cannot run {} node(s) of `{path}`: {}", nodes.len(), nodes.join(", "))]
    UnsupportedOps { path: PathBuf, nodes: Vec<String> },
    #[error("model `{path}` has {what}, which onnx-quant does not support yet")]
    Unsupported { path: PathBuf, what: String },
    #[error("tract failed on `{path}`: {message}")]
    Runtime { path: PathBuf, message: String },
    #[error("{0}")]
    Untyped(Box<UntypedNode>),
    #[error(
        "model `{path}` is already quantized (it holds {}): quantize the float model it was made from",
        ops.join(", ")
    )]
    AlreadyQuantized { path: PathBuf, ops: Vec<String> },
    #[error("cannot quantize `{path}` as configured: {reason}")]
    OpsetBlocked { path: PathBuf, reason: String },
    #[error("cannot convert `{path}` to float16 (--high-precision fp16): {reason}")]
    Fp16 { path: PathBuf, reason: String },
}

/// A node tract's analysis failed on, with what tract knew of its inputs.
#[derive(Debug, thiserror::Error)]
#[error(
    "tract cannot type node `{node}` ({op}) of `{path}`{}: {message}{}; \
     if the data cannot fix the input shapes, give them with --input-shape NAME:D0,D1,... \
     (docs/user-guide.md, \"Models tract cannot type\")",
    if inputs.is_empty() { String::new() } else { format!(" with inputs {}", inputs.join(", ")) },
    if *relaxed { " (the shapes the file records for intermediate tensors were ignored)" } else { "" }
)]
pub struct UntypedNode {
    pub path: PathBuf,
    pub node: String,
    pub op: String,
    pub inputs: Vec<String>,
    pub message: String,
    pub relaxed: bool,
}

/// Problems with the calibration data or what running the model on it produced.
#[derive(Debug, thiserror::Error)]
pub enum CalibError {
    #[error("calibration path `{0}` does not exist")]
    NotFound(PathBuf),
    #[error("calibration path `{0}` holds no .npy, .npz, .pb or image data")]
    Empty(PathBuf),
    #[error("cannot read calibration file `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("calibration file `{path}`: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error("calibration file `{path}`: input `{input}` expects {expected}, got {got}")]
    Mismatch {
        path: PathBuf,
        input: String,
        expected: String,
        got: String,
    },
    #[error("calibration data `{path}` does not feed input(s) {}", missing.join(", "))]
    MissingInputs { path: PathBuf, missing: Vec<String> },
    #[error("calibration data holds no sample (after --max-samples)")]
    NoSamples,
    #[error(
        "tensor `{tensor}` holds {what} on calibration sample {sample} (from `{path}`); \
         the model or that sample is broken"
    )]
    NonFinite {
        tensor: String,
        sample: usize,
        path: PathBuf,
        what: &'static str,
    },
    #[error("calibration ran but no statistics reached tensor(s) {}", tensors.join(", "))]
    Unobserved { tensors: Vec<String> },
}

impl CalibError {
    /// `Err(Unobserved)` naming `tensors` (already quoted), unless there are none.
    pub fn unless_all_observed(tensors: Vec<String>) -> Result<(), CalibError> {
        if tensors.is_empty() {
            Ok(())
        } else {
            Err(CalibError::Unobserved { tensors })
        }
    }
}

/// Problems writing the results.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("output directory `{0}` does not exist")]
    DirMissing(PathBuf),
    /// The run was cancelled before this output was renamed into place.
    #[error("interrupted; nothing written")]
    Interrupted,
    #[error("cannot write `{path}`: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write `{path}`: {reason}")]
    TooLarge { path: PathBuf, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
