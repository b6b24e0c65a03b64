//! `eval`, `sensitivity` and automatic mixed precision, through the binary: figures that could
//! be wrong, gates that must fail, and a written settings file that reproduces its model.

use std::path::Path;

use serde_json::Value;

use crate::support::*;

const OUTLIER: &str = "outlier/digits_outlier.onnx";
const OUTLIER_CALIB: &str = "outlier/calib.npy";
const OUTLIER_LABELS: &str = "outlier/calib_y.npy";
/// Settings without the convolution guard: plain int8 on the outlier fixture loses points.
const NO_GUARD: &str = "configs/no_conv_guard.yaml";

fn eval_json(reference: &Path, quant: &Path, extra: &[&str]) -> Value {
    let dir = scratch();
    let out = dir.path().join("eval.json");
    let mut args: Vec<std::ffi::OsString> = vec![
        "eval".into(),
        reference.into(),
        quant.into(),
        "--data".into(),
        fixture("digits/eval_x.npy").into(),
        "--labels".into(),
        fixture("digits/eval_y.npy").into(),
        "--json".into(),
        out.as_os_str().into(),
        "-q".into(),
    ];
    args.extend(extra.iter().map(Into::into));
    let o = run(&args);
    assert_eq!(code(&o), 0, "eval failed: {}", stderr(&o));
    json(&out)
}

fn drop_points(v: &Value) -> f64 {
    v["labels"]["top1_drop"].as_f64().expect("labelled")
}

#[test]
fn eval_measures_digits_and_every_quantized_tensor() {
    let dir = scratch();
    let q = dir.path().join("q.onnx");
    quantize_ok(&fixture(DIGITS), &fixture(DIGITS_CALIB), &q, &[]);
    let plot = dir.path().join("layers.svg");
    let v = eval_json(
        &fixture(DIGITS),
        &q,
        &["--per-layer", "--plot", plot.to_str().unwrap()],
    );
    assert_eq!(v["samples"], 360);
    let out = &v["outputs"][0];
    assert_eq!(out["name"], "logits");
    let sqnr = out["sqnr_db"].as_f64().unwrap();
    assert!(sqnr > 25.0 && sqnr < 80.0, "{sqnr}");
    assert!(out["cosine"].as_f64().unwrap() > 0.99);
    assert!(drop_points(&v).abs() <= 1.0, "{v}");
    assert_eq!(v["labels"]["rows"], 360);
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(
        layers.len(),
        v["simulated_activations"].as_u64().unwrap() as usize
    );
    // worst first, and each tensor's error includes its own rounding: never better than it
    let s: Vec<f64> = layers
        .iter()
        .map(|l| l["sqnr_db"].as_f64().unwrap())
        .collect();
    assert!(s.windows(2).all(|w| w[0] <= w[1]), "{s:?}");
    for l in layers {
        let (acc, own) = (
            l["sqnr_db"].as_f64().unwrap(),
            l["local_sqnr_db"].as_f64().unwrap(),
        );
        assert!(acc <= own + 0.5, "{l}");
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("relu1_out"));
    assert_eq!(svg.matches("<rect x=").count(), layers.len());
}

