//! Flags into library settings: the command line's layer of values (each checked against the
//! schema's range), settled with the preset and the settings file by [`config::settle`], and
//! the calibration-data, image and shape options.

use std::path::PathBuf;

use crate::config::{self, Layer, Resolved, schema::Value};
use crate::error::{Error, UsageError};
use crate::pipeline::{DataSource, InputShapes, Planning};
use crate::policy::Overrides;
use clap::ValueEnum;

use super::args::{self, DataArgs, RangeArgs};

pub fn usage(msg: impl Into<String>) -> Error {
    UsageError::Invalid(msg.into()).into()
}

impl DataArgs {
    /// These arguments, refused when they ask for a NaN policy a command has no use for.
    pub fn no_observers(&self, command: &str) -> Result<&Self, Error> {
        if self.nan_policy == args::NanPolicy::Ignore {
            return Err(usage(format!(
                "--nan-policy applies to calibration (quantize, calibrate, sensitivity), not to `{command}`"
            )));
        }
        Ok(self)
    }
}

pub fn data_source(path: PathBuf, args: &DataArgs) -> Result<DataSource, Error> {
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
        skip_non_finite: args.nan_policy == args::NanPolicy::Ignore,
        images: image_options(&args.images)?,
    })
}

fn image_options(a: &args::ImageArgs) -> Result<crate::calib::ImageOptions, Error> {
    use crate::calib::image::{Layout, Resize};
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
    Ok(crate::calib::ImageOptions {
        size: a.image_size,
        resize: match a.resize {
            args::ResizeArg::CenterCrop => Resize::CenterCrop,
            args::ResizeArg::Stretch => Resize::Stretch,
        },
        crop_ratio: a.crop_ratio,
        pixel_max: match a.pixel_range {
            args::PixelRangeArg::Unit => 1.0,
            args::PixelRangeArg::Byte => 255.0,
        },
        mean: or(&a.mean, 0.0),
        std: or(&a.std, 1.0),
        bgr: a.bgr,
        layout: a.image_layout.map(|l| match l {
            args::LayoutArg::Nchw => Layout::Nchw,
            args::LayoutArg::Nhwc => Layout::Nhwc,
        }),
    })
}

pub fn name_of(v: impl ValueEnum) -> String {
    v.to_possible_value()
        .expect("no skipped variants")
        .get_name()
        .to_string()
}

/// The layer of settings the command line sets; `cache_source` when `--stats` is a TensorRT
/// cache (its ranges are final: the method defaults to minmax).
fn flag_layer(args: &RangeArgs, cache_source: bool) -> Result<Layer, Error> {
    let mut cli = Layer::new("command line");
    let mut set = |path: &'static str, value: Value, flag: &str| -> Result<(), Error> {
        config::check_flag(path, &value, flag)?;
        cli.set(path, value);
        Ok(())
    };
    if let Some(t) = args.target {
        set("target", Value::Word(name_of(t)), "--target")?;
    }
    match (args.method, cache_source) {
        (Some(m), _) => set("activations.method", Value::Word(name_of(m)), "--method")?,
        (None, true) => set(
            "activations.method",
            Value::Word("minmax".into()),
            "--stats",
        )?,
        (None, false) => {}
    }
    if let Some(p) = args.percentile {
        set("activations.percentile", Value::Float(p), "--percentile")?;
    }
    if let Some(b) = args.bins {
        let b = i64::try_from(b).unwrap_or(i64::MAX);
        set("activations.bins", Value::Int(b), "--bins")?;
    }
    if args.moving_average {
        set(
            "activations.moving_average",
            Value::Bool(true),
            "--moving-average",
        )?;
    }
    if args.asymmetric {
        set("activations.symmetric", Value::Bool(false), "--asymmetric")?;
    }
    if let Some(t) = args.activation_type {
        set(
            "activations.dtype",
            Value::Word(name_of(t)),
            "--activation-type",
        )?;
    }
    if args.per_tensor {
        set("weights.per_channel", Value::Bool(false), "--per-tensor")?;
    }
    if let Some(t) = args.weight_type {
        set("weights.dtype", Value::Word(name_of(t)), "--weight-type")?;
    }
    if let Some(b) = args.block_size {
        let b = i64::try_from(b).unwrap_or(i64::MAX);
        set("weights.block_size", Value::Int(b), "--block-size")?;
    }
    if args.weight_only {
        set("weight_only", Value::Bool(true), "--weight-only")?;
    }
    if let Some(a) = args.smoothquant {
        set("smoothquant_alpha", Value::Float(a), "--smoothquant")?;
        set("smoothquant", Value::Bool(true), "--smoothquant")?;
    }
    if let Some(r) = args.rounding {
        set("weights.rounding", Value::Word(name_of(r)), "--rounding")?;
    }
    if args.equalize {
        set("equalize", Value::Bool(true), "--equalize")?;
    }
    if args.bias_absorption {
        set(
            "bias_absorption",
            Value::Word("on".into()),
            "--bias-absorption",
        )?;
    }
    if args.bias_correction {
        set("bias_correction", Value::Bool(true), "--bias-correction")?;
    }
    if let Some(h) = args.high_precision {
        set(
            "high_precision",
            Value::Word(name_of(h)),
            "--high-precision",
        )?;
    }
    Ok(cli)
}

/// The resolved settings of a command.
pub struct Settings {
    pub resolved: Resolved,
    pub planning: Planning,
}

/// Resolves preset, settings file and flags (in that order; flags win) and the file's
/// overrides, through [`config::settle`].
pub fn resolve_config(args: &RangeArgs, cache_source: bool) -> Result<Settings, Error> {
    let flags = flag_layer(args, cache_source)?;
    let user = args.config.as_deref().map(config::load_user).transpose()?;
    let settled = config::settle(flags, user)?;
    let overrides = match settled.user {
        Some((file, list)) => Overrides {
            file,
            list,
            automatic: Default::default(),
        },
        None => Overrides::default(),
    };
    let planning = Planning {
        config: settled.config,
        overrides,
        allow_unmatched: args.allow_unmatched,
        input_shapes: Default::default(),
    };
    Ok(Settings {
        resolved: settled.resolved,
        planning,
    })
}

/// The `--input-shape` values, parsed.
pub fn input_shapes(args: &args::ShapeArgs) -> Result<InputShapes, Error> {
    let mut out = InputShapes::new();
    for s in &args.input_shape {
        let (name, dims) = crate::pipeline::parse_input_shape(s).map_err(usage)?;
        if out.insert(name.clone(), dims).is_some() {
            return Err(usage(format!("--input-shape gives `{name}` twice")));
        }
    }
    Ok(out)
}
