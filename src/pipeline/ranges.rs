//! Ranges: each planned activation's range (override, fixed by its producer, or chosen from its
//! statistics), shared scales, and its quantization parameters; the plan settled on statistics.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::calib::Observe;
use crate::config::Config;
use crate::error::{CalibError, Error};
use crate::params::{ActivationScheme, Method, QParams, QType, activation_params, select_range};
use crate::policy::{Overrides, QuantPlan, SiteSettings};
use crate::report::ActivationReport;
use crate::rewrite::ActivationParams;
use crate::stats::StatsTable;

/// Rounds of planning again with the nodes statistics showed should stay float.
const STATISTICS_ROUNDS: usize = 3;

/// The method a site's range is chosen with: its override's, or the global one.
pub(super) fn site_method(config: &Config, s: &SiteSettings) -> Method {
    let percentile = s.percentile.unwrap_or(config.percentile);
    match s.method.as_deref() {
        None => match config.method {
            Method::Percentile { .. } => Method::Percentile { percentile },
            m => m,
        },
        Some("minmax") => Method::MinMax { averaged: false },
        Some("percentile") => Method::Percentile { percentile },
        Some("entropy") => Method::Entropy,
        Some(_) => Method::Mse,
    }
}

/// The scheme a site's settings give it (an override's type and symmetry, or the global ones).
fn scheme_of(config: &Config, s: &SiteSettings) -> ActivationScheme {
    ActivationScheme {
        qtype: s.qtype.unwrap_or(config.activation.qtype),
        symmetric: s.symmetric.unwrap_or(config.activation.symmetric),
    }
}

/// Range, parameters and report line of every planned activation: each site's own range
/// ([`own_ranges`]), the union over sites sharing a scale, the parameters ([`site_params`]).
pub(super) fn activation_params_of(
    plan: &mut QuantPlan,
    model: &crate::proto::ModelProto,
    stats: &StatsTable,
    config: &Config,
    source: &Path,
) -> Result<(ActivationParams, Vec<ActivationReport>), Error> {
    let own = own_ranges(plan, stats, config, source)?;
    let mut notes = plan.split_disparate_concats(model, &own);
    plan.notes.append(&mut notes);
    let ranges: Vec<(f32, f32)> = plan.activations.iter().map(|a| own[&a.tensor]).collect();
    // tensors sharing a scale cover the union of their ranges
    let mut union: BTreeMap<usize, (f32, f32)> = BTreeMap::new();
    for (site, r) in plan.activations.iter().zip(&ranges) {
        if let Some(g) = site.group {
            let u = union.entry(g).or_insert(*r);
            *u = (u.0.min(r.0), u.1.max(r.1));
        }
    }
    let concat_groups = if config.concat_uint8 {
        plan.concat_conv_groups(model)
    } else {
        Default::default()
    };
    let mut act = ActivationParams {
        f16_scales: config.fp16,
        clip_search: config.clip_search,
        cpu_overflow: config.cpu_overflow,
        float_reads_per_axis: config.placement.float_reads_per_axis,
        input_means: plan
            .weights
            .iter()
            .filter(|w| w.bias_correction)
            .filter_map(|w| {
                Some((
                    w.initializer.clone(),
                    stats.layers.get(&w.initializer)?.means(),
                ))
            })
            .collect(),
        grams: plan
            .weights
            .iter()
            .filter(|w| w.gptq())
            .filter_map(|w| {
                let gram = stats.layers.get(&w.initializer)?.gram.clone()?;
                Some((w.initializer.clone(), gram))
            })
            .collect(),
        ..ActivationParams::default()
    };
    let mut reports = Vec::new();
    for (site, own) in plan.activations.iter().zip(ranges) {
        let range = site.group.map_or(own, |g| union[&g]);
        let by_concat = site.group.is_some_and(|g| concat_groups.contains(&g));
        let (scheme, p) = site_params(config, &site.settings, range, by_concat);
        act.tensors.insert(site.tensor.clone(), (scheme.qtype, p));
        reports.push(report_of(site, stats, range, scheme, p));
    }
    Ok((act, reports))
}

