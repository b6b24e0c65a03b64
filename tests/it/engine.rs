//! The accuracy engine (cross-layer equalization, bias correction, GPTQ) checked by the real
//! consumers: top-1 and output SQNR in ONNX Runtime (exact Q/DQ semantics and optimized) and
//! OpenVINO, `onnx.checker`, and the TensorRT-RTX parser building the output.

use serde_json::Value;

use crate::interop::{assert_checker, assert_trt_accepts, check, quantized, settings_file};
use crate::support::*;

const DWNET: &str = "mbnet/dwnet.onnx";
const MBNET: &str = "mbnet/mbnet.onnx";

/// Percentage points of top-1 `runtime` loses against fp32.
fn drop(r: &Value, runtime: &str) -> f64 {
    let m = &r[runtime];
    assert!(m.get("error").is_none(), "{runtime} failed: {m}");
    100.0 * (m["ref_top1"].as_f64().unwrap() - m["top1"].as_f64().unwrap())
}

/// `check.py` on `q` against the fixture `model` on the held-out fixture samples `x` (and
/// labels `y`): ONNX Runtime (optimized and exact), OpenVINO, and what `extra` adds.
fn runtimes(
    q: &std::path::Path,
    model: &str,
    (x, y): (&str, Option<&str>),
    extra: &[&str],
) -> Value {
    let f = |p: &str| fixture(p).to_string_lossy().into_owned();
    let (model, x) = (f(model), f(x));
    let mut args = vec![
        "--ref",
        &model,
        "--x",
        &x,
        "--ort",
        "--ort-exact",
        "--openvino",
    ];
    let y = y.map(f);
    if let Some(y) = &y {
        args.extend(["--y", y]);
    }
    args.extend_from_slice(extra);
    let r = check(q, &args);
    assert_checker(&r);
    r
}

/// [`runtimes`] with the labelled held-out set of fixture folder `eval` (`EVAL/eval_x.npy`,
/// `EVAL/eval_y.npy`).
fn labelled(q: &std::path::Path, model: &str, eval: &str, extra: &[&str]) -> Value {
    let (x, y) = (format!("{eval}/eval_x.npy"), format!("{eval}/eval_y.npy"));
    runtimes(q, model, (&x, Some(&y)), extra)
}

/// dwnet: the depthwise network whose channels are spread as BatchNorm-trained networks' are.
/// Per-tensor int8 weights lose more than 10 points of top-1; equalization and bias correction
/// bring it within 2 points of fp32, and per-channel weights with every algorithm within half a
/// point, in ONNX Runtime (exact and optimized) and OpenVINO; TensorRT-RTX builds the output.
#[test]
fn equalization_and_bias_correction_recover_a_network_per_tensor_weights_fail() {
    let dir = scratch();
    let per_tensor = settings_file(&dir, "weights:\n  per_channel: false\n");
    let (_d, plain) = quantized(
        DWNET,
        "mbnet/calib.npy",
        &["--target", "ort", "--config", &per_tensor],
    );
    let r = labelled(&plain, DWNET, "mbnet", &[]);
    assert!(
        drop(&r, "ort_exact") > 10.0,
        "plain per-tensor int8 loses little: {r}"
    );
    let (_d, fixed) = quantized(
        DWNET,
        "mbnet/calib.npy",
        &[
            "--target",
            "ort",
            "--config",
            &per_tensor,
            "--equalize",
            "--bias-correction",
        ],
    );
    let r = labelled(&fixed, DWNET, "mbnet", &[]);
    for runtime in ["ort_exact", "ort", "openvino"] {
        assert!(drop(&r, runtime) <= 2.0, "{runtime}: {r}");
    }
    for target in ["ort", "tensorrt"] {
        let (_d, best) = quantized(
            DWNET,
            "mbnet/calib.npy",
            &[
                "--target",
                target,
                "--equalize",
                "--bias-correction",
                "--rounding",
                "gptq",
            ],
        );
        let trt = if target == "tensorrt" {
            vec!["--trt"]
        } else {
            vec![]
        };
        let r = labelled(&best, DWNET, "mbnet", &trt);
        for runtime in ["ort_exact", "ort", "openvino"] {
            assert!(drop(&r, runtime) <= 0.5, "{target} {runtime}: {r}");
        }
        if target == "tensorrt" {
            assert_trt_accepts(&r);
        }
    }
}

/// Equalizing through a ReLU6 keeps the float function (the Clip becomes a Relu and a Min with
/// each channel's bound): with every layer kept float, the output equals the input model's in
/// ONNX Runtime to float rounding; `equalize_clip: relu`, DFQ's approximation, does not.
#[test]
fn equalization_through_relu6_keeps_the_float_function() {
    let dir = scratch();
    let float = "overrides:\n  - match: {name: \"*\"}\n    skip: true\n";
    let f = |p: &str| fixture(p).to_string_lossy().into_owned();
    let mut sqnr = Vec::new();
    for (clip, yaml) in [
        ("bound", float.to_string()),
        ("relu", format!("equalize_clip: relu\n{float}")),
    ] {
        let settings = settings_file(&dir, &yaml);
        let (_d, q) = quantized(
            MBNET,
            "mbnet/calib.npy",
            &["--equalize", "--config", &settings],
        );
        let m = load_model(&q);
        assert!(
            nodes(&m, "QuantizeLinear").is_empty(),
            "{clip}: something was quantized"
        );
        assert_eq!(
            nodes(&m, "Min").len(),
            if clip == "bound" { 9 } else { 0 },
            "{clip}"
        );
        let r = check(
            &q,
            &[
                "--ref",
                &f(MBNET),
                "--x",
                &f("mbnet/eval_x.npy"),
                "--ort",
                "--ort-exact",
            ],
        );
        assert_checker(&r);
        sqnr.push(r["ort_exact"]["sqnr_db"].as_f64().unwrap());
    }
    assert!(
        sqnr[0] > 100.0,
        "bounds: {} dB against the float model",
        sqnr[0]
    );
    assert!(
        sqnr[1] < 30.0,
        "relu: {} dB: the approximation changed nothing?",
        sqnr[1]
    );
}

