//! Calibration: sample sources (`.npy`, `.npz`, `.pb`, directories), the tract runner and the
//! streaming statistics it fills.

pub mod array;
mod npy;
pub mod runner;
pub mod source;
pub mod stats;

pub use array::{Array, Elem};
pub use runner::{RunOptions, Runner, TensorInfo};
pub use source::{Dataset, InputSpec, Sample};
pub use stats::{MinMax, StatsTable};
