//! Bad input: every case ends with one `error:` line naming the culprit, a documented exit code,
//! no output file, no leftover temporary file, and the input untouched.

use std::path::{Path, PathBuf};

use crate::support::*;

pub(crate) struct Case {
    model: PathBuf,
    calib: PathBuf,
    pub(crate) extra: Vec<String>,
}

impl Case {
    pub(crate) fn new(model: PathBuf, calib: PathBuf) -> Case {
        Case {
            model,
            calib,
            extra: vec![],
        }
    }
}

/// Runs `case` writing to `dir/out.onnx` (or `out` if given) and checks the failure contract.
pub(crate) fn check(case: Case, out: Option<PathBuf>, want_code: i32, want: &[&str]) -> String {
    let dir = scratch();
    let out = out.unwrap_or_else(|| dir.path().join("out.onnx"));
    let before = std::fs::read(&case.model).ok();
    let out_before = std::fs::read(&out).ok();
    let mut args: Vec<std::ffi::OsString> = vec![
        case.model.clone().into(),
        out.clone().into(),
        "--calib".into(),
        case.calib.clone().into(),
    ];
    args.extend(case.extra.iter().map(Into::into));
    let o = run(&args);
    let err = stderr(&o);
    assert_eq!(code(&o), want_code, "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "exactly one error line expected: {err}");
    for w in want {
        assert!(lines[0].contains(w), "`{w}` missing from: {}", lines[0]);
    }
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        std::fs::read(&out).ok(),
        out_before,
        "a failed run wrote {}",
        out.display()
    );
    if let Some(parent) = out.parent().filter(|p| p.is_dir()) {
        assert!(
            temp_leftovers(parent).is_empty(),
            "temporary files left in {}",
            parent.display()
        );
    }
    assert_eq!(
        std::fs::read(&case.model).ok(),
        before,
        "the input model changed"
    );
    lines[0].to_string()
}

fn digits() -> Case {
    Case::new(fixture(DIGITS), fixture(DIGITS_CALIB))
}

#[test]
fn missing_model() {
    let mut c = digits();
    c.model = PathBuf::from("no/such/model.onnx");
    check(
        c,
        None,
        3,
        &["cannot read model `no/such/model.onnx`", "No such file"],
    );
}

#[test]
fn truncated_model() {
    let dir = scratch();
    let path = dir.path().join("cut.onnx");
    let bytes = std::fs::read(fixture(DIGITS)).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let mut c = digits();
    c.model = path;
    check(c, None, 3, &["cut.onnx", "is not a valid ONNX file"]);
}

#[test]
fn non_onnx_and_empty_models() {
    let mut c = digits();
    c.model = fixture(DIGITS_CALIB); // a .npy file
    check(c, None, 3, &["calib.npy", "not"]);
    let dir = scratch();
    let empty = dir.path().join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    let mut c = digits();
    c.model = empty;
    check(c, None, 3, &["empty.onnx", "is empty"]);
    let text = dir.path().join("text.onnx");
    std::fs::write(&text, b"this is not a model\n").unwrap();
    let mut c = digits();
    c.model = text;
    check(c, None, 3, &["text.onnx"]);
}

#[test]
fn output_equal_to_input_is_refused() {
    let dir = scratch();
    let model = dir.path().join("m.onnx");
    std::fs::copy(fixture(DIGITS), &model).unwrap();
    let c = Case::new(model.clone(), fixture(DIGITS_CALIB));
    check(c, Some(model.clone()), 2, &["is the input model", "m.onnx"]);
    // the same file through another spelling of its path
    let other = dir.path().join(".").join("m.onnx");
    check(
        Case::new(model, fixture(DIGITS_CALIB)),
        Some(other),
        2,
        &["is the input model"],
    );
}

#[test]
fn output_equal_to_an_external_data_file_is_refused() {
    let dir = scratch();
    for f in ["model.onnx", "model.onnx.data"] {
        std::fs::copy(fixture("models/external").join(f), dir.path().join(f)).unwrap();
    }
    let data = dir.path().join("model.onnx.data");
    let before = std::fs::read(&data).unwrap();
    let c = Case::new(dir.path().join("model.onnx"), fixture(DIGITS_CALIB));
    check(
        c,
        Some(data.clone()),
        2,
        &["a file the input model reads", "model.onnx.data"],
    );
    // an output whose side file (`<output>.data`) would be the input's data file
    std::fs::rename(
        dir.path().join("model.onnx"),
        dir.path().join("renamed.onnx"),
    )
    .unwrap();
    let c = Case::new(dir.path().join("renamed.onnx"), fixture(DIGITS_CALIB));
    check(
        c,
        Some(dir.path().join("model.onnx")),
        2,
        &["a file the input model reads", "model.onnx.data"],
    );
    assert_eq!(std::fs::read(&data).unwrap(), before);
}

