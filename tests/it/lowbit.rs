//! Transformers and low-bit modes: int4 weights (per channel and in blocks), int16 activations,
//! weight-only quantization and additive attention masks:
//! what is written, what the overrides decide, and how close the simulated result stays.

use std::path::Path;

use onnx_quant::proto::{ModelProto, tensor_proto::DataType};

use crate::support::*;

const TRANSFORMER: &str = "models/transformer.onnx";
const TRANSFORMER_CALIB: &str = "models/transformer_calib.npy";
const TRANSFORMER_EVAL: &str = "models/transformer_eval.npy";

/// Output SQNR (dB) of `quant` against the float transformer, simulated on the eval samples.
fn sqnr(quant: &Path) -> f64 {
    eval_sqnr(&fixture(TRANSFORMER), quant, &fixture(TRANSFORMER_EVAL))
}

/// Output SQNR (dB) of `quant` against `model` on `data`, simulated by `onnx-quant eval`.
fn eval_sqnr(model: &Path, quant: &Path, data: &Path) -> f64 {
    let dir = scratch();
    let out = dir.path().join("eval.json");
    let o = run([
        "eval",
        s(model),
        s(quant),
        "--data",
        s(data),
        "--json",
        s(&out),
        "-q",
    ]);
    assert_eq!(code(&o), 0, "eval failed: {}", stderr(&o));
    json(&out)["outputs"][0]["sqnr_db"].as_f64().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn attr(n: &onnx_quant::proto::NodeProto, name: &str) -> Option<i64> {
    n.attribute
        .iter()
        .find(|a| a.name() == name)
        .and_then(|a| a.i)
}

fn opset(m: &ModelProto) -> i64 {
    m.opset_import
        .iter()
        .find(|o| o.domain().is_empty())
        .unwrap()
        .version()
}

/// The DequantizeLinear of weight `w` and its quantized initializer.
fn weight_dq<'a>(
    m: &'a ModelProto,
    w: &str,
) -> (
    &'a onnx_quant::proto::NodeProto,
    &'a onnx_quant::proto::TensorProto,
) {
    let dq = nodes(m, "DequantizeLinear")
        .into_iter()
        .find(|n| n.input[0] == format!("{w}_quantized"))
        .unwrap_or_else(|| panic!("no DequantizeLinear for {w}"));
    (dq, init(m, &dq.input[0]))
}

fn weight_only(out: &Path, extra: &[&str]) -> std::process::Output {
    let model = fixture(TRANSFORMER);
    let mut args = vec![s(&model), s(out), "--weight-only", "-q"];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    o
}

#[test]
fn int4_blocks_need_no_calibration_data_and_beat_int4_per_channel() {
    let dir = scratch();
    let (blocks, channels) = (dir.path().join("b.onnx"), dir.path().join("c.onnx"));
    let report = dir.path().join("r.json");
    let args = ["--weight-type", "int4", "--block-size", "16", "--report"];
    weight_only(&blocks, &[&args[..], &[s(&report)]].concat());
    let m = load_model(&blocks);
    assert!(
        nodes(&m, "QuantizeLinear").is_empty(),
        "weight-only writes no Q"
    );
    assert_eq!((opset(&m), m.ir_version()), (21, 10));
    let float = load_model(&fixture(TRANSFORMER));
    for w in ["q.w", "k.w", "v.w", "o.w", "ff1.w", "ff2.w"] {
        let (dq, q) = weight_dq(&m, w);
        let dims = init(&float, w).dims.clone();
        let n = dims.iter().product::<i64>() as usize;
        assert_eq!(q.data_type(), DataType::Int4 as i32, "{w}");
        assert_eq!(q.dims, dims, "{w}");
        assert_eq!(
            q.raw_data.as_ref().unwrap().len(),
            n.div_ceil(2),
            "{w}: two per byte"
        );
        // MatMul weights [K, N]: blocks of 16 along K
        assert_eq!(
            (attr(dq, "axis"), attr(dq, "block_size")),
            (Some(0), Some(16))
        );
        assert_eq!(
            init(&m, &dq.input[1]).dims,
            vec![dims[0] / 16, dims[1]],
            "{w}"
        );
        assert_eq!(init(&m, &dq.input[2]).data_type(), DataType::Int4 as i32);
    }
    let r = json(&report);
    assert!(
        r["weights"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["dtype"] == "int4" && w["block_size"] == 16)
    );
    assert!(r["activations"].as_array().unwrap().is_empty());

    weight_only(&channels, &["--weight-type", "int4"]);
    let per_channel = load_model(&channels);
    let (dq, _) = weight_dq(&per_channel, "q.w");
    assert_eq!((attr(dq, "axis"), attr(dq, "block_size")), (Some(1), None));
    let (b, c) = (sqnr(&blocks), sqnr(&channels));
    assert!(
        b >= 20.0 && b > c + 1.0,
        "blocks {b} dB, per channel {c} dB"
    );

    // the clipping search beats plain round-to-nearest on the output too
    let rtn = dir.path().join("rtn.onnx");
    let config = dir.path().join("rtn.yaml");
    std::fs::write(&config, "weights:\n  clip_search: false\n").unwrap();
    weight_only(&rtn, &[&args[..4], &["--config", s(&config)]].concat());
    let r = sqnr(&rtn);
    assert!(b > r + 0.5, "searched {b} dB, round-to-nearest {r} dB");
}

