//! Settings: target presets (embedded, commented YAML), command-line flags, and their resolution
//! into one [`Config`]. Precedence is implemented once, here: layers are applied in order
//! (preset, then command line) and the last one that sets a key wins; every resolved value
//! remembers the layer it came from (`onnx-quant show-config` prints both).

pub mod overrides;
pub mod schema;
mod settle;
pub mod write;
pub mod yaml;

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::params::pairs::CpuOverflow;
use crate::params::{ActivationScheme, Method, QType, WeightType};
use schema::{KEYS, Problem, Value};
pub use settle::{Settled, check_flag, chosen_target, settle};

/// Values for some keys, from one source.
#[derive(Clone, Debug, Default)]
pub struct Layer {
    /// Where the values come from, as shown to users ("preset tensorrt", "command line", ...).
    pub name: String,
    pub values: BTreeMap<&'static str, Value>,
}

impl Layer {
    pub fn new(name: impl Into<String>) -> Self {
        Layer {
            name: name.into(),
            values: BTreeMap::new(),
        }
    }

    /// Sets `path` (a key of the schema) to `value`.
    pub fn set(&mut self, path: &'static str, value: Value) {
        debug_assert!(schema::key(path).is_some(), "unknown key {path}");
        self.values.insert(path, value);
    }
}

const PRESETS: &[(&str, &str)] = &[
    ("tensorrt", include_str!("presets/tensorrt.yaml")),
    ("openvino", include_str!("presets/openvino.yaml")),
    ("ort", include_str!("presets/ort.yaml")),
];

/// The embedded YAML of a target's preset.
pub fn preset_text(target: &str) -> Option<&'static str> {
    PRESETS
        .iter()
        .find(|(t, _)| *t == target)
        .map(|(_, text)| *text)
}

/// Decodes YAML settings text into a layer, or every problem found.
pub fn decode_layer(
    name: &str,
    text: &str,
    extra: &[&str],
) -> Result<(Layer, yaml::Node), Vec<Problem>> {
    let node = yaml::parse(text).map_err(|(pos, message)| {
        vec![Problem {
            pos,
            path: String::new(),
            message,
        }]
    })?;
    let (mut found, mut problems) = (BTreeMap::new(), Vec::new());
    schema::decode_settings(&node, "", extra, &mut found, &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    let values = found.into_iter().map(|(k, (v, _))| (k, v)).collect();
    Ok((
        Layer {
            name: name.to_string(),
            values,
        },
        node,
    ))
}

/// The user's settings file: global settings (a layer) and per-layer overrides.
#[derive(Clone, Debug)]
pub struct UserConfig {
    /// The file name as messages show it.
    pub file: String,
    pub layer: Layer,
    pub overrides: Vec<overrides::Override>,
}

/// Reads and checks a settings file, reporting every problem with line and column.
pub fn load_user(path: &std::path::Path) -> Result<UserConfig, crate::error::UsageError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        crate::error::UsageError::Invalid(format!("cannot read config `{file}`: {e}"))
    })?;
    parse_user(&text, &file)
}

/// Parses and checks settings-file text; `file` names it in messages.
pub fn parse_user(text: &str, file: &str) -> Result<UserConfig, crate::error::UsageError> {
    let file = file.to_string();
    let bad = |problems: Vec<Problem>| crate::error::UsageError::Config {
        file: file.clone(),
        problems: problems.iter().map(|p| p.to_string()).collect(),
    };
    let node = yaml::parse(text).map_err(|(pos, message)| {
        bad(vec![Problem {
            pos,
            path: String::new(),
            message,
        }])
    })?;
    let (mut found, mut problems) = (BTreeMap::new(), Vec::new());
    schema::decode_settings(&node, "", &["overrides"], &mut found, &mut problems);
    let mut list = Vec::new();
    if let yaml::Kind::Map(entries) = &node.kind
        && let Some((_, _, o)) = entries.iter().find(|(k, _, _)| k == "overrides")
    {
        list = overrides::decode(o, &mut problems);
    }
    if !problems.is_empty() {
        problems.sort_by_key(|p| (p.pos.line, p.pos.col));
        return Err(bad(problems));
    }
    let layer = Layer {
        name: file.clone(),
        values: found.into_iter().map(|(k, (v, _))| (k, v)).collect(),
    };
    Ok(UserConfig {
        file,
        layer,
        overrides: list,
    })
}

