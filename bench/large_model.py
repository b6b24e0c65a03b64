#!/usr/bin/env python3
"""Large-model benchmark: a model over 2 GB (8 MatMul + Relu layers, 8192 x 8192 float32
weights in external data, 2.15 GB) quantized by onnx-quant and by ONNX Runtime's
quantize_static (MinMax, QDQ, external data) on the same 8 samples; wall time and peak RSS of each
process, output sizes, and the output SQNR of each against fp32 in ONNX Runtime on 4 other samples.

usage: python bench/large_model.py [--bin target/release/onnx-quant] [--work /tmp/onnx-quant-big]
Needs numpy, onnx and onnxruntime (the tests' .venv has them) and about 12 GB of RAM.
"""
import argparse
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
N_LAYERS, K, SEED = 8, 8192, 0


def make(work):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    path = os.path.join(work, "big.onnx")
    if os.path.exists(path):
        return path
    rng = np.random.default_rng(SEED)
    nodes, inits, x = [], [], "x"
    for i in range(N_LAYERS):
        w = (rng.standard_normal((K, K), dtype=np.float32) / np.sqrt(K)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"h{i}"], name=f"mm{i}"))
        nodes.append(helper.make_node("Relu", [f"h{i}"], [f"r{i}"], name=f"relu{i}"))
        x = f"r{i}"
    g = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, K])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, path, save_as_external_data=True, all_tensors_to_one_file=True, location="big.onnx.data")
    np.save(os.path.join(work, "calib.npy"), rng.standard_normal((12, 1, K), dtype=np.float32))
    return path


ORT_SCRIPT = r'''
import sys, numpy as np
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static
class R(CalibrationDataReader):
    def __init__(s): s.x = np.load(sys.argv[2], mmap_mode="r"); s.k = 0
    def get_next(s):
        if s.k >= 8: return None
        s.k += 1; return {"x": np.ascontiguousarray(s.x[s.k - 1])}
quantize_static(sys.argv[1], sys.argv[3], R(), quant_format=QuantFormat.QDQ,
                calibrate_method=CalibrationMethod.MinMax, use_external_data_format=True)
'''


def timed(cmd):
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")
    wall = rss = None
    for line in p.stderr.splitlines():
        if "Elapsed (wall clock)" in line:
            t = line.split()[-1].split(":")
            wall = sum(float(v) * 60 ** i for i, v in enumerate(reversed(t)))
        if "Maximum resident set size" in line:
            rss = int(line.split()[-1]) / 1e6
    return wall, rss


def size(path):
    return sum(os.path.getsize(os.path.join(os.path.dirname(path), f)) for f in os.listdir(os.path.dirname(path))
               if f.startswith(os.path.basename(path)))


def sqnr(ref, quant, x):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    a, b = ort.InferenceSession(ref, so), ort.InferenceSession(quant, so)
    r = np.concatenate([a.run(None, {"x": v})[0] for v in x])
    q = np.concatenate([b.run(None, {"x": v})[0] for v in x])
    return 10 * np.log10((r ** 2).sum() / ((r - q) ** 2).sum())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "onnx-quant"))
    ap.add_argument("--work", default="/tmp/onnx-quant-big")
    a = ap.parse_args()
    for d in ("oq", "ort"):
        # ONNX Runtime appends to an existing external data file: start from empty folders
        shutil.rmtree(os.path.join(a.work, d), ignore_errors=True)
        os.makedirs(os.path.join(a.work, d))
    model = make(a.work)
    calib = os.path.join(a.work, "calib.npy")
    x = np.load(calib)[8:12]
    msize = size(model) / 1e9
    rows = []
    out = os.path.join(a.work, "oq", "q.onnx")
    w, r = timed([a.bin, model, out, "--calib", calib, "--max-samples", "8", "-q"])
    rows.append(("onnx-quant", w, r, size(out) / 1e9, sqnr(model, out, x)))
    out = os.path.join(a.work, "ort", "q.onnx")
    w, r = timed([sys.executable, "-c", ORT_SCRIPT, model, calib, out])
    rows.append(("ORT quantize_static (MinMax)", w, r, size(out) / 1e9, sqnr(model, out, x)))
    print(f"model: {N_LAYERS} x MatMul {K}x{K} float32, {msize:.2f} GB with external data; 8 calibration samples")
    print("| tool | wall s | peak RSS GB | peak / model size | output GB | output SQNR vs fp32 dB |")
    print("|---|---|---|---|---|---|")
    for name, w, r, o, s in rows:
        print(f"| {name} | {w:.1f} | {r:.2f} | {r / msize:.2f} | {o:.2f} | {s:.1f} |")


if __name__ == "__main__":
    main()
