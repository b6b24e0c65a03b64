//! What commands write besides their model: warnings, JSON files, text files, and the check
//! that such an extra output is neither a model of the command nor in a missing folder.

use std::path::Path;

use crate::atomic::{self, Clash};
use crate::error::{Error, OutputError};

use super::settings::usage;

pub fn warn(w: &str) {
    eprintln!("warning: {w}");
}

/// Writes `value` as pretty JSON to `path` (atomically).
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), Error> {
    let json = serde_json::to_vec_pretty(value).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(atomic::write(path, &json)?)
}

/// Writes `text` to `path` (atomically).
pub fn write_text(path: &Path, text: &str) -> Result<(), Error> {
    Ok(atomic::write(path, text.as_bytes())?)
}

/// Refuses an extra output (report, cache, chart) given as `flag` that is one of the command's
/// `models`, or whose folder is missing.
pub fn check_side_output(extra: Option<&Path>, flag: &str, models: &[&Path]) -> Result<(), Error> {
    let Some(path) = extra else { return Ok(()) };
    match atomic::check_destination(path, false, models) {
        Ok(()) => Ok(()),
        Err(Clash::DirMissing(dir)) => Err(OutputError::DirMissing(dir).into()),
        Err(Clash::Protected(_)) => Err(usage(format!(
            "{flag} `{}` would overwrite a model",
            path.display()
        ))),
    }
}
