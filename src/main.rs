//! The `onnx-quant` binary: parse flags, run the library, print, map errors to exit codes.

mod cli;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use onnx_quant::config::{self, Layer, Resolved, schema::Value};
use onnx_quant::error::{Error, OutputError, UsageError};
use onnx_quant::params::Method;
use onnx_quant::pipeline::{
    CalibrateJob, DataSource, MixedJob, Planning, QuantizeJob, StatsSource, calibrate_job,
    quantize, run_job,
};
use onnx_quant::policy::Overrides;
use onnx_quant::stats;

use cli::{
    CalibrateArgs, CheckArgs, Cli, Command, DataArgs, EvalArgs, InspectArgs, MergeStatsArgs,
    ModelArgs, QuantizeArgs, RangeArgs, RunArgs, SensitivityArgs,
};

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error (a bug in onnx-quant, please report it): {info}");
    }));
    // Ctrl-C or SIGTERM: no half-written file stays behind (outputs are renamed into place only
    // when complete, so destinations keep their old content)
    let _ = ctrlc::set_handler(|| {
        let removed = onnx_quant::atomic::remove_pending();
        eprintln!("error: interrupted; nothing written ({removed} temporary file(s) removed)");
        std::process::exit(onnx_quant::ExitCode::Interrupted as i32);
    });
    let cli = match Cli::try_parse_from(with_default_command(std::env::args_os().collect())) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            let code = if e.use_stderr() {
                onnx_quant::ExitCode::Usage as u8
            } else {
                0
            };
            return ExitCode::from(code);
        }
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli))) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
        Err(_) => ExitCode::from(onnx_quant::ExitCode::Internal as u8),
    }
}

/// `onnx-quant IN OUT --calib D` means `onnx-quant quantize IN OUT --calib D`.
fn with_default_command(mut args: Vec<OsString>) -> Vec<OsString> {
    let first = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let is_flag = first.starts_with('-');
    if args.len() > 1 && !is_flag && !cli::SUBCOMMANDS.contains(&first) {
        args.insert(1, "quantize".into());
    }
    args
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Quantize(args) => run_quantize(args),
        Command::Calibrate(args) => run_calibrate(args),
        Command::MergeStats(args) => run_merge_stats(args),
        Command::Run(args) => run_run(args),
        Command::Inspect(args) => run_inspect(args),
        Command::ShowConfig(args) => {
            print!("{}", resolve_config(&args.ranges, false)?.resolved.render());
            Ok(())
        }
        Command::Check(args) => run_check(args),
        Command::Explain(args) => run_explain(args, false),
        Command::InitConfig(args) => run_explain(args, true),
        Command::Eval(args) => run_eval(args),
        Command::Sensitivity(args) => run_sensitivity(args),
    }
}

fn score_text(s: &onnx_quant::accuracy::mixed::Score) -> String {
    let sqnr = onnx_quant::accuracy::db(s.sqnr_db);
    match s.top1_drop {
        Some(d) => format!("{sqnr:>7} {:>7.2}", d + 0.0),
        None => format!("{sqnr:>7} {:>7}", "-"),
    }
}

/// Ranks the layers and prints the table.
fn run_sensitivity(args: SensitivityArgs) -> Result<(), Error> {
    check_side_output(args.json.as_deref(), "--json", &[args.model.as_path()])?;
    if args.holdout == Some(0) {
        return Err(usage("--holdout must be at least 1"));
    }
    let from_cache = args.stats.as_deref().is_some_and(stats::is_trt_cache);
    let mut settings = resolve_config(&args.ranges, from_cache)?;
    settings.planning.input_shapes = input_shapes(&args.shapes)?;
    let job = onnx_quant::pipeline::SensitivityJob {
        input: args.model.clone(),
        data: data_source(args.calib.clone(), &args.data)?,
        stats: args.stats.clone(),
        planning: settings.planning,
        labels: args.labels.clone(),
        holdout: args.holdout,
    };
    let r = onnx_quant::pipeline::sensitivity(&job, &warn)?;
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
        let json = serde_json::to_vec_pretty(&r).map_err(|e| Error::Internal(e.to_string()))?;
        onnx_quant::atomic::write(path, &json)?;
    }
    Ok(())
}

