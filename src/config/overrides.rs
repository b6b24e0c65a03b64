//! Per-layer overrides: an ordered list of `match:` selectors with settings. For each setting,
//! the first override that matches and sets it wins (nextest's model); overrides beat the
//! global settings of every layer.

use std::fmt;

use regex::Regex;

use super::schema::{Problem, decode_value, key, suggest};
use super::yaml::{Kind, Node, Pos};
use crate::params::{QType, WeightType};

/// A name pattern: exact, glob (`*`, `?`, `[...]`) or regular expression.
#[derive(Clone, Debug)]
pub enum Pattern {
    Exact(String),
    Glob(String, Regex),
    Regex(Regex),
}

impl Pattern {
    pub fn matches(&self, s: &str) -> bool {
        match self {
            Pattern::Exact(e) => e == s,
            Pattern::Glob(_, r) | Pattern::Regex(r) => r.is_match(s),
        }
    }

    fn glob(text: &str) -> Result<Pattern, String> {
        if !text.contains(['*', '?', '[']) {
            return Ok(Pattern::Exact(text.to_string()));
        }
        let mut re = String::from("^");
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' => re.push_str(".*"),
                '?' => re.push('.'),
                '[' => {
                    re.push('[');
                    for d in chars.by_ref() {
                        re.push(d);
                        if d == ']' {
                            break;
                        }
                    }
                }
                c => re.push_str(&regex::escape(&c.to_string())),
            }
        }
        re.push('$');
        Regex::new(&re)
            .map(|r| Pattern::Glob(text.to_string(), r))
            .map_err(|e| format!("bad glob `{text}`: {e}"))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(s) | Pattern::Glob(s, _) => write!(f, "{s}"),
            Pattern::Regex(r) => write!(f, "/{}/", r.as_str()),
        }
    }
}

/// What an override selects. Node conditions (`name`, `op_type`) and the tensor condition
/// combine with AND: with both, it selects those tensors as inputs of those nodes.
#[derive(Clone, Debug, Default)]
pub struct Matcher {
    pub name: Option<Pattern>,
    pub op_types: Vec<String>,
    pub tensor: Option<Pattern>,
}

impl Matcher {
    pub fn has_node_condition(&self) -> bool {
        self.name.is_some() || !self.op_types.is_empty()
    }

    pub fn node(&self, name: &str, op_type: &str) -> bool {
        self.name.as_ref().is_none_or(|p| p.matches(name))
            && (self.op_types.is_empty() || self.op_types.iter().any(|o| o == op_type))
    }

    pub fn tensor(&self, name: &str) -> bool {
        self.tensor.as_ref().is_none_or(|p| p.matches(name))
    }
}

/// Activation settings of one override (each optional).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActivationOverride {
    pub dtype: Option<QType>,
    pub symmetric: Option<bool>,
    pub method: Option<String>,
    pub percentile: Option<f64>,
    pub range: Option<(f32, f32)>,
    pub scale: Option<f32>,
    pub zero_point: Option<i32>,
}

/// Weight settings of one override.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WeightOverride {
    pub dtype: Option<WeightType>,
    pub per_channel: Option<bool>,
    pub axis: Option<usize>,
    /// int4 blocks along the input-channel axis (0: none).
    pub block_size: Option<usize>,
    pub rounding: Option<crate::params::Rounding>,
    pub bias_correction: Option<bool>,
}

/// One entry of `overrides:`.
#[derive(Clone, Debug)]
pub struct Override {
    /// 1-based position in the list.
    pub number: usize,
    pub pos: Pos,
    pub matcher: Matcher,
    pub skip: Option<bool>,
    pub activations: ActivationOverride,
    pub weights: WeightOverride,
}

impl Override {
    /// How reports name it: `override #2 (quant.yaml:14)`.
    pub fn label(&self, file: &str) -> String {
        if self.pos.line == 0 {
            // added by the program (automatic mixed precision), not read from a file
            return format!("override #{} (mixed precision)", self.number);
        }
        format!("override #{} ({file}:{})", self.number, self.pos.line)
    }
}

