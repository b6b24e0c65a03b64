//! Calibration: sample sources (`.npy`, `.npz`, `.pb`, images, directories), the tract runner that
//! fills the streaming statistics of `crate::stats`.

pub mod array;
pub mod image;
pub mod npy;
pub mod observer;
pub mod parts;
pub mod runner;
pub mod source;

pub use crate::ir::TensorInfo;
pub use array::{Array, Elem, InputSpec};
pub use image::ImageOptions;
pub use observer::Observe;
pub use parts::{Part, partition};
pub use runner::{Collect, Compiled, Extra, Floats, RunOptions, Runner, run_models};
pub use source::{Dataset, Sample, read_labels};
