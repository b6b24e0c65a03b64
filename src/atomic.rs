//! Writing files so that readers only ever see the old file or the complete new one: data goes
//! to a temporary file in the destination folder, which is renamed over the destination.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::OutputError;

/// The folder a path will be written in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A temporary file next to `dest`, with the permissions a plainly created file would get
/// (those of the file it replaces, or rw-r--r--).
pub fn temp_for(dest: &Path) -> Result<tempfile::NamedTempFile, OutputError> {
    let dir = parent_dir(dest);
    if !dir.is_dir() {
        return Err(OutputError::DirMissing(dir));
    }
    let perms = std::fs::metadata(dest).map(|m| m.permissions()).ok();
    let tmp = tempfile::Builder::new()
        .prefix(".onnx-quant-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|source| OutputError::Write {
            path: dest.to_path_buf(),
            source,
        })?;
    let perms = perms.unwrap_or_else(default_permissions);
    tmp.as_file()
        .set_permissions(perms)
        .map_err(|source| OutputError::Write {
            path: dest.to_path_buf(),
            source,
        })?;
    Ok(tmp)
}

#[cfg(unix)]
fn default_permissions() -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(0o644)
}

#[cfg(not(unix))]
fn default_permissions() -> std::fs::Permissions {
    std::fs::metadata(".")
        .map(|m| m.permissions())
        .expect("current folder is readable")
}

/// Flushes `tmp` to disk and renames it to `dest`.
pub fn commit(tmp: tempfile::NamedTempFile, dest: &Path) -> Result<(), OutputError> {
    let err = |source| OutputError::Write {
        path: dest.to_path_buf(),
        source,
    };
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(dest).map_err(|e| err(e.error))?;
    Ok(())
}

/// Writes `bytes` to `dest` atomically.
pub fn write(dest: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let mut tmp = temp_for(dest)?;
    tmp.write_all(bytes).map_err(|source| OutputError::Write {
        path: dest.to_path_buf(),
        source,
    })?;
    commit(tmp, dest)
}
