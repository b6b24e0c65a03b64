//! Measuring quantized versions of one model built from the same statistics: sensitivity
//! analysis and automatic mixed precision. Each version is planned with some layers kept float
//! (`skip: true` overrides after the user's), built in memory and run simulated on held-out
//! samples against the float outputs computed once; calibration is not repeated.

use crate::params::QType;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::DataSource;
use super::build::{Built, build};
use super::calibrate::load_stats;
use super::open::open_model;
use super::plan::{Planned, Planning, plan_model, replan};
use super::ranges::observe_for;
use crate::accuracy::compare::{Labels, Reference, Source};
use crate::accuracy::mixed::{LayerEffect, Score};
use crate::calib::{Dataset, InputSpec, Observe};
use crate::config::Config;
use crate::error::Error;
use crate::policy::{Overrides, QuantPlan};
use crate::proto::ModelProto;
use crate::stats::StatsTable;

/// The layers a plan quantizes: the candidates to keep float.
pub(super) fn units(plan: &QuantPlan) -> Vec<String> {
    plan.nodes
        .iter()
        .filter(|n| n.quantized)
        .map(|n| n.name.clone())
        .collect()
}

/// Everything needed to build and score a version of the model.
pub(super) struct Bench<'a> {
    /// The model `written` was loaded from (its deferred weights are read from there).
    input: &'a Path,
    /// The path versions are named after.
    output: &'a Path,
    inputs: &'a [InputSpec],
    v: Versions<'a>,
    s: Scoring<'a>,
    pub reference: Reference,
}

/// What a [`Bench`] builds versions of the model from.
pub(super) struct Versions<'a> {
    pub written: &'a ModelProto,
    /// The types, preparation and control nodes kept of the plan, the user's overrides.
    pub subs: super::build::Subs<'a>,
    pub config: &'a Config,
    pub engine: &'a super::Engine,
    /// What the layers taken out of 8 bits become.
    pub fallback: super::Fallback,
}

/// What a [`Bench`] scores versions with.
pub(super) struct Scoring<'a> {
    /// Calibration samples, to measure tensors a version needs and the statistics lack
    /// (`None`: statistics from a file; such a version is an error).
    pub calib: Option<Dataset>,
    pub src: &'a DataSource,
    pub stats: &'a mut StatsTable,
    pub source: &'a Path,
    pub labels: Option<Labels<'a>>,
}

impl<'a> Bench<'a> {
    /// The bench of `model` (loaded from `input`; versions named after `output`): the float
    /// outputs of the `held_out` samples computed once.
    pub fn new(
        model: &'a super::open::Model,
        (input, output): (&'a Path, &'a Path),
        v: Versions<'a>,
        (s, held_out): (Scoring<'a>, Dataset),
    ) -> Result<Bench<'a>, Error> {
        let float = Source {
            model: &model.loaded.model,
            path: input,
        };
        let reference = Reference::new(float, &model.inputs, held_out, &s.src.run_options(false))?;
        Ok(Bench {
            input,
            output,
            inputs: &model.inputs,
            v,
            s,
            reference,
        })
    }
}

