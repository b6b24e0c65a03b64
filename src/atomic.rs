//! Writing files so that readers only ever see the old file or the complete new one: data goes
//! to a temporary file in the destination folder, which is renamed over the destination.
//!
//! Temporary files are also listed in a process-wide registry, so that an interruption (Ctrl-C,
//! SIGTERM: [`remove_pending`], called by the binary's signal handler) deletes them instead of
//! leaving `.onnx-quant-*.tmp` files behind; the destination keeps its old content.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Temporary files created and not yet renamed or dropped.
static PENDING: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

fn pending() -> std::sync::MutexGuard<'static, BTreeSet<PathBuf>> {
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Deletes every temporary file not yet renamed into place; returns how many. For signal
/// handlers: the process is about to exit.
pub fn remove_pending() -> usize {
    let mut set = pending();
    let n = set
        .iter()
        .filter(|p| std::fs::remove_file(p).is_ok())
        .count();
    set.clear();
    n
}

/// Set by [`cancel`]: calibration stops at its next sample and no output is renamed into place.
static CANCELLED: AtomicBool = AtomicBool::new(false);

/// Asks the running job to stop (the Python API's Ctrl-C: the process lives on, so the job
/// must end by itself): calibration stops at its next sample, commits fail, temporary files are
/// dropped. [`clear_cancel`] re-arms.
pub fn cancel() {
    CANCELLED.store(true, Ordering::SeqCst);
}

/// Whether [`cancel`] was called since the last [`clear_cancel`].
pub fn cancelled() -> bool {
    CANCELLED.load(Ordering::SeqCst)
}

/// Lets jobs run again after a [`cancel`].
pub fn clear_cancel() {
    CANCELLED.store(false, Ordering::SeqCst);
}

use crate::error::OutputError;

/// The folder a path will be written in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Why a destination is refused before any work is done.
#[derive(Debug, PartialEq)]
pub enum Clash {
    /// Its folder does not exist.
    DirMissing(PathBuf),
    /// It is `protected[i]` (or, for a model, its `.data` file is).
    Protected(usize),
}

/// The one check of a destination: its folder exists and it is none of `protected` (the files
/// the same command reads or writes). `with_data`: the destination is a model that may also
/// write `DEST.data`, which must not be one of them either. Compares canonical folders, so
/// destinations that do not exist yet are checked too.
pub fn check_destination(dest: &Path, with_data: bool, protected: &[&Path]) -> Result<(), Clash> {
    let dir = parent_dir(dest);
    if !dir.is_dir() {
        return Err(Clash::DirMissing(dir));
    }
    let canon = |p: &Path| -> Option<PathBuf> {
        Some(parent_dir(p).canonicalize().ok()?.join(p.file_name()?))
    };
    let out = canon(dest);
    let data = out
        .as_ref()
        .filter(|_| with_data)
        .map(|o| PathBuf::from(format!("{}.data", o.display())));
    match protected.iter().position(|p| {
        let c = canon(p);
        c.is_some() && (c == out || c == data)
    }) {
        Some(i) => Err(Clash::Protected(i)),
        None => Ok(()),
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
    pending().insert(tmp.path().to_path_buf());
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
    let path = tmp.path().to_path_buf();
    let done = (|| {
        tmp.as_file().sync_all().map_err(err)?;
        pause_before_rename();
        if cancelled() {
            return Err(OutputError::Interrupted);
        }
        tmp.persist(dest).map_err(|e| err(e.error))?;
        Ok(())
    })();
    pending().remove(&path);
    done
}

/// Debug builds only: waits `ONNX_QUANT_TEST_PAUSE_BEFORE_RENAME_MS` milliseconds before the
/// rename, so tests can interrupt a run while its temporary file exists.
fn pause_before_rename() {
    if cfg!(debug_assertions)
        && let Some(ms) = std::env::var("ONNX_QUANT_TEST_PAUSE_BEFORE_RENAME_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Writes `bytes` to `dest` atomically.
pub fn write(dest: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let mut tmp = temp_for(dest)?;
    tmp.as_file_mut()
        .write_all(bytes)
        .map_err(|source| OutputError::Write {
            path: dest.to_path_buf(),
            source,
        })?;
    commit(tmp, dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_is_checked_before_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.onnx");
        std::fs::write(&model, b"x").unwrap();
        let out = dir.path().join("out.onnx");
        assert_eq!(check_destination(&out, true, &[&model]), Ok(()));
        // the same file by another spelling
        let again = dir.path().join(".").join("m.onnx");
        assert_eq!(
            check_destination(&again, true, &[&out, &model]),
            Err(Clash::Protected(1))
        );
        // a model's data file is protected only for model outputs
        let data = dir.path().join("out.onnx.data");
        assert_eq!(
            check_destination(&out, true, &[&data]),
            Err(Clash::Protected(0))
        );
        assert_eq!(check_destination(&out, false, &[&data]), Ok(()));
        let missing = dir.path().join("no/such/out.onnx");
        assert_eq!(
            check_destination(&missing, true, &[]),
            Err(Clash::DirMissing(dir.path().join("no/such")))
        );
    }
}
