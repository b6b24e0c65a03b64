//! PNG and JPEG files as calibration data: decoded, resized and normalised into the model's
//! input, with every failure a one-line error naming the file.

use std::path::{Path, PathBuf};

use crate::cli_errors::{Case, check};
use crate::support::*;

/// The digits PNGs (pixels · 15, see fixtures/digits/make_images.py) with the flags that undo
/// that scaling.
const DIGIT_FLAGS: [&str; 6] = ["--pixel-range", "0-255", "--mean", "72", "--std", "96"];

/// Quantizes `model` from the 32 PNG digits and from the first `samples` samples of calib.npy
/// (into `dir`), asserts the two models are byte-identical, and returns the array's.
fn assert_images_quantize_like_the_array(model: &Path, samples: usize, dir: &Path) -> PathBuf {
    let (from_images, from_npy) = (dir.join("img.onnx"), dir.join("npy.onnx"));
    quantize_ok(model, &fixture("digits/images"), &from_images, &DIGIT_FLAGS);
    let n = samples.to_string();
    quantize_ok(
        model,
        &fixture(DIGITS_CALIB),
        &from_npy,
        &["--max-samples", &n],
    );
    assert_eq!(
        std::fs::read(&from_images).unwrap(),
        std::fs::read(&from_npy).unwrap()
    );
    from_npy
}

/// The 32 PNG digits give the very tensors the first 32 rows of calib.npy hold: the statistics
/// and the quantized model are byte-identical.
#[test]
fn png_digits_calibrate_exactly_like_the_arrays_they_come_from() {
    let dir = scratch();
    let model = fixture(DIGITS);
    let from_npy = assert_images_quantize_like_the_array(&model, 32, dir.path());
    // without the scaling the ranges differ: the flags are applied, not ignored
    let plain = dir.path().join("plain.onnx");
    quantize_ok(&model, &fixture("digits/images"), &plain, &[]);
    assert_ne!(
        std::fs::read(&plain).unwrap(),
        std::fs::read(&from_npy).unwrap()
    );
}