/// High-bias absorption on the fixture whose first layer has channels sitting on a high bias
/// (`fixtures/models/make_high_bias.py`). With every layer kept float, the output stays the
/// input model's on held-out samples (above 60 dB: exact wherever a pre-activation stays above
/// the floor measured on the first 16 calibration samples); quantized, the activation between
/// the layers narrows and the output gains over 10 dB of SQNR in ONNX Runtime (exact and
/// optimized) and OpenVINO, alone and after equalization; TensorRT-RTX builds it.
#[test]
fn bias_absorption_narrows_the_activation_after_high_bias_channels() {
    const MODEL: &str = "models/high_bias.onnx";
    const CALIB: &str = "models/high_bias_calib.npy";
    let dir = scratch();
    let runtimes = |q: &std::path::Path, extra: &[&str]| {
        runtimes(q, MODEL, ("models/high_bias_eval.npy", None), extra)
    };
    let sqnr = |r: &Value, runtime: &str| r[runtime]["sqnr_db"].as_f64().unwrap();
    let float = settings_file(
        &dir,
        "overrides:\n  - match: {name: \"*\"}\n    skip: true\n",
    );
    let (_d, q) = quantized(MODEL, CALIB, &["--bias-absorption", "--config", &float]);
    let r = runtimes(&q, &[]);
    assert!(sqnr(&r, "ort_exact") > 60.0, "float function changed: {r}");

    let (_d, plain) = quantized(MODEL, CALIB, &[]);
    let before = runtimes(&plain, &[]);
    let range = |q: &std::path::Path| {
        let m = load_model(q);
        let scale = init(&m, "relu2_out_scale");
        onnx_quant::onnx::tensor::f32_data(scale).unwrap()[0]
    };
    for extra in [&[][..], &["--equalize"]] {
        let report = dir.path().join("r.json");
        let mut args = vec!["--bias-absorption", "--report", report.to_str().unwrap()];
        args.extend_from_slice(extra);
        let (_d, q) = quantized(MODEL, CALIB, &args);
        let notes = json(&report)["notes"].to_string();
        assert!(notes.contains("shifted 8 channel(s)"), "{notes}");
        if extra.is_empty() {
            // (equalization rescales the channels too: its range is not comparable)
            assert!(
                range(&q) < range(&plain) / 2.0,
                "the activation did not narrow"
            );
        }
        let after = runtimes(&q, &["--trt"]);
        for runtime in ["ort_exact", "ort", "openvino"] {
            let (b, a) = (sqnr(&before, runtime), sqnr(&after, runtime));
            assert!(a > b + 10.0, "{extra:?} {runtime}: {b} dB → {a} dB");
        }
        assert_trt_accepts(&after);
    }
}

/// Mixed precision rebuilds the model from the equalized and absorbed one: the report still
/// says what equalization and absorption did, next to what mixed precision chose.
#[test]
fn mixed_precision_keeps_the_notes_of_equalization_and_absorption() {
    let dir = scratch();
    let report = dir.path().join("r.json");
    quantized(
        "models/high_bias.onnx",
        "models/high_bias_calib.npy",
        &[
            "--equalize",
            "--target-sqnr",
            "45",
            "--report",
            report.to_str().unwrap(),
        ],
    );
    let notes = json(&report)["notes"].to_string();
    for want in [
        "equalize: 2 pair(s)",
        "bias absorption: 1 of 2 pair(s)",
        "mixed precision",
    ] {
        assert!(notes.contains(want), "{want}: {notes}");
    }
}

/// int4 weights on the digits ViT, per channel and in blocks of 32: GPTQ (what `auto` does for
/// 4-bit weights) gains output SQNR over nearest rounding and keeps top-1 within a point of
/// fp32 in ONNX Runtime and OpenVINO; TensorRT-RTX builds the per-channel one (blocks with int8
/// activations it parses but does not build, rounded either way).
#[test]
fn gptq_int4_weights_beat_nearest_rounding_on_the_vision_transformer() {
    for layout in [
        &["--weight-type", "int4"][..],
        &["--weight-type", "int4", "--block-size", "32"],
    ] {
        let mut sqnr = Vec::new();
        for rounding in ["nearest", "auto"] {
            let mut args = layout.to_vec();
            args.extend(["--rounding", rounding]);
            let (_d, q) = quantized("vit/vit.onnx", DIGITS_CALIB, &args);
            // TensorRT-RTX 1.7 builds int4 blocks with float activations only (weight-only)
            let per_channel = layout.len() == 2;
            let trt: &[&str] = if rounding == "auto" && per_channel {
                &["--trt"]
            } else {
                &[]
            };
            let r = labelled(&q, "vit/vit.onnx", "digits", trt);
            if rounding == "auto" {
                for runtime in ["ort_exact", "openvino"] {
                    assert!(drop(&r, runtime) <= 1.0, "{layout:?} {runtime}: {r}");
                }
                if per_channel {
                    assert_trt_accepts(&r);
                }
            }
            sqnr.push(r["ort_exact"]["sqnr_db"].as_f64().unwrap());
        }
        assert!(
            sqnr[1] >= sqnr[0] + 2.0,
            "{layout:?}: GPTQ {:.1} dB vs nearest {:.1} dB",
            sqnr[1],
            sqnr[0]
        );
    }
}
