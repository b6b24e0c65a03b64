#!/usr/bin/env python3
"""Inference latency of each preset's output next to the float model, in ONNX Runtime and
OpenVINO (CPU), in one invocation.

usage: python bench/latency.py [--bin target/release/onnx-quant] [--peers ../shared/peers]
         [--work /tmp/onnx-quant-bench] [--runs 50] [--threads 2] [--python PY]

Quantizes the ResNet-18-shaped model of `peers/make_models.py` (calibration: the first 32
samples of WORK/calib512.npy, made by `peers/make_calib.py` when missing) with `--target
tensorrt`, `ort` and `openvino`, then times batch-1 inference of every model in each runtime
(warm-up runs first; the median of --runs). ONNX Runtime: CPU provider, all graph
optimisations, --threads intra-op threads. OpenVINO: CPU, f32 inference precision (so that int8
is compared with f32, not bf16), --threads inference threads. TensorRT needs a GPU: its preset is
timed in the CPU runtimes only, where it is not meant to be fast.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def median_ms(fn, runs):
    for _ in range(5):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "onnx-quant"))
    ap.add_argument("--peers", default=os.path.join(ROOT, "..", "shared", "peers"))
    ap.add_argument("--work", default="/tmp/onnx-quant-bench")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--python", default=sys.executable)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    model = os.path.join(a.work, "resnet18.onnx")
    calib = os.path.join(a.work, "calib512.npy")
    if not os.path.exists(model):
        subprocess.run([a.python, os.path.join(a.peers, "make_models.py"), "--out", a.work, "--models", "resnet18"], check=True)
    if not os.path.exists(calib):
        subprocess.run([a.python, os.path.join(a.peers, "make_calib.py"), model, "--n", "512", "--out", calib], check=True)
    models = {"fp32": model}
    for target in ["tensorrt", "ort", "openvino"]:
        out = os.path.join(a.work, f"latency-{target}.onnx")
        subprocess.run([a.bin, model, out, "--calib", calib, "--max-samples", "32", "--target", target, "-q"], check=True)
        models[target] = out

    import numpy as np
    import onnxruntime as ort
    import openvino as ov
    x = np.ascontiguousarray(np.load(calib, mmap_mode="r")[:1])
    rows = []
    core = ov.Core()
    for name, path in models.items():
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.log_severity_level = 3
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        ort_ms = median_ms(lambda: s.run(None, {"input": x}), a.runs)
        c = core.compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": a.threads})
        req = c.create_infer_request()
        ov_ms = median_ms(lambda: req.infer({0: x}), a.runs)
        rows.append((name, ort_ms, ov_ms))
        print(json.dumps({"model": name, "ort_ms": ort_ms, "openvino_ms": ov_ms}), file=sys.stderr)
    base = {r[0]: r for r in rows}["fp32"]
    print(f"\n### Latency, ResNet-18 batch 1, {a.threads} threads, median of {a.runs} runs, {time.strftime('%Y-%m-%d')}\n")
    print("| model | ONNX Runtime ms | vs fp32 | OpenVINO ms | vs fp32 |")
    print("|---|---|---|---|---|")
    for name, o, v in rows:
        print(f"| {name} | {o:.1f} | {base[1] / o:.2f}x | {v:.1f} | {base[2] / v:.2f}x |")


if __name__ == "__main__":
    main()
