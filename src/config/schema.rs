//! The settings onnx-quant understands, as one flat table of dotted key paths. Presets, the
//! user's file and command-line flags are all *layers* of values for these keys; the last layer
//! that sets a key wins, and the resolved value remembers which layer that was.

use std::collections::BTreeMap;
use std::fmt;

use super::yaml::{Kind, Node, Pos};

/// The type of a setting.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ty {
    Bool,
    /// A number in `[min, max]`.
    Float(f64, f64),
    /// A whole number in `[min, max]`.
    Int(i64, i64),
    /// One of these words.
    Enum(&'static [&'static str]),
    /// A list of ONNX op types.
    Ops,
    /// Op type → `[lo, hi]`: a fixed output range.
    Ranges,
}

/// One setting.
#[derive(Debug)]
pub struct Key {
    pub path: &'static str,
    pub ty: Ty,
    pub doc: &'static str,
}

pub const TARGETS: &[&str] = &["tensorrt", "openvino", "ort"];
pub const METHODS: &[&str] = &["mse", "minmax", "percentile", "entropy"];

/// Every setting, in the order `show-config` prints them.
pub const KEYS: &[Key] = &[
    Key {
        path: "target",
        ty: Ty::Enum(TARGETS),
        doc: "runtime the placement is made for",
    },
    Key {
        path: "activations.dtype",
        ty: Ty::Enum(&["int8", "uint8", "int16", "fp8"]),
        doc: "type of activations (int16: opset 21, not TensorRT; fp8: float8 e4m3fn, symmetric, opset 19)",
    },
    Key {
        path: "activations.unsigned_when_nonnegative",
        ty: Ty::Bool,
        doc: "uint8 (zero-point 0) for activations never below 0 when `dtype` is int8",
    },
    Key {
        path: "activations.concat_uint8",
        ty: Ty::Bool,
        doc: "uint8, asymmetric, for the tensors sharing one scale with a Concat output a Conv reads, when `dtype` is int8 (OpenVINO miscomputes an int8 Concat read by a Conv)",
    },
    Key {
        path: "activations.symmetric",
        ty: Ty::Bool,
        doc: "zero-point 0 (int8) or 128 (uint8) and a range symmetric around 0",
    },
    Key {
        path: "activations.method",
        ty: Ty::Enum(METHODS),
        doc: "how ranges are chosen from calibration statistics",
    },
    Key {
        path: "activations.percentile",
        ty: Ty::Float(1e-9, 100.0),
        doc: "percentile kept by `method: percentile`",
    },
    Key {
        path: "activations.bins",
        ty: Ty::Int(16, 1 << 20),
        doc: "histogram bins per side of zero",
    },
    Key {
        path: "activations.moving_average",
        ty: Ty::Bool,
        doc: "minmax: mean of per-sample extremes",
    },
    Key {
        path: "weights.dtype",
        ty: Ty::Enum(&["int8", "int4", "uint4", "fp8"]),
        doc: "type of weights (int4 / uint4 with zero-points: opset 21, two values per byte; fp8: float8 e4m3fn, opset 19)",
    },
    Key {
        path: "weights.per_channel",
        ty: Ty::Bool,
        doc: "one scale per output channel (Conv 0, ConvTranspose 1, Gemm/MatMul output axis)",
    },
    Key {
        path: "weights.block_size",
        ty: Ty::Int(0, 1 << 16),
        doc: "int4: one scale per block of this many values along the input-channel axis, which it must divide (0: per channel or per tensor)",
    },
    Key {
        path: "weights.clip_search",
        ty: Ty::Bool,
        doc: "int4: each scale clips the range where the squared rounding error is least, instead of at the absolute maximum",
    },
    Key {
        path: "weights.rounding",
        ty: Ty::Enum(&["auto", "nearest", "gptq"]),
        doc: "nearest: each weight to its nearest level; gptq: the levels chosen row by row to minimise the layer's output error on the calibration data (GPTQ, on the scales nearest would use; H in diagonal blocks of 128 input entries; without calibration data, nearest); auto: gptq for int4/uint4 weights, nearest for int8",
    },
    Key {
        path: "weights.cpu_overflow",
        ty: Ty::Enum(&["none", "auto", "all"]),
        doc: "int8 weight pairs x86 CPUs without VNNI add into a saturating int16 (VPMADDUBSW): none leaves them, auto rounds only the pairs that could saturate (least error per channel), all uses 7 bits everywhere",
    },
    Key {
        path: "weight_only",
        ty: Ty::Bool,
        doc: "quantize weights only: activations stay float and no calibration data is needed",
    },
    Key {
        path: "smoothquant",
        ty: Ty::Bool,
        doc: "SmoothQuant: fold per-channel factors into each LayerNormalization feeding MatMul/Gemm and into their weights, measured on the calibration data",
    },
    Key {
        path: "smoothquant_alpha",
        ty: Ty::Float(0.0, 1.0),
        doc: "SmoothQuant's migration strength: factor max|x|^alpha / max|w|^(1-alpha)",
    },
    Key {
        path: "equalize",
        ty: Ty::Bool,
        doc: "cross-layer equalization: the channels of two Conv/Gemm/MatMul joined by Relu, LeakyRelu, zero Pad or MaxPool rescaled so their weight ranges match (exact); a Clip from 0 (ReLU6) between them as `equalize_clip` says; BatchNormalization is folded first",
    },
    Key {
        path: "equalize_clip",
        ty: Ty::Enum(&["bound", "relu", "skip"]),
        doc: "a Clip from 0 to M (ReLU6) between equalized layers: bound becomes Relu then Min with each channel's bound M/s (exact), relu becomes Relu (an approximation: outputs change where the pre-activation exceeded M), skip leaves the pair unequalized",
    },
    Key {
        path: "bias_absorption",
        ty: Ty::Enum(&["auto", "on", "off"]),
        doc: "high-bias absorption (auto: when equalize is on, after it): where a Relu or ReLU6 joins a Conv/Gemm with a bias to a Conv without padding or a Gemm, each channel's pre-activation floor max(0, min(smallest value, mean − 3σ)) on the first 16 calibration samples moves from layer 1's bias into layer 2's (exact wherever the pre-activation stays above it); needs calibration data",
    },
    Key {
        path: "bias_correction",
        ty: Ty::Bool,
        doc: "empirical bias correction: each quantized Conv/Gemm/MatMul's bias absorbs the mean output shift its rounded weights cause on the calibration data (a layer without a bias gains one)",
    },
    Key {
        path: "bias",
        ty: Ty::Enum(&["float", "int32"]),
        doc: "float: biases untouched; int32: quantized with scale s_x·s_w",
    },
    Key {
        path: "high_precision",
        ty: Ty::Enum(&["fp32", "fp16"]),
        doc: "type of what stays unquantized: fp16 converts it, with float16 scales (opset 19) and fp32 graph inputs and outputs",
    },
    Key {
        path: "placement.weighted_ops",
        ty: Ty::Ops,
        doc: "ops whose data and weight inputs are quantized",
    },
    Key {
        path: "placement.input_ops",
        ty: Ty::Ops,
        doc: "ops whose float inputs are all quantized",
    },
    Key {
        path: "placement.output_ops",
        ty: Ty::Ops,
        doc: "ops whose output is quantized too (complete node units)",
    },
    Key {
        path: "placement.residual_add",
        ty: Ty::Enum(&["skip_input", "all_inputs", "none"]),
        doc: "at an Add joining a conv branch and a skip connection: quantize the skip input only, every input, or nothing",
    },
    Key {
        path: "placement.concat",
        ty: Ty::Enum(&["shared_scale", "none"]),
        doc: "a quantized Concat output: its inputs get the same scale (or Concat stays float)",
    },
    Key {
        path: "placement.concat_inputs_shared",
        ty: Ty::Bool,
        doc: "the quantized inputs of a Concat whose output a reduction (ReduceMax, ...) reads share one scale, even when its output stays float (OpenVINO reduces them as if they did)",
    },
    Key {
        path: "placement.pooling",
        ty: Ty::Enum(&["with_neighbours", "none"]),
        doc: "a quantized pooling/resize output: quantize its input too, so the op runs in int8",
    },
    Key {
        path: "placement.pooling_ops",
        ty: Ty::Ops,
        doc: "ops the `pooling` rule applies to",
    },
    Key {
        path: "placement.shape_ops",
        ty: Ty::Ops,
        doc: "ops whose quantized output reuses its input's scale",
    },
    Key {
        path: "placement.float_ops",
        ty: Ty::Ops,
        doc: "ops never quantized around (kept float with their inputs and outputs)",
    },
    Key {
        path: "placement.fixed_ranges",
        ty: Ty::Ranges,
        doc: "op → fixed [lo, hi] output range (e.g. Softmax: [0, 1])",
    },
    Key {
        path: "placement.min_matmul_dim",
        ty: Ty::Int(0, 1 << 30),
        doc: "MatMul/Gemm with K or N below this stay float",
    },
    Key {
        path: "placement.min_conv_sqnr",
        ty: Ty::Float(0.0, 100.0),
        doc: "a Conv whose output, channel by channel after normalization, would keep less than this SQNR (dB) with one int8 scale on its input stays float (estimated from the calibration statistics; 0: never)",
    },
    Key {
        path: "placement.fold_batchnorm",
        ty: Ty::Bool,
        doc: "fold Conv → BatchNormalization in the written model",
    },
    Key {
        path: "placement.fold_relu",
        ty: Ty::Bool,
        doc: "drop a Relu after a quantized output when the quantized range clamps at 0 exactly (asymmetric or unsigned)",
    },
    Key {
        path: "placement.embeddings",
        ty: Ty::Bool,
        doc: "a Gather from a constant float table (an embedding) reads it as int8, one scale per row",
    },
    Key {
        path: "placement.float_reads_per_axis",
        ty: Ty::Bool,
        doc: "a float Conv/ConvTranspose/Gemm reading a quantized tensor reads it through a per-axis DequantizeLinear (ONNX Runtime quantizes its weight per tensor otherwise)",
    },
];

