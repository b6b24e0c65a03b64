//! Any bytes as a calibration file (`.npy`, `.npz` or `.pb`, picked by the first byte) for a
//! float input of rank 2: opening it and reading every sample must return an error or samples,
//! never panic, and never allocate what the header merely claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onnx_quant::calib::{Dataset, Elem, InputSpec};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let ext = ["npy", "npz", "pb"][usize::from(kind) % 3];
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(format!("x.{ext}"));
    std::fs::write(&path, bytes).expect("write");
    let inputs = [InputSpec {
        name: "x".into(),
        elem: Elem::F32,
        dims: vec![None, Some(3)],
    }];
    if let Ok(set) = Dataset::open(&path, &inputs, Some(8), &Default::default()) {
        for s in set.samples().take(8) {
            if s.is_err() {
                break;
            }
        }
    }
});
