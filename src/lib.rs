//! onnx-quant: post-training quantization of ONNX models.
//!
//! A float model is loaded ([`onnx`]), planned ([`policy`]), calibrated by running it in tract
//! ([`calib`]), given scales and zero-points ([`params`]) and rewritten into a QDQ model
//! ([`rewrite`]) over the graph representation in [`ir`]. [`pipeline::quantize`] runs the whole
//! job; `ARCHITECTURE.md` maps the code.

pub mod accuracy;
pub mod atomic;
pub mod calib;
pub mod check;
pub mod cli;
pub mod config;
pub mod error;
pub mod ir;
pub mod onnx;
pub mod params;
pub mod pipeline;
pub mod policy;
pub mod proto;
pub mod report;
pub mod rewrite;
pub mod stats;

pub use error::{Error, ExitCode};
