//! The quantize job on the committed fixtures: structure of the output, every calibration
//! layout, determinism, modes, opset handling, the report.

use onnx_quant::proto::{ModelProto, tensor_proto::DataType};
use prost::Message;

use crate::support::*;

/// Masks float scalars (`= 1.2345e-2`) so golden dumps compare structure, not the last bits of
/// calibrated ranges (those are checked against ONNX Runtime by the interop tests).
fn masked_dump(m: &ModelProto) -> String {
    onnx_quant::ir::dump(m)
        .lines()
        .map(
            |l| match (l.starts_with("init "), l.contains("float32[] = ")) {
                (true, true) => format!("{}= <f32>", &l[..l.find("= ").unwrap()]),
                _ => l.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Compares `actual` with `tests/golden/NAME`; `ONNXQ_BLESS=1` rewrites the file instead.
pub fn golden(name: &str, actual: &str) {
    let path = root().join("tests/golden").join(name);
    if std::env::var_os("ONNXQ_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "{} differs (re-bless with ONNXQ_BLESS=1 after review):\n{}",
        path.display(),
        diff(&expected, actual)
    );
}

fn diff(a: &str, b: &str) -> String {
    let (al, bl): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out = String::new();
    for i in 0..al.len().max(bl.len()) {
        let (x, y) = (
            al.get(i).copied().unwrap_or(""),
            bl.get(i).copied().unwrap_or(""),
        );
        if x != y {
            out += &format!("line {}:\n- {x}\n+ {y}\n", i + 1);
        }
    }
    out
}

#[test]
fn digits_default_is_int8_zero_point_qdq_on_weighted_inputs() {
    let dir = scratch();
    let out = dir.path().join("q.onnx");
    let before = std::fs::read(fixture(DIGITS)).unwrap();
    quantize_ok(&fixture(DIGITS), &fixture(DIGITS_CALIB), &out, &[]);
    assert_eq!(
        std::fs::read(fixture(DIGITS)).unwrap(),
        before,
        "input modified"
    );
    let m = load_model(&out);
    assert!(onnx_quant::ir::verify(&m).is_empty());
    let dq = nodes(&m, "DequantizeLinear");
    let q = nodes(&m, "QuantizeLinear");
    // conv inputs, the MaxPool input (int8 pooling next to a quantized conv), the MatMul input;
    // the last Gemm (N = 10) stays float under the preset's min_matmul_dim of 16
    assert_eq!(
        (q.len(), dq.len()),
        (5, 9),
        "5 activation pairs + 4 weights"
    );
    for n in q.iter().chain(&dq) {
        let zp = init(&m, &n.input[2]);
        assert_eq!(zp.data_type(), DataType::Int8 as i32, "{}", n.name());
        assert!(
            zp.raw_data.as_ref().unwrap().iter().all(|&b| b == 0),
            "non-zero zero-point in {}",
            n.name()
        );
    }
    let producers: std::collections::HashMap<&str, &str> = m
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n.op_type())))
        .collect();
    let gemm = nodes(&m, "Gemm")[0];
    assert_eq!(
        producers.get(gemm.input[0].as_str()),
        Some(&"Relu"),
        "small Gemm stays float"
    );
    let pool = nodes(&m, "MaxPool")[0];
    assert_eq!(
        producers.get(pool.input[0].as_str()),
        Some(&"DequantizeLinear")
    );
    for op in ["Conv", "MatMul"] {
        for n in nodes(&m, op) {
            assert_eq!(
                producers.get(n.input[0].as_str()),
                Some(&"DequantizeLinear"),
                "{}",
                n.name()
            );
            assert_eq!(
                producers.get(n.input[1].as_str()),
                Some(&"DequantizeLinear"),
                "{}",
                n.name()
            );
        }
    }
    // no Q/DQ on weighted-op outputs, biases stay float
    for op in ["Conv", "Gemm"] {
        for n in nodes(&m, op) {
            assert!(
                !q.iter().any(|qn| qn.input[0] == n.output[0]),
                "{} output quantized",
                n.name()
            );
            assert_eq!(init(&m, &n.input[2]).data_type(), DataType::Float as i32);
        }
    }
    assert!(
        std::fs::metadata(&out).unwrap().len() * 3 < before.len() as u64,
        "weights should shrink the file about 4x"
    );
    golden("digits_default.txt", &masked_dump(&m));
}

