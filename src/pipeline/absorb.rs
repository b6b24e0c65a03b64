//! High-bias absorption's measuring pass: each absorbable pair's pre-activation, channel by
//! channel (smallest, largest, mean, spread), over the first calibration samples; then
//! `rewrite::absorb` moves the shifts into layer 2.

use std::path::Path;

use crate::calib::{Collect, Dataset, Floats, InputSpec, Runner, Sample, run_models};
use crate::error::Error;
use crate::proto::ModelProto;
use crate::rewrite::absorb::{self, Measured};
use crate::stats::ChannelMoments;

use super::DataSource;

/// Samples the shifts are measured on: the first this many of the calibration data. The
/// pass costs this many extra inferences; a value below a channel's shift on the other
/// samples is rare because each sample gives every spatial position of a channel.
pub const ABSORB_SAMPLES: usize = 16;

/// One thread's view of every pre-activation: per-channel extremes (order-free), moments in
/// fixed point (order-free too, so the shifts do not depend on the thread count).
struct PreActivations(Vec<(Vec<f64>, Vec<f64>, ChannelMoments)>);

impl Collect for PreActivations {
    fn collect(&mut self, _: &Sample, outputs: &[Vec<Floats>]) -> Result<(), Error> {
        for ((lo, hi, moments), out) in self.0.iter_mut().zip(&outputs[0]) {
            moments
                .add(out.shape, out.data)
                .map_err(|e| Error::Internal(format!("bias absorption: a pre-activation {e}")))?;
            let c = out.shape.get(1).copied().unwrap_or(1);
            let inner: usize = out.shape.iter().skip(2).product();
            if lo.is_empty() {
                *lo = vec![f64::INFINITY; c];
                *hi = vec![f64::NEG_INFINITY; c];
            }
            for (i, chunk) in out.data.chunks(inner.max(1)).enumerate() {
                let ch = i % c.max(1);
                for &x in chunk {
                    lo[ch] = lo[ch].min(f64::from(x));
                    hi[ch] = hi[ch].max(f64::from(x));
                }
            }
        }
        Ok(())
    }
}

/// High-bias absorption on `model` (loaded from `path`, its weights in memory, fed `inputs`)
/// in place, measured on the first [`ABSORB_SAMPLES`] samples of `data`: notes for the
/// report, and whether any channel shifted. Without data nothing changes and a note says why.
pub(super) fn absorb_model(
    model: &mut ModelProto,
    path: &Path,
    inputs: &[InputSpec],
    data: Option<&DataSource>,
) -> Result<(Vec<String>, bool), Error> {
    let sites = absorb::sites(model);
    if sites.is_empty() {
        return Ok((vec![
            "bias absorption: no layer pair joined by a Relu (or ReLU6) whose second layer reads no padding".into(),
        ], false));
    }
    let Some(data) = data else {
        return Ok((
            vec![format!(
                "bias absorption: {} pair(s) could absorb; the shifts are measured on calibration data (--calib), so none did",
                sites.len()
            )],
            false,
        ));
    };
    let tensors: Vec<String> = sites.iter().map(|s| s.pre.clone()).collect();
    let set = Dataset::open(&data.path, inputs, data.max_samples, &data.images)?;
    let samples = set.len().min(ABSORB_SAMPLES);
    let set = set.select(0..samples);
    let shapes = set.fixed_shapes();
    let compiled = Runner::compiled(model, path, Some(&tensors), inputs, &shapes)?;
    let fresh = || {
        PreActivations(
            (0..tensors.len())
                .map(|_| (Vec::new(), Vec::new(), ChannelMoments::new(1)))
                .collect(),
        )
    };
    let parts = run_models(&[&compiled], set, &data.run_options(false), fresh)?;
    let mut all = fresh();
    for part in parts {
        for ((lo, hi, m), (plo, phi, pm)) in all.0.iter_mut().zip(part.0) {
            if lo.is_empty() {
                (*lo, *hi) = (plo, phi);
            } else if !plo.is_empty() {
                lo.iter_mut().zip(&plo).for_each(|(a, b)| *a = a.min(*b));
                hi.iter_mut().zip(&phi).for_each(|(a, b)| *a = a.max(*b));
            }
            m.merge(&pm).map_err(Error::Internal)?;
        }
    }
    let measured: Vec<Measured> = all
        .0
        .into_iter()
        .map(|(min, max, m)| Measured {
            mean: m.mean(),
            std: m.std(),
            min,
            max,
        })
        .collect();
    let shifts: Vec<Vec<f64>> = sites
        .iter()
        .zip(&measured)
        .map(|(s, m)| {
            if m.min.len() == s.channels {
                absorb::shift(m)
            } else {
                vec![0.0; s.channels]
            }
        })
        .collect();
    let done = absorb::absorb(model, &sites, &shifts, &measured).map_err(|reason| {
        Error::from(crate::error::ModelError::Unsupported {
            path: path.to_path_buf(),
            what: format!("a layer pair bias absorption cannot shift ({reason})"),
        })
    })?;
    if done.pairs.is_empty() {
        return Ok((
            vec![format!(
                "bias absorption: none of {} pair(s) has a channel whose pre-activation stayed above 0 on the first {samples} sample(s)",
                sites.len()
            )],
            false,
        ));
    }
    let ratios: Vec<f64> = done
        .range_before
        .iter()
        .zip(&done.range_after)
        .filter(|(b, _)| **b > 0.0)
        .map(|(b, a)| a / b)
        .collect();
    let mut notes = vec![format!(
        "bias absorption: {} of {} pair(s) shifted {} channel(s) into the next layer's bias (measured on the first {samples} sample(s)); the largest activation between them fell to {:.0} % of its value (median over the pairs)",
        done.pairs.len(),
        sites.len(),
        done.channels,
        100.0 * crate::rewrite::equalize::median(ratios)
    )];
    if !done.clips.is_empty() {
        notes.push(format!(
            "bias absorption: {} Clip(s) from 0 became Relu then Min with each channel's shifted bound (exact): {}",
            done.clips.len(),
            done.clips.join(", ")
        ));
    }
    Ok((notes, true))
}
