//! One run's settings, settled: the target chosen by precedence, the layers applied in order
//! (preset, settings file, flags), every value checked against the schema and the combinations
//! that contradict each other refused. The command line and library callers go through here, so
//! they get the same checks.

use super::schema::{self, Ty, Value};
use super::{Config, Layer, Resolved, UserConfig, overrides::Override, preset, resolve};
use crate::error::UsageError;
use crate::params::{Method, QType, WeightType};

/// What [`settle`] gives: the resolved values (with where each came from), the typed
/// configuration, and the settings file's name and overrides.
#[derive(Clone, Debug)]
pub struct Settled {
    pub resolved: Resolved,
    pub config: Config,
    /// The settings file as messages name it, and its per-layer overrides.
    pub user: Option<(String, Vec<Override>)>,
}

/// The target a run is for: the flags' if they set one, else the settings file's, else
/// `tensorrt`.
pub fn chosen_target(flags: &Layer, user: Option<&UserConfig>) -> String {
    let word = |l: &Layer| match l.values.get("target") {
        Some(Value::Word(t)) => Some(t.clone()),
        _ => None,
    };
    word(flags)
        .or_else(|| user.and_then(|u| word(&u.layer)))
        .unwrap_or_else(|| "tensorrt".into())
}

/// The preset of the chosen target, then the settings file, then `flags` (the last that sets a
/// key wins), checked.
pub fn settle(flags: Layer, user: Option<UserConfig>) -> Result<Settled, UsageError> {
    let target = chosen_target(&flags, user.as_ref());
    let mut layers = vec![preset(&target)];
    let mut file = None;
    if let Some(u) = user {
        layers.push(u.layer);
        file = Some((u.file, u.overrides));
    }
    layers.push(flags);
    let resolved = resolve(&layers);
    let config = resolved.config();
    contradictions(&resolved, &config)?;
    Ok(Settled {
        resolved,
        config,
        user: file,
    })
}

/// Checks `value` against the schema's range for `path`; `flag` names it in the message.
pub fn check_flag(path: &str, value: &Value, flag: &str) -> Result<(), UsageError> {
    let key = schema::key(path).unwrap_or_else(|| panic!("unknown key {path}"));
    let bad = |x: String, lo: String, hi: String| {
        UsageError::Invalid(format!(
            "{flag} must be between {lo} and {hi} (`{path}`), got {x}"
        ))
    };
    match (key.ty, value) {
        (Ty::Float(lo, hi), Value::Float(x)) if !(lo..=hi).contains(x) => {
            Err(bad(x.to_string(), lo.to_string(), hi.to_string()))
        }
        (Ty::Int(lo, hi), Value::Int(i)) if !(lo..=hi).contains(i) => {
            Err(bad(i.to_string(), lo.to_string(), hi.to_string()))
        }
        _ => Ok(()),
    }
}

/// Settings that cannot hold together, whichever layers set them.
fn contradictions(resolved: &Resolved, config: &Config) -> Result<(), UsageError> {
    // the layer (preset, file, command line) that set a key
    let from = |k: &str| resolved.values.get(k).map_or("", |(_, src)| src.as_str());
    let refuse = |m: String| Err(UsageError::Invalid(m));
    if resolved.bool("activations.moving_average")
        && !matches!(config.method, Method::MinMax { .. })
    {
        return refuse(format!(
            "`activations.moving_average` ({}) goes with `activations.method: minmax` ({} says otherwise)",
            from("activations.moving_average"),
            from("activations.method")
        ));
    }
    if config.fp16 && config.bias_int32 {
        return refuse(format!(
            "`high_precision: fp16` ({}) contradicts `bias: int32` ({}): int32 bias scales \
             (s_x·s_w) underflow float16; use the tensorrt or openvino target, or `bias: float`",
            from("high_precision"),
            from("bias")
        ));
    }
    let fp8 = config.activation.qtype == QType::Fp8 || config.weight_type == WeightType::Fp8;
    if fp8 && config.bias_int32 {
        return refuse(format!(
            "float8 contradicts `bias: int32` ({}): an int32 bias needs integer operands; use the tensorrt target, or `bias: float`",
            from("bias")
        ));
    }
    if config.activation.qtype == QType::Fp8 && !config.activation.symmetric {
        return refuse(format!(
            "`activations.dtype: fp8` ({}) contradicts `activations.symmetric: false` ({}): float8 has no zero-point but 0",
            from("activations.dtype"),
            from("activations.symmetric")
        ));
    }
    if config.block_size > 0 && !matches!(config.weight_type, WeightType::Int4 | WeightType::Uint4)
    {
        return refuse(format!(
            "`weights.block_size: {}` ({}) needs `weights.dtype: int4` or `uint4` ({} says otherwise): \
             blocks are for 4-bit weights",
            config.block_size,
            from("weights.block_size"),
            from("weights.dtype")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(values: &[(&'static str, Value)]) -> Layer {
        let mut l = Layer::new("command line");
        for (k, v) in values {
            l.set(k, v.clone());
        }
        l
    }

    fn word(w: &str) -> Value {
        Value::Word(w.into())
    }

    #[test]
    fn the_flags_target_wins_over_the_files_and_tensorrt_is_the_default() {
        let user = super::super::parse_user("target: ort\n", "q.yaml").unwrap();
        assert_eq!(chosen_target(&flags(&[]), None), "tensorrt");
        assert_eq!(chosen_target(&flags(&[]), Some(&user)), "ort");
        let f = flags(&[("target", word("openvino"))]);
        assert_eq!(chosen_target(&f, Some(&user)), "openvino");
        let s = settle(flags(&[]), Some(user)).unwrap();
        assert_eq!(s.resolved.values["target"].1, "q.yaml");
        assert_eq!(s.user.as_ref().unwrap().0, "q.yaml");
    }

    #[test]
    fn a_contradiction_names_the_layers_that_set_each_side() {
        let user = super::super::parse_user("weights:\n  block_size: 32\n", "q.yaml").unwrap();
        let e = settle(flags(&[]), Some(user)).unwrap_err().to_string();
        assert!(e.contains("block_size: 32` (q.yaml)"), "{e}");
        assert!(e.contains("preset tensorrt says otherwise"), "{e}");
        let fp16 = flags(&[("target", word("ort")), ("high_precision", word("fp16"))]);
        let e = settle(fp16, None).unwrap_err().to_string();
        assert!(e.contains("contradicts `bias: int32` (preset ort)"), "{e}");
        let avg = flags(&[("activations.moving_average", Value::Bool(true))]);
        let e = settle(avg, None).unwrap_err().to_string();
        assert!(e.contains("goes with `activations.method: minmax`"), "{e}");
        let ok = flags(&[
            ("activations.moving_average", Value::Bool(true)),
            ("activations.method", word("minmax")),
        ]);
        assert!(settle(ok, None).is_ok());
    }

    #[test]
    fn flag_values_are_held_to_the_schemas_ranges() {
        assert!(check_flag("activations.bins", &Value::Int(2048), "--bins").is_ok());
        let e = check_flag("activations.bins", &Value::Int(8), "--bins").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--bins must be between 16 and 1048576"),
            "{e}"
        );
        let e = check_flag("smoothquant_alpha", &Value::Float(1.5), "--smoothquant").unwrap_err();
        assert!(e.to_string().contains("got 1.5"), "{e}");
    }
}
