//! External data: tensors whose bytes live in side files (`data_location = EXTERNAL`, with
//! `location` / `offset` / `length` entries relative to the model's folder).
//!
//! Loading inlines them into `raw_data` so every later stage sees ordinary tensors; saving can
//! move large `raw_data` back out into one side file next to the output.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use crate::error::ModelError;
use crate::proto::{
    AttributeProto, GraphProto, ModelProto, StringStringEntryProto, TensorProto,
    tensor_proto::{DataLocation, DataType},
};

/// Calls `f` on every `TensorProto` of the model: initializers, sparse initializers, tensors in
/// node attributes, in subgraphs (any depth) and in local functions.
pub fn for_each_tensor<E>(
    model: &mut ModelProto,
    f: &mut impl FnMut(&mut TensorProto) -> Result<(), E>,
) -> Result<(), E> {
    if let Some(g) = model.graph.as_mut() {
        graph_tensors(g, f)?;
    }
    for func in &mut model.functions {
        for node in &mut func.node {
            attributes_tensors(&mut node.attribute, f)?;
        }
    }
    Ok(())
}

fn graph_tensors<E>(
    g: &mut GraphProto,
    f: &mut impl FnMut(&mut TensorProto) -> Result<(), E>,
) -> Result<(), E> {
    for t in &mut g.initializer {
        f(t)?;
    }
    for s in &mut g.sparse_initializer {
        for t in s.values.iter_mut().chain(s.indices.iter_mut()) {
            f(t)?;
        }
    }
    for node in &mut g.node {
        attributes_tensors(&mut node.attribute, f)?;
    }
    Ok(())
}

fn attributes_tensors<E>(
    attrs: &mut [AttributeProto],
    f: &mut impl FnMut(&mut TensorProto) -> Result<(), E>,
) -> Result<(), E> {
    for a in attrs {
        for t in a.t.iter_mut().chain(a.tensors.iter_mut()) {
            f(t)?;
        }
        for s in a
            .sparse_tensor
            .iter_mut()
            .chain(a.sparse_tensors.iter_mut())
        {
            for t in s.values.iter_mut().chain(s.indices.iter_mut()) {
                f(t)?;
            }
        }
        for g in a.g.iter_mut().chain(a.graphs.iter_mut()) {
            graph_tensors(g, f)?;
        }
    }
    Ok(())
}

fn is_external(t: &TensorProto) -> bool {
    t.data_location == Some(DataLocation::External as i32)
}

fn entry<'a>(t: &'a TensorProto, key: &str) -> Option<&'a str> {
    t.external_data
        .iter()
        .find(|e| e.key() == key)
        .map(|e| e.value())
}

fn fixed_elem_size(data_type: i32) -> Option<usize> {
    use DataType::*;
    Some(match DataType::try_from(data_type).ok()? {
        Float | Int32 | Uint32 => 4,
        Uint8 | Int8 | Bool | Float8e4m3fn | Float8e4m3fnuz | Float8e5m2 | Float8e5m2fnuz => 1,
        Uint16 | Int16 | Float16 | Bfloat16 => 2,
        Int64 | Double | Uint64 | Complex64 => 8,
        Complex128 => 16,
        _ => return None,
    })
}

/// Checks that an external-data location stays inside the model's folder.
fn safe_location(location: &str) -> Result<&Path, String> {
    let p = Path::new(location);
    if location.is_empty() {
        return Err("has an empty `location`".into());
    }
    if p.components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "location `{location}` leaves the model's folder (absolute or `..`): refused"
        ));
    }
    Ok(p)
}

struct SideFile {
    file: File,
    len: u64,
    path: PathBuf,
}

/// External tensors at least this large may stay on disk while the model is planned and
/// calibrated ([`inline`]'s `defer`).
pub const DEFER_MIN_BYTES: u64 = 1 << 20;