/// Compares, prints, writes the JSON and the chart; missed gates give exit code 7.
fn run_eval(args: EvalArgs) -> Result<(), Error> {
    let models = [args.reference.as_path(), args.quantized.as_path()];
    check_side_output(args.json.as_deref(), "--json", &models)?;
    check_side_output(args.plot.as_deref(), "--plot", &models)?;
    check_side_output(args.save_outputs.as_deref(), "--save-outputs", &models)?;
    let job = onnx_quant::pipeline::EvalJob {
        reference: args.reference.clone(),
        quantized: args.quantized.clone(),
        data: data_source(args.data.clone(), args.data_args.no_observers("eval")?)?,
        labels: args.labels.clone(),
        measure: onnx_quant::accuracy::compare::Measure {
            per_layer: args.per_layer || args.plot.is_some(),
            keep_outputs: args.save_outputs.is_some(),
            labels_window: false,
        },
        input_shapes: input_shapes(&args.shapes)?,
    };
    let report = onnx_quant::pipeline::evaluate(&job, &warn)?;
    let c = &report.comparison;
    let gates = onnx_quant::accuracy::compare::gates(c, args.min_sqnr, args.max_top1_drop);
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
        let svg = onnx_quant::accuracy::layers_svg(&title, &c.layers_in_graph_order);
        onnx_quant::atomic::write(path, svg.as_bytes())?;
    }
    if let Some(path) = &args.save_outputs {
        let bytes = onnx_quant::calib::npy::npz_f32(&c.saved_outputs).map_err(Error::Internal)?;
        onnx_quant::atomic::write(path, &bytes)?;
    }
    if let Some(path) = &args.json {
        #[derive(serde::Serialize)]
        struct Json<'a> {
            #[serde(flatten)]
            report: &'a onnx_quant::pipeline::EvalReport,
            gates: &'a [onnx_quant::accuracy::compare::Gate],
        }
        let json = serde_json::to_vec_pretty(&Json {
            report: &report,
            gates: &gates,
        })
        .map_err(|e| Error::Internal(e.to_string()))?;
        onnx_quant::atomic::write(path, &json)?;
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

/// `explain` and `init-config`: plan without calibration data and print.
fn run_explain(args: ModelArgs, template: bool) -> Result<(), Error> {
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
fn run_check(args: CheckArgs) -> Result<(), Error> {
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
        let json =
            serde_json::to_vec_pretty(&report).map_err(|e| Error::Internal(e.to_string()))?;
        onnx_quant::atomic::write(path, &json)?;
    }
    if report.violations.is_empty() {
        Ok(())
    } else {
        Err(Error::CheckFailed(report.violations.len()))
    }
}

fn usage(msg: impl Into<String>) -> Error {
    UsageError::Invalid(msg.into()).into()
}

impl DataArgs {
    /// These arguments, refused when they ask for a NaN policy a command has no use for.
    fn no_observers(&self, command: &str) -> Result<&Self, Error> {
        if self.nan_policy == cli::NanPolicy::Ignore {
            return Err(usage(format!(
                "--nan-policy applies to calibration (quantize, calibrate, sensitivity), not to `{command}`"
            )));
        }
        Ok(self)
    }
}

fn data_source(path: PathBuf, args: &DataArgs) -> Result<DataSource, Error> {
    if args.max_samples == Some(0) {
        return Err(usage("--max-samples must be at least 1"));
    }
    if args.threads == Some(0) {
        return Err(usage("--threads must be at least 1"));
    }
    Ok(DataSource {
        path,
        max_samples: args.max_samples,
        threads: args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        progress: !args.quiet,
        skip_non_finite: args.nan_policy == cli::NanPolicy::Ignore,
        images: image_options(&args.images)?,
    })
}