/// The preset layer of `target` (one of [`schema::TARGETS`]).
pub fn preset(target: &str) -> Layer {
    let text = preset_text(target).unwrap_or_else(|| panic!("no preset for target {target}"));
    match decode_layer(&format!("preset {target}"), text, &[]) {
        Ok((layer, _)) => layer,
        Err(p) => panic!("preset {target} is invalid: {p:?}"),
    }
}

/// Every key with its value and the layer that set it.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub values: BTreeMap<&'static str, (Value, String)>,
}

/// Applies `layers` in order. The first must set every key (a preset does).
pub fn resolve(layers: &[Layer]) -> Resolved {
    let mut values = BTreeMap::new();
    for layer in layers {
        for (k, v) in &layer.values {
            values.insert(*k, (v.clone(), layer.name.clone()));
        }
    }
    Resolved { values }
}

impl Resolved {
    fn get(&self, path: &str) -> &Value {
        &self
            .values
            .get(path)
            .unwrap_or_else(|| panic!("presets set every key; {path} is missing"))
            .0
    }

    fn bool(&self, path: &str) -> bool {
        matches!(self.get(path), Value::Bool(true))
    }

    fn word(&self, path: &str) -> &str {
        match self.get(path) {
            Value::Word(w) => w,
            v => panic!("{path} is {v:?}"),
        }
    }

    fn ops(&self, path: &str) -> Vec<String> {
        match self.get(path) {
            Value::Ops(o) => o.clone(),
            v => panic!("{path} is {v:?}"),
        }
    }

    fn number(&self, path: &str) -> f64 {
        match self.get(path) {
            Value::Float(f) => *f,
            Value::Int(i) => *i as f64,
            v => panic!("{path} is {v:?}"),
        }
    }