/// Reads every external tensor into `raw_data`, except initializers named in `defer` of at
/// least [`DEFER_MIN_BYTES`]: those are checked (location, bounds, size) but stay external, to
/// be read by tract from the file and by a later call with an empty `defer` (which reads
/// what is left). Returns the side files used, in first-use order.
pub fn inline(
    model: &mut ModelProto,
    model_path: &Path,
    defer: &std::collections::HashSet<String>,
) -> Result<Vec<PathBuf>, ModelError> {
    let dir = model_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut files: HashMap<String, SideFile> = HashMap::new();
    let mut order = Vec::new();
    for_each_tensor(model, &mut |t: &mut TensorProto| {
        if !is_external(t) {
            return Ok(());
        }
        let name = t.name().to_string();
        let err = |reason: String| ModelError::ExternalData {
            path: model_path.to_path_buf(),
            tensor: name.clone(),
            reason,
        };
        let location = entry(t, "location").ok_or_else(|| err("has no `location`".into()))?;
        let rel = safe_location(location).map_err(&err)?;
        let parse = |key: &str| -> Result<Option<u64>, ModelError> {
            entry(t, key)
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| err(format!("`{key}` is not a number: `{v}`")))
                })
                .transpose()
        };
        let offset = parse("offset")?.unwrap_or(0);
        let length = parse("length")?;
        if !files.contains_key(location) {
            let path = dir.join(rel);
            let file = File::open(&path)
                .map_err(|e| err(format!("cannot open `{}`: {e}", path.display())))?;
            let len = file.metadata().map_err(|e| err(e.to_string()))?.len();
            order.push(path.clone());
            files.insert(location.to_string(), SideFile { file, len, path });
        }
        let side = files.get_mut(location).expect("inserted above");
        let length = length.unwrap_or(side.len.saturating_sub(offset));
        if offset.checked_add(length).is_none_or(|end| end > side.len) {
            return Err(err(format!(
                "offset {offset} + length {length} runs past the end of `{}` ({} bytes)",
                side.path.display(),
                side.len
            )));
        }
        if let (Some(size), Some(n)) = (
            fixed_elem_size(t.data_type()),
            super::tensor::element_count(&t.dims),
        ) && (n as u64).checked_mul(size as u64) != Some(length)
        {
            return Err(err(format!(
                "holds {length} bytes where its dims {:?} need {}",
                t.dims,
                n.saturating_mul(size)
            )));
        }
        if length >= DEFER_MIN_BYTES && defer.contains(&name) {
            return Ok(());
        }
        let mut buf = vec![0u8; length as usize];
        side.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| side.file.read_exact(&mut buf))
            .map_err(|e| err(format!("cannot read `{}`: {e}", side.path.display())))?;
        t.raw_data = Some(buf.into());
        t.external_data.clear();
        t.data_location = None;
        Ok(())
    })?;
    Ok(order)
}

const ALIGN: u64 = 64;

/// Moves the `raw_data` of every tensor of at least `threshold` bytes into `out`, recording
/// `location` / `offset` / `length`. Offsets are 64-byte aligned. Returns the bytes written.
pub fn externalize(
    model: &mut ModelProto,
    location: &str,
    threshold: usize,
    out: &mut impl Write,
) -> std::io::Result<u64> {
    let mut offset = 0u64;
    for_each_tensor(model, &mut |t: &mut TensorProto| -> std::io::Result<()> {
        let big = t
            .raw_data
            .as_ref()
            .is_some_and(|r| r.len() >= threshold && !r.is_empty());
        if !big {
            return Ok(());
        }
        let raw = t.raw_data.take().expect("checked above");
        let pad = offset.next_multiple_of(ALIGN) - offset;
        out.write_all(&vec![0u8; pad as usize])?;
        offset += pad;
        out.write_all(&raw)?;
        let kv = |k: &str, v: String| StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        };
        t.external_data = vec![
            kv("location", location.to_string()),
            kv("offset", offset.to_string()),
            kv("length", raw.len().to_string()),
        ];
        t.data_location = Some(DataLocation::External as i32);
        offset += raw.len() as u64;
        Ok(())
    })?;
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_outside_the_folder_are_refused() {
        assert!(safe_location("weights.bin").is_ok());
        assert!(safe_location("./sub/weights.bin").is_ok());
        assert!(safe_location("../weights.bin").is_err());
        assert!(safe_location("/etc/passwd").is_err());
        assert!(safe_location("").is_err());
    }
}