fn image_options(a: &cli::ImageArgs) -> Result<onnx_quant::calib::ImageOptions, Error> {
    use onnx_quant::calib::image::{Layout, Resize};
    if !(a.crop_ratio > 0.0 && a.crop_ratio <= 1.0) {
        return Err(usage(format!(
            "--crop-ratio must be in (0, 1], got {}",
            a.crop_ratio
        )));
    }
    if a.mean.iter().any(|v| !v.is_finite()) {
        return Err(usage("--mean values must be finite"));
    }
    if a.std.iter().any(|v| !v.is_finite() || *v == 0.0) {
        return Err(usage("--std values must be finite and non-zero"));
    }
    let or = |v: &[f32], d: f32| if v.is_empty() { vec![d] } else { v.to_vec() };
    Ok(onnx_quant::calib::ImageOptions {
        size: a.image_size,
        resize: match a.resize {
            cli::ResizeArg::CenterCrop => Resize::CenterCrop,
            cli::ResizeArg::Stretch => Resize::Stretch,
        },
        crop_ratio: a.crop_ratio,
        pixel_max: match a.pixel_range {
            cli::PixelRangeArg::Unit => 1.0,
            cli::PixelRangeArg::Byte => 255.0,
        },
        mean: or(&a.mean, 0.0),
        std: or(&a.std, 1.0),
        bgr: a.bgr,
        layout: a.image_layout.map(|l| match l {
            cli::LayoutArg::Nchw => Layout::Nchw,
            cli::LayoutArg::Nhwc => Layout::Nhwc,
        }),
    })
}

fn name_of(v: impl ValueEnum) -> String {
    v.to_possible_value()
        .expect("no skipped variants")
        .get_name()
        .to_string()
}

/// The layer of settings the command line sets; `cache_source` when `--stats` is a TensorRT
/// cache (its ranges are final: the method defaults to minmax).
fn flag_layer(args: &RangeArgs, cache_source: bool) -> Result<Layer, Error> {
    let mut cli = Layer::new("command line");
    if let Some(t) = args.target {
        cli.set("target", Value::Word(name_of(t)));
    }
    match (args.method, cache_source) {
        (Some(m), _) => cli.set("activations.method", Value::Word(name_of(m))),
        (None, true) => cli.set("activations.method", Value::Word("minmax".into())),
        (None, false) => {}
    }
    if let Some(p) = args.percentile {
        if !(p > 0.0 && p <= 100.0) {
            return Err(usage(format!("--percentile must be in (0, 100], got {p}")));
        }
        cli.set("activations.percentile", Value::Float(p));
    }
    if let Some(b) = args.bins {
        if !(16..=1 << 20).contains(&b) {
            return Err(usage(format!(
                "--bins must be between 16 and 1048576, got {b}"
            )));
        }
        cli.set("activations.bins", Value::Int(b as i64));
    }
    if args.moving_average {
        cli.set("activations.moving_average", Value::Bool(true));
    }
    if args.asymmetric {
        cli.set("activations.symmetric", Value::Bool(false));
    }
    if let Some(t) = args.activation_type {
        cli.set("activations.dtype", Value::Word(name_of(t)));
    }
    if args.per_tensor {
        cli.set("weights.per_channel", Value::Bool(false));
    }
    if let Some(t) = args.weight_type {
        cli.set("weights.dtype", Value::Word(name_of(t)));
    }
    if let Some(b) = args.block_size {
        if b > 1 << 16 {
            return Err(usage(format!(
                "--block-size must be at most 65536, got {b}"
            )));
        }
        cli.set("weights.block_size", Value::Int(b as i64));
    }
    if args.weight_only {
        cli.set("weight_only", Value::Bool(true));
    }
    if let Some(a) = args.smoothquant {
        if !(0.0..=1.0).contains(&a) {
            return Err(usage(format!(
                "--smoothquant takes an alpha between 0 and 1, got {a}"
            )));
        }
        cli.set("smoothquant", Value::Bool(true));
        cli.set("smoothquant_alpha", Value::Float(a));
    }
    if let Some(h) = args.high_precision {
        cli.set("high_precision", Value::Word(name_of(h)));
    }
    Ok(cli)
}

/// The resolved settings of a command.
struct Settings {
    resolved: Resolved,
    planning: Planning,
}

