//! `explain`, `init-config`, `show-config`, `check`, `inspect` and `run`: the commands that
//! look at a model or the settings without quantizing.

use std::io::Write;

use onnx_quant::error::Error;
use onnx_quant::pipeline::run_job;

use super::args::{CheckArgs, InspectArgs, ModelArgs, RunArgs, ShowConfigArgs};
use super::output::{check_side_output, warn, write_json};
use super::settings::{data_source, input_shapes, name_of, resolve_config};

/// Prints the resolved settings and where each comes from.
pub fn run_show_config(args: ShowConfigArgs) -> Result<(), Error> {
    print!("{}", resolve_config(&args.ranges, false)?.resolved.render());
    Ok(())
}

/// `explain` and `init-config`: plan without calibration data and print.
pub fn run_explain(args: ModelArgs, template: bool) -> Result<(), Error> {
    let mut settings = resolve_config(&args.ranges, false)?;
    settings.planning.input_shapes = input_shapes(&args.shapes)?;
    let ex = onnx_quant::pipeline::plan_only(&args.model, &settings.planning.rules(&warn))?;
    let text = if template {
        onnx_quant::report::explain::init_config(
            &ex,
            &settings.resolved,
            &args.model.display().to_string(),
        )
    } else {
        onnx_quant::report::explain::explain(&ex, &settings.resolved)
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}

/// Prints the findings; violations make the exit code [`onnx_quant::ExitCode::CheckFailed`].
pub fn run_check(args: CheckArgs) -> Result<(), Error> {
    check_side_output(args.json.as_deref(), "--json", &[args.model.as_path()])?;
    let loaded = onnx_quant::onnx::load(&args.model)?;
    loaded.warnings.iter().for_each(|w| warn(w));
    let report = onnx_quant::check::check(&loaded.model, &name_of(args.target));
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
    let loaded = onnx_quant::onnx::load(&args.model)?;
    loaded.warnings.iter().for_each(|w| warn(w));
    let text = onnx_quant::ir::dump(&loaded.model);
    // A closed pipe (`| head`) is not an error.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}