#[test]
fn int16_activations_are_int16_at_opset_21_and_beat_int8() {
    let dir = scratch();
    let (a16, a8) = (dir.path().join("a16.onnx"), dir.path().join("a8.onnx"));
    let base = ["--target", "ort"];
    quantize_ok(
        &fixture(TRANSFORMER),
        &fixture(TRANSFORMER_CALIB),
        &a16,
        &[&base[..], &["--activation-type", "int16"]].concat(),
    );
    quantize_ok(
        &fixture(TRANSFORMER),
        &fixture(TRANSFORMER_CALIB),
        &a8,
        &base,
    );
    let m = load_model(&a16);
    assert_eq!(opset(&m), 21);
    let qs = nodes(&m, "QuantizeLinear");
    assert!(!qs.is_empty());
    for q in qs {
        assert_eq!(
            init(&m, &q.input[2]).data_type(),
            DataType::Int16 as i32,
            "{}",
            q.name()
        );
    }
    let (hi, lo) = (sqnr(&a16), sqnr(&a8));
    assert!(hi > lo + 2.0, "int16 {hi} dB vs int8 {lo} dB");
}

#[test]
fn overrides_choose_the_weight_type_and_blocks_per_layer() {
    let dir = scratch();
    let out = dir.path().join("q.onnx");
    let report = dir.path().join("r.json");
    quantize_ok(
        &fixture(TRANSFORMER),
        &fixture(TRANSFORMER_CALIB),
        &out,
        &[
            "--config",
            s(&fixture("configs/lowbit.yaml")),
            "--report",
            s(&report),
        ],
    );
    let m = load_model(&out);
    for (w, ty, axis, block) in [
        ("q.w", DataType::Int4, 0, Some(16)),
        ("v.w", DataType::Int4, 0, Some(16)),
        ("o.w", DataType::Int4, 1, None),
        ("ff1.w", DataType::Int8, 1, None),
        ("ff2.w", DataType::Int8, 1, None),
    ] {
        let (dq, q) = weight_dq(&m, w);
        assert_eq!(q.data_type(), ty as i32, "{w}");
        assert_eq!(
            (attr(dq, "axis"), attr(dq, "block_size")),
            (Some(axis), block),
            "{w}"
        );
    }
    let r = json(&report);
    let decided = |w: &str| {
        r["weights"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == w)
            .unwrap()["decided_by"]
            .to_string()
    };
    assert!(
        decided("ff1.w").contains("dtype: override #1"),
        "{}",
        decided("ff1.w")
    );
    assert!(
        decided("o.w").contains("block_size: override #2"),
        "{}",
        decided("o.w")
    );
    // the same decisions, explained before any calibration
    let o = run([
        "explain",
        s(&fixture(TRANSFORMER)),
        "--config",
        s(&fixture("configs/lowbit.yaml")),
    ]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        text.contains("weight `q.w`: int4 [-8, 7], blocks of 16 along axis 0"),
        "{text}"
    );
    assert!(
        text.contains(
            "weight `ff1.w`: int8 [-127, 127], per channel on axis 1 (dtype: override #1"
        ),
        "{text}"
    );
}