fn problem(pos: Pos, path: &str, message: impl Into<String>) -> Problem {
    Problem {
        pos,
        path: path.to_string(),
        message: message.into(),
    }
}

fn entries<'a>(
    node: &'a Node,
    path: &str,
    problems: &mut Vec<Problem>,
) -> &'a [(String, Pos, Node)] {
    match &node.kind {
        Kind::Map(e) => e,
        other => {
            problems.push(problem(
                node.pos,
                path,
                format!("expected a mapping, got {}", other.describe()),
            ));
            &[]
        }
    }
}

fn unknown(name: &str, pos: Pos, path: &str, allowed: &[&str], problems: &mut Vec<Problem>) {
    let message = match suggest(name, allowed.iter().copied()) {
        Some(s) => format!("unknown key `{name}`, did you mean `{s}`?"),
        None => format!(
            "unknown key `{name}` (expected one of: {})",
            allowed.join(", ")
        ),
    };
    problems.push(problem(pos, &format!("{path}.{name}"), message));
}

fn string(node: &Node, path: &str, problems: &mut Vec<Problem>) -> Option<String> {
    match &node.kind {
        Kind::Str(s) => Some(s.clone()),
        other => {
            problems.push(problem(
                node.pos,
                path,
                format!("expected a string, got {}", other.describe()),
            ));
            None
        }
    }
}

fn number(node: &Node) -> Option<f64> {
    match node.kind {
        Kind::Int(i) => Some(i as f64),
        Kind::Float(f) => Some(f),
        _ => None,
    }
}

fn decode_matcher(node: &Node, path: &str, problems: &mut Vec<Problem>) -> Matcher {
    let mut m = Matcher::default();
    let allowed = ["name", "name_regex", "op_type", "tensor", "tensor_regex"];
    for (k, kpos, v) in entries(node, path, problems) {
        let p = format!("{path}.{k}");
        let regex = |s: String, problems: &mut Vec<Problem>| match Regex::new(&s) {
            Ok(r) => Some(Pattern::Regex(r)),
            Err(e) => {
                problems.push(problem(v.pos, &p, format!("bad regular expression: {e}")));
                None
            }
        };
        let glob = |s: String, problems: &mut Vec<Problem>| match Pattern::glob(&s) {
            Ok(g) => Some(g),
            Err(e) => {
                problems.push(problem(v.pos, &p, e));
                None
            }
        };
        match k.as_str() {
            "name" => m.name = string(v, &p, problems).and_then(|s| glob(s, problems)),
            "name_regex" => m.name = string(v, &p, problems).and_then(|s| regex(s, problems)),
            "tensor" => m.tensor = string(v, &p, problems).and_then(|s| glob(s, problems)),
            "tensor_regex" => m.tensor = string(v, &p, problems).and_then(|s| regex(s, problems)),
            "op_type" => match &v.kind {
                Kind::Str(s) => m.op_types = vec![s.clone()],
                Kind::Seq(items) => {
                    m.op_types = items
                        .iter()
                        .filter_map(|i| string(i, &p, problems))
                        .collect()
                }
                other => problems.push(problem(
                    v.pos,
                    &p,
                    format!(
                        "expected an op type or a list of them, got {}",
                        other.describe()
                    ),
                )),
            },
            _ => unknown(k, *kpos, path, &allowed, problems),
        }
    }
    if !m.has_node_condition() && m.tensor.is_none() {
        problems.push(problem(
            node.pos,
            path,
            "selects everything: give `name`, `op_type` or `tensor`",
        ));
    }
    m
}