    /// The settings as YAML, each value followed by the layer that set it.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut section = "";
        for k in KEYS {
            let (head, leaf) = k.path.split_once('.').map_or(("", k.path), |(h, l)| (h, l));
            if head != section && !head.is_empty() {
                let _ = writeln!(s, "{head}:");
            }
            section = head;
            let indent = if head.is_empty() { "" } else { "  " };
            if let Some((v, source)) = self.values.get(k.path) {
                let _ = writeln!(s, "{indent}{leaf}: {v}  # {source}");
            }
        }
        s
    }

    /// The typed configuration.
    pub fn config(&self) -> Config {
        let method = match self.word("activations.method") {
            "minmax" => Method::MinMax {
                averaged: self.bool("activations.moving_average"),
            },
            "percentile" => Method::Percentile {
                percentile: self.number("activations.percentile"),
            },
            "entropy" => Method::Entropy,
            _ => Method::Mse,
        };
        let qtype = qtype_of(self.word("activations.dtype"));
        let fixed_ranges = match self.get("placement.fixed_ranges") {
            Value::Ranges(r) => r
                .iter()
                .map(|(k, [lo, hi])| (k.clone(), (*lo as f32, *hi as f32)))
                .collect(),
            _ => BTreeMap::new(),
        };
        Config {
            target: self.word("target").to_string(),
            activation: ActivationScheme {
                qtype,
                symmetric: self.bool("activations.symmetric"),
            },
            unsigned_when_nonnegative: self.bool("activations.unsigned_when_nonnegative"),
            concat_uint8: self.bool("activations.concat_uint8"),
            method,
            percentile: self.number("activations.percentile"),
            bins: self.number("activations.bins") as usize,
            per_channel: self.bool("weights.per_channel"),
            weight_type: match self.word("weights.dtype") {
                "int4" => WeightType::Int4,
                "uint4" => WeightType::Uint4,
                "fp8" => WeightType::Fp8,
                _ => WeightType::Int8,
            },
            block_size: self.number("weights.block_size") as usize,
            clip_search: self.bool("weights.clip_search"),
            rounding: crate::params::Rounding::parse(self.word("weights.rounding"))
                .unwrap_or(crate::params::Rounding::Auto),
            cpu_overflow: match self.word("weights.cpu_overflow") {
                "auto" => CpuOverflow::Auto,
                "all" => CpuOverflow::All,
                _ => CpuOverflow::None,
            },
            weight_only: self.bool("weight_only"),
            smoothquant: self
                .bool("smoothquant")
                .then(|| self.number("smoothquant_alpha")),
            equalize: self
                .bool("equalize")
                .then(|| match self.word("equalize_clip") {
                    "relu" => ClipMode::Relu,
                    "skip" => ClipMode::Skip,
                    _ => ClipMode::Bound,
                }),
            bias_absorption: match self.word("bias_absorption") {
                "on" => true,
                "off" => false,
                _ => self.bool("equalize"),
            },
            bias_correction: self.bool("bias_correction"),
            bias_int32: self.word("bias") == "int32",
            fp16: self.word("high_precision") == "fp16",
            placement: Placement {
                weighted_ops: self.ops("placement.weighted_ops"),
                input_ops: self.ops("placement.input_ops"),
                output_ops: self.ops("placement.output_ops"),
                residual_add: match self.word("placement.residual_add") {
                    "skip_input" => ResidualAdd::SkipInput,
                    "all_inputs" => ResidualAdd::AllInputs,
                    _ => ResidualAdd::None,
                },
                concat_shared_scale: self.word("placement.concat") == "shared_scale",
                concat_inputs_shared: self.bool("placement.concat_inputs_shared"),
                pooling_with_neighbours: self.word("placement.pooling") == "with_neighbours",
                pooling_ops: self.ops("placement.pooling_ops"),
                shape_ops: self.ops("placement.shape_ops"),
                float_ops: self.ops("placement.float_ops"),
                fixed_ranges,
                min_matmul_dim: self.number("placement.min_matmul_dim") as usize,
                min_conv_sqnr: self.number("placement.min_conv_sqnr"),
                fold_batchnorm: self.bool("placement.fold_batchnorm"),
                fold_relu: self.bool("placement.fold_relu"),
                embeddings: self.bool("placement.embeddings"),
                float_reads_per_axis: self.bool("placement.float_reads_per_axis"),
            },
        }
    }
}

/// The activation type named `word` (one of the schema's `activations.dtype` values).
pub fn qtype_of(word: &str) -> QType {
    match word {
        "uint8" => QType::Uint8,
        "int16" => QType::Int16,
        "fp8" => QType::Fp8,
        _ => QType::Int8,
    }
}

/// How a residual Add is quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResidualAdd {
    SkipInput,
    AllInputs,
    None,
}

/// Where Q/DQ pairs go (see `src/config/presets/*.yaml` for what each target uses).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Placement {
    pub weighted_ops: Vec<String>,
    pub input_ops: Vec<String>,
    pub output_ops: Vec<String>,
    pub residual_add: ResidualAdd,
    pub concat_shared_scale: bool,
    /// The quantized inputs of a Concat that a reduction reads share one scale.
    pub concat_inputs_shared: bool,
    pub pooling_with_neighbours: bool,
    pub pooling_ops: Vec<String>,
    pub shape_ops: Vec<String>,
    pub float_ops: Vec<String>,
    pub fixed_ranges: BTreeMap<String, (f32, f32)>,
    pub min_matmul_dim: usize,
    /// Least channel-by-channel output SQNR (dB) a Conv keeps with int8 input; 0: no check.
    pub min_conv_sqnr: f64,
    pub fold_batchnorm: bool,
    pub fold_relu: bool,
    /// Gather tables stored int8 per row.
    pub embeddings: bool,
    /// Float Conv/ConvTranspose/Gemm read quantized tensors through a per-axis DequantizeLinear.
    pub float_reads_per_axis: bool,
}