/// A setting's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    Float(f64),
    Int(i64),
    Word(String),
    Ops(Vec<String>),
    Ranges(BTreeMap<String, [f64; 2]>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Word(w) => write!(f, "{w}"),
            Value::Ops(ops) => write!(f, "[{}]", ops.join(", ")),
            Value::Ranges(r) => {
                let items: Vec<String> = r
                    .iter()
                    .map(|(k, [lo, hi])| format!("{k}: [{lo}, {hi}]"))
                    .collect();
                write!(f, "{{{}}}", items.join(", "))
            }
        }
    }
}

/// A configuration mistake, with where it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub pos: Pos,
    /// Dotted key path (empty for the document itself).
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}:{}: {}", self.pos.line, self.pos.col, self.message)
        } else {
            write!(
                f,
                "{}:{}: `{}`: {}",
                self.pos.line, self.pos.col, self.path, self.message
            )
        }
    }
}

pub fn key(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.path == path)
}

/// Edit distance, for "did you mean" suggestions.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The closest of `candidates` to `word`, if close enough to be a typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .min()
        .map(|(_, c)| c)
}

/// Names of the children of `prefix` in the schema (e.g. `activations` for prefix "").
pub fn children(prefix: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = KEYS
        .iter()
        .filter_map(|k| {
            let rest = if prefix.is_empty() {
                Some(k.path)
            } else {
                k.path.strip_prefix(prefix)?.strip_prefix('.')
            };
            rest.map(|r| r.split('.').next().expect("non-empty"))
        })
        .collect();
    out.dedup();
    out
}