/// Resolves preset, settings file and flags (in that order; flags win) and the file's overrides.
fn resolve_config(args: &RangeArgs, cache_source: bool) -> Result<Settings, Error> {
    let cli = flag_layer(args, cache_source)?;
    let user = args.config.as_deref().map(config::load_user).transpose()?;
    let word = |l: &Layer| match l.values.get("target") {
        Some(Value::Word(t)) => Some(t.clone()),
        _ => None,
    };
    let target = word(&cli)
        .or_else(|| user.as_ref().and_then(|u| word(&u.layer)))
        .unwrap_or_else(|| "tensorrt".into());
    let mut layers = vec![config::preset(&target)];
    let mut overrides = Overrides::default();
    if let Some(u) = user {
        layers.push(u.layer);
        overrides = Overrides {
            file: u.file,
            list: u.overrides,
            automatic: Default::default(),
        };
    }
    layers.push(cli);
    let resolved = config::resolve(&layers);
    let config = resolved.config();
    // the layer (preset, file, command line) that set a key, for contradiction messages
    let from = |k: &str| resolved.values.get(k).map_or("", |(_, src)| src.as_str());
    if args.moving_average && !matches!(config.method, Method::MinMax { .. }) {
        return Err(usage("--moving-average goes with --method minmax"));
    }
    if config.fp16 && config.bias_int32 {
        return Err(usage(format!(
            "`high_precision: fp16` ({}) contradicts `bias: int32` ({}): int32 bias scales \
             (s_x·s_w) underflow float16; use the tensorrt or openvino target, or `bias: float`",
            from("high_precision"),
            from("bias")
        )));
    }
    let fp8 = config.activation.qtype == onnx_quant::params::QType::Fp8
        || config.weight_type == onnx_quant::params::WeightType::Fp8;
    if fp8 && config.bias_int32 {
        return Err(usage(format!(
            "float8 contradicts `bias: int32` ({}): an int32 bias needs integer operands; use the tensorrt target, or `bias: float`",
            from("bias")
        )));
    }
    if config.activation.qtype == onnx_quant::params::QType::Fp8 && !config.activation.symmetric {
        return Err(usage(format!(
            "`activations.dtype: fp8` ({}) contradicts `activations.symmetric: false` ({}): float8 has no zero-point but 0",
            from("activations.dtype"),
            from("activations.symmetric")
        )));
    }
    if config.block_size > 0
        && !matches!(
            config.weight_type,
            onnx_quant::params::WeightType::Int4 | onnx_quant::params::WeightType::Uint4
        )
    {
        return Err(usage(format!(
            "`weights.block_size: {}` ({}) needs `weights.dtype: int4` or `uint4` ({} says otherwise): \
             blocks are for 4-bit weights",
            config.block_size,
            from("weights.block_size"),
            from("weights.dtype")
        )));
    }
    let allow_unmatched = args.allow_unmatched;
    let planning = Planning {
        config,
        overrides,
        allow_unmatched,
        input_shapes: Default::default(),
    };
    Ok(Settings { resolved, planning })
}

/// Refuses an extra output (report, cache) that is a model, or whose folder is missing.
fn check_side_output(extra: Option<&Path>, flag: &str, models: &[&Path]) -> Result<(), Error> {
    let Some(path) = extra else { return Ok(()) };
    if models.iter().any(|m| same_file(path, m)) {
        return Err(usage(format!(
            "{flag} `{}` would overwrite a model",
            path.display()
        )));
    }
    let dir = onnx_quant::atomic::parent_dir(path);
    if !dir.is_dir() {
        return Err(OutputError::DirMissing(dir).into());
    }
    Ok(())
}

/// The `--input-shape` values, parsed.
fn input_shapes(args: &cli::ShapeArgs) -> Result<onnx_quant::pipeline::InputShapes, Error> {
    let mut out = onnx_quant::pipeline::InputShapes::new();
    for s in &args.input_shape {
        let (name, dims) = onnx_quant::pipeline::parse_input_shape(s).map_err(usage)?;
        if out.insert(name.clone(), dims).is_some() {
            return Err(usage(format!("--input-shape gives `{name}` twice")));
        }
    }
    Ok(out)
}

fn warn(w: &str) {
    eprintln!("warning: {w}");
}