#[test]
fn every_calibration_layout_gives_the_same_model() {
    let dir = scratch();
    let model = fixture("models/two_inputs.onnx");
    let mut outputs = Vec::new();
    for (i, layout) in ["calib.npz", "calib_z.npz", "named", "per_sample"]
        .iter()
        .enumerate()
    {
        let out = dir.path().join(format!("q{i}.onnx"));
        quantize_ok(
            &model,
            &fixture("models/two_inputs").join(layout),
            &out,
            &[],
        );
        outputs.push((layout, std::fs::read(&out).unwrap()));
    }
    for (layout, bytes) in &outputs[1..] {
        assert!(bytes == &outputs[0].1, "{layout} differs from calib.npz");
    }
    // ONNX test_data_set_0..2 hold the first three samples
    let a = dir.path().join("pb.onnx");
    let b = dir.path().join("npz3.onnx");
    quantize_ok(&model, &fixture("models/two_inputs/test_data"), &a, &[]);
    quantize_ok(
        &model,
        &fixture("models/two_inputs/calib.npz"),
        &b,
        &["--max-samples", "3"],
    );
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
}

#[test]
fn single_input_layouts_give_the_same_model() {
    let dir = scratch();
    let (_, data) = digits_calib();
    let n = 16;
    let stacked = dir.path().join("stacked.npy");
    write_npy_f32(&stacked, &[n, 1, 8, 8], &data[..n * 64]);
    let per_feed = dir.path().join("per_feed.npy"); // one more axis than the input
    write_npy_f32(&per_feed, &[n, 1, 1, 8, 8], &data[..n * 64]);
    let npy_dir = dir.path().join("npy_dir");
    let pb_dir = dir.path().join("pb_dir");
    std::fs::create_dir_all(&npy_dir).unwrap();
    std::fs::create_dir_all(&pb_dir).unwrap();
    for k in 0..n {
        let sample = &data[k * 64..(k + 1) * 64];
        // alternate files with and without the batch axis
        let shape: &[usize] = if k % 2 == 0 {
            &[1, 1, 8, 8]
        } else {
            &[1, 8, 8]
        };
        write_npy_f32(&npy_dir.join(format!("s{k}.npy")), shape, sample);
        let t = onnx_quant::onnx::tensor::f32_tensor("whatever", &[1, 1, 8, 8], sample);
        std::fs::write(pb_dir.join(format!("s{k}.pb")), t.encode_to_vec()).unwrap();
    }
    let mut outs = Vec::new();
    for calib in [&stacked, &per_feed, &npy_dir, &pb_dir] {
        let out = dir.path().join(format!(
            "{}.onnx",
            calib.file_stem().unwrap().to_string_lossy()
        ));
        quantize_ok(&fixture(DIGITS), calib, &out, &[]);
        outs.push(std::fs::read(out).unwrap());
    }
    assert!(outs.iter().all(|o| o == &outs[0]), "layouts disagree");
    let whole = dir.path().join("whole.onnx");
    quantize_ok(
        &fixture(DIGITS),
        &fixture(DIGITS_CALIB),
        &whole,
        &["--max-samples", "16"],
    );
    assert_eq!(std::fs::read(whole).unwrap(), outs[0]);
}

#[test]
fn output_is_deterministic_whatever_the_thread_count() {
    let dir = scratch();
    let runs: Vec<Vec<u8>> = [("1", "a"), ("2", "b"), ("2", "c"), ("3", "d")]
        .iter()
        .map(|(threads, name)| {
            let out = dir.path().join(format!("{name}.onnx"));
            quantize_ok(
                &fixture(DIGITS),
                &fixture(DIGITS_CALIB),
                &out,
                &["--threads", threads],
            );
            std::fs::read(out).unwrap()
        })
        .collect();
    assert!(runs.iter().all(|r| r == &runs[0]));
}

