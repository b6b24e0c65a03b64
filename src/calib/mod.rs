//! Calibration: sample sources (`.npy`, `.npz`, `.pb`, directories), the tract runner that
//! fills the streaming statistics of `crate::stats`.

pub mod array;
mod npy;
pub mod observer;
pub mod runner;
pub mod source;

pub use array::{Array, Elem};
pub use observer::Observe;
pub use runner::{RunOptions, Runner, TensorInfo};
pub use source::{Dataset, InputSpec, Sample};
