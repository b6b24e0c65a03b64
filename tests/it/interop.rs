//! The quantized fixtures checked by the real consumers: `onnx.checker` (full), ONNX Runtime,
//! OpenVINO and the TensorRT-RTX parser with its CPU-only engine build. Needs the Python venv
//! that `tests/run.sh` creates (feature `interop`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::*;

fn python() -> PathBuf {
    let p = std::env::var_os("ONNXQ_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "no Python at {}: run tests/run.sh, which creates the venv",
        p.display()
    );
    p
}

/// Runs `tests/interop/check.py` and returns its JSON.
pub(crate) fn check(quant: &Path, args: &[&str]) -> Value {
    let o = Command::new(python())
        .arg(root().join("tests/interop/check.py"))
        .arg("--quant")
        .arg(quant)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        o.status.success(),
        "check.py failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

/// Checks a quantized digits model on the evaluation set: checker, and top-1 within one point
/// of fp32 in ONNX Runtime and OpenVINO (plus the TensorRT build when `trt`).
fn check_digits(quant: &Path, trt: bool) -> Value {
    check_labelled(quant, DIGITS, trt)
}

/// [`check_digits`] for any model of the digits images (`reference`, a fixture path).
fn check_labelled(quant: &Path, reference: &str, trt: bool) -> Value {
    let f = |p: &str| fixture(p).to_string_lossy().into_owned();
    let (model, x, y) = (f(reference), f("digits/eval_x.npy"), f("digits/eval_y.npy"));
    let mut args = vec!["--ref", &model, "--x", &x, "--y", &y, "--ort", "--openvino"];
    if trt {
        args.push("--trt");
    }
    let r = check(quant, &args);
    assert_checker(&r);
    assert_top1_within_one_point(&r, "ort");
    assert_top1_within_one_point(&r, "openvino");
    if trt {
        assert_trt_accepts(&r);
    }
    r
}

/// What `runtime` (`ort` or `openvino`) measured on a model whose int8 kernels compute what its
/// Q/DQ nodes say on every CPU; for a model with weight pairs that x86 CPUs without VNNI
/// saturate (check.py's `pairs`, the emulation of those kernels: a tensorrt output), the same
/// runtime with its int8 kernels off (`ort_exact`, `openvino_exact`), since on such a CPU the
/// fused kernels compute something else (docs/presets.md, "x86 CPUs without VNNI"). OpenVINO
/// 2026.4 cannot compile a float16 FakeQuantize after a Transpose with its int8 kernels off
/// (its `TransposeFQ` pass mixes f16 and f32 constants: the transformer with
/// `--high-precision fp16`): there the fast OpenVINO run must succeed, and the exact Q/DQ
/// semantics are ONNX Runtime's.
fn measured<'a>(r: &'a Value, runtime: &str) -> &'a Value {
    if is_risky(r) && matches!(runtime, "ort" | "openvino") {
        let exact = &r[format!("{runtime}_exact")];
        assert!(!exact.is_null(), "no {runtime}_exact for a risky model");
        if runtime == "openvino" && exact.get("error").is_some() {
            assert!(
                r[runtime].get("error").is_none(),
                "{runtime} failed: {}",
                r[runtime]
            );
            return measured(r, "ort");
        }
        exact
    } else {
        &r[runtime]
    }
}

/// Whether check.py's emulation found int8 weight pairs that x86 CPUs without VNNI saturate.
fn is_risky(r: &Value) -> bool {
    let risky = &r["pairs"]["risky"];
    assert!(risky.is_array(), "no pair emulation: {}", r["pairs"]);
    !risky.as_array().unwrap().is_empty()
}

fn assert_top1_within_one_point(r: &Value, runtime: &str) {
    let m = measured(r, runtime);
    assert!(m.get("error").is_none(), "{runtime} failed: {m}");
    let (top1, reference) = (m["top1"].as_f64().unwrap(), m["ref_top1"].as_f64().unwrap());
    assert!(
        reference - top1 <= 0.01,
        "{runtime}: top-1 {top1:.4} vs fp32 {reference:.4}"
    );
}

/// `quant` against the float `model` (fixture paths) on `x` in ONNX Runtime, OpenVINO and the
/// TensorRT-RTX parser, plus `extra` flags of check.py; asserts the checker passed.
fn check_everywhere(quant: &Path, model: &str, x: &str, extra: &[&str]) -> Value {
    let (model, x) = (
        fixture(model).to_string_lossy().into_owned(),
        fixture(x).to_string_lossy().into_owned(),
    );
    let mut args = vec!["--ref", &model, "--x", &x, "--ort", "--openvino", "--trt"];
    args.extend_from_slice(extra);
    let r = check(quant, &args);
    assert_checker(&r);
    r
}

fn assert_runs_close(r: &Value, runtime: &str, min_sqnr_db: f64) {
    let m = measured(r, runtime);
    assert!(m.get("error").is_none(), "{runtime} failed: {m}");
    assert!(
        m["sqnr_db"].as_f64().unwrap() >= min_sqnr_db,
        "{runtime}: {m}"
    );
}

pub(crate) fn assert_trt_accepts(r: &Value) {
    let t = &r["trt"];
    assert_eq!(t["parsed"], true, "TensorRT parser rejected the model: {t}");
    assert_eq!(t["built"], true, "TensorRT engine build failed: {t}");
}

pub(crate) fn assert_checker(r: &Value) {
    assert_eq!(r["checker"], "ok", "onnx.checker: {}", r["checker"]);
}

pub(crate) fn quantized(model: &str, calib: &str, extra: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let dir = scratch();
    let out = dir.path().join("q.onnx");
    quantize_ok(&fixture(model), &fixture(calib), &out, extra);
    (dir, out)
}

#[test]
fn digits_default_is_accepted_everywhere_and_keeps_accuracy() {
    let (_d, out) = quantized(DIGITS, DIGITS_CALIB, &[]);
    let r = check_digits(&out, true);
    let q = &r["qdq"];
    assert_eq!(q["zero_point_types"], serde_json::json!(["INT8"]), "{q}");
    assert_eq!(q["nonzero_zero_points"], 0);
    assert_eq!(
        (q["q"].as_u64(), q["dq"].as_u64(), q["per_channel"].as_u64()),
        (Some(5), Some(9), Some(4))
    );
    // the result we report in the docs: 35 dB logits SQNR, no lost prediction
    let ort = measured(&r, "ort");
    assert!(ort["sqnr_db"].as_f64().unwrap() > 30.0, "{ort}");
}

#[test]
fn digits_asymmetric_uint8_runs_in_ort_and_openvino() {
    let (_d, out) = quantized(
        DIGITS,
        DIGITS_CALIB,
        &["--asymmetric", "--activation-type", "uint8"],
    );
    let r = check_digits(&out, false);
    assert_eq!(
        r["qdq"]["zero_point_types"],
        serde_json::json!(["INT8", "UINT8"])
    );
}