// Long by design: one short branch per key of an override's `activations:`.
fn decode_activations(node: &Node, path: &str, problems: &mut Vec<Problem>) -> ActivationOverride {
    let mut a = ActivationOverride::default();
    let allowed = [
        "dtype",
        "symmetric",
        "method",
        "percentile",
        "range",
        "scale",
        "zero_point",
    ];
    for (k, kpos, v) in entries(node, path, problems) {
        let p = format!("{path}.{k}");
        let mut via_schema =
            |schema_key: &str| match decode_value(key(schema_key).expect("schema key"), v) {
                Ok(value) => Some(value),
                Err(e) => {
                    problems.push(problem(v.pos, &p, e));
                    None
                }
            };
        use super::schema::Value;
        match k.as_str() {
            "dtype" => {
                if let Some(Value::Word(w)) = via_schema("activations.dtype") {
                    a.dtype = Some(super::qtype_of(&w));
                }
            }
            "symmetric" => {
                if let Some(Value::Bool(b)) = via_schema("activations.symmetric") {
                    a.symmetric = Some(b);
                }
            }
            "method" => {
                if let Some(Value::Word(w)) = via_schema("activations.method") {
                    a.method = Some(w);
                }
            }
            "percentile" => {
                if let Some(Value::Float(f)) = via_schema("activations.percentile") {
                    a.percentile = Some(f);
                }
            }
            "range" => match &v.kind {
                Kind::Seq(xs) if xs.len() == 2 && xs.iter().all(|x| number(x).is_some()) => {
                    let (lo, hi) = (
                        number(&xs[0]).expect("checked") as f32,
                        number(&xs[1]).expect("checked") as f32,
                    );
                    if lo <= hi && lo.is_finite() && hi.is_finite() {
                        a.range = Some((lo, hi));
                    } else {
                        problems.push(problem(
                            v.pos,
                            &p,
                            format!("[{lo}, {hi}] is not a range (lo <= hi, finite)"),
                        ));
                    }
                }
                other => problems.push(problem(
                    v.pos,
                    &p,
                    format!("expected [lo, hi], got {}", other.describe()),
                )),
            },
            "scale" => match number(v) {
                Some(s) if s > 0.0 && (s as f32).is_finite() && s as f32 > 0.0 => {
                    a.scale = Some(s as f32)
                }
                _ => problems.push(problem(
                    v.pos,
                    &p,
                    format!("expected a positive number, got {}", v.kind.describe()),
                )),
            },
            "zero_point" => match v.kind {
                Kind::Int(z) if (-128..=255).contains(&z) => a.zero_point = Some(z as i32),
                _ => problems.push(problem(
                    v.pos,
                    &p,
                    format!(
                        "expected an integer in [-128, 255], got {}",
                        v.kind.describe()
                    ),
                )),
            },
            _ => unknown(k, *kpos, path, &allowed, problems),
        }
    }
    check_activations(&a, node.pos, path, problems);
    a
}

/// Settings that cannot hold together.
fn check_activations(a: &ActivationOverride, pos: Pos, path: &str, problems: &mut Vec<Problem>) {
    if a.zero_point.is_some() && a.scale.is_none() {
        problems.push(problem(pos, path, "`zero_point` needs `scale`"));
    }
    if a.scale.is_some() && (a.range.is_some() || a.method.is_some() || a.percentile.is_some()) {
        problems.push(problem(
            pos,
            path,
            "a fixed `scale` leaves nothing for `range`, `method` or `percentile` to decide",
        ));
    }
    if a.range.is_some() && (a.method.is_some() || a.percentile.is_some()) {
        problems.push(problem(
            pos,
            path,
            "a fixed `range` leaves nothing for `method` or `percentile` to decide",
        ));
    }
    if let (Some(z), Some(true)) = (a.zero_point, a.symmetric) {
        let mid = a.dtype.unwrap_or(QType::Int8).mid();
        if z != mid {
            problems.push(problem(
                pos,
                path,
                format!("zero-point {z} contradicts `symmetric: true` (which means {mid})"),
            ));
        }
    }
    if let Some(z) = a.zero_point {
        let (lo, hi) = a.dtype.unwrap_or(QType::Int8).range();
        if !(lo..=hi).contains(&z) {
            let ty = a.dtype.unwrap_or(QType::Int8).name();
            problems.push(problem(
                pos,
                path,
                format!("zero-point {z} is outside {ty} [{lo}, {hi}] (set `dtype` to match)"),
            ));
        }
    }
    if a.percentile.is_some() && a.method.as_deref().is_some_and(|m| m != "percentile") {
        problems.push(problem(
            pos,
            path,
            "`percentile` goes with `method: percentile`",
        ));
    }
}

