//! Statistics as an artifact: `calibrate`, `--stats`, `merge-stats`, TensorRT caches.

use std::path::{Path, PathBuf};

use crate::support::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn calibrate(model: &Path, calib: &Path, stats: &Path, extra: &[&str]) {
    let mut args = vec![
        "calibrate",
        s(model),
        "--calib",
        s(calib),
        "--stats",
        s(stats),
        "-q",
    ];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert_eq!(code(&o), 0, "calibrate failed: {}", stderr(&o));
}

fn quantize_from(model: &Path, stats: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![s(model), s(out), "--stats", s(stats), "-q"];
    args.extend_from_slice(extra);
    run(&args)
}

/// Writes samples `range` of the digits calibration set as one `.npy`.
fn digits_shard(dir: &Path, name: &str, range: std::ops::Range<usize>) -> PathBuf {
    let (_, data) = digits_calib();
    let path = dir.join(name);
    write_npy_f32(
        &path,
        &[range.len(), 1, 8, 8],
        &data[range.start * 64..range.end * 64],
    );
    path
}

#[test]
fn quantizing_from_a_stats_file_equals_calibrating_directly() {
    let dir = scratch();
    let stats = dir.path().join("stats.json");
    calibrate(&fixture(DIGITS), &fixture(DIGITS_CALIB), &stats, &[]);
    for method in ["minmax", "percentile", "entropy", "mse"] {
        let direct = dir.path().join(format!("{method}_direct.onnx"));
        let from = dir.path().join(format!("{method}_stats.onnx"));
        quantize_ok(
            &fixture(DIGITS),
            &fixture(DIGITS_CALIB),
            &direct,
            &["--method", method],
        );
        let o = quantize_from(&fixture(DIGITS), &stats, &from, &["--method", method]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(
            std::fs::read(direct).unwrap(),
            std::fs::read(from).unwrap(),
            "{method}"
        );
    }
}

/// Equalization changes the activations: `calibrate --equalize` measures the equalized model, so
/// `quantize --stats --equalize` gives the bytes of `quantize --calib --equalize`; a file measured
/// one way is refused by a run quantizing the other way (and by a merge with the other way),
/// naming the file.
#[test]
fn statistics_remember_whether_the_model_was_equalized() {
    let dir = scratch();
    let (model, calib) = (fixture("mbnet/dwnet.onnx"), fixture("mbnet/calib.npy"));
    let (equalized, plain) = (dir.path().join("eq.json"), dir.path().join("plain.json"));
    calibrate(&model, &calib, &equalized, &["--equalize"]);
    calibrate(&model, &calib, &plain, &[]);
    let (direct, from) = (dir.path().join("direct.onnx"), dir.path().join("from.onnx"));
    quantize_ok(&model, &calib, &direct, &["--equalize"]);
    let o = quantize_from(&model, &equalized, &from, &["--equalize"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&direct).unwrap(),
        std::fs::read(&from).unwrap()
    );
    for (stats, extra) in [(&plain, &["--equalize"][..]), (&equalized, &[])] {
        let out = dir.path().join("refused.onnx");
        let o = quantize_from(&model, stats, &out, extra);
        assert_eq!(code(&o), 4, "{}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains(s(stats)) && e.contains("calibrate with the same `--equalize`"),
            "{e}"
        );
        assert!(!out.exists());
    }
    let merged = dir.path().join("merged.json");
    let o = run(["merge-stats", s(&equalized), s(&plain), "-o", s(&merged)]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("not equalized"), "{}", stderr(&o));
    assert!(!merged.exists());
}

#[test]
fn merged_shards_equal_one_run() {
    let dir = scratch();
    let (a, b, c) = (
        digits_shard(dir.path(), "a.npy", 0..50),
        digits_shard(dir.path(), "b.npy", 50..51),
        digits_shard(dir.path(), "c.npy", 51..128),
    );
    let shard_stats: Vec<PathBuf> = [&a, &b, &c]
        .iter()
        .map(|shard| {
            let out = shard.with_extension("json");
            calibrate(&fixture(DIGITS), shard, &out, &[]);
            out
        })
        .collect();
    let merged = dir.path().join("merged.json");
    let mut args = vec!["merge-stats"];
    args.extend(shard_stats.iter().map(|p| s(p)));
    args.extend(["-o", s(&merged)]);
    let o = run(&args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let whole = dir.path().join("whole.json");
    calibrate(&fixture(DIGITS), &fixture(DIGITS_CALIB), &whole, &[]);

    let load = |p: &Path| onnx_quant::stats::load(p).unwrap();
    let (m, w) = (load(&merged), load(&whole));
    assert_eq!(m.samples, 128);
    assert_eq!(
        m.tensors.keys().collect::<Vec<_>>(),
        w.tensors.keys().collect::<Vec<_>>()
    );
    for (name, t) in &m.tensors {
        let u = &w.tensors[name];
        assert_eq!(t.minmax, u.minmax, "{name}: min/max merge exactly");
        assert_eq!(t.histogram, u.histogram, "{name}: histograms merge exactly");
        let (ta, ua) = (t.averaged.unwrap(), u.averaged.unwrap());
        assert_eq!(ta.batches, ua.batches);
        assert!(
            (ta.max_sum - ua.max_sum).abs() <= 1e-9 * ua.max_sum.abs(),
            "{name}"
        );
    }
    // hence the same model, for every histogram method
    for method in ["minmax", "percentile", "entropy", "mse"] {
        let (x, y) = (dir.path().join("x.onnx"), dir.path().join("y.onnx"));
        assert_eq!(
            code(&quantize_from(
                &fixture(DIGITS),
                &merged,
                &x,
                &["--method", method]
            )),
            0
        );
        assert_eq!(
            code(&quantize_from(
                &fixture(DIGITS),
                &whole,
                &y,
                &["--method", method]
            )),
            0
        );
        assert_eq!(
            std::fs::read(x).unwrap(),
            std::fs::read(y).unwrap(),
            "{method}"
        );
    }
}

#[test]
fn merge_refuses_other_models_and_its_own_inputs() {
    let dir = scratch();
    let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
    calibrate(
        &fixture(DIGITS),
        &fixture(DIGITS_CALIB),
        &a,
        &["--max-samples", "8"],
    );
    calibrate(
        &fixture("models/external/model.onnx"),
        &fixture(DIGITS_CALIB),
        &b,
        &["--max-samples", "8"],
    );
    let o = run([
        "merge-stats",
        s(&a),
        s(&b),
        "-o",
        s(&dir.path().join("m.json")),
    ]);
    assert_eq!(code(&o), 4);
    assert!(
        stderr(&o).contains("b.json") && stderr(&o).contains("another model"),
        "{}",
        stderr(&o)
    );
    let o = run(["merge-stats", s(&a), s(&a), "-o", s(&a)]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

#[test]
fn stats_problems_are_clear_errors() {
    let dir = scratch();
    let out = dir.path().join("q.onnx");
    // statistics of another model: warned, then missing tensors refused
    let other = dir.path().join("other.json");
    calibrate(
        &fixture("models/two_inputs.onnx"),
        &fixture("models/two_inputs/calib.npz"),
        &other,
        &[],
    );
    let o = quantize_from(&fixture(DIGITS), &other, &out, &[]);
    assert_eq!(code(&o), 4);
    let err = stderr(&o);
    assert!(
        err.contains("warning: statistics") && err.contains("another SHA-256"),
        "{err}"
    );
    assert!(
        err.contains("holds no statistics for planned tensor(s) `input`"),
        "{err}"
    );
    // not a statistics file
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"hello\": 1}").unwrap();
    let o = quantize_from(&fixture(DIGITS), &bad, &out, &[]);
    assert_eq!(code(&o), 4);
    assert!(
        stderr(&o).contains("not an onnx-quant statistics file"),
        "{}",
        stderr(&o)
    );
    let o = quantize_from(
        &fixture(DIGITS),
        &dir.path().join("missing.json"),
        &out,
        &[],
    );
    assert_eq!(code(&o), 4);
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    assert!(!out.exists());
    // --calib and --stats together
    let o = run([
        s(&fixture(DIGITS)),
        s(&out),
        "--calib",
        s(&fixture(DIGITS_CALIB)),
        "--stats",
        s(&other),
    ]);
    assert_eq!(code(&o), 2);
}

#[test]
fn tensorrt_cache_round_trips_through_quantize() {
    let dir = scratch();
    let cache = dir.path().join("calib.cache");
    let out = dir.path().join("q.onnx");
    quantize_ok(
        &fixture(DIGITS),
        &fixture(DIGITS_CALIB),
        &out,
        &["--method", "minmax", "--trt-cache", s(&cache)],
    );
    let text = std::fs::read_to_string(&cache).unwrap();
    assert!(
        text.starts_with("TRT-") && text.lines().count() == 6,
        "{text}"
    );
    let report = dir.path().join("r.json");
    quantize_ok(
        &fixture(DIGITS),
        &fixture(DIGITS_CALIB),
        &out,
        &["--method", "minmax", "--report", s(&report)],
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    // each line is the float32 bits of amax / 127, amax being the absolute maximum
    for a in r["activations"].as_array().unwrap() {
        let name = a["tensor"].as_str().unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name}: ")))
            .unwrap();
        let scale = f32::from_bits(u32::from_str_radix(&line[name.len() + 2..], 16).unwrap());
        let amax = a["min"]
            .as_f64()
            .unwrap()
            .abs()
            .max(a["max"].as_f64().unwrap().abs()) as f32;
        assert_eq!(scale, amax / 127.0, "{name}");
    }
    // read back: the cache is a source of ranges (minmax by default, histograms refused)
    let from_cache = dir.path().join("c.onnx");
    let o = quantize_from(
        &fixture(DIGITS),
        &cache,
        &from_cache,
        &["--report", s(&report)],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let rc: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    for (a, b) in r["activations"]
        .as_array()
        .unwrap()
        .iter()
        .zip(rc["activations"].as_array().unwrap())
    {
        let (x, y) = (a["scale"].as_f64().unwrap(), b["scale"].as_f64().unwrap());
        assert!((x - y).abs() <= x * 1e-6, "{a} vs {b}");
    }
    let o = quantize_from(
        &fixture(DIGITS),
        &cache,
        &from_cache,
        &["--method", "entropy"],
    );
    assert_eq!(code(&o), 4);
    assert!(stderr(&o).contains("needs a histogram"), "{}", stderr(&o));
}

#[test]
fn calibrate_can_write_a_tensorrt_cache_and_run_reports_inference_time() {
    let dir = scratch();
    let (stats, cache) = (dir.path().join("s.json"), dir.path().join("c.cache"));
    calibrate(
        &fixture(DIGITS),
        &fixture(DIGITS_CALIB),
        &stats,
        &["--method", "percentile", "--trt-cache", s(&cache)],
    );
    assert!(std::fs::read_to_string(&cache).unwrap().lines().count() == 6);
    let o = run([
        "run",
        s(&fixture(DIGITS)),
        "--calib",
        s(&fixture(DIGITS_CALIB)),
        "--max-samples",
        "20",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("20 samples in "));
}

#[test]
fn flag_mistakes_are_usage_errors() {
    for bad in [
        &["--percentile", "0"][..],
        &["--percentile", "100.5"],
        &["--bins", "3"],
        &["--method", "entropy", "--moving-average"],
    ] {
        let (model, calib) = (fixture(DIGITS), fixture(DIGITS_CALIB));
        let mut args = vec![s(&model), "/tmp/never.onnx", "--calib", s(&calib)];
        args.extend_from_slice(bad);
        let o = run(&args);
        assert_eq!(code(&o), 2, "{bad:?}: {}", stderr(&o));
    }
}