#[test]
fn digits_per_tensor_is_accepted_everywhere() {
    let (_d, out) = quantized(DIGITS, DIGITS_CALIB, &["--per-tensor"]);
    let r = check_digits(&out, true);
    assert_eq!(r["qdq"]["per_channel"], 0);
}

#[test]
fn external_data_output_runs() {
    let (_d, out) = quantized("models/external/model.onnx", DIGITS_CALIB, &[]);
    check_digits(&out, false);
}

#[test]
fn two_input_model_is_accepted_everywhere() {
    let (_d, out) = quantized("models/two_inputs.onnx", "models/two_inputs/calib.npz", &[]);
    let r = check_everywhere(
        &out,
        "models/two_inputs.onnx",
        "models/two_inputs/calib.npz",
        &[],
    );
    assert_runs_close(&r, "ort", 25.0);
    assert_runs_close(&r, "openvino", 25.0);
    assert_trt_accepts(&r);
}

#[test]
fn raised_and_fallback_opsets_are_valid() {
    // the 4 -> 5 Gemm is below TensorRT's min_matmul_dim: only the conv weight is per channel
    // (opset8: both convs; its Gemm has N = 10)
    for (model, calib, opset, per_channel) in [
        ("models/opset11.onnx", "models/opset11_calib.npy", 13, 1),
        (
            "models/opset11_softmax1.onnx",
            "models/opset11_calib.npy",
            13,
            1,
        ),
        ("models/opset8.onnx", "models/opset8_calib.npy", 13, 2),
    ] {
        let (_d, out) = quantized(model, calib, &[]);
        let r = check_everywhere(&out, model, calib, &[]);
        assert_eq!(r["qdq"]["opset"], opset, "{model}");
        assert_eq!(r["qdq"]["per_channel"], per_channel, "{model}");
        assert_runs_close(&r, "ort", 25.0);
        assert_runs_close(&r, "openvino", 25.0);
        assert_trt_accepts(&r);
    }
}

#[test]
fn every_calibration_method_keeps_digits_accuracy() {
    for method in ["minmax", "percentile", "entropy", "mse"] {
        for extra in [&[][..], &["--asymmetric", "--activation-type", "uint8"]] {
            let mut args = vec!["--method", method];
            args.extend_from_slice(extra);
            let (_d, out) = quantized(DIGITS, DIGITS_CALIB, &args);
            let r = check_digits(&out, false);
            let ort = measured(&r, "ort");
            assert!(
                ort["sqnr_db"].as_f64().unwrap() > 25.0,
                "{method} {extra:?}: {ort}"
            );
        }
    }
}

#[test]
fn batchnorm_folding_for_calibration_preserves_the_function() {
    let loaded = onnx_quant::onnx::load(&fixture(DIGITS)).unwrap();
    let (folded, count) = onnx_quant::rewrite::fold_batchnorm(&loaded.model).unwrap();
    assert_eq!(count, 1);
    let g = folded.graph.as_ref().unwrap();
    assert!(!g.node.iter().any(|n| n.op_type() == "BatchNormalization"));
    assert!(
        !g.initializer.iter().any(|t| t.name().starts_with("bn1.")),
        "unused BN parameters dropped"
    );
    let dir = scratch();
    let path = dir.path().join("folded.onnx");
    onnx_quant::onnx::save(folded, &path, &Default::default()).unwrap();
    let f = |p: &str| fixture(p).to_string_lossy().into_owned();
    let r = check(
        &path,
        &["--ref", &f(DIGITS), "--x", &f("digits/eval_x.npy"), "--ort"],
    );
    assert_checker(&r);
    assert!(
        r["ort"]["sqnr_db"].as_f64().unwrap() > 100.0,
        "{}",
        r["ort"]
    );
}

/// Runs `eval --save-outputs` (onnx-quant's simulation of `quant` in tract) and returns the
/// path of the outputs.
fn simulate(reference: &Path, quant: &Path, data: &Path, dir: &Path) -> String {
    let out = dir.join("sim.npz");
    let o = run([
        "eval".as_ref(),
        reference.as_os_str(),
        quant.as_os_str(),
        "--data".as_ref(),
        data.as_os_str(),
        "--save-outputs".as_ref(),
        out.as_os_str(),
        "-q".as_ref(),
    ]);
    assert_eq!(code(&o), 0, "eval failed: {}", stderr(&o));
    out.to_string_lossy().into_owned()
}

/// The simulated outputs agree with ONNX Runtime running the model: with its int8 kernels
/// (cosine >= 0.999) and with the Q/DQ arithmetic as written (cosine >= 0.99999: the float ops
/// of the two engines round differently, and a last-bit difference before a QuantizeLinear can
/// move a value one step).
/// With its int8 kernels only where they compute the Q/DQ nodes on every CPU ([`measured`]).
fn assert_simulation_matches(c: &Value, what: &str) {
    let sim = &c["sim"];
    let risky = is_risky(c);
    for (runtime, min_cos, min_db) in [("ort", 0.999, 30.0), ("ort_unoptimized", 0.99999, 40.0)] {
        if risky && runtime == "ort" {
            continue;
        }
        let r = &sim[runtime];
        assert!(r.get("error").is_none(), "{what}: {r}");
        let cos = r["cosine"].as_f64().unwrap();
        let db = r["sqnr_db"].as_f64().unwrap();
        assert!(
            cos >= min_cos && db >= min_db,
            "{what}: simulated vs {runtime}: {r}"
        );
    }
}

/// Quantizes every preset fixture for `target` and checks the output with the consumers;
/// returns (model, report, check.py JSON) per fixture.
fn preset_outputs(target: &str, extra: &[&str]) -> Vec<(String, Value, Value)> {
    let dir = scratch();
    let mut out = Vec::new();
    for (model, calib, eval) in PRESET_FIXTURES {
        let q = dir.path().join("q.onnx");
        let report = dir.path().join("r.json");
        let s = |p: &Path| p.to_string_lossy().into_owned();
        quantize_ok(
            &fixture(model),
            &fixture(calib),
            &q,
            &["--target", target, "--report", &s(&report)],
        );
        let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        let sim = simulate(&fixture(model), &q, &fixture(eval), dir.path());
        let (m, x) = (s(&fixture(model)), s(&fixture(eval)));
        let mut args = vec!["--ref", &m, "--x", &x, "--ort", "--openvino", "--sim", &sim];
        args.extend_from_slice(extra);
        let c = check(&q, &args);
        assert_checker(&c);
        assert_simulation_matches(&c, &format!("{target} {model}"));
        // every preset's output runs in both runtimes close to fp32
        assert_runs_close(&c, "ort", 25.0);
        assert_runs_close(&c, "openvino", 25.0);
        out.push((model.to_string(), r, c));
    }
    out
}

