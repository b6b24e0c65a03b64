//! `eval` and `sensitivity`: the commands that measure a quantized model against its float
//! original.

use std::io::Write;

use crate::error::Error;
use crate::stats;

use super::args::{EvalArgs, SensitivityArgs};
use super::output::{check_side_output, warn, write_json, write_text};
use super::settings::{data_source, input_shapes, resolve_config, usage};

fn score_text(s: &crate::accuracy::mixed::Score) -> String {
    let sqnr = crate::accuracy::db(s.sqnr_db);
    match s.top1_drop {
        Some(d) => format!("{sqnr:>7} {:>7.2}", d + 0.0),
        None => format!("{sqnr:>7} {:>7}", "-"),
    }
}

/// Ranks the layers and prints the table.
pub fn run_sensitivity(args: SensitivityArgs) -> Result<(), Error> {
    check_side_output(args.json.as_deref(), "--json", &[args.model.as_path()])?;
    if args.holdout == Some(0) {
        return Err(usage("--holdout must be at least 1"));
    }
    let from_cache = args.stats.as_deref().is_some_and(stats::is_trt_cache);
    let mut settings = resolve_config(&args.ranges, from_cache)?;
    settings.planning.input_shapes = input_shapes(&args.shapes)?;
    let job = crate::pipeline::SensitivityJob {
        input: args.model.clone(),
        data: data_source(args.calib.clone(), &args.data)?,
        stats: args.stats.clone(),
        planning: settings.planning,
        labels: args.labels.clone(),
        holdout: args.holdout,
    };
    let r = crate::pipeline::sensitivity(&job, &warn)?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}: {} quantized layer(s), measured on {} sample(s){} ({} configurations, {:.1} s)",
        r.model.display(),
        r.layers.len(),
        r.samples,
        if r.calibration_samples > 0 {
            format!(" held out of {} calibrating", r.calibration_samples)
        } else {
            String::new()
        },
        r.evaluations,
        r.seconds
    );
    let _ = writeln!(out, "all quantized: {}", r.baseline);
    let width = r
        .layers
        .iter()
        .map(|l| l.layer.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = writeln!(
        out,
        "  {:width$}  {:>15}  {:>15}",
        "layer", "only it int8", "all but it"
    );
    let _ = writeln!(
        out,
        "  {:width$}  {:>7} {:>7}  {:>7} {:>7}",
        "", "SQNR dB", "top-1", "SQNR dB", "top-1"
    );
    for l in &r.layers {
        let _ = writeln!(
            out,
            "  {:width$}  {}  {}",
            l.layer,
            score_text(&l.alone),
            l.all_but.as_ref().map_or(String::new(), score_text)
        );
    }
    if let Some(path) = &args.json {
        write_json(path, &r)?;
    }
    Ok(())
}

/// Compares, prints, writes the JSON and the chart; missed gates give exit code 7.
pub fn run_eval(args: EvalArgs) -> Result<(), Error> {
    let models = [args.reference.as_path(), args.quantized.as_path()];
    check_side_output(args.json.as_deref(), "--json", &models)?;
    check_side_output(args.plot.as_deref(), "--plot", &models)?;
    check_side_output(args.save_outputs.as_deref(), "--save-outputs", &models)?;
    let job = crate::pipeline::EvalJob {
        reference: args.reference.clone(),
        quantized: args.quantized.clone(),
        data: data_source(args.data.clone(), args.data_args.no_observers("eval")?)?,
        labels: args.labels.clone(),
        measure: crate::accuracy::compare::Measure {
            per_layer: args.per_layer || args.plot.is_some(),
            keep_outputs: args.save_outputs.is_some(),
            labels_window: false,
        },
        input_shapes: input_shapes(&args.shapes)?,
    };
    let report = crate::pipeline::evaluate(&job, &warn)?;
    let c = &report.comparison;
    let gates = crate::accuracy::compare::gates(c, args.min_sqnr, args.max_top1_drop);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{} vs {} on {} sample(s) of {} ({} Q/DQ pairs and {} constants simulated, {:.1} s)",
        args.quantized.display(),
        args.reference.display(),
        c.samples,
        args.data.display(),
        c.simulated_activations,
        c.simulated_constants,
        report.seconds
    );
    let _ = write!(out, "{}", c.summary(10));
    for g in &gates {
        let _ = writeln!(
            out,
            "  gate {}: {}",
            if g.passed { "passed" } else { "MISSED" },
            g.describe()
        );
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "{} vs {}",
            args.quantized.display(),
            args.reference.display()
        );
        let svg = crate::accuracy::layers_svg(&title, &c.layers_in_graph_order);
        write_text(path, &svg)?;
    }
    if let Some(path) = &args.save_outputs {
        let bytes = crate::calib::npy::npz_f32(&c.saved_outputs).map_err(Error::Internal)?;
        crate::atomic::write(path, &bytes)?;
    }
    if let Some(path) = &args.json {
        #[derive(serde::Serialize)]
        struct Json<'a> {
            #[serde(flatten)]
            report: &'a crate::pipeline::EvalReport,
            gates: &'a [crate::accuracy::compare::Gate],
        }
        write_json(
            path,
            &Json {
                report: &report,
                gates: &gates,
            },
        )?;
    }
    let missed: Vec<String> = gates
        .iter()
        .filter(|g| !g.passed)
        .map(|g| g.describe())
        .collect();
    if missed.is_empty() {
        Ok(())
    } else {
        Err(Error::AccuracyMissed(missed))
    }
}
