//! `onnx-quant eval`: a float model and its quantized version compared on data.

use std::path::PathBuf;

use serde::Serialize;

use crate::accuracy::compare::{Comparison, Labels, Measure, Source, compare, same_outputs};
use crate::calib::Dataset;
use crate::error::Error;

use super::{DataSource, InputShapes, open_model};

/// Everything `onnx-quant eval` needs.
#[derive(Clone, Debug)]
pub struct EvalJob {
    pub reference: PathBuf,
    pub quantized: PathBuf,
    pub data: DataSource,
    pub labels: Option<PathBuf>,
    pub measure: Measure,
    /// Shapes given for inputs (`--input-shape`).
    pub input_shapes: InputShapes,
}

/// What `eval` reports.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub reference: PathBuf,
    pub quantized: PathBuf,
    pub data: PathBuf,
    #[serde(flatten)]
    pub comparison: Comparison,
    pub seconds: f64,
}

/// Runs `eval`: loads both models and the data, compares.
pub fn evaluate(job: &EvalJob, warn: &dyn Fn(&str)) -> Result<EvalReport, Error> {
    let start = std::time::Instant::now();
    let reference = open_model(&job.reference, &job.input_shapes)?;
    let quantized = crate::onnx::load(&job.quantized)?;
    for w in reference.loaded.warnings.iter().chain(&quantized.warnings) {
        warn(w);
    }
    let float = Source {
        model: &reference.loaded.model,
        path: &job.reference,
    };
    let quant = Source {
        model: &quantized.model,
        path: &job.quantized,
    };
    same_outputs(float, quant)?;
    let data = Dataset::open(
        &job.data.path,
        &reference.inputs,
        job.data.max_samples,
        &job.data.images,
    )?;
    data.notes.iter().for_each(|n| warn(n));
    let labels = job
        .labels
        .as_deref()
        .map(crate::calib::read_labels)
        .transpose()?;
    let opts = job.data.run_options(true);
    let comparison = compare(
        float,
        quant,
        &reference.inputs,
        data,
        &opts,
        labels.as_deref().map(|values| Labels {
            path: job.labels.as_deref().expect("labels read from a path"),
            values,
        }),
        job.measure,
    )?;
    Ok(EvalReport {
        reference: job.reference.clone(),
        quantized: job.quantized.clone(),
        data: job.data.path.clone(),
        comparison,
        seconds: start.elapsed().as_secs_f64(),
    })
}
