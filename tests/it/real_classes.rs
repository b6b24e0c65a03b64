//! What real exported models showed, as regression tests on the fixtures that reproduce each
//! class (`fixtures/models/make_real_classes.py`): stale value_info beside symbolic dims,
//! inputs of several shapes, nested `If` chosen by an input and by shapes, a `Loop`, an LSTM
//! (state, determinism), ConstantOfShape without value, already quantized models, and what
//! tract cannot type.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::*;

fn real(name: &str) -> PathBuf {
    fixture(&format!("models/real/{name}"))
}

/// Quantizes with `args` (the report written next to the output) and returns the report.
fn quantize_report(model: &Path, out: &Path, args: &[&str]) -> Value {
    let report = out.with_extension("json");
    let mut all: Vec<std::ffi::OsString> = vec![
        model.into(),
        out.into(),
        "-q".into(),
        "--report".into(),
        report.clone().into(),
    ];
    all.extend(args.iter().map(Into::into));
    let o = run(&all);
    assert_eq!(code(&o), 0, "onnx-quant failed: {}", stderr(&o));
    serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap()
}

fn subgraph<'a>(report: &'a Value, scope: &str) -> &'a Value {
    report["subgraphs"]
        .as_array()
        .expect("subgraphs reported")
        .iter()
        .find(|s| s["scope"] == scope)
        .unwrap_or_else(|| panic!("no subgraph `{scope}` in {}", report["subgraphs"]))
}

/// Every node of the model's subgraphs (any depth).
fn subgraph_nodes(g: &onnx_quant::proto::GraphProto) -> Vec<onnx_quant::proto::NodeProto> {
    let mut out = Vec::new();
    for n in &g.node {
        for a in &n.attribute {
            for sub in a.g.iter().chain(&a.graphs) {
                out.extend(sub.node.iter().cloned());
                out.extend(subgraph_nodes(sub));
            }
        }
    }
    out
}