/// Each site's own range: set by an override, fixed by its producer, or chosen from its
/// statistics (a fixed scale needs none: its observed extremes stand in). A planned tensor the
/// statistics lack is an error naming them all.
fn own_ranges(
    plan: &QuantPlan,
    stats: &StatsTable,
    config: &Config,
    source: &Path,
) -> Result<HashMap<String, (f32, f32)>, Error> {
    let missing: Vec<String> = plan
        .activations
        .iter()
        .filter(|a| a.needs_stats() && !stats.tensors.contains_key(&a.tensor))
        .map(|a| format!("`{}`", a.tensor))
        .collect();
    if !missing.is_empty() {
        return Err(CalibError::BadFile {
            path: source.to_path_buf(),
            reason: format!(
                "holds no statistics for planned tensor(s) {}",
                missing.join(", ")
            ),
        }
        .into());
    }
    let mut own: HashMap<String, (f32, f32)> = HashMap::new();
    for site in &plan.activations {
        let observed = stats.tensors.get(&site.tensor);
        let r = match (site.settings.range, site.fixed_range, observed) {
            (Some(r), _, _) | (None, Some(r), _) => r,
            (None, None, Some(s)) if site.settings.scale.is_some() => (s.minmax.min, s.minmax.max),
            (None, None, None) => (0.0, 0.0),
            (None, None, Some(s)) => select_range(
                s,
                site_method(config, &site.settings),
                scheme_of(config, &site.settings),
            )
            .map_err(|reason| CalibError::BadFile {
                path: source.to_path_buf(),
                reason: format!("tensor `{}`: {reason}", site.tensor),
            })?,
        };
        own.insert(site.tensor.clone(), r);
    }
    Ok(own)
}

/// The scheme and parameters of a site with range `(lo, hi)`: uint8 with a zero-point where
/// the target wants it for a non-negative tensor or one sharing a scale with a Concat a Conv
/// reads (`by_concat`), an override's fixed scale, float16-exact scales for fp16 outputs.
fn site_params(
    config: &Config,
    set: &SiteSettings,
    (lo, hi): (f32, f32),
    by_concat: bool,
) -> (ActivationScheme, QParams) {
    let unsigned = set.qtype.is_none()
        && ((config.unsigned_when_nonnegative
            && config.activation.qtype != QType::Int16
            && lo >= 0.0)
            || (config.concat_uint8 && config.activation.qtype == QType::Int8 && by_concat));
    let scheme = if unsigned {
        ActivationScheme {
            qtype: QType::Uint8,
            symmetric: false,
        }
    } else {
        scheme_of(config, set)
    };
    let p = match set.scale {
        Some((scale, zp)) => {
            let natural = if scheme.qtype == QType::Uint8 && scheme.symmetric {
                128
            } else {
                0
            };
            QParams {
                scale,
                zero_point: zp.unwrap_or(natural),
            }
        }
        None => activation_params(lo, hi, scheme),
    };
    let p = if config.fp16 {
        crate::params::with_f16_scale(p, scheme, lo)
    } else {
        p
    };
    (scheme, p)
}

/// The report line of one site.
fn report_of(
    site: &crate::policy::ActivationSite,
    stats: &StatsTable,
    (lo, hi): (f32, f32),
    scheme: ActivationScheme,
    p: QParams,
) -> ActivationReport {
    let observed = stats.tensors.get(&site.tensor);
    let (min, max) = observed.map_or((lo, hi), |s| (s.minmax.min, s.minmax.max));
    ActivationReport {
        tensor: site.tensor.clone(),
        min,
        max,
        range: [lo, hi],
        dtype: scheme.qtype.name(),
        scale: p.scale,
        zero_point: p.zero_point,
        sqnr_db: observed
            .and_then(|s| s.histogram.as_ref())
            .and_then(|h| crate::params::histogram_sqnr_db(h, p, scheme.qtype)),
        decided_by: site
            .settings
            .sources
            .iter()
            .map(|(f, o)| format!("{f}: {o}"))
            .collect(),
    }
}

