//! The accuracy engine without a runtime: GPTQ rounding, bias correction and equalization as
//! the report states them, per layer as the overrides say, the same bytes whatever the thread
//! count, and what the simulation measures of them.

use crate::support::*;

const ALL: [&str; 5] = [
    "--equalize",
    "--bias-correction",
    "--rounding",
    "gptq",
    "--threads",
];

#[test]
fn every_algorithm_gives_the_same_bytes_whatever_the_thread_count() {
    let dir = scratch();
    let mut outs = Vec::new();
    for threads in ["1", "2", "3"] {
        let out = dir.path().join(format!("q{threads}.onnx"));
        let report = dir.path().join(format!("r{threads}.json"));
        let mut args = ALL.to_vec();
        args.extend([threads, "--report", report.to_str().unwrap()]);
        quantize_ok(&fixture(DIGITS), &fixture(DIGITS_CALIB), &out, &args);
        outs.push(std::fs::read(&out).unwrap());
        let r = json(&report);
        let weights = r["weights"].as_array().unwrap();
        // every weight: GPTQ's output SQNR above nearest's, the mean shift taken out
        for w in weights {
            let g = &w["gptq"];
            assert!(
                g["gptq_sqnr_db"].as_f64().unwrap() > g["nearest_sqnr_db"].as_f64().unwrap(),
                "{w}"
            );
            assert!(
                w["bias_correction"]["shift_rms"].as_f64().unwrap() > 0.0,
                "{w}"
            );
        }
        let notes = r["notes"].to_string();
        assert!(notes.contains("equalize: 1 pair(s)"), "{notes}");
    }
    assert!(outs.iter().all(|o| o == &outs[0]));
}

/// High-bias absorption measures its shifts on several threads: the same bytes for 1, 2 and 3,
/// with every other algorithm on too.
#[test]
fn bias_absorption_gives_the_same_bytes_whatever_the_thread_count() {
    let dir = scratch();
    let mut outs = Vec::new();
    for threads in ["1", "2", "3"] {
        let out = dir.path().join(format!("q{threads}.onnx"));
        let mut args = ALL.to_vec();
        args.extend([threads, "--bias-absorption"]);
        quantize_ok(
            &fixture("models/high_bias.onnx"),
            &fixture("models/high_bias_calib.npy"),
            &out,
            &args,
        );
        outs.push(std::fs::read(&out).unwrap());
    }
    assert!(outs.iter().all(|o| o == &outs[0]));
}

#[test]
fn rounding_and_bias_correction_follow_the_overrides_per_layer() {
    let dir = scratch();
    let settings = dir.path().join("s.yaml");
    std::fs::write(
        &settings,
        "weights:\n  rounding: gptq\noverrides:\n  - match: {name: /conv2/Conv}\n    weights: {rounding: nearest, bias_correction: true}\n",
    )
    .unwrap();
    let (out, report) = (dir.path().join("q.onnx"), dir.path().join("r.json"));
    quantize_ok(
        &fixture(DIGITS),
        &fixture(DIGITS_CALIB),
        &out,
        &[
            "--config",
            settings.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
    );
    let r = json(&report);
    for w in r["weights"].as_array().unwrap() {
        let conv2 = w["name"] == "conv2.weight";
        assert_eq!(w.get("gptq").is_none(), conv2, "{w}");
        assert_eq!(w.get("bias_correction").is_some(), conv2, "{w}");
        if conv2 {
            assert!(
                w["decided_by"]
                    .to_string()
                    .contains("rounding: override #1"),
                "{w}"
            );
        }
    }
    // a value the key does not take names the file, line and key
    std::fs::write(
        &settings,
        "overrides:\n  - match: {name: /conv2/Conv}\n    weights: {rounding: fast}\n",
    )
    .unwrap();
    let digits = fixture(DIGITS);
    let o = run([
        digits.to_str().unwrap(),
        out.to_str().unwrap(),
        "--calib",
        fixture(DIGITS_CALIB).to_str().unwrap(),
        "--config",
        settings.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("s.yaml:3:") && stderr(&o).contains("expected auto, nearest or gptq"),
        "{}",
        stderr(&o)
    );
}

/// int4 weights on the transformer fixture's MatMuls (biases in the Add after each): GPTQ,
/// what `auto` does with calibration data, beats nearest rounding in the simulated output;
/// without calibration data `auto` rounds to nearest, and an explicit `gptq` says why.
#[test]
fn gptq_beats_nearest_int4_rounding_on_a_transformer() {
    let dir = scratch();
    let model = fixture("models/transformer.onnx");
    let calib = fixture("models/transformer_calib.npy");
    let data = fixture("models/transformer_eval.npy");
    let mut sqnr = Vec::new();
    for rounding in ["nearest", "auto"] {
        let out = dir.path().join(format!("{rounding}.onnx"));
        quantize_ok(
            &model,
            &calib,
            &out,
            &[
                "--weight-only",
                "--weight-type",
                "int4",
                "--rounding",
                rounding,
            ],
        );
        let json_out = dir.path().join(format!("{rounding}.json"));
        let o = run([
            "eval",
            model.to_str().unwrap(),
            out.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--json",
            json_out.to_str().unwrap(),
            "-q",
        ]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        sqnr.push(json(&json_out)["outputs"][0]["sqnr_db"].as_f64().unwrap());
    }
    assert!(
        sqnr[1] > sqnr[0] + 1.0,
        "GPTQ {:.2} dB vs nearest {:.2} dB",
        sqnr[1],
        sqnr[0]
    );
    let out = dir.path().join("nodata.onnx");
    let o = run([
        model.to_str().unwrap(),
        out.to_str().unwrap(),
        "--weight-only",
        "--weight-type",
        "int4",
        "--rounding",
        "gptq",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("calibration data (--calib)"),
        "{}",
        stderr(&o)
    );
}

/// `explain` and `sensitivity` take the accuracy engine's settings as `quantize` does: the
/// equalized plan is explained, and sensitivity's quantized baseline of dwnet with per-tensor
/// weights is the equalized one (tens of dB above the plain one).
#[test]
fn explain_and_sensitivity_equalize_as_quantize_does() {
    let model = fixture("mbnet/dwnet.onnx");
    let o = run(["explain", model.to_str().unwrap(), "--equalize"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(text.contains("equalize: 9 pair(s)"), "{text}");
    let dir = scratch();
    let mut baseline = Vec::new();
    for flags in [&[][..], &["--equalize", "--bias-correction"]] {
        let out = dir.path().join("s.json");
        let calib = fixture("mbnet/calib.npy");
        let mut args = vec![
            "sensitivity",
            model.to_str().unwrap(),
            "--calib",
            calib.to_str().unwrap(),
            "--target",
            "ort",
            "--per-tensor",
            "--json",
            out.to_str().unwrap(),
            "-q",
        ];
        args.extend_from_slice(flags);
        let o = run(args);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        baseline.push(json(&out)["baseline"]["sqnr_db"].as_f64().unwrap());
    }
    assert!(baseline[0] < 10.0 && baseline[1] > 25.0, "{baseline:?}");
}
