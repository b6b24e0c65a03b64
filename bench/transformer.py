#!/usr/bin/env python3
"""Transformer benchmark: the vision transformer of fixtures/vit (trained on scikit-learn's
digits, 95.8 % top-1) quantized by onnx-quant in every mode and by ONNX Runtime's
quantize_static, all on the same 128 calibration images, each output run in ONNX Runtime on the
360 held-out digits.

usage: python bench/transformer.py [--bin target/release/onnx-quant] [--work DIR] [--python PY]

Per row: top-1 accuracy and its drop from fp32, output SQNR against fp32 (both in ONNX
Runtime), the process's wall time, and the file size. Prints a markdown table
(docs/benchmarks.md holds a copy).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIX = os.path.join(ROOT, "fixtures")
MODEL = os.path.join(FIX, "vit", "vit.onnx")
CALIB = os.path.join(FIX, "digits", "calib.npy")
EVAL_X = os.path.join(FIX, "digits", "eval_x.npy")
EVAL_Y = os.path.join(FIX, "digits", "eval_y.npy")

ONNX_QUANT = [
    ("onnx-quant int8, tensorrt", ["--target", "tensorrt"]),
    ("onnx-quant int8, ort", ["--target", "ort"]),
    ("onnx-quant int8, openvino", ["--target", "openvino"]),
    ("onnx-quant int16 activations, ort", ["--target", "ort", "--activation-type", "int16"]),
    ("onnx-quant int8, tensorrt, --smoothquant 0.5", ["--target", "tensorrt", "--smoothquant", "0.5"]),
    ("onnx-quant fp8 e4m3 activations and weights, tensorrt", ["--activation-type", "fp8", "--weight-type", "fp8"]),
    ("onnx-quant int8 weight-only", ["--weight-only"]),
    ("onnx-quant int4 weight-only, blocks of 16", ["--weight-only", "--weight-type", "int4", "--block-size", "16"]),
    ("onnx-quant int4 weight-only, blocks of 32", ["--weight-only", "--weight-type", "int4", "--block-size", "32"]),
    ("onnx-quant int4 weight-only, per channel", ["--weight-only", "--weight-type", "int4"]),
    ("onnx-quant uint4 weight-only, blocks of 16 (ort)",
     ["--weight-only", "--weight-type", "uint4", "--block-size", "16", "--target", "ort"]),
]
ORT = [("ORT quantize_static MinMax", "minmax"), ("ORT quantize_static Entropy", "entropy"),
       ("ORT quantize_static Percentile", "percentile")]


def outputs(path, x):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def timed(cmd):
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    return time.time() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "onnx-quant"))
    ap.add_argument("--work", default=tempfile.mkdtemp(prefix="onnx-quant-vit-"))
    ap.add_argument("--python", default=sys.executable, help="Python with onnxruntime, for quantize_static")
    a = ap.parse_args()
    x, y = np.load(EVAL_X), np.load(EVAL_Y)
    ref = outputs(MODEL, x)
    fp32 = (ref.argmax(1) == y).mean() * 100
    rows = [("fp32", fp32, None, None, os.path.getsize(MODEL))]
    for i, (name, args) in enumerate(ONNX_QUANT):
        out = os.path.join(a.work, f"oq{i}.onnx")
        calib = [] if "--weight-only" in args else ["--calib", CALIB]
        secs = timed([a.bin, MODEL, out, *calib, *args, "-q"])
        rows.append((name, out, secs))
    for name, method in ORT:
        out = os.path.join(a.work, f"ort_{method}.onnx")
        secs = timed([a.python, os.path.join(HERE, "ort_quantize.py"), MODEL, CALIB, out,
                      "--method", method, "--n", "128"])
        rows.append((name, out, secs))
    print(f"fixtures/vit/vit.onnx, 128 calibration images, 360 held-out digits; fp32 top-1 {fp32:.2f} %\n")
    print("| quantized by | top-1 % | drop, points | output SQNR vs fp32 dB | wall s | size KB |")
    print("|---|---|---|---|---|---|")
    print(f"| fp32 | {fp32:.2f} | - | - | - | {os.path.getsize(MODEL) / 1024:.1f} |")
    for name, out, secs in rows[1:]:
        q = outputs(out, x)
        acc = (q.argmax(1) == y).mean() * 100
        sqnr = 10 * np.log10((ref ** 2).sum() / ((ref - q) ** 2).sum())
        print(f"| {name} | {acc:.2f} | {fp32 - acc:.2f} | {sqnr:.1f} | {secs:.2f} | {os.path.getsize(out) / 1024:.1f} |")


if __name__ == "__main__":
    main()
