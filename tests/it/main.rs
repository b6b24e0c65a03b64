//! Integration tests: they run the real `onnx-quant` binary (and the library's public API) on
//! the committed fixtures.

mod accuracy;
mod check;
mod cli_errors;
mod config;
mod images;
mod layers;
mod lowbit;
mod onnx_io;
mod quantize;
mod real_classes;
mod rounding;
mod stats;
mod support;

#[cfg(feature = "interop")]
mod engine;
#[cfg(feature = "interop")]
mod interop;