fn run_quantize(args: QuantizeArgs) -> Result<(), Error> {
    let from_cache = args.stats.as_deref().is_some_and(stats::is_trt_cache);
    let mut settings = resolve_config(&args.ranges, from_cache)?;
    settings.planning.input_shapes = input_shapes(&args.shapes)?;
    let acc = &args.accuracy;
    let models = [args.input.as_path(), args.output.as_path()];
    check_side_output(args.report.as_deref(), "--report", &models)?;
    check_side_output(args.trt_cache.as_deref(), "--trt-cache", &models)?;
    check_side_output(acc.plot.as_deref(), "--plot", &models)?;
    check_side_output(acc.write_config.as_deref(), "--write-config", &models)?;
    let target = match (acc.target_sqnr, acc.max_top1_drop) {
        (Some(db), _) => Some(onnx_quant::accuracy::mixed::Target::Sqnr(db)),
        (None, Some(p)) => Some(onnx_quant::accuracy::mixed::Target::Top1Drop(p)),
        (None, None) => None,
    };
    let per_layer = acc.per_layer || acc.plot.is_some();
    if args.stats.is_some() && (target.is_some() || per_layer) {
        return Err(usage(
            "--target-sqnr, --max-top1-drop, --per-layer and --plot measure the model on data: give --calib, not --stats",
        ));
    }
    if target.is_none() && (acc.holdout.is_some() || acc.write_config.is_some()) {
        return Err(usage(
            "--holdout and --write-config go with --target-sqnr or --max-top1-drop",
        ));
    }
    if acc.holdout == Some(0) {
        return Err(usage("--holdout must be at least 1"));
    }
    let weight_only = settings.planning.config.weight_only;
    if settings.planning.config.smoothquant.is_some() && (weight_only || args.calib.is_none()) {
        return Err(usage(
            "SmoothQuant measures activations and changes the float model: it needs --calib (not --stats), and quantized activations (not weight_only)",
        ));
    }
    let stats = match (args.calib, args.stats) {
        (None, None) if weight_only => StatsSource::None,
        (Some(calib), None) => StatsSource::Calibrate(data_source(calib, &args.data)?),
        (None, Some(file)) => StatsSource::File(file),
        _ => {
            return Err(usage(
                "give --calib DATA (or --stats FILE); without them only --weight-only runs",
            ));
        }
    };
    let strategy = match acc.mixed_strategy {
        cli::StrategyArg::All => onnx_quant::accuracy::mixed::Strategy::All,
        cli::StrategyArg::Sensitivity => onnx_quant::accuracy::mixed::Strategy::Sensitivity,
        cli::StrategyArg::LeaveOneOut => onnx_quant::accuracy::mixed::Strategy::LeaveOneOut,
        cli::StrategyArg::Greedy => onnx_quant::accuracy::mixed::Strategy::Greedy,
    };
    let user_overrides = settings.planning.overrides.clone();
    // what a written settings file must hold to reproduce the run: the target and every value
    // the settings file or the command line changed
    let mut chosen_settings = config::Layer::new("written");
    for (k, (v, src)) in &settings.resolved.values {
        if *k == "target" || !src.starts_with("preset ") {
            chosen_settings.values.insert(k, v.clone());
        }
    }
    let fallback = match acc.mixed_fallback {
        cli::FallbackArg::Float => onnx_quant::pipeline::Fallback::Float,
        cli::FallbackArg::Int16 => onnx_quant::pipeline::Fallback::Int16,
    };
    let job = QuantizeJob {
        input: args.input,
        output: args.output,
        stats,
        planning: settings.planning,
        sources: settings
            .resolved
            .values
            .iter()
            .map(|(k, (_, src))| (k.to_string(), src.clone()))
            .collect(),
        trt_cache: args.trt_cache,
        labels: acc.labels.clone(),
        mixed: target.map(|target| MixedJob {
            target,
            strategy,
            fallback,
            holdout: acc.holdout,
        }),
        per_layer,
    };
    let report = quantize(&job, &warn)?;
    if let Some(path) = &acc.plot
        && let Some(a) = &report.accuracy
    {
        let title = format!("{} vs {}", job.output.display(), job.input.display());
        let svg = onnx_quant::accuracy::layers_svg(&title, &a.layers_in_graph_order);
        onnx_quant::atomic::write(path, svg.as_bytes())?;
    }
    if let (Some(path), Some(m)) = (&acc.write_config, &report.mixed_precision) {
        let overrides =
            onnx_quant::pipeline::with_exceptions(&user_overrides, &m.chosen().float, fallback)
                .list;
        let header = format!(
            "written by onnx-quant {}: {} on {} held-out sample(s) of `{}`\n{} of {} quantized layer(s) kept {} (strategy {}){}",
            env!("CARGO_PKG_VERSION"),
            m.target,
            m.samples,
            report.calibration.source.display(),
            m.chosen().float.len(),
            m.candidates,
            fallback.name(),
            m.chosen().strategy,
            args.ranges
                .config
                .as_ref()
                .map_or(String::new(), |c| format!(
                    "\nsettings and overrides of `{}` first",
                    c.display()
                ))
        );
        let text = config::write::render(&header, Some(&chosen_settings), &overrides);
        onnx_quant::atomic::write(path, text.as_bytes())?;
    }
    if let Some(path) = &args.report {
        let json =
            serde_json::to_vec_pretty(&report).map_err(|e| Error::Internal(e.to_string()))?;
        onnx_quant::atomic::write(path, &json)?;
    }
    if !args.data.quiet {
        eprint!("{}", report.summary());
    }
    Ok(())
}

