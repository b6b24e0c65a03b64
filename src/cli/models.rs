//! `explain`, `init-config`, `show-config`, `check`, `inspect` and `run`: the commands that
//! look at a model or the settings without quantizing.

use std::io::Write;

use crate::error::Error;
use crate::pipeline::run_job;

use super::args::{CheckArgs, ExplainArgs, InspectArgs, ModelArgs, RunArgs, ShowConfigArgs};
use super::output::{check_side_output, warn, write_json};
use super::settings::{data_source, input_shapes, name_of, resolve_config};

/// Prints the resolved settings and where each comes from.
pub fn run_show_config(args: ShowConfigArgs) -> Result<(), Error> {
    print!("{}", resolve_config(&args.ranges, false)?.resolved.render());
    Ok(())
}

/// `explain` and `init-config`: plan without calibration data and print.
pub fn run_explain(args: ExplainArgs) -> Result<(), Error> {
    check_side_output(
        args.json.as_deref(),
        "--json",
        &[args.model.model.as_path()],
    )?;
    let (ex, settings) = explained(&args.model)?;
    let e = crate::report::explain::explanation(&ex, &settings.resolved);
    let text = crate::report::explain::render(&e);
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    if let Some(path) = &args.json {
        write_json(path, &e)?;
    }
    Ok(())
}

/// `init-config`: a commented settings file listing every node the target quantizes.
pub fn run_init_config(args: ModelArgs) -> Result<(), Error> {
    let (ex, settings) = explained(&args)?;
    let text = crate::report::explain::init_config(
        &ex,
        &settings.resolved,
        &args.model.display().to_string(),
    );
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}

fn explained(
    args: &ModelArgs,
) -> Result<(crate::report::explain::Explained, super::settings::Settings), Error> {
    let mut settings = resolve_config(&args.ranges, false)?;
    settings.planning.input_shapes = input_shapes(&args.shapes)?;
    let ex = crate::pipeline::plan_only(&args.model, &settings.planning.rules(&warn))?;
    Ok((ex, settings))
}

/// Prints the findings; violations make the exit code [`crate::ExitCode::CheckFailed`].
pub fn run_check(args: CheckArgs) -> Result<(), Error> {
    check_side_output(args.json.as_deref(), "--json", &[args.model.as_path()])?;
    let loaded = crate::onnx::load(&args.model)?;
    loaded.warnings.iter().for_each(|w| warn(w));
    let report = crate::check::check(&loaded.model, &name_of(args.target));
    let mut out = std::io::stdout().lock();
    for v in &report.violations {
        let _ = writeln!(out, "violation: {}: `{}`: {}", v.rule, v.node, v.message);
    }
    for w in &report.warnings {
        let _ = writeln!(out, "warning: {}: `{}`: {}", w.rule, w.node, w.message);
    }
    for n in &report.notes {
        let _ = writeln!(out, "note: {n}");
    }
    let counts: Vec<String> = report
        .counts()
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "{}: {} violation(s){}, {} warning(s) for {} ({} QuantizeLinear, {} DequantizeLinear)",
        args.model.display(),
        report.violations.len(),
        if counts.is_empty() {
            String::new()
        } else {
            format!(" ({})", counts.join(", "))
        },
        report.warnings.len(),
        report.target,
        report.quantize_nodes,
        report.dequantize_nodes
    );
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    if report.violations.is_empty() {
        Ok(())
    } else {
        Err(Error::CheckFailed(report.violations.len()))
    }
}

pub fn run_run(args: RunArgs) -> Result<(), Error> {
    let data = data_source(args.calib, args.data.no_observers("run")?)?;
    let threads = data.threads;
    let (n, secs) = run_job(&args.model, &data, &input_shapes(&args.shapes)?)?;
    let per = secs * 1e3 / n.max(1) as f64;
    println!("{n} samples in {secs:.3} s ({per:.2} ms per sample, {threads} threads)");
    Ok(())
}

pub fn run_inspect(args: InspectArgs) -> Result<(), Error> {
    let loaded = crate::onnx::load(&args.model)?;
    loaded.warnings.iter().for_each(|w| warn(w));
    let text = crate::ir::dump(&loaded.model);
    // A closed pipe (`| head`) is not an error.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}