/// Chooses every range of `plan` from `stats`; when the statistics show nodes that should stay
/// float ([`kept_float_by_statistics`]), plans again (`replan`, with them as automatic skips
/// over `overrides`) so that nothing quantized only for their sake stays, and chooses again.
/// A tensor the new plan needs and the statistics lack keeps its readers float too.
pub(crate) fn settle_on_statistics(
    mut plan: QuantPlan,
    model: &crate::proto::ModelProto,
    stats: &StatsTable,
    config: &Config,
    source: &Path,
    overrides: &Overrides,
    replan: &dyn Fn(&Overrides) -> QuantPlan,
) -> Result<(QuantPlan, ActivationParams, Vec<ActivationReport>), Error> {
    let (mut act, mut reports) = activation_params_of(&mut plan, model, stats, config, source)?;
    let mut overrides = overrides.clone();
    let graph = crate::ir::graph(model);
    for _ in 0..STATISTICS_ROUNDS {
        let more: Vec<(String, String)> =
            kept_float_by_statistics(&plan, model, &act, stats, config)
                .into_iter()
                .filter(|(k, _)| !overrides.automatic.contains_key(k))
                .collect();
        if more.is_empty() {
            break;
        }
        overrides.automatic.extend(more);
        loop {
            plan = replan(&overrides);
            let unmeasured: Vec<(String, String)> = plan
                .activations
                .iter()
                .filter(|a| a.needs_stats() && !stats.tensors.contains_key(&a.tensor))
                .flat_map(|a| {
                    a.consumers.iter().map(move |&(id, _)| {
                        (
                            crate::ir::node_label(&graph.node[id], id),
                            format!(
                                "`{}` was not calibrated (planned after calibration)",
                                a.tensor
                            ),
                        )
                    })
                })
                .filter(|(k, _)| !overrides.automatic.contains_key(k))
                .collect();
            if unmeasured.is_empty() {
                break;
            }
            overrides.automatic.extend(unmeasured);
        }
        (act, reports) = activation_params_of(&mut plan, model, stats, config, source)?;
    }
    Ok((plan, act, reports))
}

/// The nodes calibration shows should stay float, with why: convolutions whose quiet
/// channels one int8 scale leaves in noise, and what would lose the small values a `Log`
/// reads. By node label, for [`Overrides::automatic`].
pub(super) fn kept_float_by_statistics(
    plan: &QuantPlan,
    model: &crate::proto::ModelProto,
    act: &ActivationParams,
    stats: &StatsTable,
    config: &Config,
) -> BTreeMap<String, String> {
    let steps: HashMap<String, f32> = act
        .tensors
        .iter()
        .map(|(t, (_, p))| (t.clone(), p.scale))
        .collect();
    let spread =
        |t: &str| -> Option<Vec<f64>> { Some(stats.tensors.get(t)?.channels.as_ref()?.std()) };
    let share = |t: &str, below: f64| -> Option<f64> {
        let h = stats.tensors.get(t)?.histogram.as_ref()?;
        Some(h.share_below(below))
    };
    let amax = |t: &str| -> Option<f32> {
        let m = &stats.tensors.get(t)?.minmax;
        Some(m.min.abs().max(m.max.abs()))
    };
    let mut decided =
        plan.noisy_convolutions(model, &steps, &spread, config.placement.min_conv_sqnr);
    decided.extend(plan.small_log_inputs(model, &steps, &share, &amax));
    let graph = crate::ir::graph(model);
    let mut out = BTreeMap::new();
    for (id, why) in decided {
        out.entry(crate::ir::node_label(&graph.node[id], id))
            .or_insert(why);
    }
    out
}

/// Absolute maximum of each chosen range, for a TensorRT calibration cache.
pub(super) fn amax_table(reports: &[ActivationReport]) -> BTreeMap<String, f32> {
    reports
        .iter()
        .map(|r| (r.tensor.clone(), r.range[0].abs().max(r.range[1].abs())))
        .collect()
}

/// What calibration observes for `plan`: histograms where a range method (or the Log guard)
/// needs them, per-sample extremes for averaged min/max.
pub(super) fn observe_for(config: &Config, plan: &QuantPlan) -> Observe {
    let methods: Vec<Method> = plan
        .activations
        .iter()
        .filter(|a| a.needs_stats())
        .map(|a| site_method(config, &a.settings))
        .collect();
    // a tensor whose small values reach a Log is quantized only if its histogram shows few
    let log_fed = !plan.log_probes.is_empty()
        || plan
            .activations
            .iter()
            .any(|a| a.needs_stats() && plan.log_fed.contains_key(&a.tensor));
    Observe {
        histogram_bins: (log_fed || methods.iter().any(|m| m.needs_histogram()))
            .then_some(config.bins),
        averaged: methods
            .iter()
            .any(|m| matches!(m, Method::MinMax { averaged: true })),
        skip_non_finite: false,
    }
}
