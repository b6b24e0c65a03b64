//! Any bytes as an `.onnx` file: decoding, the graph checks, the text dump, the Q/DQ rule
//! checker of every target and the simulation must return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(model) = onnx_quant::onnx::decode(Path::new("fuzz.onnx"), data.to_vec().into()) else {
        return;
    };
    let problems = onnx_quant::ir::verify(&model);
    let _ = onnx_quant::ir::dump(&model);
    if problems.is_empty() {
        for target in ["tensorrt", "ort", "openvino"] {
            let _ = onnx_quant::check::check(&model, target);
        }
        let _ = onnx_quant::accuracy::simulate::simulate(&model);
    }
});