fn quantized_ops(report: &Value, ops: &[&str]) -> usize {
    report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["quantized"] == true && ops.contains(&n["op_type"].as_str().unwrap()))
        .count()
}

#[test]
fn tensorrt_preset_builds_engines_with_no_rule_violation() {
    for (model, _, c) in preset_outputs("tensorrt", &["--trt"]) {
        assert_trt_accepts(&c);
        assert_eq!(c["qdq"]["nonzero_zero_points"], 0, "{model}");
    }
}

#[test]
fn ort_preset_fuses_every_quantized_conv_and_matmul() {
    for (model, report, c) in preset_outputs("ort", &["--ort-fused"]) {
        let fused = &c["ort_fused"];
        assert!(fused.get("error").is_none(), "{model}: {fused}");
        let count = |op: &str| fused[op].as_u64().unwrap_or(0) as usize;
        let convs = quantized_ops(&report, &["Conv"]);
        let matmuls = quantized_ops(&report, &["MatMul", "Gemm"]);
        assert_eq!(count("QLinearConv"), convs, "{model}: {fused}");
        assert_eq!(
            count("QLinearMatMul") + count("QGemm") + count("MatMulIntegerToFloat"),
            matmuls,
            "{model}: {fused}"
        );
        // what the plan keeps float stays float: ONNX Runtime quantizes the weight of a float
        // Conv reading a per-tensor DequantizeLinear itself, which the per-axis one prevents
        let float = |ops: &[&str]| {
            report["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| {
                    n["quantized"] == false && ops.contains(&n["op_type"].as_str().unwrap())
                })
                .count()
        };
        assert_eq!(
            count("Conv") + count("MatMul") + count("Gemm"),
            float(&["Conv", "MatMul", "Gemm"]),
            "{model}: float weighted ops: {fused}"
        );
    }
}

