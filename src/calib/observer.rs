//! What one calibration thread keeps about one tensor, and how threads' views combine.

use crate::stats::{Averaged, ChannelMoments, Histogram, MinMax, TensorStats};

/// Which statistics to collect (min/max always).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observe {
    /// Histograms with this many bins per side.
    pub histogram_bins: Option<usize>,
    /// Per-sample extremes, for averaged min/max.
    pub averaged: bool,
    /// Skip NaN and ±infinity (counted) instead of refusing them (`--nan-policy ignore`).
    pub skip_non_finite: bool,
}

impl Observe {
    /// What either asks for.
    pub fn union(self, other: Observe) -> Observe {
        Observe {
            histogram_bins: self.histogram_bins.or(other.histogram_bins),
            averaged: self.averaged || other.averaged,
            skip_non_finite: self.skip_non_finite || other.skip_non_finite,
        }
    }

    /// Everything: what `onnx-quant calibrate` records so any method can use the file later.
    pub fn all(bins: usize) -> Self {
        Observe {
            histogram_bins: Some(bins),
            averaged: true,
            skip_non_finite: false,
        }
    }
}

/// One thread's statistics of one tensor.
pub struct Observer {
    minmax: MinMax,
    histogram: Option<Histogram>,
    /// (sample index, min, max) per sample, when averaging: summed in sample order at the end,
    /// so the result does not depend on which thread saw which sample.
    extremes: Option<Vec<(usize, f32, f32)>>,
    /// `Some(count)` of values skipped when non-finite values are skipped.
    non_finite: Option<u64>,
    /// Per-channel moments, when asked for.
    channels: Option<ChannelMoments>,
    /// Why the channel moments could not be kept (shapes that change channel count).
    channel_problem: Option<String>,
}

impl Observer {
    pub fn new(o: Observe) -> Self {
        Observer {
            minmax: MinMax::default(),
            histogram: o.histogram_bins.map(Histogram::new),
            extremes: o.averaged.then(Vec::new),
            non_finite: o.skip_non_finite.then_some(0),
            channels: None,
            channel_problem: None,
        }
    }

    /// The same observer, also keeping per-channel moments along `axis`.
    pub fn with_channels(mut self, axis: usize) -> Self {
        self.channels = Some(ChannelMoments::new(axis));
        self
    }

    /// Folds in the values of sample `sample`. Non-finite values are refused (`Err` names them),
    /// or skipped and counted when the observer was made to skip them.
    pub fn update(
        &mut self,
        sample: usize,
        shape: &[usize],
        values: &[f32],
    ) -> Result<(), &'static str> {
        let finite: Vec<f32>;
        let (batch, values) = match (MinMax::of(values), &mut self.non_finite) {
            (Ok(b), _) => (b, values),
            (Err(_), Some(skipped)) => {
                finite = values.iter().copied().filter(|v| v.is_finite()).collect();
                *skipped += (values.len() - finite.len()) as u64;
                (MinMax::of(&finite)?, &finite[..])
            }
            (Err(e), None) => return Err(e),
        };
        self.minmax.merge(&batch);
        if let Some(h) = &mut self.histogram {
            h.add_with_amax(values, batch.amax());
        }
        if let Some(x) = &mut self.extremes
            && batch.is_observed()
        {
            x.push((sample, batch.min, batch.max));
        }
        // channels keep positions: a sample with skipped values leaves them out
        if let Some(c) = &mut self.channels
            && values.len() == shape.iter().product::<usize>()
            && let Err(e) = c.add(shape, values)
        {
            self.channel_problem.get_or_insert(e);
            self.channels = None;
        }
        Ok(())
    }

    pub fn merge(&mut self, other: Observer) {
        self.minmax.merge(&other.minmax);
        if let (Some(a), Some(b)) = (&mut self.histogram, &other.histogram) {
            a.merge(b)
                .expect("observers of one run share their bin count");
        }
        if let (Some(a), Some(b)) = (&mut self.extremes, other.extremes) {
            a.extend(b);
        }
        if let (Some(a), Some(b)) = (&mut self.non_finite, other.non_finite) {
            *a += b;
        }
        self.channels = match (self.channels.take(), other.channels) {
            (Some(mut a), Some(b)) => a.merge(&b).is_ok().then_some(a),
            _ => None,
        };
    }

    pub fn finish(self) -> TensorStats {
        let averaged = self.extremes.map(|mut x| {
            x.sort_by_key(|e| e.0);
            x.iter().fold(Averaged::default(), |mut a, &(_, lo, hi)| {
                a.min_sum += f64::from(lo);
                a.max_sum += f64::from(hi);
                a.batches += 1;
                a
            })
        });
        TensorStats {
            minmax: self.minmax,
            averaged,
            histogram: self.histogram,
            non_finite: self.non_finite.unwrap_or(0),
            channels: self.channels,
        }
    }
}
