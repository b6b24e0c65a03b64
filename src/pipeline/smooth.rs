//! SmoothQuant's measuring pass: the per-channel maxima of each LayerNormalization output that
//! feeds linear layers, over the calibration samples; then `rewrite::smooth` folds the factors.

use std::collections::HashMap;

use crate::calib::{Collect, Dataset, Floats, Runner, Sample, run_models};
use crate::error::Error;
use crate::rewrite::smooth;

use super::{DataSource, Model};

/// Per-channel maxima of |x| along the last axis, one list per observed tensor.
struct ChannelMax(Vec<Vec<f32>>);

impl Collect for ChannelMax {
    fn collect(&mut self, _: &Sample, outputs: &[Vec<Floats>]) -> Result<(), Error> {
        for (acc, out) in self.0.iter_mut().zip(&outputs[0]) {
            let c = out.shape.last().copied().unwrap_or(1).max(1);
            if acc.is_empty() {
                acc.resize(c, 0.0);
            }
            for row in out.data.chunks(c) {
                for (m, x) in acc.iter_mut().zip(row) {
                    // NaN fails `max`: a non-finite activation leaves the factor at its
                    // finite maximum, and calibration reports it afterwards
                    *m = m.max(x.abs());
                }
            }
        }
        Ok(())
    }
}

/// Smooths `model` in place with strength `alpha`, measuring on the samples of `data`. Returns
/// the notes for the report.
pub(super) fn smooth_model(
    model: &mut Model,
    data: &DataSource,
    alpha: f64,
) -> Result<Vec<String>, Error> {
    let path = model.loaded.path.clone();
    // the weights are read and rewritten: none stays on disk
    crate::onnx::materialize(&mut model.loaded.model, &path)?;
    let groups = smooth::groups(&model.loaded.model);
    if groups.is_empty() {
        return Ok(vec![
            "SmoothQuant: no LayerNormalization feeds only MatMul/Gemm with constant weights; nothing smoothed".into(),
        ]);
    }
    let tensors: Vec<String> = groups.iter().map(|g| g.tensor.clone()).collect();
    let set = Dataset::open(&data.path, &model.inputs, data.max_samples, &data.images)?;
    let shapes = set.fixed_shapes();
    let compiled = Runner::compiled(
        &model.loaded.model,
        &path,
        Some(&tensors),
        &model.inputs,
        &shapes,
    )?;
    let opts = data.run_options(false);
    let parts = run_models(&[&compiled], set, &opts, || {
        ChannelMax(vec![Vec::new(); tensors.len()])
    })?;
    let mut amax: HashMap<String, Vec<f32>> = HashMap::new();
    for part in parts {
        for (t, m) in tensors.iter().zip(part.0) {
            let acc = amax.entry(t.clone()).or_default();
            if acc.is_empty() {
                *acc = m;
            } else {
                acc.iter_mut().zip(&m).for_each(|(a, b)| *a = a.max(*b));
            }
        }
    }
    smooth::apply(&mut model.loaded.model, &groups, &amax, alpha).map_err(|reason| {
        crate::error::ModelError::Unsupported {
            path: path.clone(),
            what: format!("a layer SmoothQuant cannot fold ({reason})"),
        }
        .into()
    })
}