/// A settings file with `yaml` in `dir`, as a `--config` argument.
pub(crate) fn settings_file(dir: &tempfile::TempDir, yaml: &str) -> String {
    let path = dir.path().join("settings.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.to_string_lossy().into_owned()
}

/// ONNX Runtime quantizes, per tensor, the weight of a float Conv reading a per-tensor
/// DequantizeLinear (its `WeightBiasQuantization`): the mobilenet fixture's depthwise conv that
/// the guard keeps float becomes a QLinearConv when the ort output reads it that way
/// (`placement.float_reads_per_axis: false`), and `check --target ort` says so; the preset's
/// per-axis DequantizeLinear keeps it float, in ONNX Runtime and in the simulation alike.
#[test]
fn a_conv_kept_float_stays_float_in_onnx_runtime() {
    let dir = scratch();
    let config = settings_file(&dir, "placement:\n  float_reads_per_axis: false\n");
    let mut fused = Vec::new();
    for extra in [
        &["--target", "ort"][..],
        &["--target", "ort", "--config", &config],
    ] {
        let (d, q) = quantized(MBNET, "mbnet/calib.npy", extra);
        let c = check(&q, &["--ort-fused"]);
        let warnings = check_json(&q, "ort", d.path())["warnings"].to_string();
        fused.push((c["ort_fused"]["QLinearConv"].as_u64(), warnings));
    }
    let (shielded, plain) = (&fused[0], &fused[1]);
    assert_eq!(shielded.0.unwrap() + 1, plain.0.unwrap(), "{fused:?}");
    assert!(
        !shielded.1.contains("float_weight_requantized"),
        "{}",
        shielded.1
    );
    assert!(plain.1.contains("float_weight_requantized"), "{}", plain.1);
}

/// OpenVINO 2026.4 computes a Conv whose int8 data comes through a Concat wrongly once values
/// pass half the int8 range (a YOLOv5/YOLOX Focus stem and CSP Concats of SiLU outputs; the
/// corpus's ddddocr detector ran at 3.0 dB in OpenVINO against 14.5 dB exact, NNCF's output at
/// 2.6), in its AVX2, AVX2-VNNI and AVX-512-VNNI kernels; its AMX kernels (Sapphire Rapids and
/// later) compute it right. The openvino preset quantizes a Concat's tensors as uint8 with a
/// zero-point: OpenVINO's int8 kernels then compute what the Q/DQ nodes say (within 0.5 dB of
/// its float FakeQuantize arithmetic, and of ONNX Runtime's exact run), with the kernels this
/// CPU picks and with them capped at AVX2 (`--openvino-isa`, so the test does not depend on the
/// CPU). With `activations.concat_uint8: false` the AVX2 kernels show the defect (more than
/// 6 dB lost) and `check --target openvino` names the Conv; when that part fails, OpenVINO has
/// fixed it and the setting can go.
#[test]
fn concats_read_by_convs_compute_in_openvino() {
    let dir = scratch();
    let config = settings_file(&dir, "activations:\n  concat_uint8: false\n");
    let (model, x) = (
        fixture("models/focus.onnx").to_string_lossy().into_owned(),
        fixture("models/focus_eval.npy")
            .to_string_lossy()
            .into_owned(),
    );
    // (native OpenVINO, OpenVINO capped at AVX2, OpenVINO exact, ORT exact, check's warnings)
    let mut got = Vec::new();
    for extra in [
        &["--target", "openvino"][..],
        &["--target", "openvino", "--config", &config],
    ] {
        let (d, q) = quantized("models/focus.onnx", "models/focus_calib.npy", extra);
        // OpenVINO's exact mode has no kernel for every op when capped: measured uncapped.
        let run = |extra: &[&str]| {
            let mut args = vec!["--ref", &model, "--x", &x, "--openvino"];
            args.extend_from_slice(extra);
            let r = check(&q, &args);
            assert_checker(&r);
            r
        };
        let db = |r: &Value, k: &str| {
            r[k]["sqnr_db"]
                .as_f64()
                .unwrap_or_else(|| panic!("{k}: {r}"))
        };
        let r = run(&["--openvino-exact", "--ort-exact"]);
        let (native, exact, ort) = (
            db(&r, "openvino"),
            db(&r, "openvino_exact"),
            db(&r, "ort_exact"),
        );
        let avx2 = db(&run(&["--openvino-isa", "AVX2"]), "openvino");
        let warnings = check_json(&q, "openvino", d.path())["warnings"].to_string();
        got.push((native, avx2, exact, ort, warnings));
    }
    let (native, avx2, exact, ort, warnings) = &got[0];
    assert!(
        native >= &(exact - 0.5) && avx2 >= &(exact - 0.5) && (exact - ort).abs() <= 0.5,
        "{got:?}"
    );
    assert!(!warnings.contains("int8_concat"), "{warnings}");
    let (native, avx2, exact, _, warnings) = &got[1];
    assert!(
        avx2 < &(exact - 6.0),
        "OpenVINO's AVX2 kernels compute int8 Concats now: {got:?}"
    );
    // The kernels this CPU picks compute it right (AMX) or as the AVX2 ones do.
    assert!(
        native >= &(exact - 0.5) || (native - avx2).abs() <= 1.0,
        "{got:?}"
    );
    assert!(warnings.contains("int8_concat"), "{warnings}");
}

/// Why the `ort` preset defaults to U8S8: on x86 ONNX Runtime fuses int8 activations only by
/// turning each Q -> DQ pair into uint8 itself, which it skips where a QuantizeLinear feeds two
/// units (a residual block's input feeds its conv and its Add). The same model with U8S8 fuses
/// every conv (`ort_preset_fuses_every_quantized_conv_and_matmul`). When this fails, ONNX
/// Runtime has learnt to fuse S8S8 here and the default should follow the S8S8.
#[cfg(target_arch = "x86_64")]
#[test]
fn s8s8_activations_leave_fan_out_units_unfused_in_onnx_runtime_on_x86() {
    let (_dir, q) = quantized(
        "models/blocks.onnx",
        "models/blocks_calib.npy",
        &["--target", "ort", "--activation-type", "int8"],
    );
    let fused = &check(&q, &["--ort-fused"])["ort_fused"];
    assert!(fused.get("error").is_none(), "{fused}");
    let count = |op: &str| fused[op].as_u64().unwrap_or(0);
    assert!(count("QLinearConv") > 0, "{fused}");
    assert!(count("Conv") > 0, "S8S8 convs all fused: {fused}");
}

#[test]
fn openvino_preset_uses_uint8_for_non_negative_activations() {
    for (model, report, _) in preset_outputs("openvino", &[]) {
        let acts = report["activations"].as_array().unwrap();
        for a in acts {
            let unsigned = a["dtype"] == "uint8";
            assert_eq!(
                unsigned,
                a["range"][0].as_f64().unwrap() >= 0.0,
                "{model}: {a}"
            );
        }
    }
}

#[test]
fn a_concat_of_disparate_ranges_stays_float_and_keeps_the_small_part() {
    let (model, calib) = ("models/head.onnx", "models/head_calib.npy");
    for target in ["tensorrt", "ort", "openvino"] {
        let dir = scratch();
        let (q, report) = (dir.path().join("q.onnx"), dir.path().join("r.json"));
        quantize_ok(
            &fixture(model),
            &fixture(calib),
            &q,
            &["--target", target, "--report", q_str(&report)],
        );
        let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        let concat = r["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == "concat")
            .unwrap();
        assert_eq!(concat["quantized"], false, "{target}");
        assert!(
            concat["reason"]
                .as_str()
                .unwrap()
                .contains("one int8 scale would erase the smaller"),
            "{target}: {concat}"
        );
        // the class scores (channels 4..7 of `detections`) survive quantization
        let (m, x) = (fixture(model), fixture(calib));
        let c = check(
            &q,
            &[
                "--ref",
                q_str(&m),
                "--x",
                q_str(&x),
                "--ort",
                "--openvino",
                "--output",
                "detections",
                "--channels",
                "4:7",
            ],
        );
        for runtime in ["ort", "openvino"] {
            let m = measured(&c, runtime);
            assert!(
                m["max_abs_diff"].as_f64().unwrap() < 0.05,
                "{target} {runtime}: {m}"
            );
        }
    }
}

fn q_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn mixed_precision_output_keeps_accuracy_in_every_runtime() {
    let labels = fixture("outlier/calib_y.npy")
        .to_string_lossy()
        .into_owned();
    let f = |p: &str| fixture(p).to_string_lossy().into_owned();
    let (model, x, y) = (
        f("outlier/digits_outlier.onnx"),
        f("digits/eval_x.npy"),
        f("digits/eval_y.npy"),
    );
    let args = ["--ref", &model, "--x", &x, "--y", &y, "--ort", "--openvino"];
    // plain int8 (without the convolution guard) loses more than 2 points in both runtimes
    let no_guard = fixture("configs/no_conv_guard.yaml")
        .to_string_lossy()
        .into_owned();
    let (_d, plain) = quantized(
        "outlier/digits_outlier.onnx",
        "outlier/calib.npy",
        &["--config", &no_guard],
    );
    let r = check(&plain, &args);
    for rt in ["ort", "openvino"] {
        let m = measured(&r, rt);
        let drop = m["ref_top1"].as_f64().unwrap() - m["top1"].as_f64().unwrap();
        assert!(drop > 0.02, "{rt}: plain int8 drop {drop}");
    }
    // mixed precision meets its 0.5-point budget there too, and TensorRT builds it
    let (_d, mixed) = quantized(
        "outlier/digits_outlier.onnx",
        "outlier/calib.npy",
        &[
            "--config",
            &no_guard,
            "--labels",
            &labels,
            "--max-top1-drop",
            "0.5",
        ],
    );
    let mut with_trt = args.to_vec();
    with_trt.push("--trt");
    let r = check(&mixed, &with_trt);
    assert_checker(&r);
    assert_trt_accepts(&r);
    for rt in ["ort", "openvino"] {
        let m = measured(&r, rt);
        let drop = m["ref_top1"].as_f64().unwrap() - m["top1"].as_f64().unwrap();
        assert!(drop <= 0.005, "{rt}: mixed-precision drop {drop}");
    }
}

#[test]
fn simulation_matches_onnx_runtime_on_a_model_quantized_by_onnx_runtime() {
    let dir = scratch();
    let q = dir.path().join("ort.onnx");
    let o = Command::new(python())
        .arg(root().join("bench/ort_quantize.py"))
        .arg(fixture(DIGITS))
        .arg(fixture(DIGITS_CALIB))
        .arg(&q)
        .args(["--method", "minmax", "--n", "128"])
        .output()
        .expect("python runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let data = fixture("digits/eval_x.npy");
    let sim = simulate(&fixture(DIGITS), &q, &data, dir.path());
    let x = data.to_string_lossy().into_owned();
    let r = check(&q, &["--x", &x, "--sim", &sim]);
    assert_simulation_matches(&r, "ORT quantize_static output");
}

/// Element type of a graph input or output.
fn io_elem(v: &onnx_quant::proto::ValueInfoProto) -> i32 {
    use onnx_quant::proto::type_proto::Value as T;
    match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(T::TensorType(t)) => t.elem_type(),
        _ => 0,
    }
}

#[test]
fn high_precision_fp16_runs_everywhere_and_builds_in_tensorrt() {
    use onnx_quant::proto::tensor_proto::DataType;
    let f16 = DataType::Float16 as i32;
    let f32 = DataType::Float as i32;
    // (model, calib, data to compare on, ORT at the basic level: the model has a Concat unit)
    for (model, calib, x, basic) in [
        (DIGITS, DIGITS_CALIB, "digits/eval_x.npy", false),
        (
            "models/blocks.onnx",
            "models/blocks_calib.npy",
            "models/blocks_eval.npy",
            true,
        ),
        (
            "models/transformer.onnx",
            "models/transformer_calib.npy",
            "models/transformer_eval.npy",
            false,
        ),
        (
            "models/opset8.onnx",
            "models/opset8_calib.npy",
            "models/opset8_calib.npy",
            false,
        ),
    ] {
        let (_d, out) = quantized(model, calib, &["--high-precision", "fp16"]);
        let m = load_model(&out);
        assert_eq!(m.opset_import[0].version(), 19, "{model}");
        let g = m.graph.as_ref().unwrap();
        // callers feed and read float32; inside, every float initializer but Resize's scales
        // is float16, scales included
        assert!(
            g.input.iter().chain(&g.output).all(|v| io_elem(v) == f32),
            "{model}"
        );
        let inits: std::collections::HashMap<&str, i32> = g
            .initializer
            .iter()
            .map(|t| (t.name(), t.data_type()))
            .collect();
        for n in g
            .node
            .iter()
            .filter(|n| n.op_type().ends_with("QuantizeLinear"))
        {
            assert_eq!(inits[n.input[1].as_str()], f16, "{model}: {}", n.name());
        }
        let float32: Vec<&&str> = inits
            .iter()
            .filter(|(_, t)| **t == f32)
            .map(|(n, _)| n)
            .collect();
        assert!(
            float32.iter().all(|n| n.ends_with("scales")),
            "{model}: {float32:?}"
        );

        let extra: &[&str] = if basic { &["--ort-basic"] } else { &[] };
        let r = check_everywhere(&out, model, x, extra);
        assert_runs_close(&r, "ort", 30.0);
        assert_runs_close(&r, "openvino", 30.0);
        assert_trt_accepts(&r);
        let o = run([
            "check".as_ref(),
            out.as_os_str(),
            "--target".as_ref(),
            "tensorrt".as_ref(),
        ]);
        assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stdout));
    }
}