fn unknown(name: &str, candidates: &[&str]) -> String {
    match suggest(name, candidates.iter().copied()) {
        Some(s) => format!("unknown key `{name}`, did you mean `{s}`?"),
        None => format!(
            "unknown key `{name}` (expected one of: {})",
            candidates.join(", ")
        ),
    }
}

/// Decodes a leaf `node` for `key`, or says what is wrong with it.
pub fn decode_value(key: &Key, node: &Node) -> Result<Value, String> {
    let wrong = |want: &str| format!("expected {want}, got {}", node.kind.describe());
    match (key.ty, &node.kind) {
        (Ty::Bool, Kind::Bool(b)) => Ok(Value::Bool(*b)),
        (Ty::Bool, _) => Err(wrong("true or false")),
        (Ty::Float(lo, hi), Kind::Int(_) | Kind::Float(_)) => {
            let x = match node.kind {
                Kind::Int(i) => i as f64,
                Kind::Float(f) => f,
                _ => unreachable!(),
            };
            if (lo..=hi).contains(&x) {
                Ok(Value::Float(x))
            } else {
                Err(format!("{x} is outside [{lo}, {hi}]"))
            }
        }
        (Ty::Float(..), _) => Err(wrong("a number")),
        (Ty::Int(lo, hi), Kind::Int(i)) => {
            if (lo..=hi).contains(i) {
                Ok(Value::Int(*i))
            } else {
                Err(format!("{i} is outside [{lo}, {hi}]"))
            }
        }
        (Ty::Int(..), _) => Err(wrong("a whole number")),
        (Ty::Enum(words), Kind::Str(s)) if words.contains(&s.as_str()) => {
            Ok(Value::Word(s.clone()))
        }
        (Ty::Enum(words), Kind::Str(s)) => Err(match suggest(s, words.iter().copied()) {
            Some(w) => format!(
                "`{s}` is not one of {}; did you mean `{w}`?",
                words.join(", ")
            ),
            None => format!("`{s}` is not one of {}", words.join(", ")),
        }),
        (Ty::Enum(words), _) => Err(wrong(&format!("one of {}", words.join(", ")))),
        (Ty::Ops, Kind::Seq(items)) => items
            .iter()
            .map(|i| match &i.kind {
                Kind::Str(s) => Ok(s.clone()),
                other => Err(format!("expected op type names, got {}", other.describe())),
            })
            .collect::<Result<_, _>>()
            .map(Value::Ops),
        (Ty::Ops, _) => Err(wrong("a list of op types")),
        (Ty::Ranges, Kind::Map(entries)) => {
            let mut out = BTreeMap::new();
            for (op, _, v) in entries {
                let pair = match &v.kind {
                    Kind::Seq(xs) if xs.len() == 2 => xs
                        .iter()
                        .map(|x| match x.kind {
                            Kind::Int(i) => Some(i as f64),
                            Kind::Float(f) => Some(f),
                            _ => None,
                        })
                        .collect::<Option<Vec<f64>>>(),
                    _ => None,
                };
                match pair {
                    Some(p) if p[0] < p[1] => {
                        out.insert(op.clone(), [p[0], p[1]]);
                    }
                    _ => return Err(format!("`{op}` needs a range [lo, hi] with lo < hi")),
                }
            }
            Ok(Value::Ranges(out))
        }
        (Ty::Ranges, _) => Err(wrong("a mapping of op type to [lo, hi]")),
    }
}