impl Bench<'_> {
    /// The model with the layers in `float` kept float.
    pub fn build(&mut self, float: &[String]) -> Result<Built, Error> {
        let overrides = with_exceptions(self.v.subs.overrides, float, self.v.fallback);
        let plan = replan(
            self.v.written,
            &self.v.subs.types.main,
            self.v.config,
            &overrides,
            self.v.subs.prep,
        );
        self.ensure_stats(&plan)?;
        build(
            self.v.written,
            self.input,
            plan,
            self.s.stats,
            self.v.config,
            self.s.source,
            super::build::Subs {
                overrides: &overrides,
                ..self.v.subs
            },
        )
    }

    /// Its output SQNR and top-1 drop on the held-out samples.
    pub fn score(&mut self, float: &[String]) -> Result<Score, Error> {
        let b = self.build(float)?;
        let q = Source {
            model: &b.model,
            path: self.output,
        };
        let c = self.reference.compare(
            q,
            self.inputs,
            &self.s.src.run_options(false),
            self.s.labels,
        )?;
        Ok(Score {
            sqnr_db: c.worst_sqnr(),
            top1_drop: c.labels.as_ref().map(|l| l.top1_drop),
        })
    }

    /// Calibrates the tensors `plan` needs that the statistics lack (a plan with layers kept
    /// float can quantize tensors the full plan did not), and adds them.
    fn ensure_stats(&mut self, plan: &QuantPlan) -> Result<(), Error> {
        let missing: Vec<String> = plan
            .observed()
            .into_iter()
            .filter(|t| !self.s.stats.tensors.contains_key(t))
            .collect();
        let Some(data) = self.s.calib.clone() else {
            return Ok(());
        };
        if missing.is_empty() {
            return Ok(());
        }
        let observe = Observe {
            skip_non_finite: self.s.src.skip_non_finite,
            ..observe_for(self.v.config, plan)
        };
        let wanted: Vec<super::Scoped> = missing.iter().map(|t| super::Scoped::main(t)).collect();
        let channels = plan
            .observed_by_channel()
            .iter()
            .filter(|t| missing.contains(t))
            .map(|t| super::Scoped::main(t))
            .collect();
        let more = self.v.engine.calibrate(
            &wanted,
            &channels,
            data,
            &self.s.src.run_options(false),
            observe,
            None,
        )?;
        self.s.stats.tensors.extend(more.tensors);
        Ok(())
    }
}

/// Automatic mixed precision: the layers to keep out of 8 bits searched on `bench`'s held-out
/// samples until the target holds; `built` becomes the version chosen, with a note saying so
/// (and a warning when no version met the target).
pub(super) fn mixed_precision(
    mut bench: Bench,
    mixed: &super::MixedJob,
    built: &mut Built,
    warn: &dyn Fn(&str),
) -> Result<crate::accuracy::mixed::Search, Error> {
    let units = units(&built.plan);
    let mut search =
        crate::accuracy::mixed::search(&units, mixed.target, mixed.strategy, &mut |f| {
            bench.score(f)
        })?;
    search.samples = bench.reference.samples();
    search.fallback = mixed.fallback.name();
    let chosen = search.chosen().float.clone();
    if !chosen.is_empty() {
        *built = bench.build(&chosen)?;
    }
    built.plan.notes.push(format!(
        "mixed precision ({}, on {} held-out sample(s)): {} of {} quantized layer(s) kept {} by `{}` ({} configurations measured)",
        search.target,
        search.samples,
        chosen.len(),
        units.len(),
        mixed.fallback.name(),
        search.chosen().strategy,
        search.evaluations
    ));
    if !search.chosen().met {
        warn(&format!(
            "mixed precision: no choice of {} layers met {} on the held-out samples; written: the closest ({}, {} {} layer(s))",
            mixed.fallback.name(),
            search.target,
            search.chosen().score,
            chosen.len(),
            mixed.fallback.name()
        ));
    }
    Ok(search)
}

/// Everything `onnx-quant sensitivity` needs.
#[derive(Clone, Debug)]
pub struct SensitivityJob {
    pub input: PathBuf,
    /// Samples to run (the first part calibrates unless `stats` is given, the rest measures).
    pub data: DataSource,
    /// Ranges from this statistics file instead: every sample of `data` then measures.
    pub stats: Option<PathBuf>,
    pub planning: Planning,
    pub labels: Option<PathBuf>,
    pub holdout: Option<usize>,
}

/// What `sensitivity` found.
#[derive(Clone, Debug, Serialize)]
pub struct SensitivityReport {
    pub model: PathBuf,
    /// Samples each configuration was measured on.
    pub samples: usize,
    /// Samples the ranges were calibrated on (0: from a statistics file).
    pub calibration_samples: usize,
    /// Every layer quantized.
    pub baseline: Score,
    /// Most harmful first.
    pub layers: Vec<LayerEffect>,
    pub evaluations: usize,
    pub seconds: f64,
}