fn run_calibrate(args: CalibrateArgs) -> Result<(), Error> {
    if args.ranges.high_precision.is_some() {
        return Err(usage(
            "--high-precision changes the written model, not the statistics: give it to the quantize run",
        ));
    }
    let mut settings = resolve_config(&args.ranges, false)?;
    settings.planning.input_shapes = input_shapes(&args.shapes)?;
    let models = [args.input.as_path(), args.stats.as_path()];
    check_side_output(args.trt_cache.as_deref(), "--trt-cache", &models)?;
    let job = CalibrateJob {
        data: data_source(args.calib, &args.data)?,
        input: args.input,
        planning: settings.planning,
        stats_out: args.stats,
        trt_cache: args.trt_cache,
    };
    let r = calibrate_job(&job, &warn)?;
    if !args.data.quiet {
        let times: Vec<String> = r
            .timings_ms
            .iter()
            .map(|(k, v)| format!("{k} {v:.0} ms"))
            .collect();
        eprintln!(
            "onnx-quant: statistics of {} tensors over {} samples -> {}\n  time: {}",
            r.tensors,
            r.calibration.samples,
            r.stats.display(),
            times.join(", ")
        );
    }
    Ok(())
}

fn run_merge_stats(args: MergeStatsArgs) -> Result<(), Error> {
    if args.inputs.iter().any(|i| same_file(i, &args.output)) {
        return Err(usage(format!(
            "output `{}` is one of the inputs",
            args.output.display()
        )));
    }
    let files = args
        .inputs
        .iter()
        .map(|p| stats::load(p).map(|f| (p.clone(), f)))
        .collect::<Result<Vec<_>, _>>()?;
    let merged = stats::merge_files(files)?;
    stats::save(&args.output, &merged)?;
    eprintln!(
        "onnx-quant: merged {} files ({} samples, {} tensors) -> {}",
        args.inputs.len(),
        merged.samples,
        merged.tensors.len(),
        args.output.display()
    );
    Ok(())
}

fn run_run(args: RunArgs) -> Result<(), Error> {
    let data = data_source(args.calib, args.data.no_observers("run")?)?;
    let threads = data.threads;
    let (n, secs) = run_job(&args.model, &data, &input_shapes(&args.shapes)?)?;
    let per = secs * 1e3 / n.max(1) as f64;
    println!("{n} samples in {secs:.3} s ({per:.2} ms per sample, {threads} threads)");
    Ok(())
}

fn run_inspect(args: InspectArgs) -> Result<(), Error> {
    let loaded = onnx_quant::onnx::load(&args.model)?;
    loaded.warnings.iter().for_each(|w| warn(w));
    let text = onnx_quant::ir::dump(&loaded.model);
    // A closed pipe (`| head`) is not an error.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