#[test]
fn quantizing_a_quantized_model_changes_nothing() {
    let dir = scratch();
    let once = dir.path().join("once.onnx");
    let twice = dir.path().join("twice.onnx");
    quantize_ok(&fixture(DIGITS), &fixture(DIGITS_CALIB), &once, &[]);
    let report = dir.path().join("r.json");
    quantize_ok(
        &once,
        &fixture(DIGITS_CALIB),
        &twice,
        &["--report", report.to_str().unwrap()],
    );
    assert_eq!(
        std::fs::read(&once).unwrap(),
        std::fs::read(&twice).unwrap()
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    let conv = r["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "/conv1/Conv")
        .unwrap();
    assert_eq!(conv["quantized"], false);
    assert!(
        conv["reason"]
            .as_str()
            .unwrap()
            .contains("already quantized")
    );
}

#[test]
fn per_tensor_and_asymmetric_uint8_modes() {
    let dir = scratch();
    let out = dir.path().join("q.onnx");
    quantize_ok(
        &fixture(DIGITS),
        &fixture(DIGITS_CALIB),
        &out,
        &["--per-tensor", "--asymmetric", "--activation-type", "uint8"],
    );
    let m = load_model(&out);
    for n in nodes(&m, "DequantizeLinear") {
        assert!(
            init(&m, &n.input[1]).dims.is_empty(),
            "per-tensor scale expected on {}",
            n.name()
        );
        assert!(!n.attribute.iter().any(|a| a.name() == "axis"));
    }
    let zps: Vec<&onnx_quant::proto::TensorProto> = nodes(&m, "QuantizeLinear")
        .iter()
        .map(|n| init(&m, &n.input[2]))
        .collect();
    assert!(zps.iter().all(|z| z.data_type() == DataType::Uint8 as i32));
    // the network input is centred: its asymmetric zero-point is not 0
    assert!(zps.iter().any(|z| z.raw_data.as_ref().unwrap()[0] != 0));
}

#[test]
fn old_opset_is_raised_for_per_channel_weights() {
    let dir = scratch();
    let out = dir.path().join("q.onnx");
    quantize_ok(
        &fixture("models/opset11.onnx"),
        &fixture("models/opset11_calib.npy"),
        &out,
        &[],
    );
    let m = load_model(&out);
    assert_eq!(m.opset_import[0].version(), 13);
    assert!(m.ir_version() >= 7);
    for op in ["Squeeze", "Unsqueeze"] {
        let n = nodes(&m, op)[0];
        assert_eq!(n.input.len(), 2, "{op} axes became an input");
        assert!(n.attribute.is_empty());
    }
    assert!(
        nodes(&m, "DequantizeLinear")
            .iter()
            .any(|n| n.attribute.iter().any(|a| a.name() == "axis"))
    );

    let out = dir.path().join("s.onnx");
    let report = dir.path().join("r.json");
    quantize_ok(
        &fixture("models/opset11_softmax1.onnx"),
        &fixture("models/opset11_calib.npy"),
        &out,
        &["--report", report.to_str().unwrap()],
    );
    // Softmax-11 over axis 1 normalises over the flattened trailing axes: it becomes the exact
    // Flatten -> Softmax(-1) -> Reshape, and the weights are per channel
    let m = load_model(&out);
    assert_eq!(m.opset_import[0].version(), 13);
    let soft = nodes(&m, "Softmax");
    assert_eq!(soft.len(), 1);
    assert!(
        soft[0]
            .attribute
            .iter()
            .any(|a| a.name() == "axis" && a.i() == -1)
    );
    assert_eq!(nodes(&m, "Flatten").len(), 1);
    assert!(
        nodes(&m, "DequantizeLinear")
            .iter()
            .any(|n| n.attribute.iter().any(|a| a.name() == "axis"))
    );
    let r = std::fs::read_to_string(report).unwrap();
    assert!(!r.contains("weights are per-tensor"), "{r}");
}

#[test]
fn report_explains_every_node() {
    let dir = scratch();
    let out = dir.path().join("q.onnx");
    let report = dir.path().join("r.json");
    let o = run([
        fixture(DIGITS).to_str().unwrap(),
        out.to_str().unwrap(),
        "--calib",
        fixture(DIGITS_CALIB).to_str().unwrap(),
        "--max-samples",
        "10",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let summary = stderr(&o);
    for want in [
        "quantized 5 of 14 nodes",
        "MaxPool 1",
        "kept float: `/fc2/Gemm` (Gemm): K = 64, N = 10: below min_matmul_dim 16",
        "Conv 3",
        "over 10 samples",
        "weights: 4 int8 (4 per-channel",
        "size:",
        "time: load",
    ] {
        assert!(summary.contains(want), "`{want}` missing from:\n{summary}");
    }
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    assert_eq!(r["calibration"]["samples"], 10);
    let nodes = r["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 14);
    assert!(
        nodes
            .iter()
            .all(|n| n["quantized"] == true || n["reason"].as_str().is_some_and(|s| !s.is_empty()))
    );
    let acts = r["activations"].as_array().unwrap();
    assert_eq!(acts.len(), 5);
    for a in acts {
        let f = |v: &serde_json::Value| v.as_f64().unwrap();
        let (min, max, scale) = (f(&a["min"]), f(&a["max"]), f(&a["scale"]));
        let (lo, hi) = (f(&a["range"][0]), f(&a["range"][1]));
        // the chosen range lies inside the observed one, and the scale covers it
        assert!(min <= lo && lo <= hi && hi <= max, "{a}");
        assert!(
            (scale - lo.abs().max(hi.abs()) / 127.0).abs() <= scale * 1e-6,
            "{a}"
        );
    }
    assert!(r["output"]["bytes"].as_u64().unwrap() < r["input"]["bytes"].as_u64().unwrap());
}

#[test]
fn external_data_model_is_written_with_external_data() {
    let dir = scratch();
    let out = dir.path().join("q.onnx");
    quantize_ok(
        &fixture("models/external/model.onnx"),
        &fixture(DIGITS_CALIB),
        &out,
        &[],
    );
    assert!(dir.path().join("q.onnx.data").exists());
    let reloaded = onnx_quant::onnx::load(&out).unwrap();
    let inline = dir.path().join("inline.onnx");
    quantize_ok(&fixture(DIGITS), &fixture(DIGITS_CALIB), &inline, &[]);
    let inline = onnx_quant::onnx::load(&inline).unwrap();
    assert_eq!(
        reloaded.model.graph, inline.model.graph,
        "same model as from the inline fixture"
    );
}

/// `--external-data` moves an inline model's weights to `OUT.data`: the same graph as the
/// inline output, read back through the side file.
#[test]
fn external_data_flag_writes_the_weights_beside_the_model() {
    let dir = scratch();
    let out = dir.path().join("q.onnx");
    quantize_ok(
        &fixture(DIGITS),
        &fixture(DIGITS_CALIB),
        &out,
        &["--external-data"],
    );
    let data = dir.path().join("q.onnx.data");
    assert!(std::fs::metadata(&data).unwrap().len() > 1024);
    assert!(std::fs::metadata(&out).unwrap().len() < 20_000);
    let inline = dir.path().join("inline.onnx");
    quantize_ok(&fixture(DIGITS), &fixture(DIGITS_CALIB), &inline, &[]);
    let reloaded = onnx_quant::onnx::load(&out).unwrap();
    assert_eq!(reloaded.side_files.len(), 1);
    assert_eq!(
        reloaded.model.graph,
        onnx_quant::onnx::load(&inline).unwrap().model.graph
    );
}

#[test]
fn inspect_prints_the_graph() {
    let o = run(["inspect", fixture(DIGITS).to_str().unwrap()]);
    assert_eq!(code(&o), 0);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.starts_with("model ir_version=8 opset=ai.onnx:17\n"));
    assert!(text.contains("node /conv1/Conv: Conv(input, conv1.weight, conv1.bias) -> conv1_out"));
    let missing = run(["inspect", "nope.onnx"]);
    assert_eq!(code(&missing), 3);
}

/// The ort preset folds a Relu into the node unit before it, exact only while that unit's
/// output is quantized with the zero-point at the type's minimum. A unit an override keeps float
/// gets its Relu back (without it, the digits CNN falls to 5.5 dB).
#[test]
fn folded_relus_come_back_when_their_unit_stays_float() {
    let dir = scratch();
    let config = dir.path().join("skip.yaml");
    std::fs::write(
        &config,
        "target: ort\noverrides:\n  - match: {op_type: Conv}\n    skip: true\n",
    )
    .unwrap();
    let out = dir.path().join("q.onnx");
    let report = dir.path().join("r.json");
    quantize_ok(
        &fixture(DIGITS),
        &fixture(DIGITS_CALIB),
        &out,
        &[
            "--config",
            config.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
    );
    let m = load_model(&out);
    let relus: Vec<&str> = nodes(&m, "Relu").iter().map(|n| n.name()).collect();
    assert_eq!(relus, ["/relu1/Relu", "/relu2/Relu", "/relu3/Relu"]);
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(
        r["notes"]
            .to_string()
            .contains("3 folded Relu node(s) put back"),
        "{}",
        r["notes"]
    );
    let eval = dir.path().join("e.json");
    let o = run([
        "eval".as_ref(),
        fixture(DIGITS).as_os_str(),
        out.as_os_str(),
        "--data".as_ref(),
        fixture("digits/eval_x.npy").as_os_str(),
        "--json".as_ref(),
        eval.as_os_str(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let e: serde_json::Value = serde_json::from_slice(&std::fs::read(&eval).unwrap()).unwrap();
    let db = e["outputs"][0]["sqnr_db"].as_f64().unwrap();
    assert!(db > 30.0, "output SQNR {db} dB");
}

/// A model whose weights (1 MiB each, external data) stay on disk while it is planned and
/// calibrated, each read back when it is quantized, and one (too small to be worth int8) read
/// back float: the result equals quantizing the same model stored inline.
#[test]
fn weights_left_on_disk_until_quantized_give_the_inline_result() {
    use onnx_quant::onnx::tensor::f32_tensor;
    use onnx_quant::proto::{GraphProto, NodeProto, OperatorSetIdProto, ValueInfoProto};
    let dir = scratch();
    let k = 512;
    let weight = |name: &str, rows: usize, cols: usize, seed: u32| {
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| {
                (((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) % 2001) as f32
                    / 1000.0
                    - 1.0
            })
            .map(|v| v / (rows as f32).sqrt())
            .collect();
        f32_tensor(name, &[rows, cols], &values)
    };
    let node = |op: &str, inputs: &[&str], out: &str| NodeProto {
        name: Some(out.to_string()),
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![out.to_string()],
        ..Default::default()
    };
    let io = |name: &str, dims: &[i64]| {
        use onnx_quant::proto::{TensorShapeProto, TypeProto, tensor_shape_proto, type_proto};
        ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(1),
                    shape: Some(TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|&d| tensor_shape_proto::Dimension {
                                value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    };
    let model = onnx_quant::proto::ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            name: Some("deferred".into()),
            node: vec![
                node("MatMul", &["x", "w1"], "h1"),
                node("Relu", &["h1"], "r1"),
                node("MatMul", &["r1", "w2"], "h2"),
                node("Relu", &["h2"], "r2"),
                // N = 8 < min_matmul_dim: stays float, its 8 KiB weight read back as it is
                node("MatMul", &["r2", "w3"], "y"),
            ],
            initializer: vec![
                weight("w1", k, k, 1),
                weight("w2", k, k, 2),
                weight("w3", k, 8, 3),
            ],
            input: vec![io("x", &[1, k as i64])],
            output: vec![io("y", &[1, 8])],
            ..Default::default()
        }),
        ..Default::default()
    };
    let (inline, external) = (dir.path().join("inline.onnx"), dir.path().join("ext.onnx"));
    save_model(&model, &inline);
    onnx_quant::onnx::save(
        model,
        &external,
        &onnx_quant::onnx::SaveOptions {
            external: true,
            external_threshold: 1024,
        },
    )
    .unwrap();
    // what planning and calibration hold: the two large weights stay in the file
    let mut deferred =
        onnx_quant::onnx::load_deferring(&external, onnx_quant::ir::deferrable_weights).unwrap();
    let on_disk: Vec<&str> = deferred
        .model
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .filter(|t| onnx_quant::onnx::tensor::is_external(t))
        .map(|t| t.name())
        .collect();
    assert_eq!(on_disk, ["w1", "w2"]);
    onnx_quant::onnx::materialize(&mut deferred.model, &external).unwrap();
    assert_eq!(
        deferred.model,
        onnx_quant::onnx::load(&external).unwrap().model
    );
    let x: Vec<f32> = (0..8 * k)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect();
    let calib = dir.path().join("x.npy");
    write_npy_f32(&calib, &[8, 1, k], &x);
    let (qi, qe) = (dir.path().join("qi.onnx"), dir.path().join("qe.onnx"));
    quantize_ok(&inline, &calib, &qi, &[]);
    quantize_ok(&external, &calib, &qe, &[]);
    assert!(dir.path().join("qe.onnx.data").exists());
    let (a, b) = (
        onnx_quant::onnx::load(&qi).unwrap().model,
        onnx_quant::onnx::load(&qe).unwrap().model,
    );
    assert_eq!(a.graph, b.graph);
    // the small float weight came back as it was
    let w3 = init(&b, "w3");
    assert_eq!(w3.dims, vec![k as i64, 8]);
}
