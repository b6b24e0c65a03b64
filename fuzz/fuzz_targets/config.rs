//! Any text as a settings file: every problem is reported with its position, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = onnx_quant::config::parse_user(&text, "fuzz.yaml");
});