fn decode_weights(node: &Node, path: &str, problems: &mut Vec<Problem>) -> WeightOverride {
    let mut w = WeightOverride::default();
    let allowed = [
        "dtype",
        "per_channel",
        "axis",
        "block_size",
        "rounding",
        "bias_correction",
    ];
    for (k, kpos, v) in entries(node, path, problems) {
        let p = format!("{path}.{k}");
        match (k.as_str(), &v.kind) {
            ("dtype", Kind::Str(s)) if s == "int8" => w.dtype = Some(WeightType::Int8),
            ("dtype", Kind::Str(s)) if s == "int4" => w.dtype = Some(WeightType::Int4),
            ("dtype", Kind::Str(s)) if s == "fp8" => w.dtype = Some(WeightType::Fp8),
            ("dtype", Kind::Str(s)) if s == "uint4" => w.dtype = Some(WeightType::Uint4),
            ("dtype", other) => problems.push(problem(
                v.pos,
                &p,
                format!(
                    "expected int8, int4, uint4 or fp8, got {}",
                    other.describe()
                ),
            )),
            ("per_channel", Kind::Bool(b)) => w.per_channel = Some(*b),
            ("rounding", Kind::Str(s)) if crate::params::Rounding::parse(s).is_some() => {
                w.rounding = crate::params::Rounding::parse(s)
            }
            ("rounding", other) => problems.push(problem(
                v.pos,
                &p,
                format!("expected auto, nearest or gptq, got {}", other.describe()),
            )),
            ("bias_correction", Kind::Bool(b)) => w.bias_correction = Some(*b),
            ("bias_correction", other) => problems.push(problem(
                v.pos,
                &p,
                format!("expected true or false, got {}", other.describe()),
            )),
            ("axis", Kind::Int(a)) if *a >= 0 => w.axis = Some(*a as usize),
            ("block_size", Kind::Int(b)) if (0..=1 << 16).contains(b) => {
                w.block_size = Some(*b as usize)
            }
            ("block_size", other) => problems.push(problem(
                v.pos,
                &p,
                format!(
                    "expected a block size (0 to 65536), got {}",
                    other.describe()
                ),
            )),
            ("per_channel", other) => problems.push(problem(
                v.pos,
                &p,
                format!("expected true or false, got {}", other.describe()),
            )),
            ("axis", other) => problems.push(problem(
                v.pos,
                &p,
                format!("expected an axis (0, 1, ...), got {}", other.describe()),
            )),
            _ => unknown(k, *kpos, path, &allowed, problems),
        }
    }
    if w.axis.is_some() && w.per_channel == Some(false) {
        problems.push(problem(
            node.pos,
            path,
            "`axis` contradicts `per_channel: false`",
        ));
    }
    if w.block_size.is_some_and(|b| b > 0) {
        if matches!(w.dtype, Some(WeightType::Int8 | WeightType::Fp8)) {
            problems.push(problem(
                node.pos,
                path,
                "`block_size` needs `dtype: int4` or `uint4` (blocks are for 4-bit weights)",
            ));
        }
        if w.axis.is_some() {
            problems.push(problem(
                node.pos,
                path,
                "`axis` is the per-channel axis and blocks run along the input-channel axis: give one of `axis` and `block_size`",
            ));
        }
    }
    w
}