#[test]
fn a_block_size_that_does_not_divide_falls_back_to_per_channel_with_a_note() {
    let dir = scratch();
    let out = dir.path().join("q.onnx");
    let report = dir.path().join("r.json");
    weight_only(
        &out,
        &[
            "--weight-type",
            "int4",
            "--block-size",
            "24",
            "--report",
            s(&report),
        ],
    );
    let m = load_model(&out);
    let (dq, q) = weight_dq(&m, "ff2.w");
    assert_eq!(q.data_type(), DataType::Int4 as i32);
    assert_eq!((attr(dq, "axis"), attr(dq, "block_size")), (Some(1), None));
    let notes = json(&report)["notes"].to_string();
    assert!(
        notes.contains(
            "weight `ff2.w`: block size 24 does not divide its input-channel axis 0 (length 64)"
        ),
        "{notes}"
    );
}

#[test]
fn low_bit_settings_that_contradict_are_usage_errors() {
    let dir = scratch();
    let out = dir.path().join("q.onnx");
    let o = run([
        s(&fixture(TRANSFORMER)),
        s(&out),
        "--weight-only",
        "--block-size",
        "16",
    ]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("`weights.block_size: 16` (command line) needs `weights.dtype: int4`"),
        "{}",
        stderr(&o)
    );
    let o = run([s(&fixture(TRANSFORMER)), s(&out), "--weight-type", "int4"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("give --calib DATA"), "{}", stderr(&o));
    assert!(!out.exists());
}

#[test]
fn an_output_its_target_rejects_is_written_with_a_warning() {
    let dir = scratch();
    let out = dir.path().join("q.onnx");
    // int16 activations for the default target, TensorRT, which has no int16
    let o = quantize_ok(
        &fixture(TRANSFORMER),
        &fixture(TRANSFORMER_CALIB),
        &out,
        &["--activation-type", "int16"],
    );
    let err = stderr(&o);
    assert!(
        err.contains("warning: the output breaks") && err.contains("tensorrt (type "),
        "{err}"
    );
    // the same for ONNX Runtime, which runs int16: no warning
    let o = quantize_ok(
        &fixture(TRANSFORMER),
        &fixture(TRANSFORMER_CALIB),
        &out,
        &["--activation-type", "int16", "--target", "ort"],
    );
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
}

/// An additive attention mask (`(1 - mask) * finfo.min`, added to the scores before Softmax)
/// is never quantized, nor what it is added to, whatever the preset: quantized, its range
/// would be all mask (the `ort` output fell to 11 dB before this rule).
#[test]
fn additive_attention_masks_stay_float() {
    let dir = scratch();
    let model = fixture("models/mask_attention.onnx");
    for target in ["tensorrt", "ort", "openvino"] {
        let (out, report) = (dir.path().join("q.onnx"), dir.path().join("r.json"));
        quantize_ok(
            &model,
            &fixture("models/mask_attention_calib.npz"),
            &out,
            &["--target", target, "--report", s(&report)],
        );
        let r = json(&report);
        for name in ["additive_mask", "mask_4d", "masked_scores"] {
            let n = r["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["name"] == name)
                .unwrap();
            assert_eq!(n["quantized"], false, "{target}: {n}");
            assert!(
                n["reason"]
                    .as_str()
                    .unwrap()
                    .contains("carries an additive mask (constant `min_value`"),
                "{target}: {n}"
            );
        }
        // no Q/DQ pair carries the mask
        let m = load_model(&out);
        for q in nodes(&m, "QuantizeLinear") {
            assert!(!q.input[0].contains("mask"), "{target}: {}", q.input[0]);
        }
        let db = eval_sqnr(&model, &out, &fixture("models/mask_attention_eval.npz"));
        assert!(db > 30.0, "{target}: {db} dB");
    }
}

/// SmoothQuant on a LayerNormalization with two outlier channels (40 ×) read by two MatMuls:
/// the factors fold into the normalization and the weights (no node added), and per-tensor int8
/// goes from about 13 dB to over 30 dB on held-out samples.
#[test]
fn smoothquant_moves_outliers_into_the_weights() {
    let dir = scratch();
    let model = fixture("models/outlier_block.onnx");
    let calib = fixture("models/outlier_block_calib.npy");
    let sqnr_of = |out: &Path| eval_sqnr(&model, out, &fixture("models/outlier_block_eval.npy"));
    let (plain, smooth) = (
        dir.path().join("plain.onnx"),
        dir.path().join("smooth.onnx"),
    );
    let report = dir.path().join("r.json");
    quantize_ok(&model, &calib, &plain, &[]);
    quantize_ok(
        &model,
        &calib,
        &smooth,
        &["--smoothquant", "0.5", "--report", s(&report)],
    );
    let (a, b) = (sqnr_of(&plain), sqnr_of(&smooth));
    assert!(a < 20.0 && b > 30.0, "plain {a} dB, smoothed {b} dB");
    let notes = json(&report)["notes"].to_string();
    assert!(
        notes.contains("SmoothQuant on `ln_out` (2 reader(s))"),
        "{notes}"
    );
    let (p, q) = (load_model(&plain), load_model(&smooth));
    let ops = |m: &ModelProto| -> Vec<String> {
        m.graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .map(|n| n.op_type().to_string())
            .collect()
    };
    assert_eq!(ops(&p), ops(&q), "folded: no node added");
    let g = onnx_quant::onnx::tensor::f32_data(init(&q, "ln.g")).unwrap();
    let (lo, hi) = g.iter().fold((f32::MAX, 0f32), |(l, h), v| {
        (l.min(v.abs()), h.max(v.abs()))
    });
    assert!(hi / lo < 20.0, "the outliers came down: {g:?}");

    // it measures activations and changes the float model: not without calibration data
    let o = run([
        s(&model),
        s(&plain),
        "--smoothquant",
        "0.5",
        "--weight-only",
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = run([
        s(&model),
        s(&plain),
        "--calib",
        s(&calib),
        "--smoothquant",
        "1.5",
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

/// float8 e4m3 activations and weights (the tensorrt target): float8 zero-points of 0, opset
/// 19, no TensorRT-rule violation, measured layer by layer like any other model; contradictory
/// settings are usage errors.
#[test]
fn fp8_activations_and_weights_for_tensorrt() {
    let dir = scratch();
    let out = dir.path().join("q.onnx");
    let vit = fixture("vit/vit.onnx");
    let fp8 = ["--activation-type", "fp8", "--weight-type", "fp8"];
    quantize_ok(&vit, &fixture(DIGITS_CALIB), &out, &fp8);
    let m = load_model(&out);
    assert_eq!(opset(&m), 19);
    let qs = nodes(&m, "QuantizeLinear");
    assert!(!qs.is_empty());
    for n in qs.iter().chain(nodes(&m, "DequantizeLinear").iter()) {
        let zp = init(&m, &n.input[2]);
        assert_eq!(
            zp.data_type(),
            DataType::Float8e4m3fn as i32,
            "{}",
            n.name()
        );
        assert!(zp.raw_data.as_ref().unwrap().iter().all(|&b| b == 0));
    }
    let (dq, q) = weight_dq(&m, "b0.q.w");
    assert_eq!(q.data_type(), DataType::Float8e4m3fn as i32);
    assert_eq!(attr(dq, "axis"), Some(1));
    let o = run(["check", s(&out), "--target", "tensorrt"]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stdout));
    let eval_x = fixture("digits/eval_x.npy");
    let json = dir.path().join("eval.json");
    let o = run([
        "eval",
        s(&vit),
        s(&out),
        "--data",
        s(&eval_x),
        "--per-layer",
        "--json",
        s(&json),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let layers = r["layers"].as_array().unwrap();
    assert_eq!(layers.len(), qs.len(), "{r}");
    // float8 keeps 3 mantissa bits: each tensor's own rounding costs about 31 dB
    let own = |l: &serde_json::Value| l["local_sqnr_db"].as_f64().unwrap();
    assert!(layers.iter().all(|l| (20.0..45.0).contains(&own(l))), "{r}");

    let calib = fixture(DIGITS_CALIB);
    for (extra, want) in [
        (&["--asymmetric"][..], "has no zero-point but 0"),
        (&["--target", "ort"][..], "float8 contradicts `bias: int32`"),
    ] {
        let mut args = vec![s(&vit), s(&out), "--calib", s(&calib)];
        args.extend_from_slice(&fp8);
        args.extend_from_slice(extra);
        let o = run(&args);
        assert_eq!(code(&o), 2, "{}", stderr(&o));
        assert!(stderr(&o).contains(want), "{}", stderr(&o));
    }
}

/// An embedding table read by Gather is stored int8 with one scale per row (axis 0), in every
/// preset; the output stays close to fp32.
#[test]
fn embedding_tables_are_int8_per_row() {
    let dir = scratch();
    let model = fixture("models/embedding.onnx");
    for target in ["tensorrt", "ort", "openvino"] {
        let out = dir.path().join("q.onnx");
        quantize_ok(
            &model,
            &fixture("models/embedding_calib.npy"),
            &out,
            &["--target", target],
        );
        let m = load_model(&out);
        let (dq, q) = weight_dq(&m, "embed.table");
        assert_eq!(q.data_type(), DataType::Int8 as i32, "{target}");
        assert_eq!(attr(dq, "axis"), Some(0), "{target}");
        assert_eq!(
            init(&m, &dq.input[1]).dims,
            vec![100],
            "{target}: a scale per row"
        );
        let gather = nodes(&m, "Gather")[0];
        assert_eq!(gather.input[0], dq.output[0], "{target}");
        let db = eval_sqnr(&model, &out, &fixture("models/embedding_calib.npy"));
        assert!(db > 30.0, "{target}: {db} dB");
    }
}

/// uint4 weights: asymmetric, a zero-point in [0, 15] per block, packed like int4; closer to
/// fp32 than symmetric int4 on the ViT in blocks of 16.
#[test]
fn uint4_blocks_carry_their_zero_points() {
    let dir = scratch();
    let vit = fixture("vit/vit.onnx");
    let (u4, i4) = (dir.path().join("u4.onnx"), dir.path().join("i4.onnx"));
    for (out, ty) in [(&u4, "uint4"), (&i4, "int4")] {
        let o = run([
            s(&vit),
            s(out),
            "--weight-only",
            "--weight-type",
            ty,
            "--block-size",
            "16",
            "--target",
            "ort",
            "-q",
        ]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    let m = load_model(&u4);
    let (dq, q) = weight_dq(&m, "b0.ff1.w");
    assert_eq!(q.data_type(), DataType::Uint4 as i32);
    assert_eq!(
        (attr(dq, "axis"), attr(dq, "block_size")),
        (Some(0), Some(16))
    );
    let zp = init(&m, &dq.input[2]);
    assert_eq!(zp.data_type(), DataType::Uint4 as i32);
    assert_eq!(
        zp.dims,
        vec![2, 64],
        "one zero-point per block of the 32 x 64 weight"
    );
    assert!(zp.raw_data.as_ref().unwrap().iter().any(|&b| b != 0));
    let eval = |model: &Path| eval_sqnr(&vit, model, &fixture("digits/eval_x.npy"));
    let (u, i) = (eval(&u4), eval(&i4));
    assert!(u > i, "uint4 {u} dB, int4 {i} dB");
}

/// The attention products read two activations (no weight) and are quantized as such, with
/// `explain` saying so.
#[test]
fn attention_products_quantize_both_activations() {
    let o = run(["explain", s(&fixture(TRANSFORMER))]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    for node in ["qk", "pv"] {
        let line =
            format!("node `{node}` (MatMul): quantized: both data inputs (placement.weighted_ops)");
        assert!(text.contains(&line), "{text}");
    }
    assert!(
        text.contains("node `q` (MatMul): quantized: data and weight inputs"),
        "{text}"
    );
}