#[test]
fn stale_value_info_is_ignored_and_two_image_sizes_calibrate_together() {
    let dir = scratch();
    let out = dir.path().join("q.onnx");
    let r = quantize_report(
        &real("symbolic_dims.onnx"),
        &out,
        &["--calib", real("symbolic_dims_calib").to_str().unwrap()],
    );
    assert_eq!(r["calibration"]["samples"], 16);
    let notes = r["notes"].to_string();
    assert!(notes.contains("value_info"), "{notes}");
    let quantized: Vec<&str> = r["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["quantized"] == true)
        .map(|n| n["op_type"].as_str().unwrap())
        .collect();
    assert_eq!(quantized, ["Conv", "Conv", "Gemm"], "{}", r["nodes"]);
    // the value_info of the written model stays as the file had it
    assert_eq!(
        load_model(&out).graph.unwrap().value_info.len(),
        load_model(&real("symbolic_dims.onnx"))
            .graph
            .unwrap()
            .value_info
            .len()
    );
}

#[test]
fn statistics_of_each_input_shape_merge_into_those_of_all_samples() {
    let dir = scratch();
    let (small, large) = (dir.path().join("16"), dir.path().join("24"));
    std::fs::create_dir_all(&small).unwrap();
    std::fs::create_dir_all(&large).unwrap();
    for e in std::fs::read_dir(real("symbolic_dims_calib")).unwrap() {
        let p = e.unwrap().path();
        let k: usize = p.file_stem().unwrap().to_str().unwrap()[7..]
            .parse()
            .unwrap();
        let to = if k < 8 { &small } else { &large };
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
    let model = real("symbolic_dims.onnx");
    let mut stats = Vec::new();
    for (name, d) in [("s16.json", &small), ("s24.json", &large)] {
        let s = dir.path().join(name);
        let o = run([
            "calibrate".as_ref(),
            model.as_os_str(),
            "--calib".as_ref(),
            d.as_os_str(),
            "--stats".as_ref(),
            s.as_os_str(),
            "-q".as_ref(),
        ]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        stats.push(s);
    }
    let merged = dir.path().join("merged.json");
    let o = run([
        "merge-stats".as_ref(),
        stats[0].as_os_str(),
        stats[1].as_os_str(),
        "-o".as_ref(),
        merged.as_os_str(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let (a, b) = (dir.path().join("a.onnx"), dir.path().join("b.onnx"));
    quantize_report(
        &model,
        &a,
        &["--calib", real("symbolic_dims_calib").to_str().unwrap()],
    );
    quantize_report(&model, &b, &["--stats", merged.to_str().unwrap()]);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn a_recurrent_model_gives_the_same_bytes_whatever_the_thread_count() {
    // tract keeps an LSTM's state from one run to the next: with a state reused per thread,
    // each sample's statistics depended on the samples its thread had run before
    let dir = scratch();
    let calib = real("lstm_calib.npy");
    let mut outs = Vec::new();
    for (k, threads) in ["1", "2", "2", "3", "2", "8"].iter().enumerate() {
        let out = dir.path().join(format!("q{k}.onnx"));
        quantize_ok(
            &real("lstm.onnx"),
            &calib,
            &out,
            &["--threads", threads, "--method", "minmax"],
        );
        outs.push(std::fs::read(&out).unwrap());
    }
    assert!(
        outs.iter().all(|o| *o == outs[0]),
        "outputs differ between runs"
    );
    // the LSTM output is calibrated: its reader, the head MatMul, is quantized
    let m = load_model(&dir.path().join("q0.onnx"));
    assert!(!nodes(&m, "QuantizeLinear").is_empty());
}

#[test]
fn the_branch_the_data_takes_is_quantized_inside_and_the_other_stays_float() {
    let dir = scratch();
    let out = dir.path().join("q.onnx");
    let r = quantize_report(
        &real("nested_if.onnx"),
        &out,
        &["--calib", real("nested_if_16k.npz").to_str().unwrap()],
    );
    let taken = subgraph(&r, "If_rate/then_branch");
    assert!(taken["reason"].is_null(), "{taken}");
    assert_eq!(taken["activations"], 3, "{taken}");
    assert_eq!(taken["weights"], 3, "{taken}");
    let other = subgraph(&r, "If_rate/else_branch");
    assert!(
        other["reason"]
            .as_str()
            .unwrap()
            .contains("no calibration sample takes"),
        "{other}"
    );
    // the untaken branch's nodes are reported float with that reason
    let else_conv = r["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "If_rate/else_branch//rate8k/conv1/Conv")
        .expect("reported");
    assert_eq!(else_conv["quantized"], false);
    // Q/DQ pairs inside the taken branch, none in the other; the main graph keeps its If
    let m = load_model(&out);
    let g = m.graph.as_ref().unwrap();
    assert_eq!(nodes(&m, "If").len(), 1);
    let if_node = nodes(&m, "If")[0];
    let branch = |name: &str| {
        if_node
            .attribute
            .iter()
            .find(|a| a.name() == name)
            .and_then(|a| a.g.clone())
            .unwrap()
    };
    let count = |g: &onnx_quant::proto::GraphProto, op: &str| {
        g.node.iter().filter(|n| n.op_type() == op).count()
    };
    assert_eq!(count(&branch("then_branch"), "QuantizeLinear"), 3);
    assert_eq!(count(&branch("else_branch"), "QuantizeLinear"), 0);
    // weights that were Constant nodes are int8 initializers of the branch now
    let then = branch("then_branch");
    assert!(
        then.initializer
            .iter()
            .any(|t| t.name() == "/rate16k/conv1.w_quantized")
    );
    assert!(
        !then
            .node
            .iter()
            .any(|n| n.output.iter().any(|o| o == "/rate16k/conv1.w"))
    );
    assert!(subgraph_nodes(g).len() > g.node.len());
    // the simulated model agrees with the data it was calibrated on
    let o = run([
        "eval".as_ref(),
        real("nested_if.onnx").as_os_str(),
        out.as_os_str(),
        "--data".as_ref(),
        real("nested_if_16k.npz").as_os_str(),
        "--min-sqnr".as_ref(),
        "30".as_ref(),
    ]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn shards_taking_each_branch_merge_into_the_model_of_all_samples() {
    let dir = scratch();
    let model = real("nested_if.onnx");
    let mut stats = Vec::new();
    for (name, data) in [
        ("16k.json", "nested_if_16k.npz"),
        ("8k.json", "nested_if_8k.npz"),
    ] {
        let s = dir.path().join(name);
        let o = run([
            "calibrate".as_ref(),
            model.as_os_str(),
            "--calib".as_ref(),
            real(data).as_os_str(),
            "--stats".as_ref(),
            s.as_os_str(),
            "-q".as_ref(),
        ]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        stats.push(s);
    }
    let merged = dir.path().join("merged.json");
    let o = run([
        "merge-stats".as_ref(),
        stats[0].as_os_str(),
        stats[1].as_os_str(),
        "-o".as_ref(),
        merged.as_os_str(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let (all, from_shards) = (dir.path().join("all.onnx"), dir.path().join("shards.onnx"));
    let r = quantize_report(
        &model,
        &all,
        &["--calib", real("nested_if_both").to_str().unwrap()],
    );
    for scope in ["If_rate/then_branch", "If_rate/else_branch"] {
        assert_eq!(subgraph(&r, scope)["activations"], 3, "{scope}");
    }
    // without data the input's symbolic length cannot be reshaped: its shape is given
    quantize_report(
        &model,
        &from_shards,
        &[
            "--stats",
            merged.to_str().unwrap(),
            "--input-shape",
            "x:1,256",
        ],
    );
    assert_eq!(
        std::fs::read(&all).unwrap(),
        std::fs::read(&from_shards).unwrap()
    );
}

#[test]
fn a_loop_is_unrolled_for_calibration_and_quantized_inside_its_body() {
    let dir = scratch();
    let out = dir.path().join("q.onnx");
    let r = quantize_report(
        &real("loop_matmul.onnx"),
        &out,
        &["--calib", real("loop_matmul_calib.npy").to_str().unwrap()],
    );
    let body = subgraph(&r, "Loop_0/body");
    assert_eq!(body["activations"], 1, "{body}");
    assert_eq!(body["weights"], 1, "{body}");
    // the body's weight, read from the main graph, is stored quantized in the body; the main
    // graph no longer holds it float
    let m = load_model(&out);
    let g = m.graph.as_ref().unwrap();
    assert!(!g.initializer.iter().any(|t| t.name() == "W"));
    let body = nodes(&m, "Loop")[0].attribute[0].g.clone().unwrap();
    assert!(body.initializer.iter().any(|t| t.name() == "W_quantized"));
    let o = run([
        "eval".as_ref(),
        real("loop_matmul.onnx").as_os_str(),
        out.as_os_str(),
        "--data".as_ref(),
        real("loop_matmul_calib.npy").as_os_str(),
        "--min-sqnr".as_ref(),
        "20".as_ref(),
    ]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn already_quantized_models_are_refused_saying_so() {
    let dir = scratch();
    let out = dir.path().join("q.onnx");
    let o = run([
        real("already_quantized.onnx").as_os_str(),
        out.as_os_str(),
        "--weight-only".as_ref(),
    ]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("is already quantized (it holds ConvInteger 1, DynamicQuantizeLinear 1)"),
        "{e}"
    );
    assert!(!out.exists());
}

#[test]
fn a_node_tract_cannot_type_is_named_with_what_tract_knew_of_its_inputs() {
    // without data the symbolic length of `x` cannot be reshaped to [1, 4, -1]
    let dir = scratch();
    let out = dir.path().join("q.onnx");
    let o = run([
        real("nested_if.onnx").as_os_str(),
        out.as_os_str(),
        "--weight-only".as_ref(),
    ]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let e = stderr(&o);
    for part in [
        "tract cannot type node `/rate16k/Reshape` (Reshape)",
        "with inputs `x` 1,samples,F32",
        "--input-shape NAME:D0,D1,...",
    ] {
        assert!(e.contains(part), "`{part}` missing from: {e}");
    }
    assert!(!out.exists());
    // given the shape, the same run works, both branches weight-quantized
    let r = quantize_report(
        &real("nested_if.onnx"),
        &out,
        &["--weight-only", "--input-shape", "x:1,256"],
    );
    for scope in ["If_rate/then_branch", "If_rate/else_branch"] {
        assert_eq!(
            subgraph(&r, scope)["weights"],
            3,
            "{scope}: {}",
            r["subgraphs"]
        );
    }
}

#[test]
fn input_shape_mistakes_are_usage_errors_naming_the_input() {
    let dir = scratch();
    let out = dir.path().join("q.onnx");
    let model = real("nested_if.onnx");
    for (shape, message) in [
        ("y:1,256", "`y`, which is not an input of"),
        ("x:2,256", "contradicts the shape"),
        ("x:1,256,1", "contradicts the shape"),
        ("x1,256", "expected NAME:D0,D1,..."),
        ("x:1,0", "every dim must be a positive integer"),
    ] {
        let o = run([
            model.as_os_str(),
            out.as_os_str(),
            "--weight-only".as_ref(),
            "--input-shape".as_ref(),
            shape.as_ref(),
        ]);
        assert_eq!(code(&o), 2, "{shape}: {}", stderr(&o));
        assert!(stderr(&o).contains(message), "{shape}: {}", stderr(&o));
        assert!(!out.exists());
    }
}

#[test]
fn explain_plans_every_branch_and_overrides_reach_inside_them() {
    let model = real("nested_if.onnx");
    let o = run([
        "explain".as_ref(),
        model.as_os_str(),
        "--input-shape".as_ref(),
        "x:1,256".as_ref(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    for part in [
        "subgraph `If_rate/then_branch`: planned as a graph of its own",
        "subgraph `If_rate/else_branch`: planned as a graph of its own",
        "  node `/rate16k/conv1/Conv` (Conv): quantized",
        "    weight `/rate16k/conv1.w`: int8 [-127, 127], per channel on axis 0",
        "subgraph `If_rate/then_branch//rate16k/If_check/then_branch`: float: in `If_rate/then_branch//rate16k/If_check/then_branch`, which the inputs' declared shapes never take",
    ] {
        assert!(text.contains(part), "`{part}` missing from:\n{text}");
    }
    // the same as JSON: every node with its graph, one entry per subgraph
    let dir = scratch();
    let json_path = dir.path().join("explain.json");
    let o = run([
        "explain".as_ref(),
        model.as_os_str(),
        "--input-shape".as_ref(),
        "x:1,256".as_ref(),
        "--json".as_ref(),
        json_path.as_os_str(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), text);
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let conv = j["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "/rate16k/conv1/Conv" && n["graph"] == "If_rate/then_branch")
        .expect("the branch's conv");
    assert_eq!(conv["quantized"], true);
    assert!(
        conv["details"][1]
            .as_str()
            .unwrap()
            .starts_with("weight `/rate16k/conv1.w`: int8"),
        "{conv}"
    );
    let subs = j["subgraphs"].as_array().unwrap();
    assert!(
        subs.iter()
            .any(|s| s["planned"] == false && s["reason"].as_str().unwrap().contains("never take")),
        "{subs:?}"
    );
    let o = run([
        "init-config".as_ref(),
        model.as_os_str(),
        "--input-shape".as_ref(),
        "x:1,256".as_ref(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(
            "#  - match: {name: /rate16k/conv2/Conv}   # Conv; reads `/rate16k/checked`; weight `/rate16k/conv2.w` int8 per channel on axis 0 (in subgraph `If_rate/then_branch`)"
        ),
        "{text}"
    );
    // an override naming a node inside a branch matches it
    let dir = scratch();
    let config = dir.path().join("q.yaml");
    std::fs::write(
        &config,
        "overrides:\n  - match: {name: /rate16k/conv2/Conv}\n    skip: true\n",
    )
    .unwrap();
    let out = dir.path().join("q.onnx");
    let r = quantize_report(
        &model,
        &out,
        &[
            "--calib",
            real("nested_if_16k.npz").to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let conv = r["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "If_rate/then_branch//rate16k/conv2/Conv")
        .unwrap();
    assert_eq!(conv["quantized"], false);
    assert!(
        conv["reason"]
            .as_str()
            .unwrap()
            .starts_with("skipped by override #1")
    );
    assert_eq!(subgraph(&r, "If_rate/then_branch")["activations"], 2);
}

/// An in-graph log-mel front end (STFT convs, power, mel filterbank MatMul, Log): what int8
/// would erase before the Log stays float, found from the statistics, the conv after it is
/// quantized; forcing the front end into int8 (`skip: false`) shows what that saves.
#[test]
fn a_log_mel_front_end_stays_float_and_what_follows_the_log_is_quantized() {
    let dir = scratch();
    let (model, calib) = (real("log_frontend.onnx"), real("log_frontend_calib.npy"));
    let out = dir.path().join("q.onnx");
    let r = quantize_report(&model, &out, &["--calib", calib.to_str().unwrap()]);
    let node = |name: &str| -> Value {
        r["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("no node {name}"))
            .clone()
    };
    let mel = node("/mel/MatMul");
    assert_eq!(mel["quantized"], false);
    assert!(
        mel["reason"]
            .as_str()
            .unwrap()
            .contains("reaches `/mel/Log`, a logarithm"),
        "{mel}"
    );
    for stft in ["/stft/real/Conv", "/stft/imag/Conv"] {
        assert_eq!(node(stft)["quantized"], false, "{}", node(stft));
    }
    assert_eq!(node("/enc/Conv")["quantized"], true);
    let sqnr = |q: &Path| -> f64 {
        let json = dir.path().join("e.json");
        let o = run([
            "eval".as_ref(),
            model.as_os_str(),
            q.as_os_str(),
            "--data".as_ref(),
            calib.as_os_str(),
            "--json".as_ref(),
            json.as_os_str(),
        ]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        v["outputs"][0]["sqnr_db"].as_f64().unwrap()
    };
    let guarded = sqnr(&out);
    assert!(guarded > 40.0, "guarded front end: {guarded} dB");
    let config = dir.path().join("force.yaml");
    std::fs::write(
        &config,
        "overrides:\n  - match: {name_regex: \"^/(stft|mel)/\"}\n    skip: false\n",
    )
    .unwrap();
    let forced = dir.path().join("forced.onnx");
    quantize_report(
        &model,
        &forced,
        &[
            "--calib",
            calib.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let int8 = sqnr(&forced);
    assert!(
        int8 < guarded - 20.0,
        "forced int8 {int8} dB vs {guarded} dB"
    );
}