#[test]
fn missing_output_directory() {
    let dir = scratch();
    let out = dir.path().join("missing").join("out.onnx");
    check(
        digits(),
        Some(out),
        5,
        &["output directory", "missing` does not exist"],
    );
}

#[test]
fn missing_and_empty_calibration() {
    let mut c = digits();
    c.calib = PathBuf::from("no/such/data");
    check(
        c,
        None,
        4,
        &["calibration path `no/such/data` does not exist"],
    );
    let dir = scratch();
    std::fs::write(dir.path().join("README.txt"), "no data here").unwrap();
    let mut c = digits();
    c.calib = dir.path().to_path_buf();
    check(c, None, 4, &["holds no .npy, .npz, .pb or image data"]);
}

#[test]
fn mis_shaped_calibration() {
    let dir = scratch();
    let bad = dir.path().join("bad.npy");
    write_npy_f32(&bad, &[4, 1, 9, 9], &[0.0; 4 * 81]);
    let mut c = digits();
    c.calib = bad;
    check(
        c,
        None,
        4,
        &[
            "bad.npy",
            "input `input` expects float32 [?,1,8,8], got float32 [4,1,9,9]",
        ],
    );
}

#[test]
fn wrong_dtype_calibration() {
    let dir = scratch();
    let bad = dir.path().join("ints.npy");
    write_npy_raw(
        &bad,
        "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 1, 8, 8), }",
        &[0; 2 * 64 * 8],
    );
    let mut c = digits();
    c.calib = bad;
    check(
        c,
        None,
        4,
        &[
            "ints.npy",
            "input `input` expects float32 [?,1,8,8], got int64 [2,1,8,8]",
        ],
    );
}

#[test]
fn absurd_npy_header_is_refused_before_allocating() {
    let dir = scratch();
    let bad = dir.path().join("huge.npy");
    write_npy_raw(
        &bad,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4000000000, 1, 8, 8), }",
        &[0; 256],
    );
    let mut c = digits();
    c.calib = bad;
    check(
        c,
        None,
        4,
        &["huge.npy", "header promises", "the file holds 256"],
    );
}

#[test]
fn nan_in_activations_names_tensor_and_sample() {
    let dir = scratch();
    let (shape, mut data) = digits_calib();
    data[3 * 64 + 5] = f32::NAN; // sample 3
    let path = dir.path().join("nan.npy");
    write_npy_f32(&path, &shape, &data);
    let mut c = digits();
    c.calib = path;
    c.extra = vec!["--threads".into(), "1".into()];
    check(
        c,
        None,
        4,
        &[
            "tensor `input` holds NaN on calibration sample 3",
            "nan.npy",
        ],
    );
}

#[test]
fn multi_input_model_needs_every_input() {
    let c = Case::new(
        fixture("models/two_inputs.onnx"),
        fixture("models/two_inputs/named/image.npy"),
    );
    check(c, None, 4, &["does not feed input(s) `extra`"]);
}

fn edited_digits(dir: &Path, edit: impl FnOnce(&mut onnx_quant::proto::ModelProto)) -> PathBuf {
    let mut m = load_model(&fixture(DIGITS));
    edit(&mut m);
    let path = dir.join("edited.onnx");
    save_model(&m, &path);
    path
}

#[test]
fn unsupported_ops_are_all_named() {
    let dir = scratch();
    let model = edited_digits(dir.path(), |m| {
        let g = m.graph.as_mut().unwrap();
        g.node[2].op_type = Some("FancyRelu".into());
        g.node[4].op_type = Some("FancierRelu".into());
    });
    let mut c = digits();
    c.model = model;
    check(
        c,
        None,
        3,
        &[
            "tract cannot run 2 node(s)",
            "`/relu1/Relu` (FancyRelu)",
            "`/relu2/Relu` (FancierRelu)",
        ],
    );
}

#[test]
fn old_opset_that_cannot_be_raised_is_refused_naming_every_blocking_node() {
    use onnx_quant::proto::{AttributeProto, attribute_proto::AttributeType};
    let int = |name: &str, v: i64| AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    };
    let dir = scratch();
    // opset 6: Add with legacy broadcasting along an axis (removed in opset 7)
    let model = edited_digits(dir.path(), |m| {
        m.opset_import[0].version = Some(6);
        let g = m.graph.as_mut().unwrap();
        for n in g.node.iter_mut().filter(|n| n.op_type() == "Add") {
            n.attribute.push(int("broadcast", 1));
            n.attribute.push(int("axis", 1));
        }
    });
    let mut c = digits();
    c.model = model;
    check(
        c,
        None,
        3,
        &[
            "opset 6",
            "QuantizeLinear needs opset 10",
            "`/res/Add` (Add): legacy broadcasting",
            "`/fc1/Add` (Add): legacy broadcasting",
        ],
    );
}