/// Decodes a mapping of settings under `prefix` (e.g. "" for a whole file, or the settings of
/// an override), skipping the keys in `extra` (handled by the caller). Every problem is
/// collected; the values found are returned with their positions.
pub fn decode_settings(
    node: &Node,
    prefix: &str,
    extra: &[&str],
    out: &mut BTreeMap<&'static str, (Value, Pos)>,
    problems: &mut Vec<Problem>,
) {
    let Kind::Map(entries) = &node.kind else {
        problems.push(Problem {
            pos: node.pos,
            path: prefix.to_string(),
            message: format!("expected a mapping, got {}", node.kind.describe()),
        });
        return;
    };
    let names = children(prefix);
    for (name, pos, child) in entries {
        if prefix.is_empty() && extra.contains(&name.as_str()) {
            continue;
        }
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        if let Some(k) = key(&path) {
            match decode_value(k, child) {
                Ok(v) => {
                    out.insert(k.path, (v, child.pos));
                }
                Err(message) => problems.push(Problem {
                    pos: child.pos,
                    path,
                    message,
                }),
            }
        } else if names.contains(&name.as_str()) {
            decode_settings(child, &path, &[], out, problems);
        } else {
            let mut candidates = names.clone();
            if prefix.is_empty() {
                candidates.extend_from_slice(extra);
            }
            problems.push(Problem {
                pos: *pos,
                path,
                message: unknown(name, &candidates),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse;

    fn decode(text: &str) -> (BTreeMap<&'static str, (Value, Pos)>, Vec<Problem>) {
        let (mut out, mut problems) = (BTreeMap::new(), Vec::new());
        decode_settings(
            &parse(text).unwrap(),
            "",
            &["overrides"],
            &mut out,
            &mut problems,
        );
        (out, problems)
    }

    #[test]
    fn decodes_every_kind_of_value() {
        let (v, p) = decode(
            "target: ort\nactivations:\n  symmetric: false\n  percentile: 99\n  bins: 2048\nplacement:\n  input_ops: [Add, Mul]\n  fixed_ranges: {Softmax: [0, 1]}\n",
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(v["target"].0, Value::Word("ort".into()));
        assert_eq!(v["activations.symmetric"].0, Value::Bool(false));
        assert_eq!(v["activations.percentile"].0, Value::Float(99.0));
        assert_eq!(v["activations.bins"].0, Value::Int(2048));
        assert_eq!(
            v["placement.input_ops"].0,
            Value::Ops(vec!["Add".into(), "Mul".into()])
        );
        assert_eq!(
            v["placement.fixed_ranges"].0,
            Value::Ranges(BTreeMap::from([("Softmax".into(), [0.0, 1.0])]))
        );
        assert_eq!(v["activations.bins"].1, Pos { line: 5, col: 9 });
    }

    #[test]
    fn every_problem_is_reported_with_its_place() {
        let (_, p) = decode(
            "targt: ort\nactivations:\n  symetric: true\n  dtype: int7\n  bins: 3\nweights: 5\n",
        );
        let text: Vec<String> = p.iter().map(|x| x.to_string()).collect();
        assert_eq!(text.len(), 5, "{text:#?}");
        assert_eq!(
            text[0],
            "1:1: `targt`: unknown key `targt`, did you mean `target`?"
        );
        assert_eq!(
            text[1],
            "3:3: `activations.symetric`: unknown key `symetric`, did you mean `symmetric`?"
        );
        assert!(
            text[2].starts_with(
                "4:10: `activations.dtype`: `int7` is not one of int8, uint8, int16, fp8; did you mean `int8`?"
            ),
            "{}",
            text[2]
        );
        assert!(text[3].contains("3 is outside"), "{}", text[3]);
        assert!(
            text[4].contains("`weights`: expected a mapping"),
            "{}",
            text[4]
        );
    }

    #[test]
    fn suggestions_need_a_close_match() {
        assert_eq!(
            suggest("per_chanel", ["per_channel", "dtype"]),
            Some("per_channel")
        );
        assert_eq!(suggest("zzz", ["per_channel", "dtype"]), None);
    }
}
