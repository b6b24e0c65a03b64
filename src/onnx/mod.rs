//! Bytes ⇄ `ModelProto`: decoding with checks, external data, atomic saving.
//!
//! Nothing here interprets the graph. `load` then `save` of an unchanged model loses nothing:
//! prost keeps every field of the vendored schema, and an inline model is written back
//! byte-identical.

mod external;
pub mod tensor;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;

use crate::atomic;
use crate::error::{ModelError, OutputError};
use crate::proto::ModelProto;

pub use external::for_each_tensor;

/// IR version of the vendored `proto/onnx.proto`. Newer models may carry fields prost drops.
pub const SCHEMA_IR_VERSION: i64 = 14;

/// Protobuf messages cannot exceed 2 GiB; models near that size are written with external data.
const PROTOBUF_LIMIT: usize = (2 << 30) - (64 << 20);

/// A decoded model and what loading it found out.
#[derive(Debug)]
pub struct Loaded {
    pub model: ModelProto,
    pub path: PathBuf,
    /// Size of the `.onnx` file itself.
    pub file_bytes: u64,
    /// Side files the model's external data was read from (empty for an inline model).
    pub side_files: Vec<PathBuf>,
    /// Total size of those side files.
    pub side_bytes: u64,
    pub warnings: Vec<String>,
}

/// Reads and decodes `path`, inlining external data.
pub fn load(path: &Path) -> Result<Loaded, ModelError> {
    load_deferring(path, |_| HashSet::new())
}

/// [`load`], leaving on disk the large external initializers `defer` names (given the decoded
/// model): a model over 2 GB is then planned and calibrated without holding its weights twice
/// (tract reads them itself). [`materialize`] reads them when they are needed.
pub fn load_deferring(
    path: &Path,
    defer: impl FnOnce(&ModelProto) -> HashSet<String>,
) -> Result<Loaded, ModelError> {
    let read_err = |source| ModelError::Read {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::read(path).map_err(read_err)?;
    let file_bytes = bytes.len() as u64;
    let model = decode(path, Bytes::from(bytes))?;
    let mut loaded = Loaded {
        model,
        path: path.to_path_buf(),
        file_bytes,
        side_files: Vec::new(),
        side_bytes: 0,
        warnings: Vec::new(),
    };
    let deferred = defer(&loaded.model);
    loaded.side_files = external::inline(&mut loaded.model, path, &deferred)?;
    loaded.side_bytes = loaded
        .side_files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    if loaded.model.ir_version() > SCHEMA_IR_VERSION {
        loaded.warnings.push(format!(
            "model `{}` has IR version {}, newer than the schema onnx-quant reads ({SCHEMA_IR_VERSION}): \
             fields added since are dropped",
            path.display(),
            loaded.model.ir_version()
        ));
    }
    Ok(loaded)
}

/// Reads the external tensors [`load_deferring`] left on disk into `model` (a copy of the
/// model loaded from `path`).
pub fn materialize(model: &mut ModelProto, path: &Path) -> Result<(), ModelError> {
    external::inline(model, path, &HashSet::new()).map(|_| ())
}

/// The float32 values of one tensor [`load_deferring`] left on disk, read from its file (the
/// model was loaded from `path`).
pub fn read_external_f32(
    t: &crate::proto::TensorProto,
    path: &Path,
) -> Result<Vec<f32>, ModelError> {
    let mut one = ModelProto {
        graph: Some(crate::proto::GraphProto {
            initializer: vec![t.clone()],
            ..Default::default()
        }),
        ..Default::default()
    };
    external::inline(&mut one, path, &HashSet::new())?;
    let t = &one.graph.as_ref().expect("built above").initializer[0];
    tensor::f32_data(t).map_err(|reason| ModelError::ExternalData {
        path: path.to_path_buf(),
        tensor: t.name().to_string(),
        reason,
    })
}

/// Decodes model bytes, refusing what decodes but is not an ONNX model.
pub fn decode(path: &Path, bytes: Bytes) -> Result<ModelProto, ModelError> {
    if bytes.is_empty() {
        return Err(ModelError::Empty {
            path: path.to_path_buf(),
        });
    }
    let model = ModelProto::decode(bytes).map_err(|source| ModelError::Decode {
        path: path.to_path_buf(),
        source,
    })?;
    let not_onnx = |reason: &str| ModelError::NotOnnx {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if model.ir_version.is_none() {
        return Err(not_onnx("it has no ir_version"));
    }
    if model.graph.is_none() {
        return Err(not_onnx("it has no graph"));
    }
    Ok(model)
}

/// How to write a model.
#[derive(Clone, Debug, Default)]
pub struct SaveOptions {
    /// Move tensors of at least `external_threshold` bytes into `<output file name>.data`.
    pub external: bool,
    pub external_threshold: usize,
}

/// What `save` wrote.
#[derive(Clone, Debug)]
pub struct Saved {
    pub path: PathBuf,
    pub file_bytes: u64,
    pub data_file: Option<(PathBuf, u64)>,
}

/// Writes `model` to `path` through temporary files in the same folder, renamed into place only
/// when complete: a failure never leaves a partial or clobbered file.
pub fn save(mut model: ModelProto, path: &Path, opts: &SaveOptions) -> Result<Saved, OutputError> {
    let write_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| OutputError::Write { path: p, source }
    };
    let externalize = opts.external || model.encoded_len() > PROTOBUF_LIMIT;
    let mut data = None;
    if externalize {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let location = format!("{name}.data");
        let data_path = atomic::parent_dir(path).join(&location);
        let mut tmp = atomic::temp_for(&data_path)?;
        let threshold = if opts.external {
            opts.external_threshold
        } else {
            1024
        };
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        let n = external::externalize(&mut model, &location, threshold, &mut w)
            .and_then(|n| w.flush().map(|_| n))
            .map_err(write_err(&data_path))?;
        drop(w);
        data = Some((tmp, data_path, n));
    }
    if model.encoded_len() > PROTOBUF_LIMIT {
        return Err(OutputError::TooLarge {
            path: path.to_path_buf(),
            reason: "the graph alone exceeds protobuf's 2 GiB limit".into(),
        });
    }
    let bytes = model.encode_to_vec();
    let mut tmp = atomic::temp_for(path)?;
    // through the `File`: `NamedTempFile`'s own errors name the temporary file
    tmp.as_file_mut()
        .write_all(&bytes)
        .map_err(write_err(path))?;
    let data_file = match data {
        Some((dtmp, dpath, n)) => {
            atomic::commit(dtmp, &dpath)?;
            Some((dpath, n))
        }
        None => None,
    };
    atomic::commit(tmp, path)?;
    Ok(Saved {
        path: path.to_path_buf(),
        file_bytes: bytes.len() as u64,
        data_file,
    })
}