#[test]
fn eval_gates_fail_with_exit_code_7() {
    let dir = scratch();
    let q = dir.path().join("q.onnx");
    quantize_ok(&fixture(DIGITS), &fixture(DIGITS_CALIB), &q, &[]);
    let base = |extra: &[&str]| {
        let mut a: Vec<String> = vec![
            "eval".into(),
            fixture(DIGITS).display().to_string(),
            q.display().to_string(),
            "--data".into(),
            fixture("digits/eval_x.npy").display().to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        run(&a)
    };
    let o = base(&["--min-sqnr", "200"]);
    assert_eq!(code(&o), 7, "{}", stderr(&o));
    assert!(stderr(&o).contains("output SQNR"), "{}", stderr(&o));
    let ok = base(&["--min-sqnr", "10"]);
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
    let labels = fixture("digits/eval_y.npy").display().to_string();
    let o = base(&["--labels", &labels, "--max-top1-drop=-5"]);
    assert_eq!(code(&o), 7);
    assert!(stderr(&o).contains("top-1 drop"));
    // a drop limit means nothing without labels
    let o = base(&["--max-top1-drop", "1"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

#[test]
fn eval_refuses_wrong_labels_and_unrelated_models() {
    let dir = scratch();
    let q = dir.path().join("q.onnx");
    quantize_ok(&fixture(DIGITS), &fixture(DIGITS_CALIB), &q, &[]);
    let short = dir.path().join("y.npy");
    write_npy_i64(&short, &[3], &[1, 2, 3]);
    let o = run([
        "eval".as_ref(),
        fixture(DIGITS).as_os_str(),
        q.as_os_str(),
        "--data".as_ref(),
        fixture("digits/eval_x.npy").as_os_str(),
        "--labels".as_ref(),
        short.as_os_str(),
    ]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("y.npy") && stderr(&o).contains("holds 3 labels"));
    let other = fixture("models/transformer.onnx");
    let o = run([
        "eval".as_ref(),
        other.as_os_str(),
        q.as_os_str(),
        "--data".as_ref(),
        fixture("digits/eval_x.npy").as_os_str(),
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("not a quantization of that model"));
}

#[test]
fn plain_int8_loses_points_on_the_outlier_fixture_and_sensitivity_names_the_culprits() {
    let dir = scratch();
    let q = dir.path().join("q.onnx");
    let no_guard = fixture(NO_GUARD);
    quantize_ok(
        &fixture(OUTLIER),
        &fixture(OUTLIER_CALIB),
        &q,
        &["--config", no_guard.to_str().unwrap()],
    );
    let v = eval_json(&fixture(OUTLIER), &q, &[]);
    assert!(drop_points(&v) > 2.0, "plain int8 drop {}", drop_points(&v));

    let out = dir.path().join("s.json");
    let o = run([
        "sensitivity".as_ref(),
        fixture(OUTLIER).as_os_str(),
        "--calib".as_ref(),
        fixture(OUTLIER_CALIB).as_os_str(),
        "--labels".as_ref(),
        fixture(OUTLIER_LABELS).as_os_str(),
        "--json".as_ref(),
        out.as_os_str(),
        "--config".as_ref(),
        no_guard.as_os_str(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let s = json(&out);
    assert_eq!(s["samples"], 128);
    assert_eq!(s["calibration_samples"], 384);
    let layers = s["layers"].as_array().unwrap();
    // the layers reading the outlier channel hurt most; the first conv alone is harmless
    let top: Vec<&str> = layers[..2]
        .iter()
        .map(|l| l["layer"].as_str().unwrap())
        .collect();
    assert!(
        top.contains(&"/conv3/Conv") && top.contains(&"/fc1/MatMul"),
        "{top:?}"
    );
    let conv1 = layers.iter().find(|l| l["layer"] == "/conv1/Conv").unwrap();
    assert!(
        conv1["alone"]["sqnr_db"].as_f64().unwrap() > 30.0,
        "{conv1}"
    );
    assert!(s["baseline"]["top1_drop"].as_f64().unwrap() > 2.0, "{s}");
}

#[test]
fn mixed_precision_meets_its_budget_and_its_config_reproduces_the_model() {
    let dir = scratch();
    let q = dir.path().join("q.onnx");
    let cfg = dir.path().join("keep.yaml");
    let report = dir.path().join("r.json");
    let labels = fixture(OUTLIER_LABELS).display().to_string();
    let no_guard = fixture(NO_GUARD).display().to_string();
    quantize_ok(
        &fixture(OUTLIER),
        &fixture(OUTLIER_CALIB),
        &q,
        &[
            "--config",
            &no_guard,
            "--labels",
            &labels,
            "--max-top1-drop",
            "0.5",
            "--write-config",
            cfg.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
    );
    let r = json(&report);
    let m = &r["mixed_precision"];
    let chosen = &m["outcomes"][m["chosen"].as_u64().unwrap() as usize];
    assert_eq!(chosen["met"], true, "{m}");
    let float = chosen["float"].as_array().unwrap();
    assert!(!float.is_empty() && float.len() < 5, "{m}");
    // no strategy found fewer
    for o in m["outcomes"].as_array().unwrap() {
        assert!(o["float"].as_array().unwrap().len() >= float.len(), "{m}");
    }
    assert!(m["baseline"]["top1_drop"].as_f64().unwrap() > 2.0, "{m}");
    // on the separate evaluation set too
    let v = eval_json(&fixture(OUTLIER), &q, &[]);
    assert!(drop_points(&v) <= 0.5, "mixed drop {}", drop_points(&v));

    // the written file, on the 384 calibration samples, gives the same bytes
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert_eq!(text.matches("skip: true").count(), float.len(), "{text}");
    assert!(text.contains("on 128 held-out sample(s)"), "{text}");
    assert_config_reproduces(&q, &cfg);
}

/// Quantizing the outlier fixture with the settings file `cfg` (on the 384 calibrating samples,
/// no search) gives the bytes of `q`.
fn assert_config_reproduces(q: &Path, cfg: &Path) {
    let dir = scratch();
    let again = dir.path().join("again.onnx");
    quantize_ok(
        &fixture(OUTLIER),
        &fixture(OUTLIER_CALIB),
        &again,
        &["--config", cfg.to_str().unwrap(), "--max-samples", "384"],
    );
    assert_eq!(std::fs::read(q).unwrap(), std::fs::read(&again).unwrap());
}

/// The 16-bit fallback: the layers the budget needs read their activations in int16 instead of
/// staying float, and the written settings file says so and reproduces the model.
#[test]
fn mixed_precision_can_fall_back_to_int16_activations() {
    let dir = scratch();
    let (q, cfg, report) = (
        dir.path().join("q.onnx"),
        dir.path().join("keep.yaml"),
        dir.path().join("r.json"),
    );
    let labels = fixture(OUTLIER_LABELS).display().to_string();
    let o = quantize_ok(
        &fixture(OUTLIER),
        &fixture(OUTLIER_CALIB),
        &q,
        &[
            "--target",
            "ort",
            "--labels",
            &labels,
            "--target-sqnr",
            "13",
            "--mixed-fallback",
            "int16",
            "--write-config",
            cfg.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
    );
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    let r = json(&report);
    let m = &r["mixed_precision"];
    assert_eq!(m["fallback"], "int16", "{m}");
    let chosen = &m["outcomes"][m["chosen"].as_u64().unwrap() as usize];
    assert_eq!(chosen["met"], true, "{m}");
    assert!(m["baseline"]["sqnr_db"].as_f64().unwrap() < 13.0, "{m}");
    let layers: Vec<&str> = chosen["float"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(!layers.is_empty(), "{m}");
    // every chosen layer reads int16, and nothing stayed float for it
    let model = load_model(&q);
    let graph = model.graph.as_ref().unwrap();
    for l in &layers {
        let node = graph.node.iter().find(|n| n.name() == *l).unwrap();
        let (p, _) = graph
            .node
            .iter()
            .zip(0..)
            .find(|(n, _)| n.output.first() == node.input.first())
            .unwrap_or_else(|| panic!("`{l}` reads a graph input"));
        assert_eq!(p.op_type(), "DequantizeLinear", "`{l}` reads float");
        let zp = init(&model, &p.input[2]);
        assert_eq!(
            zp.data_type(),
            onnx_quant::proto::tensor_proto::DataType::Int16 as i32,
            "{l}"
        );
    }
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert_eq!(text.matches("dtype: int16").count(), layers.len(), "{text}");
    assert!(!text.contains("skip: true"), "{text}");
    assert_config_reproduces(&q, &cfg);
}

#[test]
fn accuracy_flags_need_data_and_a_target() {
    let dir = scratch();
    let out = dir.path().join("q.onnx");
    let o = run([
        fixture(DIGITS).as_os_str(),
        out.as_os_str(),
        "--calib".as_ref(),
        fixture(DIGITS_CALIB).as_os_str(),
        "--write-config".as_ref(),
        dir.path().join("c.yaml").as_os_str(),
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(!out.exists());
    let o = run([
        fixture(DIGITS).as_os_str(),
        out.as_os_str(),
        "--calib".as_ref(),
        fixture(DIGITS_CALIB).as_os_str(),
        "--max-top1-drop".as_ref(),
        "1".as_ref(),
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("--labels"), "{}", stderr(&o));
}

#[test]
fn quantize_reports_the_error_of_every_layer() {
    let dir = scratch();
    let q = dir.path().join("q.onnx");
    let report = dir.path().join("r.json");
    let plot = dir.path().join("p.svg");
    quantize_ok(
        &fixture(DIGITS),
        &fixture(DIGITS_CALIB),
        &q,
        &[
            "--plot",
            plot.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
    );
    let r = json(&report);
    let a = &r["accuracy"];
    assert_eq!(a["samples"], 128);
    assert_eq!(
        a["layers"].as_array().unwrap().len(),
        r["activations"].as_array().unwrap().len()
    );
    assert!(a["outputs"][0]["sqnr_db"].as_f64().unwrap() > 25.0);
    assert!(std::fs::read_to_string(&plot).unwrap().contains("<svg"));
}

/// The convolution guard (`placement.min_conv_sqnr`) finds, from the calibration statistics,
/// the conv whose quiet channels one int8 scale leaves in noise (the one reading the outlier
/// channel) and keeps it float: most of plain int8's loss is gone without any search.
#[test]
fn the_convolution_guard_keeps_the_conv_reading_an_outlier_channel_float() {
    let dir = scratch();
    let q = dir.path().join("q.onnx");
    let report = dir.path().join("r.json");
    quantize_ok(
        &fixture(OUTLIER),
        &fixture(OUTLIER_CALIB),
        &q,
        &["--report", report.to_str().unwrap()],
    );
    let r = json(&report);
    let conv3 = r["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "/conv3/Conv")
        .unwrap();
    assert_eq!(conv3["quantized"], false, "{conv3}");
    let why = conv3["reason"].as_str().unwrap();
    assert!(
        why.contains("one int8 scale for `pool_out` leaves its output at")
            && why.contains("placement.min_conv_sqnr"),
        "{why}"
    );
    // the other convs stay int8
    let conv1 = r["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "/conv1/Conv")
        .unwrap();
    assert_eq!(conv1["quantized"], true);
    let v = eval_json(&fixture(OUTLIER), &q, &[]);
    assert!(
        drop_points(&v) < 1.0,
        "guarded int8 drop {}",
        drop_points(&v)
    );
}

/// The figures `eval` and `sensitivity` report do not depend on how many threads ran the
/// samples (sums are exact, so their order does not matter): the same JSON, timings aside,
/// with 1, 2 and 3 threads.
#[test]
fn reported_figures_do_not_depend_on_the_thread_count() {
    let dir = scratch();
    let q = dir.path().join("q.onnx");
    quantize_ok(&fixture(OUTLIER), &fixture(OUTLIER_CALIB), &q, &[]);
    let without_time = |mut v: Value| {
        let m = v.as_object_mut().expect("an object");
        m.remove("seconds");
        m.remove("timings_ms");
        v
    };
    let mut evals = Vec::new();
    let mut ranks = Vec::new();
    for threads in ["1", "2", "3"] {
        let v = eval_json(&fixture(DIGITS), &q, &["--per-layer", "--threads", threads]);
        evals.push(without_time(v));
        let out = dir.path().join(format!("sensitivity{threads}.json"));
        let o = run([
            "sensitivity".as_ref(),
            fixture(OUTLIER).as_os_str(),
            "--calib".as_ref(),
            fixture(OUTLIER_CALIB).as_os_str(),
            "--threads".as_ref(),
            threads.as_ref(),
            "--json".as_ref(),
            out.as_os_str(),
        ]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        ranks.push(without_time(json(&out)));
    }
    assert!(
        evals[0]["layers"].as_array().is_some_and(|l| !l.is_empty()),
        "{}",
        evals[0]
    );
    assert_eq!(evals[0], evals[1]);
    assert_eq!(evals[0], evals[2]);
    assert_eq!(ranks[0], ranks[1]);
    assert_eq!(ranks[0], ranks[2]);
}
