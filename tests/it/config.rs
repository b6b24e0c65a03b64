//! Settings files: overrides that do what they say, every mistake caught with its place, the
//! resolved plan (golden), precedence, templates.

use std::path::Path;

use onnx_quant::proto::ModelProto;

use crate::support::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn digits_with(config: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let (m, c) = (fixture(DIGITS), fixture(DIGITS_CALIB));
    let mut args = vec![s(&m), s(out), "--calib", s(&c), "--config", s(config), "-q"];
    args.extend_from_slice(extra);
    run(&args)
}

fn producer_op<'a>(m: &'a ModelProto, tensor: &str) -> Option<&'a str> {
    m.graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .find(|n| n.output.iter().any(|o| o == tensor))
        .map(|n| n.op_type())
}

fn node<'a>(m: &'a ModelProto, name: &str) -> &'a onnx_quant::proto::NodeProto {
    m.graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .find(|n| n.name() == name)
        .unwrap()
}

#[test]
fn overrides_do_exactly_what_they_say() {
    let dir = scratch();
    let out = dir.path().join("q.onnx");
    let o = digits_with(&fixture("configs/digits.yaml"), &out, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let m = load_model(&out);
    // skipped: conv1 reads the float input and its float weight
    let conv1 = node(&m, "/conv1/Conv");
    assert_eq!(
        conv1.input[..2],
        ["input".to_string(), "conv1.weight".to_string()]
    );
    // the other convs and the MatMul are quantized
    for name in ["/conv2/Conv", "/conv3/Conv", "/fc1/MatMul"] {
        let n = node(&m, name);
        assert_eq!(
            producer_op(&m, &n.input[0]),
            Some("DequantizeLinear"),
            "{name}"
        );
        assert_eq!(
            producer_op(&m, &n.input[1]),
            Some("DequantizeLinear"),
            "{name}"
        );
    }
    // a fixed range is written exactly: [0, 8] symmetric int8 -> scale 8 / 127
    let scale = onnx_quant::onnx::tensor::f32_data(init(&m, "pool_out_scale")).unwrap()[0];
    assert_eq!(scale, (8.0f64 / 127.0) as f32);
    // per_channel: false for the MatMul weight
    assert!(init(&m, "fc1.weight_scale").dims.is_empty());
    assert_eq!(init(&m, "conv2.weight_scale").dims, vec![32]);
}

#[test]
fn resolved_plan_is_golden() {
    let o = run([
        "explain",
        s(&fixture(DIGITS)),
        "--config",
        s(&fixture("configs/digits.yaml")),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = String::from_utf8(o.stdout)
        .unwrap()
        .replace(s(&fixture("configs/digits.yaml")), "digits.yaml");
    crate::quantize::golden("explain_digits_config.txt", &text);
}

#[test]
fn every_mistake_is_reported_at_once() {
    let dir = scratch();
    let out = dir.path().join("q.onnx");
    let o = digits_with(&fixture("configs/mistakes.yaml"), &out, &[]);
    assert_eq!(code(&o), 2);
    let err = stderr(&o).replace(s(&fixture("configs/mistakes.yaml")), "mistakes.yaml");
    let want = "error: config `mistakes.yaml` has 5 problem(s):
  mistakes.yaml:4:3: `activations.methd`: unknown key `methd`, did you mean `method`?
  mistakes.yaml:5:14: `activations.symmetric`: expected true or false, got the string `maybe`
  mistakes.yaml:7:3: `weights.per_chanel`: unknown key `per_chanel`, did you mean `per_channel`?
  mistakes.yaml:12:18: `overrides[1].activations`: zero-point 3 contradicts `symmetric: true` (which means 0)
  mistakes.yaml:14:14: `overrides[2].weights`: `block_size` needs `dtype: int4` or `uint4` (blocks are for 4-bit weights)
";
    assert_eq!(err, want);
    assert!(!out.exists());
}

#[test]
fn syntax_errors_and_unreadable_files() {
    let dir = scratch();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "activations:\n  method: [mse\n").unwrap();
    let o = digits_with(&bad, &dir.path().join("q.onnx"), &[]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("bad.yaml:") && stderr(&o).contains("has 1 problem"),
        "{}",
        stderr(&o)
    );
    let o = digits_with(
        &dir.path().join("none.yaml"),
        &dir.path().join("q.onnx"),
        &[],
    );
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("cannot read config") && stderr(&o).contains("none.yaml"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn overrides_matching_nothing_are_errors_unless_allowed() {
    let dir = scratch();
    let cfg = dir.path().join("um.yaml");
    std::fs::write(&cfg, "overrides:\n  - match: {name: /conv9/Conv}\n    skip: true\n  - match: {op_type: Comv}\n    skip: true\n  - match: {tensor: relu_1_out}\n    skip: true\n").unwrap();
    let out = dir.path().join("q.onnx");
    let o = digits_with(&cfg, &out, &[]);
    assert_eq!(code(&o), 2);
    let err = stderr(&o);
    for want in [
        "3 override(s) of",
        "um.yaml:2: override #1 selects nothing: no node named /conv9/Conv (closest: `/conv1/Conv`, `/conv2/Conv`, `/conv3/Conv`)",
        "um.yaml:4: override #2 selects nothing: no Comv node (closest: `Conv`)",
        "um.yaml:6: override #3 selects nothing: no tensor named relu_1_out (closest: `relu1_out`",
    ] {
        assert!(err.contains(want), "`{want}` missing: {err}");
    }
    assert!(!out.exists());
    let o = digits_with(&cfg, &out, &["--allow-unmatched"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stderr(&o).matches("warning: ").count(), 3, "{}", stderr(&o));
}

#[test]
fn globs_select_every_match_and_the_first_override_wins() {
    let dir = scratch();
    let cfg = dir.path().join("g.yaml");
    std::fs::write(
        &cfg,
        "overrides:\n  - match: {name: \"/conv[12]/*\"}\n    skip: true\n  - match: {name: \"/conv*/Conv\"}\n    skip: false\n    activations: {method: minmax}\n",
    )
    .unwrap();
    let out = dir.path().join("q.onnx");
    let report = dir.path().join("r.json");
    let o = digits_with(&cfg, &out, &["--report", s(&report)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let quantized = |name: &str| {
        r["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap()["quantized"]
            .as_bool()
            .unwrap()
    };
    assert!(
        !quantized("/conv1/Conv") && !quantized("/conv2/Conv"),
        "the first match skips them"
    );
    assert!(
        quantized("/conv3/Conv"),
        "`skip: false` of the second entry leaves conv3 quantized"
    );
    let pool = r["activations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["tensor"] == "pool_out")
        .unwrap();
    assert_eq!(
        pool["decided_by"][0],
        format!("method: override #2 ({}:4)", cfg.display())
    );
}

#[test]
fn flags_beat_the_file_which_beats_the_preset() {
    let cfg = fixture("configs/digits.yaml");
    let o = run([
        "show-config",
        "--config",
        s(&cfg),
        "--activation-type",
        "uint8",
    ]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains(&format!("  method: minmax  # {}", cfg.display())),
        "{text}"
    );
    assert!(text.contains("  dtype: uint8  # command line"), "{text}");
    assert!(
        text.contains("  symmetric: true  # preset tensorrt"),
        "{text}"
    );
    let o = run([
        "show-config",
        "--config",
        s(&cfg),
        "--method",
        "entropy",
        "--target",
        "ort",
    ]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("  method: entropy  # command line")
            && text.starts_with("target: ort  # command line"),
        "{text}"
    );
}

#[test]
fn init_config_lists_every_quantized_node_and_loads_back() {
    let dir = scratch();
    let o = run([
        "init-config",
        s(&fixture("models/blocks.onnx")),
        "--target",
        "ort",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("target: ort\n") && text.contains("#  - match: {name: conv1}"),
        "{text}"
    );
    let cfg = dir.path().join("t.yaml");
    std::fs::write(&cfg, &text).unwrap();
    // the template as written changes nothing
    let plain = run([
        "explain",
        s(&fixture("models/blocks.onnx")),
        "--target",
        "ort",
    ]);
    let with = run([
        "explain",
        s(&fixture("models/blocks.onnx")),
        "--config",
        s(&cfg),
    ]);
    assert_eq!(code(&with), 0, "{}", stderr(&with));
    let strip = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stdout)
            .replace("(command line)", "(x)")
            .replace(&format!("({})", cfg.display()), "(x)")
    };
    assert_eq!(strip(&plain), strip(&with));
    // uncommenting one entry skips exactly that node
    let edited = text
        .replacen("#  - match: {name: conv1}", "  - match: {name: conv1}", 1)
        .replacen("#    skip: true", "    skip: true", 1);
    std::fs::write(&cfg, edited).unwrap();
    let o = run([
        "explain",
        s(&fixture("models/blocks.onnx")),
        "--config",
        s(&cfg),
    ]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("node `conv1` (Conv): float: skipped by override #1"),
        "{text}"
    );
    assert_eq!(text.matches("skipped by").count(), 1);
}
