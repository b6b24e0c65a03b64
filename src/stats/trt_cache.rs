//! TensorRT calibration caches: a header line (`TRT-<version>-<algorithm>`) then one
//! `name: hex` line per tensor, where `hex` is the IEEE-754 bits of the float32 scale
//! `amax / 127` (the absolute maximum of the tensor's range divided by 127).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use crate::error::{CalibError, OutputError};

/// Header written by onnx-quant: the algorithm name TensorRT's entropy calibrator uses.
const HEADER: &str = "TRT-8601-EntropyCalibration2";

/// Whether `path` starts like a TensorRT calibration cache (`TRT-`).
pub fn is_trt_cache(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == b"TRT-"
}

/// Writes `amax` per tensor as a TensorRT calibration cache.
pub fn write_trt_cache(path: &Path, amax: &BTreeMap<String, f32>) -> Result<(), OutputError> {
    let mut s = format!("{HEADER}\n");
    for (name, a) in amax {
        let _ = writeln!(s, "{name}: {:08x}", (a / 127.0).to_bits());
    }
    crate::atomic::write(path, s.as_bytes())
}

/// Reads a TensorRT calibration cache: the absolute maximum (`scale · 127`) of each tensor.
pub fn read_trt_cache(path: &Path) -> Result<BTreeMap<String, f32>, CalibError> {
    let text = std::fs::read_to_string(path).map_err(|source| CalibError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |line: usize, reason: String| CalibError::BadFile {
        path: path.to_path_buf(),
        reason: format!("line {line}: {reason}"),
    };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.starts_with("TRT-") => {}
        _ => {
            return Err(bad(
                1,
                "not a TensorRT calibration cache (no `TRT-...` header)".into(),
            ));
        }
    }
    let mut out = BTreeMap::new();
    for (i, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
        let (name, hex) = line
            .rsplit_once(": ")
            .ok_or_else(|| bad(i + 1, format!("expected `name: hex`, got `{line}`")))?;
        let bits = u32::from_str_radix(hex.trim(), 16)
            .map_err(|_| bad(i + 1, format!("`{hex}` is not a hex float")))?;
        let scale = f32::from_bits(bits);
        if !(scale.is_finite() && scale > 0.0) {
            return Err(bad(i + 1, format!("tensor `{name}` has scale {scale}")));
        }
        out.insert(name.to_string(), scale * 127.0);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_scales_as_tensorrt_does_and_reads_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calib.cache");
        // ORT's writer stores the max (2.0) for a [-5, 2] tensor; the absolute maximum is 5.
        let amax = BTreeMap::from([("conv1: out".to_string(), 5.0f32), ("x".to_string(), 1.0)]);
        write_trt_cache(&path, &amax).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("TRT-"));
        assert!(text.contains(&format!("x: {:08x}\n", (1.0f32 / 127.0).to_bits())));
        assert!(text.contains("x: 3c010204"), "{text}");
        let back = read_trt_cache(&path).unwrap();
        assert!((back["conv1: out"] - 5.0).abs() < 1e-6);
        assert!((back["x"] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn reads_a_tensorrt_written_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.cache");
        std::fs::write(
            &path,
            "TRT-7000-EntropyCalibration2\ndata: 3c008912\nprob: 3c010a14\n",
        )
        .unwrap();
        let m = read_trt_cache(&path).unwrap();
        assert!((m["data"] / 127.0 - f32::from_bits(0x3c008912)).abs() < 1e-9);
        std::fs::write(&path, "not a cache\n").unwrap();
        assert!(
            read_trt_cache(&path)
                .unwrap_err()
                .to_string()
                .contains("no `TRT-...` header")
        );
        std::fs::write(&path, "TRT-1-X\na: zz\n").unwrap();
        assert!(
            read_trt_cache(&path)
                .unwrap_err()
                .to_string()
                .contains("line 2")
        );
    }
}
