//! Helpers shared by the integration tests: running the binary, fixture paths, scratch
//! folders, writing `.npy` files and editing models.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use onnx_quant::proto::ModelProto;
use prost::Message;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(rel: &str) -> PathBuf {
    root().join("fixtures").join(rel)
}

pub const DIGITS: &str = "digits/digits_cnn.onnx";
pub const DIGITS_CALIB: &str = "digits/calib.npy";

/// (model, calibration, evaluation) fixtures every preset is checked on.
pub const PRESET_FIXTURES: [(&str, &str, &str); 5] = [
    (DIGITS, DIGITS_CALIB, "digits/eval_x.npy"),
    (
        "models/blocks.onnx",
        "models/blocks_calib.npy",
        "models/blocks_eval.npy",
    ),
    (
        "models/transformer.onnx",
        "models/transformer_calib.npy",
        "models/transformer_eval.npy",
    ),
    (
        "models/constant_weights.onnx",
        "models/constant_weights_calib.npy",
        "models/constant_weights_calib.npy",
    ),
    ("mbnet/mbnet.onnx", "mbnet/calib.npy", "mbnet/eval_x.npy"),
];

/// Runs `onnx-quant` with `args`.
pub fn run<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_onnx-quant"))
        .args(args)
        .output()
        .expect("binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed")
}

pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Quantizes `model` with `calib` into `dir/name` and returns the output path, asserting success.
pub fn quantize_ok(model: &Path, calib: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<std::ffi::OsString> = vec![
        model.into(),
        out.into(),
        "--calib".into(),
        calib.into(),
        "-q".into(),
    ];
    args.extend(extra.iter().map(Into::into));
    let o = run(&args);
    assert_eq!(code(&o), 0, "onnx-quant failed: {}", stderr(&o));
    o
}

/// Writes a little-endian float32 `.npy`.
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    write_npy_raw(
        path,
        &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}"),
        &data
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    );
}

/// Writes a 1-D little-endian int64 `.npy` (labels).
pub fn write_npy_i64(path: &Path, shape: &[usize], data: &[i64]) {
    write_npy_raw(
        path,
        &format!(
            "{{'descr': '<i8', 'fortran_order': False, 'shape': ({},), }}",
            shape[0]
        ),
        &data
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    );
}

/// Writes a `.npy` with a given header dict and payload.
pub fn write_npy_raw(path: &Path, dict: &str, payload: &[u8]) {
    let mut h = dict.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend((h.len() as u16).to_le_bytes());
    v.extend(h.as_bytes());
    v.extend(payload);
    std::fs::write(path, v).unwrap();
}

/// Reads the digits calibration set: (shape, values).
pub fn digits_calib() -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(fixture(DIGITS_CALIB)).unwrap();
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let data = &bytes[10 + header_len..];
    (
        vec![data.len() / 256, 1, 8, 8],
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
    )
}

pub fn load_model(path: &Path) -> ModelProto {
    ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap()
}

pub fn save_model(model: &ModelProto, path: &Path) {
    std::fs::write(path, model.encode_to_vec()).unwrap();
}

/// Files in `dir` whose name starts with `.onnx-quant-` (leftover temporaries).
pub fn temp_leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".onnx-quant-"))
        .collect()
}

/// The nodes of op type `op`.
pub fn nodes<'a>(m: &'a ModelProto, op: &str) -> Vec<&'a onnx_quant::proto::NodeProto> {
    m.graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .filter(|n| n.op_type() == op)
        .collect()
}

/// The initializer `name` (panics when missing).
pub fn init<'a>(m: &'a ModelProto, name: &str) -> &'a onnx_quant::proto::TensorProto {
    m.graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("no initializer {name}"))
}

/// The JSON file at `path` (a report, an eval result).
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("json written")).expect("valid json")
}