/// Everything that decides how a model is quantized.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Config {
    pub target: String,
    pub activation: ActivationScheme,
    pub unsigned_when_nonnegative: bool,
    /// uint8 asymmetric for the tensors sharing a scale with a Concat output a Conv reads.
    pub concat_uint8: bool,
    pub method: Method,
    /// The percentile of `method: percentile`, also for overrides that choose that method.
    pub percentile: f64,
    pub bins: usize,
    pub per_channel: bool,
    pub weight_type: WeightType,
    /// int4 block size along the input-channel axis (0: none).
    pub block_size: usize,
    /// int4 scales by least squared error.
    pub clip_search: bool,
    /// `weights.rounding`.
    pub rounding: crate::params::Rounding,
    /// int8 weight pairs kept inside int16 for x86 kernels without VNNI.
    pub cpu_overflow: CpuOverflow,
    /// Activations stay float; no calibration.
    pub weight_only: bool,
    /// SmoothQuant's alpha, when on.
    pub smoothquant: Option<f64>,
    /// Cross-layer equalization (`rewrite::equalize`), and what it does through a ReLU6.
    pub equalize: Option<ClipMode>,
    /// High-bias absorption (`rewrite::absorb`), after equalization when that is on
    /// (`bias_absorption: auto` follows `equalize`).
    pub bias_absorption: bool,
    /// Bias correction from the calibration data's layer-input means.
    pub bias_correction: bool,
    pub bias_int32: bool,
    /// `high_precision: fp16`: scales rounded up to float16 values, and what stays unquantized
    /// converted to float16 after the rewrite.
    pub fp16: bool,
    pub placement: Placement,
}

impl Config {
    /// The configuration of `target`'s preset with no changes.
    pub fn preset(target: &str) -> Config {
        resolve(&[preset(target)]).config()
    }
}

/// What happens to a pair joined through a Clip from 0 to `M` (ReLU6), which no single
/// factor commutes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClipMode {
    /// Exact: the Clip becomes a Relu and a Min with the bound of each channel, `M / s_c`.
    Bound,
    /// An approximation (DFQ, AIMET): the Clip becomes a Relu; outputs change wherever the
    /// pre-activation exceeded `M`.
    Relu,
    /// Exact: pairs through such a Clip are left as they are.
    Skip,
}

impl ClipMode {
    /// Its `equalize_clip` value.
    pub fn name(self) -> &'static str {
        match self {
            ClipMode::Bound => "bound",
            ClipMode::Relu => "relu",
            ClipMode::Skip => "skip",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_sets_every_key_and_nothing_else() {
        for target in schema::TARGETS {
            let layer = preset(target);
            let missing: Vec<&str> = KEYS
                .iter()
                .map(|k| k.path)
                .filter(|p| !layer.values.contains_key(p))
                .collect();
            assert!(missing.is_empty(), "{target} misses {missing:?}");
            assert_eq!(layer.values["target"], Value::Word(target.to_string()));
            let _ = resolve(&[layer]).config();
        }
    }

    #[test]
    fn later_layers_win_and_are_named() {
        let mut cli = Layer::new("command line");
        cli.set("activations.symmetric", Value::Bool(false));
        let r = resolve(&[preset("tensorrt"), cli]);
        assert!(!r.config().activation.symmetric);
        let text = r.render();
        assert!(
            text.contains("  symmetric: false  # command line"),
            "{text}"
        );
        assert!(
            text.contains("  per_channel: true  # preset tensorrt"),
            "{text}"
        );
        assert!(
            text.starts_with("target: tensorrt  # preset tensorrt\nactivations:\n"),
            "{text}"
        );
    }

    #[test]
    fn presets_differ_where_the_runtimes_do() {
        let (trt, ov, ort) = (
            Config::preset("tensorrt"),
            Config::preset("openvino"),
            Config::preset("ort"),
        );
        assert!(trt.activation.symmetric && trt.placement.output_ops.is_empty() && !trt.bias_int32);
        assert!(
            ov.unsigned_when_nonnegative && ov.placement.input_ops.contains(&"Add".to_string())
        );
        assert!(
            ort.bias_int32
                && ort.placement.output_ops.contains(&"Conv".to_string())
                && ort.placement.fold_batchnorm
        );
    }
}
