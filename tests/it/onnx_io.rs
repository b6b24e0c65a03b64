//! Loading and saving: lossless round trips, external data, and refusals.

use onnx_quant::onnx::{self, SaveOptions};
use onnx_quant::proto::StringStringEntryProto;

use crate::support::*;

#[test]
fn inline_models_round_trip_byte_identical() {
    let dir = scratch();
    for rel in [DIGITS, "models/two_inputs.onnx", "models/opset11.onnx"] {
        let loaded = onnx::load(&fixture(rel)).unwrap();
        assert!(loaded.warnings.is_empty());
        let out = dir.path().join("copy.onnx");
        onnx::save(loaded.model, &out, &SaveOptions::default()).unwrap();
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(fixture(rel)).unwrap(),
            "{rel}"
        );
    }
}

#[test]
fn external_data_round_trips() {
    let dir = scratch();
    let loaded = onnx::load(&fixture("models/external/model.onnx")).unwrap();
    assert_eq!(loaded.side_files.len(), 1);
    let inline = onnx::load(&fixture(DIGITS)).unwrap();
    assert_eq!(
        loaded.model.graph, inline.model.graph,
        "inlined data equals the inline fixture"
    );
    let out = dir.path().join("saved.onnx");
    let saved = onnx::save(
        loaded.model.clone(),
        &out,
        &SaveOptions {
            external: true,
            external_threshold: 256,
        },
    )
    .unwrap();
    let (data_path, data_len) = saved.data_file.unwrap();
    assert_eq!(data_path, dir.path().join("saved.onnx.data"));
    assert!(data_len > 40_000);
    let raw = load_model(&out);
    let ext = raw
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .filter(|t| !t.external_data.is_empty())
        .count();
    assert!(ext >= 5, "large tensors moved out");
    let again = onnx::load(&out).unwrap();
    assert_eq!(again.model, loaded.model);
}

#[test]
fn newer_ir_versions_warn() {
    let dir = scratch();
    let mut m = load_model(&fixture(DIGITS));
    m.ir_version = Some(99);
    let path = dir.path().join("future.onnx");
    save_model(&m, &path);
    let loaded = onnx::load(&path).unwrap();
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("IR version 99") && w.contains("dropped")),
        "{:?}",
        loaded.warnings
    );
    let o = run(["inspect", path.to_str().unwrap()]);
    assert!(stderr(&o).contains("warning: model"), "{}", stderr(&o));
}

fn external_with(edit: impl FnOnce(&mut Vec<StringStringEntryProto>)) -> String {
    let dir = scratch();
    for f in ["model.onnx", "model.onnx.data"] {
        std::fs::copy(fixture("models/external").join(f), dir.path().join(f)).unwrap();
    }
    let path = dir.path().join("model.onnx");
    let mut m = load_model(&path);
    let t = m
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| !t.external_data.is_empty())
        .unwrap();
    edit(&mut t.external_data);
    save_model(&m, &path);
    onnx::load(&path).unwrap_err().to_string()
}

fn set(entries: &mut [StringStringEntryProto], key: &str, value: &str) {
    entries.iter_mut().find(|e| e.key() == key).unwrap().value = Some(value.into());
}

#[test]
fn bad_external_data_is_refused() {
    let e = external_with(|e| set(e, "location", "../escape.bin"));
    assert!(e.contains("leaves the model's folder"), "{e}");
    let e = external_with(|e| set(e, "location", "/etc/hostname"));
    assert!(e.contains("leaves the model's folder"), "{e}");
    let e = external_with(|e| set(e, "offset", "999999999"));
    assert!(e.contains("runs past the end"), "{e}");
    let e = external_with(|e| set(e, "length", "12"));
    assert!(e.contains("need"), "{e}");
    let e = external_with(|e| set(e, "location", "missing.bin"));
    assert!(
        e.contains("cannot open") && e.contains("missing.bin"),
        "{e}"
    );
}

#[test]
fn only_weights_nothing_reads_before_the_rewrite_may_stay_on_disk() {
    let m = onnx::load(&fixture("outlier/digits_outlier.onnx"))
        .unwrap()
        .model;
    let mut names: Vec<String> = onnx_quant::ir::deferrable_weights(&m).into_iter().collect();
    names.sort();
    // conv1 feeds a BatchNormalization (folding reads its weight); biases are not weights
    assert_eq!(
        names,
        ["conv2.weight", "conv3.weight", "fc1.weight", "fc2.weight"]
    );
}
