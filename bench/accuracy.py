#!/usr/bin/env python3
"""Accuracy benchmark: onnx-quant's simulation against ONNX Runtime, per-preset accuracy, and
automatic mixed precision next to ONNX Runtime's quantize_static.

usage: python bench/accuracy.py [--bin target/release/onnx-quant] [--peers ../shared/peers]
         [--work /tmp/onnx-quant-bench] [--python PY]

1. Simulation: for the digits fixture and the ResNet-18-shaped model of `peers/make_models.py`
   (128 calibration samples, 64 other samples to evaluate on), each preset's output is run by
   `onnx-quant eval --save-outputs` (the float model in tract, the quantized one simulated) and
   by ONNX Runtime (with its int8 kernels, and with graph optimisations off: the Q/DQ arithmetic
   as written). Prints cosine and SQNR between the simulated and the ORT outputs, and the output
   SQNR against fp32 that each reports.
2. Mixed precision on fixtures/outlier (plain int8 loses points there): every strategy of
   `--max-top1-drop 0.5`, with the float layers it keeps, the configurations it measured, its
   time, and the top-1 accuracy of its output on the evaluation set in ONNX Runtime; ORT's
   quantize_static (minmax and entropy) on the same model and calibration samples alongside.
Prints markdown tables (docs/accuracy.md holds a copy).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import calibration  # noqa: E402  (ensure_data: the ResNet-18 model and its samples)

FIX = os.path.join(ROOT, "fixtures")


def run(cmd):
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    return p.stdout, time.time() - t


def ort_outputs(path, x, optimize=True):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.stack([s.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def compare(a, b):
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    cos = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))
    noise = float(((a - b) ** 2).sum())
    sqnr = float("inf") if noise == 0 else float(10 * np.log10((b ** 2).sum() / noise))
    return cos, sqnr


def top1(out, y):
    return 100.0 * float((out.reshape(len(y), -1).argmax(1) == y).mean())


def simulation_rows(a, work):
    model, calib = calibration.ensure_data(argparse.Namespace(work=a.work, peers=a.peers, samples=[512]), a.python)
    x = np.load(calib, mmap_mode="r")
    r_calib, r_eval = os.path.join(work, "r_calib.npy"), os.path.join(work, "r_eval.npy")
    np.save(r_calib, np.ascontiguousarray(x[:128]))
    np.save(r_eval, np.ascontiguousarray(x[448:512]))
    cases = [("digits CNN", os.path.join(FIX, "digits/digits_cnn.onnx"), os.path.join(FIX, "digits/calib.npy"),
              os.path.join(FIX, "digits/eval_x.npy")),
             ("ResNet-18", model, r_calib, r_eval)]
    rows = []
    for name, m, c, e in cases:
        ev = np.load(e)
        for target in ("tensorrt", "ort", "openvino"):
            q = os.path.join(work, f"sim-{target}.onnx")
            run([a.bin, m, q, "--calib", c, "--target", target, "-q"])
            sim, report = os.path.join(work, "sim.npz"), os.path.join(work, "eval.json")
            _, secs = run([a.bin, "eval", m, q, "--data", e, "--save-outputs", sim, "--json", report, "-q"])
            z = np.load(sim)
            s = z[z.files[0]]
            ours = json.load(open(report))["outputs"][0]["sqnr_db"]
            kern, plain = ort_outputs(q, ev, True), ort_outputs(q, ev, False)
            ref = ort_outputs(m, ev, True)
            rows.append({"model": name, "target": target, "samples": len(ev),
                         "vs_ort": compare(s, kern), "vs_ort_unoptimized": compare(s, plain),
                         "sqnr_simulated": ours, "sqnr_ort": compare(kern, ref)[1], "eval_s": secs})
            print(f"[bench] {name} {target}: {rows[-1]}", file=sys.stderr)
    return rows


def mixed_rows(a, work):
    m = os.path.join(FIX, "outlier/digits_outlier.onnx")
    c, y = os.path.join(FIX, "outlier/calib.npy"), os.path.join(FIX, "outlier/calib_y.npy")
    ex, ey = np.load(os.path.join(FIX, "digits/eval_x.npy")), np.load(os.path.join(FIX, "digits/eval_y.npy"))
    fp32 = top1(ort_outputs(m, ex), ey)
    rows = []
    q = os.path.join(work, "plain.onnx")
    _, secs = run([a.bin, m, q, "--calib", c, "-q"])
    rows.append({"how": "onnx-quant, all int8 (default mse)", "float": 0, "evals": 0, "s": secs,
                 "top1": top1(ort_outputs(q, ex), ey)})
    for strategy in ("sensitivity", "leave-one-out", "greedy", "all"):
        q, rep = os.path.join(work, f"mixed-{strategy}.onnx"), os.path.join(work, f"mixed-{strategy}.json")
        _, secs = run([a.bin, m, q, "--calib", c, "--labels", y, "--max-top1-drop", "0.5",
                       "--mixed-strategy", strategy, "--report", rep, "-q"])
        mp = json.load(open(rep))["mixed_precision"]
        chosen = mp["outcomes"][mp["chosen"]]
        rows.append({"how": f"onnx-quant --max-top1-drop 0.5 --mixed-strategy {strategy}",
                     "float": len(chosen["float"]), "layers": chosen["float"], "evals": mp["evaluations"],
                     "s": secs, "top1": top1(ort_outputs(q, ex), ey)})
    for method in ("minmax", "entropy"):
        q = os.path.join(work, f"ort-{method}.onnx")
        _, secs = run([a.python, os.path.join(HERE, "ort_quantize.py"), m, c, q, "--method", method, "--n", "512"])
        rows.append({"how": f"ORT quantize_static {method}", "float": 0, "evals": 0, "s": secs,
                     "top1": top1(ort_outputs(q, ex), ey)})
    return fp32, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "onnx-quant"))
    ap.add_argument("--peers", default=os.path.join(ROOT, "..", "shared", "peers"))
    ap.add_argument("--work", default="/tmp/onnx-quant-bench")
    ap.add_argument("--python", default=sys.executable, help="a Python with numpy, onnx and onnxruntime")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    work = tempfile.mkdtemp(dir=a.work)
    sim = simulation_rows(a, work)
    fp32, mixed = mixed_rows(a, work)
    print(f"\n### Simulation vs ONNX Runtime ({platform.machine()}, {os.cpu_count()} CPUs), {time.strftime('%Y-%m-%d')}\n")
    print("| model | target | samples | cosine vs ORT | SQNR vs ORT dB | cosine vs ORT unoptimized | SQNR dB |"
          " output SQNR simulated | in ORT | eval s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in sim:
        print(f"| {r['model']} | {r['target']} | {r['samples']} | {r['vs_ort'][0]:.7f} | {r['vs_ort'][1]:.1f} | "
              f"{r['vs_ort_unoptimized'][0]:.7f} | {r['vs_ort_unoptimized'][1]:.1f} | {r['sqnr_simulated']:.1f} | "
              f"{r['sqnr_ort']:.1f} | {r['eval_s']:.1f} |")
    print(f"\n### Mixed precision on fixtures/outlier (fp32 top-1 {fp32:.2f} % on the 360 evaluation images)\n")
    print("| run | float layers | configurations | wall s | top-1 % (ORT) | drop |")
    print("|---|---|---|---|---|---|")
    for r in mixed:
        layers = f" ({', '.join(r['layers'])})" if r.get("layers") else ""
        print(f"| {r['how']} | {r['float']}{layers} | {r['evals']} | {r['s']:.2f} | {r['top1']:.2f} | "
              f"{fp32 - r['top1']:.2f} |")


if __name__ == "__main__":
    main()