/// Decodes the `overrides:` list, collecting every problem.
pub fn decode(node: &Node, problems: &mut Vec<Problem>) -> Vec<Override> {
    let items = match &node.kind {
        Kind::Seq(items) => items.as_slice(),
        Kind::Null => &[],
        other => {
            problems.push(problem(
                node.pos,
                "overrides",
                format!("expected a list, got {}", other.describe()),
            ));
            return vec![];
        }
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("overrides[{i}]");
        let mut o = Override {
            number: i + 1,
            pos: item.pos,
            matcher: Matcher::default(),
            skip: None,
            activations: ActivationOverride::default(),
            weights: WeightOverride::default(),
        };
        let mut has_match = false;
        let allowed = ["match", "skip", "activations", "weights"];
        for (k, kpos, v) in entries(item, &path, problems) {
            let p = format!("{path}.{k}");
            match k.as_str() {
                "match" => {
                    has_match = true;
                    o.matcher = decode_matcher(v, &p, problems);
                }
                "skip" => match v.kind {
                    Kind::Bool(b) => o.skip = Some(b),
                    _ => problems.push(problem(
                        v.pos,
                        &p,
                        format!("expected true or false, got {}", v.kind.describe()),
                    )),
                },
                "activations" => o.activations = decode_activations(v, &p, problems),
                "weights" => o.weights = decode_weights(v, &p, problems),
                _ => unknown(k, *kpos, &path, &allowed, problems),
            }
        }
        if !has_match && matches!(item.kind, Kind::Map(_)) {
            problems.push(problem(item.pos, &path, "every override needs a `match:`"));
        }
        if o.skip == Some(true)
            && (o.activations != ActivationOverride::default()
                || o.weights != WeightOverride::default())
        {
            problems.push(problem(
                item.pos,
                &path,
                "`skip: true` keeps it float: its other settings would be ignored",
            ));
        }
        out.push(o);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse;

    fn decode_text(text: &str) -> (Vec<Override>, Vec<String>) {
        let mut problems = Vec::new();
        let o = decode(&parse(text).unwrap(), &mut problems);
        (o, problems.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn globs_and_regexes_match_names() {
        let g = Pattern::glob("/layer*/conv?").unwrap();
        assert!(
            g.matches("/layer1/conv2")
                && !g.matches("/layer1/conv22")
                && !g.matches("x/layer1/conv2")
        );
        assert!(matches!(Pattern::glob("plain").unwrap(), Pattern::Exact(_)));
        let (o, p) = decode_text(
            "- match: {name_regex: '^/head/.*', op_type: [Conv, Gemm]}\n  skip: true\n",
        );
        assert!(p.is_empty(), "{p:?}");
        assert!(o[0].matcher.node("/head/conv", "Conv"));
        assert!(!o[0].matcher.node("/head/conv", "MatMul"));
        assert!(!o[0].matcher.node("/body/conv", "Conv"));
    }

    #[test]
    fn every_mistake_is_reported_with_its_place() {
        let text = "\
- match: {nme: conv1}
  activations: {per_chanel: true}
- match: {name: conv2}
  activations: {zero_point: 5, symmetric: true, scale: 0.1}
  weights: {per_channel: yes, dtype: int4}
- skip: true
- match: {op_type: Conv}
  activations: {range: [3, 1], method: entropy, percentile: 99.9}
";
        let (_, p) = decode_text(text);
        let joined = p.join("\n");
        for want in [
            "1:11: `overrides[0].match.nme`: unknown key `nme`, did you mean `name`?",
            "1:10: `overrides[0].match`: selects everything",
            "2:17: `overrides[0].activations.per_chanel`: unknown key `per_chanel`",
            "zero-point 5 contradicts `symmetric: true`",
            "5:26: `overrides[1].weights.per_channel`: expected true or false, got the string `yes`",
            "`overrides[1].weights.per_channel`: expected true or false",
            "6:3: `overrides[2]`: every override needs a `match:`",
            "`overrides[3].activations.range`: [3, 1] is not a range",
            "`percentile` goes with `method: percentile`",
        ] {
            assert!(joined.contains(want), "missing `{want}` in:\n{joined}");
        }
    }
}
