//! Generates the ONNX protobuf types from the vendored `proto/onnx.proto`.
//!
//! `protox` parses the schema in pure Rust, so building needs no `protoc` and downloads nothing.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let descriptors = protox::compile(["proto/onnx.proto"], ["proto"])?;
    prost_build::Config::new()
        // `raw_data` and other bytes fields become `bytes::Bytes`: decoding from a `Bytes`
        // buffer then shares it instead of copying every initializer.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