fn stats_samples(model: &Path, calib: &Path, extra: &[&str]) -> u64 {
    let dir = scratch();
    let stats = dir.path().join("s.json");
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "calibrate".as_ref(),
        model.as_os_str(),
        "--calib".as_ref(),
        calib.as_os_str(),
        "--stats".as_ref(),
        stats.as_os_str(),
        "-q".as_ref(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let o = run(&args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    v["samples"].as_u64().unwrap()
}

/// JPEG and colour PNG files of other sizes are converted to grey, resized and cropped to the
/// model's 8 × 8; a single image file is a data set of one sample.
#[test]
fn jpeg_and_colour_images_of_any_size_are_resized() {
    let dir = scratch();
    let grey = image::GrayImage::from_fn(16, 12, |x, y| image::Luma([(x * 13 + y * 7) as u8]));
    image::DynamicImage::ImageLuma8(grey)
        .save(dir.path().join("a.jpg"))
        .unwrap();
    let rgb = image::RgbImage::from_fn(30, 20, |x, y| image::Rgb([x as u8 * 8, y as u8 * 12, 90]));
    image::DynamicImage::ImageRgb8(rgb.clone())
        .save(dir.path().join("b.JPEG"))
        .unwrap();
    image::DynamicImage::ImageRgb8(rgb)
        .save(dir.path().join("c.png"))
        .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not data").unwrap();
    let model = fixture(DIGITS);
    let mut flags = DIGIT_FLAGS.to_vec();
    flags.extend(["--crop-ratio", "0.875"]);
    assert_eq!(stats_samples(&model, dir.path(), &flags), 3);
    assert_eq!(
        stats_samples(&model, &dir.path().join("c.png"), &["--resize", "stretch"]),
        1
    );
    let out = dir.path().join("q.onnx");
    quantize_ok(&model, dir.path(), &out, &flags);
}

/// The digits model with its batch fixed to `batch`.
fn digits_with_batch(dir: &Path, batch: i64) -> PathBuf {
    use onnx_quant::proto::{tensor_shape_proto::dimension::Value, type_proto};
    let mut m = load_model(&fixture(DIGITS));
    let input = &mut m.graph.as_mut().unwrap().input[0];
    let Some(type_proto::Value::TensorType(t)) = &mut input.r#type.as_mut().unwrap().value else {
        panic!("the digits input is a tensor")
    };
    t.shape.as_mut().unwrap().dim[0].value = Some(Value::DimValue(batch));
    let path = dir.join(format!("digits_b{batch}.onnx"));
    save_model(&m, &path);
    path
}

/// An input of fixed batch 4 takes 4 images per sample, in natural order: the 32 PNG digits
/// give the model the array's first 32 rows give; images after the last full batch are left
/// out with a warning.
#[test]
fn a_fixed_batch_takes_that_many_images_per_sample() {
    let dir = scratch();
    let model = digits_with_batch(dir.path(), 4);
    assert_images_quantize_like_the_array(&model, 8, dir.path());
    let some = dir.path().join("some");
    std::fs::create_dir(&some).unwrap();
    for i in 0..10 {
        let name = format!("digit_{i:03}.png");
        std::fs::copy(fixture("digits/images").join(&name), some.join(&name)).unwrap();
    }
    let out = dir.path().join("q.onnx");
    let o = quantize_ok(&model, &some, &out, &DIGIT_FLAGS);
    let err = stderr(&o);
    assert!(
        err.contains("warning: 2 image(s) of")
            && err.contains("takes 4, and 10 image(s) make 2 full sample(s)"),
        "{err}"
    );
    assert_eq!(stats_samples(&model, &some, &DIGIT_FLAGS), 2);
    // a single image cannot fill a batch of 4
    fails(
        &model,
        &some.join("digit_000.png"),
        &[],
        4,
        &["digit_000.png", "takes 4: give a directory"],
    );
}

/// Runs `model` on `calib` expecting failure `code` with one error line holding `want`, and
/// nothing written or changed ([`crate::cli_errors::check`]).
fn fails(model: &Path, calib: &Path, extra: &[&str], want_code: i32, want: &[&str]) {
    let mut case = Case::new(model.to_path_buf(), calib.to_path_buf());
    case.extra = extra.iter().map(|s| s.to_string()).collect();
    check(case, None, want_code, want);
}

#[test]
fn bad_images_and_image_options_are_clear_errors() {
    let dir = scratch();
    let model = fixture(DIGITS);
    // not an image at all: refused when the directory is scanned
    let fake = dir.path().join("fake");
    std::fs::create_dir(&fake).unwrap();
    std::fs::write(fake.join("x.png"), "hello").unwrap();
    fails(&model, &fake, &[], 4, &["x.png", "not a readable image"]);
    // a truncated PNG: its header reads, its pixels do not (found when its sample is read)
    let cut = dir.path().join("cut");
    std::fs::create_dir(&cut).unwrap();
    let png = std::fs::read(fixture("digits/images/digit_000.png")).unwrap();
    std::fs::write(cut.join("digit.png"), &png[..png.len() / 2]).unwrap();
    fails(&model, &cut, &[], 4, &["digit.png", "not a readable image"]);
    // image options with array data would silently do nothing
    fails(
        &model,
        &fixture(DIGITS_CALIB),
        &["--mean", "0.5"],
        4,
        &["calib.npy", "holds no image"],
    );
    // inputs images cannot feed
    let images = fixture("digits/images");
    fails(
        &fixture("models/two_inputs.onnx"),
        &images,
        &[],
        4,
        &["digit_000.png", "a model with one input; this one has 2"],
    );
    fails(
        &fixture("models/transformer.onnx"),
        &images,
        &[],
        4,
        &["input `x` is float32 [?,16,32]", "rank 4"],
    );
    fails(
        &model,
        &images,
        &["--mean", "1,2"],
        4,
        &["--mean gives 2 values for an input of 1 channel(s)"],
    );
    fails(
        &model,
        &images,
        &["--image-size", "9x9"],
        4,
        &["does not fit input `input`"],
    );
    for (flag, value) in [
        ("--crop-ratio", "1.5"),
        ("--std", "0"),
        ("--image-size", "0x3"),
        ("--pixel-range", "0-2"),
    ] {
        let o = run([
            model.as_os_str(),
            dir.path().join("o.onnx").as_os_str(),
            "--calib".as_ref(),
            images.as_os_str(),
            flag.as_ref(),
            value.as_ref(),
        ]);
        assert_eq!(code(&o), 2, "{flag} {value}: {}", stderr(&o));
    }
}
