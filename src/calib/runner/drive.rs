//! Running compiled models over a data set: one thread per core, one tract state per sample,
//! outputs handed to a sink (statistics, counting) or a caller's collector.

use super::*;

/// One output of one model on one sample, as float32.
pub struct Floats<'a> {
    pub shape: &'a [usize],
    pub data: &'a [f32],
}

/// What a caller does with the outputs of every model on one sample (`outputs[m][k]`: output
/// `k` of model `m`). One collector per thread; the caller merges them.
pub trait Collect: Send {
    fn collect(&mut self, sample: &Sample, outputs: &[Vec<Floats>]) -> Result<(), Error>;
}

pub(super) struct Collector<C>(C);

/// `values` as float32 tensors (cast where they are not).
fn as_f32<'v>(
    values: impl Iterator<Item = &'v TValue>,
) -> Result<Vec<std::borrow::Cow<'v, Tensor>>, Error> {
    values
        .map(|v| v.cast_to::<f32>())
        .collect::<TractResult<_>>()
        .map_err(|e| Error::Internal(format!("casting an output to float32: {e:#}")))
}

/// Views of float32 tensors, for a collector.
fn views<'t>(cast: &'t [std::borrow::Cow<Tensor>]) -> Vec<Floats<'t>> {
    cast.iter()
        .map(|t| Floats {
            shape: t.shape(),
            data: t
                .try_as_plain_ram()
                .and_then(|v| v.as_slice::<f32>())
                .unwrap_or(&[]),
        })
        .collect()
}

impl<C: Collect> Sink for Collector<C> {
    fn consume(&mut self, sample: &Sample, outputs: &[TVec<TValue>]) -> Result<(), Error> {
        let cast: Vec<Vec<std::borrow::Cow<Tensor>>> = outputs
            .iter()
            .map(|o| as_f32(o.iter()))
            .collect::<Result<_, _>>()?;
        let views: Vec<Vec<Floats>> = cast.iter().map(|o| views(o)).collect();
        self.0.collect(sample, &views)
    }
}

/// Runs every sample of `data` through each of `models` in turn (same inputs), on
/// `opts.threads` threads, each feeding its own collector from `make`.
pub fn run_models<C: Collect>(
    models: &[&Compiled],
    data: Dataset,
    opts: &RunOptions,
    make: impl Fn() -> C + Sync,
) -> Result<Vec<C>, Error> {
    let sinks = drive(models, data, opts, || Collector(make()))?;
    Ok(sinks.into_iter().map(|c| c.0).collect())
}

/// Runs every sample through `models` on `opts.threads` threads, each feeding its own sink.
/// On failure, the error of the earliest failing sample is returned.
pub(super) fn drive<S: Sink>(
    models: &[&Compiled],
    data: Dataset,
    opts: &RunOptions,
    make: impl Fn() -> S + Sync,
) -> Result<Vec<S>, Error> {
    let total = data.len();
    let samples = Mutex::new(data.samples());
    let stop = AtomicBool::new(false);
    let bar = progress_bar(total, opts.progress);
    let threads = opts.threads.clamp(1, total.max(1));
    let results: Vec<Result<S, (usize, Error)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| scope.spawn(|| worker(models, make(), &samples, &stop, &bar)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    bar.finish_and_clear();
    let mut sinks = Vec::new();
    let mut first_err: Option<(usize, Error)> = None;
    for r in results {
        match r {
            Ok(s) => sinks.push(s),
            Err((idx, e)) if first_err.as_ref().is_none_or(|(i, _)| idx < *i) => {
                first_err = Some((idx, e))
            }
            Err(_) => {}
        }
    }
    match first_err {
        Some((_, e)) => Err(e),
        None => Ok(sinks),
    }
}

pub(super) fn worker<S: Sink>(
    models: &[&Compiled],
    mut sink: S,
    samples: &Mutex<crate::calib::source::Samples>,
    stop: &AtomicBool,
    bar: &indicatif::ProgressBar,
) -> Result<S, (usize, Error)> {
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(sink);
        }
        if crate::atomic::cancelled() {
            stop.store(true, Ordering::Relaxed);
            return Err((0, Error::Interrupted));
        }
        let next = samples.lock().unwrap_or_else(|p| p.into_inner()).next();
        let sample = match next {
            None => return Ok(sink),
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                stop.store(true, Ordering::Relaxed);
                return Err((usize::MAX, e.into()));
            }
        };
        let fail = |e: Error| {
            stop.store(true, Ordering::Relaxed);
            (sample.index, e)
        };
        let mut outputs = Vec::with_capacity(models.len());
        for m in models {
            // a fresh state per sample: tract keeps the state of recurrent ops (an LSTM's
            // hidden state) from one run to the next, so a reused state would make each
            // sample's outputs depend on the samples its thread ran before
            let mut state = m
                .plan
                .spawn()
                .map_err(|e| fail(runtime_err(&m.path, e).into()))?;
            let feed: TVec<TValue> = sample
                .arrays
                .iter()
                .map(to_tensor)
                .collect::<TractResult<_>>()
                .map_err(|e| fail(runtime_err(&m.path, e).into()))?;
            let out = state.run(feed).map_err(|e| {
                fail(
                    ModelError::Runtime {
                        path: m.path.clone(),
                        message: format!(
                            "on sample {} (from `{}`): {e:#}",
                            sample.index,
                            sample.origin.display()
                        ),
                    }
                    .into(),
                )
            })?;
            outputs.push(out);
        }
        sink.consume(&sample, &outputs).map_err(fail)?;
        bar.inc(1);
    }
}

/// What a calibration thread does with the outputs of one sample.
pub(super) trait Sink: Send {
    /// `outputs[m]`: the outputs of model `m`.
    fn consume(&mut self, sample: &Sample, outputs: &[TVec<TValue>]) -> Result<(), Error>;
}

/// Counts samples (plain inference).
pub(super) struct CountSink(pub(super) usize);

impl Sink for CountSink {
    fn consume(&mut self, _: &Sample, _: &[TVec<TValue>]) -> Result<(), Error> {
        self.0 += 1;
        Ok(())
    }
}

/// Feeds every observed output to its tensor's observer.
pub(super) struct CalibSink<'a> {
    pub(super) tensors: &'a [String],
    pub(super) observers: Vec<Observer>,
    /// A caller's collector, and which outputs it reads (its tensors, in order).
    pub(super) extra: Option<(&'a [usize], Box<dyn Collect + 'a>)>,
}

impl Sink for CalibSink<'_> {
    fn consume(&mut self, sample: &Sample, outputs: &[TVec<TValue>]) -> Result<(), Error> {
        if let Some((at, collector)) = &mut self.extra {
            let cast = as_f32(at.iter().map(|&i| &outputs[0][i]))?;
            collector.collect(sample, &[views(&cast)])?;
        }
        for ((value, obs), name) in outputs[0].iter().zip(&mut self.observers).zip(self.tensors) {
            let values = value
                .try_as_plain_ram()
                .and_then(|v| v.as_slice::<f32>())
                .map_err(|e| {
                    Error::Internal(format!("observed tensor `{name}` is not float32: {e}"))
                })?;
            obs.update(sample.index, value.shape(), values)
                .map_err(|what| CalibError::NonFinite {
                    tensor: name.clone(),
                    sample: sample.index,
                    path: sample.origin.clone(),
                    what,
                })?;
        }
        Ok(())
    }
}