#[test]
fn old_opset_is_raised_to_13_with_a_warning() {
    let dir = scratch();
    let model = edited_digits(dir.path(), |m| m.opset_import[0].version = Some(9));
    let out = dir.path().join("q.onnx");
    let o = run([
        model.as_os_str(),
        out.as_os_str(),
        "--calib".as_ref(),
        fixture(DIGITS_CALIB).as_os_str(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("uses opset 9, older than QuantizeLinear (10): raised to opset 13"),
        "{}",
        stderr(&o)
    );
    let m = load_model(&out);
    assert_eq!(m.opset_import[0].version(), 13);
    assert!(m.ir_version() >= 7);
}

#[test]
fn dangling_inputs_are_reported() {
    let dir = scratch();
    let model = edited_digits(dir.path(), |m| {
        m.graph.as_mut().unwrap().node[3].input[0] = "nowhere".into()
    });
    let mut c = digits();
    c.model = model;
    check(
        c,
        None,
        3,
        &[
            "is invalid",
            "node `/conv2/Conv` reads `nowhere` before it is defined",
        ],
    );
}

#[test]
fn usage_errors_exit_2() {
    let o = run(["--bogus-flag"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = run([fixture(DIGITS).to_str().unwrap(), "/tmp/x.onnx"]);
    assert_eq!(code(&o), 2, "missing --calib: {}", stderr(&o));
    assert!(stderr(&o).contains("--calib"));
    let mut c = digits();
    c.extra = vec!["--max-samples".into(), "0".into()];
    check(c, None, 2, &["--max-samples must be at least 1"]);
}

#[test]
fn float16_with_int32_biases_is_refused_naming_both_settings() {
    let mut c = digits();
    c.extra = ["--target", "ort", "--high-precision", "fp16"]
        .map(String::from)
        .to_vec();
    check(
        c,
        None,
        2,
        &[
            "`high_precision: fp16` (command line)",
            "`bias: int32` (preset ort)",
        ],
    );
}

#[test]
fn high_precision_is_refused_by_calibrate() {
    let dir = scratch();
    let stats = dir.path().join("s.json");
    let o = run([
        "calibrate".as_ref(),
        fixture(DIGITS).as_os_str(),
        "--calib".as_ref(),
        fixture(DIGITS_CALIB).as_os_str(),
        "--stats".as_ref(),
        stats.as_os_str(),
        "--high-precision".as_ref(),
        "fp16".as_ref(),
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("give it to the quantize run"),
        "{}",
        stderr(&o)
    );
    assert!(!stats.exists());
}

#[test]
fn nan_policy_ignore_leaves_non_finite_values_out_and_counts_them() {
    let dir = scratch();
    let (shape, mut data) = digits_calib();
    data[3 * 64 + 5] = f32::NAN; // sample 3
    data[7 * 64 + 1] = f32::INFINITY; // sample 7
    let path = dir.path().join("nan.npy");
    write_npy_f32(&path, &shape, &data);
    let out = dir.path().join("q.onnx");
    let o = quantize_ok(&fixture(DIGITS), &path, &out, &["--nan-policy", "ignore"]);
    let err = stderr(&o);
    assert!(err.contains("--nan-policy ignore"), "{err}");
    // the input holds exactly the two values; every layer after it sees some too
    assert!(err.contains("`input` 2"), "{err}");
    let m = load_model(&out);
    assert!(!nodes(&m, "QuantizeLinear").is_empty());

    // recorded in a statistics file, and refused where nothing is calibrated
    let stats = dir.path().join("s.json");
    let o = run([
        "calibrate".as_ref(),
        fixture(DIGITS).as_os_str(),
        "--calib".as_ref(),
        path.as_os_str(),
        "--stats".as_ref(),
        stats.as_os_str(),
        "--nan-policy".as_ref(),
        "ignore".as_ref(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert_eq!(v["tensors"]["input"]["non_finite"], 2);
    let o = run([
        "eval".as_ref(),
        fixture(DIGITS).as_os_str(),
        out.as_os_str(),
        "--data".as_ref(),
        path.as_os_str(),
        "--nan-policy".as_ref(),
        "ignore".as_ref(),
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("not to `eval`"), "{}", stderr(&o));
}

#[cfg(unix)]
#[test]
fn interruption_leaves_no_partial_file_and_keeps_the_old_output() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let dir = scratch();
    let out = dir.path().join("q.onnx");
    std::fs::write(&out, b"previous output").unwrap();
    // debug builds wait before renaming when asked: the temporary file exists meanwhile
    let child = Command::new(env!("CARGO_BIN_EXE_onnx-quant"))
        .args([fixture(DIGITS).as_os_str(), out.as_os_str()])
        .arg("--calib")
        .arg(fixture(DIGITS_CALIB))
        .env("ONNX_QUANT_TEST_PAUSE_BEFORE_RENAME_MS", "20000")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while temp_leftovers(dir.path()).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no temporary file appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(stderr(&o).contains("interrupted"), "{}", stderr(&o));
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "the pause was not cut short"
    );
    assert_eq!(temp_leftovers(dir.path()), Vec::<String>::new());
    assert_eq!(std::fs::read(&out).unwrap(), b"previous output");
}

#[test]
fn fuzzer_found_calibration_files_are_clear_errors() {
    // each file of fuzz/seeds/calib_file/crash-* once panicked; the first byte picks the file
    // type (npy, npz, pb) as in fuzz/fuzz_targets/calib_file.rs
    let dir = scratch();
    let seeds = root().join("fuzz/seeds/calib_file");
    let mut n = 0;
    for e in std::fs::read_dir(&seeds).unwrap() {
        let path = e.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("crash-")
        {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let ext = ["npy", "npz", "pb"][usize::from(bytes[0]) % 3];
        let calib = dir.path().join(format!("x.{ext}"));
        std::fs::write(&calib, &bytes[1..]).unwrap();
        let mut c = digits();
        c.calib = calib;
        check(c, None, 4, &["x."]);
        n += 1;
    }
    assert!(n > 0, "no crash file in {}", seeds.display());
}

/// A full disk, simulated with a file-size limit (`ulimit -f`: writes past it fail with EFBIG,
/// as they fail with ENOSPC on a full disk): exit code 5 naming the output, no temporary file
/// left, and the previous output (model and external data) untouched.
#[test]
fn a_full_disk_leaves_no_partial_file_and_keeps_the_old_output() {
    let dir = scratch();
    let cases = [
        // (model, calibration, 512-byte blocks allowed, files written)
        (fixture(DIGITS), fixture(DIGITS_CALIB), 20, vec!["q.onnx"]),
        (
            fixture("models/external/model.onnx"),
            fixture(DIGITS_CALIB),
            40,
            vec!["q.onnx", "q.onnx.data"],
        ),
    ];
    for (model, calib, blocks, files) in cases {
        for f in &files {
            std::fs::write(dir.path().join(f), b"previous output").unwrap();
        }
        let out = dir.path().join("q.onnx");
        // SIGXFSZ ignored: the write returns EFBIG instead of killing the process
        let script = format!(
            "trap '' XFSZ; ulimit -f {blocks}; exec \"$0\" \"$1\" \"$2\" --calib \"$3\" -q"
        );
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_onnx-quant"))
            .args([model.as_os_str(), out.as_os_str(), calib.as_os_str()])
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(code(&o), 5, "{err}");
        assert!(
            err.contains("error: cannot write `") && err.contains("File too large"),
            "{err}"
        );
        assert!(
            !err.contains(".onnx-quant-"),
            "names the temporary file: {err}"
        );
        assert_eq!(temp_leftovers(dir.path()), Vec::<String>::new());
        for f in &files {
            assert_eq!(
                std::fs::read(dir.path().join(f)).unwrap(),
                b"previous output",
                "{f}"
            );
        }
    }
}

#[test]
fn flag_values_outside_the_schemas_ranges_name_the_flag_and_the_key() {
    for (flag, value, key) in [
        ("--percentile", "0", "activations.percentile"),
        ("--bins", "8", "activations.bins"),
        ("--smoothquant", "1.5", "smoothquant_alpha"),
        ("--block-size", "70000", "weights.block_size"),
    ] {
        let mut case = digits();
        case.extra = vec![flag.into(), value.into()];
        check(case, None, 2, &[flag, key, value]);
    }
}

#[test]
fn contradictory_settings_are_refused_whichever_layer_sets_them() {
    let mut case = digits();
    case.extra = vec!["--moving-average".into()];
    check(
        case,
        None,
        2,
        &["activations.moving_average` (command line)", "minmax"],
    );
    let dir = scratch();
    let cfg = dir.path().join("q.yaml");
    std::fs::write(
        &cfg,
        "activations:\n  moving_average: true\n  method: mse\n",
    )
    .unwrap();
    let mut case = digits();
    case.extra = vec![
        "--config".into(),
        cfg.clone().into_os_string().into_string().unwrap(),
    ];
    check(case, None, 2, &["moving_average", "q.yaml"]);
}