/// Quantizes each layer alone (and all but each layer) and ranks the layers by the harm done.
// The sensitivity job's stages in order (open, plan, statistics, bench, rank), one call each;
// what stays inline threads their results to the next.
pub fn sensitivity(job: &SensitivityJob, warn: &dyn Fn(&str)) -> Result<SensitivityReport, Error> {
    let start = Instant::now();
    let mut model = open_model(&job.input, &job.planning.input_shapes)?;
    let labels = super::open::warnings_and_labels(&model, job.labels.as_deref(), warn)?;
    super::plan::equalize_and_absorb(&job.planning.config, &mut model, Some(&job.data))?;
    let label_ref = match (&job.labels, &labels) {
        (Some(path), Some(values)) => Some(Labels { path, values }),
        _ => None,
    };
    let p: Planned = plan_model(&model, Some(&job.data), &job.planning.rules(warn))?;
    let (engine, plan, written) = (p.engine, p.plan, p.written);
    let set = p.data.expect("planned with data");
    let config = &job.planning.config;
    let (calib, measure, mut stats, source) = match &job.stats {
        Some(path) => (
            None,
            set,
            load_stats(path, &job.input, &job.planning.config, warn)?,
            path.clone(),
        ),
        None => {
            let (head, tail) = super::calibrate::split_holdout(
                set,
                job.holdout,
                &job.data.path,
                "sensitivity (without --stats)",
            )?;
            // bias correction and GPTQ measure the layers' inputs in the same run
            let probe = super::layers::LayerProbe::new(&written, &plan, head.len());
            let mut m = super::calibrate::calibrate(
                &engine,
                &plan,
                (&p.sub_observed, &p.sub_channels),
                head.clone(),
                &job.data,
                observe_for(config, &plan).union(p.sub_observe),
                probe.as_ref().map(|p| p as &dyn crate::calib::Extra),
                warn,
            )?;
            if let Some(probe) = probe {
                m.stats.layers = probe.finish();
            }
            (Some(head), tail, m.stats, job.data.path.clone())
        }
    };
    let calibration_samples = if job.stats.is_some() {
        0
    } else {
        stats.samples
    };
    let units = units(&plan);
    let versions = Versions {
        written: &written,
        subs: super::build::Subs {
            types: &p.types,
            kept: &p.kept,
            overrides: &job.planning.overrides,
            prep: &p.prep,
            data: true,
        },
        config,
        engine: &engine,
        fallback: super::Fallback::Float,
    };
    let scoring = Scoring {
        calib,
        src: &job.data,
        stats: &mut stats,
        source: &source,
        labels: label_ref,
    };
    let mut bench = Bench::new(
        &model,
        (&job.input, &job.input),
        versions,
        (scoring, measure),
    )?;
    let samples = bench.reference.samples();
    let (baseline, layers, evaluations) =
        crate::accuracy::mixed::sensitivity(&units, &mut |f| bench.score(f))?;
    Ok(SensitivityReport {
        model: job.input.clone(),
        samples,
        calibration_samples,
        baseline,
        layers,
        evaluations,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// What mixed precision does with the layers it takes out of 8 bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// `skip: true`: the layer stays float.
    #[default]
    Float,
    /// `activations: {dtype: int16}`: the layer reads its activations in int16 (weights stay
    /// as they are); opset 21, ONNX Runtime and OpenVINO only.
    Int16,
}

impl Fallback {
    pub fn name(self) -> &'static str {
        match self {
            Fallback::Float => "float",
            Fallback::Int16 => "int16",
        }
    }
}

/// The user's overrides followed by one override per layer in `layers`: `skip: true`, or
/// int16 activations.
pub fn with_exceptions(user: &Overrides, layers: &[String], fallback: Fallback) -> Overrides {
    use crate::config::overrides::{ActivationOverride, Matcher, Override, Pattern};
    let mut o = user.clone();
    let first = o.list.len();
    o.list
        .extend(layers.iter().enumerate().map(|(i, name)| Override {
            number: first + i + 1,
            pos: Default::default(),
            matcher: Matcher {
                name: Some(Pattern::Exact(name.clone())),
                ..Default::default()
            },
            skip: (fallback == Fallback::Float).then_some(true),
            activations: match fallback {
                Fallback::Float => Default::default(),
                Fallback::Int16 => ActivationOverride {
                    dtype: Some(QType::Int16),
                    ..Default::default()
                },
            },
            weights: Default::default(),
        }));
    o
}