#[test]
fn conformance_sweep_over_the_onnx_backend_models_has_no_failure() {
    // every model of the onnx package's backend test data: quantized (checker, ORT, output
    // close to the expected one) or refused with a documented error; never a panic, a crash,
    // a timeout, an invalid or wrong output, or a partial file (tests/conformance/sweep.py)
    let dir = scratch();
    let json = dir.path().join("sweep.json");
    let o = Command::new(python())
        .arg(root().join("tests/conformance/sweep.py"))
        .arg("--bin")
        .arg(env!("CARGO_BIN_EXE_onnx-quant"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("python runs");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r: serde_json::Map<String, Value> =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(
        r.len() >= 140,
        "{} models: the backend data moved? {out}",
        r.len()
    );
    let quantized = r
        .values()
        .filter(|v| v["outcome"] == "quantized" && v["quantized_nodes"].as_u64() > Some(0))
        .count();
    // opset 6-9 models are raised to 13; most have something to quantize
    assert!(quantized >= 35, "{quantized} quantized: {out}");
}

/// int4 weights in blocks (weight-only, no calibration data): accepted by `onnx.checker`, run by
/// ONNX Runtime (fused into MatMulNBits) and OpenVINO close to fp32, built by TensorRT-RTX; the
/// simulation agrees with ONNX Runtime. int16 activations with int4 and int8 weights (the
/// `lowbit.yaml` example) run in ONNX Runtime and OpenVINO; TensorRT rejects int16, and
/// `check --target tensorrt` says so.
#[test]
fn int4_blocks_and_int16_activations_run_in_every_runtime_that_supports_them() {
    let dir = scratch();
    let (model, calib, eval) = (
        "models/transformer.onnx",
        "models/transformer_calib.npy",
        "models/transformer_eval.npy",
    );
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let w4 = dir.path().join("w4.onnx");
    let o = run([
        s(&fixture(model)),
        s(&w4),
        "--weight-only".into(),
        "--weight-type".into(),
        "int4".into(),
        "--block-size".into(),
        "16".into(),
        "-q".into(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let sim = simulate(&fixture(model), &w4, &fixture(eval), dir.path());
    let r = check_everywhere(&w4, model, eval, &["--ort-fused", "--sim", &sim]);
    assert_runs_close(&r, "ort", 20.0);
    assert_runs_close(&r, "openvino", 20.0);
    assert_trt_accepts(&r);
    assert_simulation_matches(&r, "int4 blocks");
    assert_eq!(r["ort_fused"]["MatMulNBits"], 6, "{}", r["ort_fused"]);

    let a16 = dir.path().join("a16.onnx");
    let config = fixture("configs/lowbit.yaml");
    quantize_ok(
        &fixture(model),
        &fixture(calib),
        &a16,
        &["--config", &s(&config)],
    );
    let sim = simulate(&fixture(model), &a16, &fixture(eval), dir.path());
    let (m, x) = (s(&fixture(model)), s(&fixture(eval)));
    let r = check(
        &a16,
        &["--ref", &m, "--x", &x, "--ort", "--openvino", "--sim", &sim],
    );
    assert_checker(&r);
    assert_runs_close(&r, "ort", 20.0);
    assert_runs_close(&r, "openvino", 20.0);
    assert_simulation_matches(&r, "int16 activations");
    let o = run([
        "check".into(),
        s(&a16),
        "--target".into(),
        "tensorrt".into(),
    ]);
    assert_ne!(code(&o), 0);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("int16 quantization: TensorRT supports"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// The vision transformer of fixtures/vit (95.8 % top-1 on the held-out digits): int8 from every
/// preset keeps top-1 within one point in the runtimes it is made for (tensorrt: ONNX Runtime,
/// OpenVINO and a TensorRT-RTX build; openvino: OpenVINO and ONNX Runtime; ort: ONNX Runtime,
/// with `check --target openvino` warning of the OpenVINO defect its token-mean ReduceMean
/// meets at batch > 1, which the evaluation batch of 360 shows); int4 weights in blocks of 16,
/// weight-only, within two points (the bound docs/benchmarks.md states) in ONNX Runtime and
/// OpenVINO, and TensorRT-RTX builds them.
#[test]
fn vision_transformer_keeps_its_accuracy_in_int8_and_int4() {
    const VIT: &str = "vit/vit.onnx";
    let f = |p: &str| fixture(p).to_string_lossy().into_owned();
    let (model, x, y) = (f(VIT), f("digits/eval_x.npy"), f("digits/eval_y.npy"));
    let labelled = ["--ref", &model, "--x", &x, "--y", &y];
    for target in ["tensorrt", "openvino"] {
        let (_d, q) = quantized(VIT, DIGITS_CALIB, &["--target", target]);
        check_labelled(&q, VIT, target == "tensorrt");
    }
    let (_d, q) = quantized(VIT, DIGITS_CALIB, &["--target", "ort"]);
    let r = check(&q, &[&labelled[..], &["--ort"]].concat());
    assert_checker(&r);
    assert_top1_within_one_point(&r, "ort");
    let o = run([
        "check".as_ref(),
        q.as_os_str(),
        "--target".as_ref(),
        "openvino".as_ref(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("reduce_mean_batch: `pooled`"), "{text}");

    // weight-only: int4 in blocks of 16 (the stated bound), int4 per channel, int8
    let dir = scratch();
    for mode in [
        &["--weight-type", "int4", "--block-size", "16"][..],
        &["--weight-type", "int4"][..],
        &[][..],
    ] {
        let q = dir.path().join("w.onnx");
        let mut args = vec![
            f(VIT),
            q.to_string_lossy().into_owned(),
            "--weight-only".into(),
        ];
        args.extend(mode.iter().map(|m| m.to_string()));
        let o = run(&args);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let r = check(
            &q,
            &[&labelled[..], &["--ort", "--openvino", "--trt"]].concat(),
        );
        assert_checker(&r);
        assert_trt_accepts(&r);
        for runtime in ["ort", "openvino"] {
            let m = measured(&r, runtime);
            let drop = m["ref_top1"].as_f64().unwrap() - m["top1"].as_f64().unwrap();
            assert!(drop <= 0.02, "{runtime} {mode:?}: drops {drop:.4}: {m}");
        }
    }
    // uint4 (TensorRT takes signed int4 only): ONNX Runtime, fused into MatMulNBits, and OpenVINO
    let q = dir.path().join("u4.onnx");
    let o = run([
        &f(VIT),
        &*q.to_string_lossy(),
        "--weight-only",
        "--weight-type",
        "uint4",
        "--block-size",
        "16",
        "--target",
        "ort",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = check(
        &q,
        &[&labelled[..], &["--ort", "--openvino", "--ort-fused"]].concat(),
    );
    assert_checker(&r);
    let weights = nodes(&load_model(&q), "DequantizeLinear").len();
    assert_eq!(r["ort_fused"]["MatMulNBits"], weights, "{}", r["ort_fused"]);
    for runtime in ["ort", "openvino"] {
        let m = measured(&r, runtime);
        let drop = m["ref_top1"].as_f64().unwrap() - m["top1"].as_f64().unwrap();
        assert!(drop <= 0.02, "{runtime} uint4: drops {drop:.4}: {m}");
    }
}

/// The attention-mask model from every preset runs in ONNX Runtime and OpenVINO close to fp32
/// (its mask stays float), and the tensorrt output builds in TensorRT-RTX.
#[test]
fn masked_attention_runs_everywhere() {
    let (model, calib, eval) = (
        "models/mask_attention.onnx",
        "models/mask_attention_calib.npz",
        "models/mask_attention_eval.npz",
    );
    for target in ["tensorrt", "ort", "openvino"] {
        let (_d, q) = quantized(model, calib, &["--target", target]);
        let trt: &[&str] = if target == "tensorrt" {
            &["--trt"]
        } else {
            &[]
        };
        let (m, x) = (
            fixture(model).to_string_lossy().into_owned(),
            fixture(eval).to_string_lossy().into_owned(),
        );
        let r = check(
            &q,
            &[&["--ref", &m, "--x", &x, "--ort", "--openvino"][..], trt].concat(),
        );
        assert_checker(&r);
        assert_runs_close(&r, "ort", 30.0);
        assert_runs_close(&r, "openvino", 30.0);
        if target == "tensorrt" {
            assert_trt_accepts(&r);
        }
    }
}

/// A SmoothQuant output (`fixtures/models/outlier_block.onnx`) runs in ONNX Runtime and
/// OpenVINO close to fp32 and builds in TensorRT-RTX.
#[test]
fn smoothquant_output_runs_everywhere() {
    let (model, calib, eval) = (
        "models/outlier_block.onnx",
        "models/outlier_block_calib.npy",
        "models/outlier_block_eval.npy",
    );
    let (_d, q) = quantized(model, calib, &["--smoothquant", "0.5"]);
    let r = check_everywhere(&q, model, eval, &[]);
    assert_runs_close(&r, "ort", 30.0);
    assert_runs_close(&r, "openvino", 30.0);
    assert_trt_accepts(&r);
}

/// float8 e4m3 activations and weights on the vision transformer: ONNX Runtime and OpenVINO run
/// it within two points of fp32 top-1, TensorRT-RTX parses and builds it, and onnx-quant's
/// simulation of it agrees with ONNX Runtime.
#[test]
fn fp8_vision_transformer_runs_everywhere() {
    let vit = "vit/vit.onnx";
    let (d, q) = quantized(
        vit,
        DIGITS_CALIB,
        &["--activation-type", "fp8", "--weight-type", "fp8"],
    );
    let f = |p: &str| fixture(p).to_string_lossy().into_owned();
    let (model, x, y) = (f(vit), f("digits/eval_x.npy"), f("digits/eval_y.npy"));
    let sim = simulate(&fixture(vit), &q, &fixture("digits/eval_x.npy"), d.path());
    let r = check(
        &q,
        &[
            "--ref",
            &model,
            "--x",
            &x,
            "--y",
            &y,
            "--ort",
            "--openvino",
            "--trt",
            "--sim",
            &sim,
        ],
    );
    assert_checker(&r);
    assert_trt_accepts(&r);
    assert_simulation_matches(&r, "fp8 vit");
    for runtime in ["ort", "openvino"] {
        let m = measured(&r, runtime);
        let drop = m["ref_top1"].as_f64().unwrap() - m["top1"].as_f64().unwrap();
        assert!(drop <= 0.02, "{runtime}: fp8 drops {drop:.4}: {m}");
    }
}

/// An int8 embedding table (DequantizeLinear per row → Gather) runs in ONNX Runtime and
/// OpenVINO close to fp32, and TensorRT-RTX builds the tensorrt output.
#[test]
fn int8_embeddings_run_everywhere() {
    let (model, calib) = ("models/embedding.onnx", "models/embedding_calib.npy");
    let (_d, q) = quantized(model, calib, &[]);
    let r = check_everywhere(&q, model, calib, &[]);
    assert_runs_close(&r, "ort", 30.0);
    assert_runs_close(&r, "openvino", 30.0);
    assert_trt_accepts(&r);
}

/// The fixtures of real-model failure classes (stale value_info over two image sizes, nested
/// If with Constant-node weights, a Loop, an LSTM), quantized for every target: full checker,
/// ONNX Runtime (optimized and exact) and OpenVINO within reach of fp32, Q/DQ inside the
/// subgraphs where there are some; TensorRT-RTX builds the two its parser takes in fp32 too
/// (it rejects this Loop's condition pass-through, and builds dynamic inputs at size 1). Weight
/// pairs that x86 kernels without VNNI saturate are found inside subgraphs as well: by the
/// emulation and by `check --target ort`, the same layers; the CPU targets leave none.
#[test]
fn real_model_classes_run_everywhere_with_every_target() {
    // (fixture, data, Q nodes inside subgraphs at least, TensorRT, least SQNR of the first
    // output: the loop chains four random-weight layers)
    let cases = [
        ("symbolic_dims", "symbolic_dims_calib", 0, true, 30.0),
        ("nested_if", "nested_if_16k.npz", 3, false, 30.0),
        ("loop_matmul", "loop_matmul_calib.npy", 1, false, 18.0),
        ("lstm", "lstm_calib.npy", 0, true, 30.0),
    ];
    for (name, calib, inner_q, trt, min_db) in cases {
        for target in ["tensorrt", "ort", "openvino"] {
            let model = format!("models/real/{name}.onnx");
            let data = format!("models/real/{calib}");
            let (d, out) = quantized(&model, &data, &["--target", target]);
            let mut extra = vec!["--ort-exact"];
            if trt && target == "tensorrt" {
                extra.push("--trt");
            }
            let r = check_everywhere_but_trt(&out, &model, &data, &extra);
            let what = format!("{name} ({target})");
            for runtime in ["ort", "ort_exact", "openvino"] {
                let m = measured(&r, runtime);
                assert!(m.get("error").is_none(), "{what}: {runtime} failed: {m}");
                assert!(
                    m["sqnr_db"].as_f64().unwrap() >= min_db,
                    "{what}: {runtime}: {m}"
                );
            }
            // the int8 kernels compute the Q/DQ nodes where no pair can saturate
            if !is_risky(&r) {
                let (opt, exact) = (
                    r["ort"]["sqnr_db"].as_f64().unwrap(),
                    r["ort_exact"]["sqnr_db"].as_f64().unwrap(),
                );
                assert!(
                    (opt - exact).abs() <= 0.5,
                    "{what}: ORT {opt} vs exact {exact}"
                );
            }
            assert!(
                r["qdq"]["subgraph_q"].as_u64().unwrap() >= inner_q,
                "{what}: {}",
                r["qdq"]
            );
            if extra.contains(&"--trt") {
                assert_trt_accepts(&r);
            }
            // pairs the x86 kernels without VNNI saturate, subgraphs included: none in the CPU
            // targets' outputs, and `check --target ort` names the layers the emulation finds
            let risky = r["pairs"]["risky"].as_array().expect("pair emulation");
            if target != "tensorrt" {
                assert!(risky.is_empty(), "{what}: {}", r["pairs"]);
            }
            let flagged = check_json(&out, "ort", d.path())["cpu_pairs"].clone();
            let flagged = flagged.as_array().cloned().unwrap_or_default();
            assert_eq!(
                flagged.len(),
                risky.len(),
                "{what}: {flagged:?} vs {risky:?}"
            );
            for node in risky {
                let node = node.as_str().unwrap();
                assert!(
                    flagged.iter().any(|p| {
                        let p = p["node"].as_str().unwrap();
                        p == node || p.starts_with(&format!("{node} "))
                    }),
                    "{what}: {node} not flagged: {flagged:?}"
                );
            }
        }
    }
}

/// [`check_everywhere`] with the TensorRT build only when `extra` asks for it.
fn check_everywhere_but_trt(quant: &Path, model: &str, x: &str, extra: &[&str]) -> Value {
    let (model, x) = (
        fixture(model).to_string_lossy().into_owned(),
        fixture(x).to_string_lossy().into_owned(),
    );
    let mut args = vec!["--ref", &model, "--x", &x, "--ort", "--openvino"];
    args.extend_from_slice(extra);
    let r = check(quant, &args);
    assert_checker(&r);
    r
}

/// The CNN fixtures (and two transformers, for MatMul), as (model, calibration, evaluation):
/// the last three have no evaluation set of their own (a handful of outputs, where a single
/// rounding flip moves the SQNR by a decibel), so only their pairs are compared.
const CPU_FIXTURES: [(&str, &str, &str); 9] = [
    (DIGITS, DIGITS_CALIB, "digits/eval_x.npy"),
    (
        "outlier/digits_outlier.onnx",
        "outlier/calib.npy",
        "digits/eval_x.npy",
    ),
    (
        "models/blocks.onnx",
        "models/blocks_calib.npy",
        "models/blocks_eval.npy",
    ),
    (MBNET, "mbnet/calib.npy", "mbnet/eval_x.npy"),
    (
        "models/transformer.onnx",
        "models/transformer_calib.npy",
        "models/transformer_eval.npy",
    ),
    ("vit/vit.onnx", DIGITS_CALIB, "digits/eval_x.npy"),
    ("models/head.onnx", "models/head_calib.npy", ""),
    ("models/opset11.onnx", "models/opset11_calib.npy", ""),
    (
        "models/real/symbolic_dims.onnx",
        "models/real/symbolic_dims_calib",
        "",
    ),
];

const MBNET: &str = "mbnet/mbnet.onnx";

/// The runtimes compute what the Q/DQ nodes say with their int8 kernels: ONNX Runtime's
/// within 0.5 dB of it with graph optimizations off (`ort` and `openvino` outputs); OpenVINO's
/// (`openvino` outputs; they requantize in their own way, sometimes better than the float
/// Q/DQ chain) at most 1 dB under its float FakeQuantize arithmetic. An `ort` output is not
/// held to OpenVINO's kernels: OpenVINO 2026.4 returns zeros for every batch item after the
/// first from a dequantized rank-3 ReduceMean over axis 1 (docs/presets.md), which the `ort`
/// placement (Add outputs quantized) meets on the transformer.
fn assert_kernels_compute_the_qdq(r: &Value, target: &str, what: &str) {
    let db = |k: &str| {
        let m = &r[k];
        assert!(m.get("error").is_none(), "{what}: {k}: {m}");
        m["sqnr_db"].as_f64().unwrap()
    };
    let (ort, ort_exact) = (db("ort"), db("ort_exact"));
    assert!(
        (ort - ort_exact).abs() <= 0.5,
        "{what}: ORT {ort:.2} dB vs exact {ort_exact:.2} dB"
    );
    if target == "openvino" {
        let (ov, ov_exact) = (db("openvino"), db("openvino_exact"));
        assert!(
            ov >= ov_exact - 1.0,
            "{what}: OpenVINO {ov:.2} dB vs exact {ov_exact:.2} dB"
        );
    }
}

/// `onnx-quant check --target TARGET --json` of `q`.
fn check_json(q: &Path, target: &str, dir: &Path) -> Value {
    let json = dir.join("check.json");
    let o = run([
        "check".as_ref(),
        q.as_os_str(),
        "--target".as_ref(),
        target.as_ref(),
        "--json".as_ref(),
        json.as_os_str(),
    ]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stdout));
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}

/// On x86 CPUs without VNNI, ONNX Runtime and OpenVINO add int8 weight pairs into a saturating
/// int16. check.py's emulation of those kernels (its own packing, in numpy) finds no pair of an
/// `ort` or `openvino` output that can saturate for any uint8 input, on every CNN fixture and
/// two transformers, and the runtimes' int8 kernels compute what the Q/DQ nodes say (within
/// 0.5 dB of the runtimes with them off) on the machine the tests run on. The `tensorrt`
/// outputs (pairs as rounded) do have such pairs: `check --target ort` names the same layers
/// as the emulation, with the same worst pair, and `check --target tensorrt` says the rule does
/// not apply there.
#[test]
fn cpu_targets_leave_no_weight_pair_that_saturates_without_vnni() {
    let mut risky_tensorrt = 0;
    for (model, calib, eval) in CPU_FIXTURES {
        for target in ["tensorrt", "ort", "openvino"] {
            let (d, q) = quantized(model, calib, &["--target", target]);
            let what = format!("{model} ({target})");
            let (m, x) = (
                fixture(model).to_string_lossy().into_owned(),
                fixture(if eval.is_empty() { calib } else { eval })
                    .to_string_lossy()
                    .into_owned(),
            );
            let r = check(
                &q,
                &[
                    "--ref",
                    &m,
                    "--x",
                    &x,
                    "--ort",
                    "--openvino",
                    "--ort-exact",
                    "--openvino-exact",
                ],
            );
            assert_checker(&r);
            let emulated = &r["pairs"];
            assert!(emulated.get("error").is_none(), "{what}: {emulated}");
            let layers = emulated["layers"].as_array().unwrap();
            let rust = check_json(&q, "ort", d.path());
            let flagged: Vec<&str> = rust["cpu_pairs"]
                .as_array()
                .map(|a| a.iter().map(|p| p["node"].as_str().unwrap()).collect())
                .unwrap_or_default();
            if target == "tensorrt" {
                // the same layers, the same worst pair as the emulation
                let risky: Vec<&Value> = layers.iter().filter(|l| l["overflowing"] != 0).collect();
                assert_eq!(flagged.len(), risky.len(), "{what}: {rust} vs {emulated}");
                for l in risky {
                    let p = rust["cpu_pairs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|p| {
                            p["node"]
                                .as_str()
                                .unwrap()
                                .starts_with(&format!("{} ", l["node"].as_str().unwrap()))
                                || p["node"] == l["node"]
                        })
                        .unwrap_or_else(|| panic!("{what}: {l} not flagged: {rust}"));
                    assert_eq!(p["worst"], l["worst"], "{what}: {p} vs {l}");
                }
                risky_tensorrt += flagged.len();
                let trt = check_json(&q, "tensorrt", d.path());
                assert!(
                    trt["notes"].to_string().contains("do not apply"),
                    "{what}: {trt}"
                );
                continue;
            }
            assert!(
                layers.iter().all(|l| l["overflowing"] == 0),
                "{what}: pairs that can saturate: {emulated}"
            );
            assert!(flagged.is_empty(), "{what}: {rust}");
            if !eval.is_empty() {
                assert_kernels_compute_the_qdq(&r, target, &what);
            }
        }
    }
    assert!(risky_tensorrt > 0, "no tensorrt output has a risky pair");
}

/// The MobileNet/EfficientNet-Lite-style fixture (depthwise separable blocks, ReLU6 as Clip,
/// TensorFlow-style Pad before strided convs, residual Adds, trained here): every preset keeps
/// top-1 within a point of fp32 with the exact Q/DQ arithmetic in ONNX Runtime and OpenVINO;
/// `--target ort` is within 1 dB of `--target tensorrt` there (its Clips fold into the Conv
/// units instead of quantizing each conv output twice), and the ort and openvino outputs run
/// as fast int8 kernels within 0.5 dB of that, in OpenVINO also with its kernels capped at
/// AVX2 (those of x86 CPUs without VNNI), where the tensorrt output's pairs saturate.
#[test]
fn mobilenet_style_fixture_keeps_its_accuracy_with_every_preset() {
    let f = |p: &str| fixture(p).to_string_lossy().into_owned();
    let (model, x, y) = (f(MBNET), f("mbnet/eval_x.npy"), f("mbnet/eval_y.npy"));
    let mut exact = std::collections::BTreeMap::new();
    for target in ["tensorrt", "ort", "openvino"] {
        let (d, q) = quantized(MBNET, "mbnet/calib.npy", &["--target", target]);
        let r = check(
            &q,
            &[
                "--ref",
                &model,
                "--x",
                &x,
                "--y",
                &y,
                "--ort",
                "--openvino",
                "--ort-exact",
                "--openvino-exact",
            ],
        );
        assert_checker(&r);
        for runtime in ["ort_exact", "openvino_exact"] {
            let m = &r[runtime];
            let drop = m["ref_top1"].as_f64().unwrap() - m["top1"].as_f64().unwrap();
            assert!(drop <= 0.01, "{target} {runtime}: drops {drop:.4}: {m}");
        }
        exact.insert(target, r["ort_exact"]["sqnr_db"].as_f64().unwrap());
        if target == "ort" {
            let m = load_model(&q);
            assert!(
                nodes(&m, "Clip").len() <= 1,
                "Clips left: {}",
                nodes(&m, "Clip").len()
            );
            let rust = check_json(&q, "ort", d.path());
            assert!(rust["warnings"].as_array().unwrap().len() <= 1, "{rust}");
        }
        if target != "tensorrt" {
            assert_kernels_compute_the_qdq(&r, target, target);
        }
        // OpenVINO's kernels of x86 CPUs without VNNI, whatever this CPU has: the ort and
        // openvino outputs keep their exact figure; the tensorrt output's pairs saturate there
        // (docs/presets.md), which is what the two CPU presets avoid.
        let capped = check(
            &q,
            &[
                "--ref",
                &model,
                "--x",
                &x,
                "--openvino",
                "--openvino-isa",
                "AVX2",
            ],
        );
        let avx2 = capped["openvino"]["sqnr_db"]
            .as_f64()
            .unwrap_or_else(|| panic!("{target}: {capped}"));
        let ov_exact = r["openvino_exact"]["sqnr_db"].as_f64().unwrap();
        if target == "tensorrt" {
            assert!(
                avx2 < ov_exact - 6.0,
                "tensorrt: OpenVINO's AVX2 kernels {avx2:.2} dB vs exact {ov_exact:.2} dB: no saturation?"
            );
        } else {
            assert!(
                avx2 >= ov_exact - 1.0,
                "{target}: OpenVINO's AVX2 kernels {avx2:.2} dB vs exact {ov_exact:.2} dB"
            );
        }
    }
    assert!(
        exact["ort"] >= exact["tensorrt"] - 1.0,
        "ort {:.2} dB vs tensorrt {:.2} dB (exact ONNX Runtime)",
        exact["ort"],
        exact["tensorrt"]
    );
}
