#!/usr/bin/env python3
"""Accuracy-engine benchmark: cross-layer equalization, high-bias absorption, bias correction and
GPTQ rounding, alone and together, on every trained fixture, next to ONNX Runtime's
quantize_static; and what they cost on the ResNet-18-shaped model of ../shared/peers at 128
samples.

usage: python bench/accuracy_engine.py [--bin target/release/onnx-quant] [--work /tmp/onnx-quant-engine]
         [--peers ../shared/peers] [--quark] [--only FIXTURE,...] [--skip-cost] [--repeat 3]

1. Accuracy. Fixtures: the digits CNN and the digits ViT (fixtures/digits data: 64 calibration
   images, 360 held out), mbnet (MobileNet/EfficientNet-Lite-style, ReLU6) and dwnet (the same
   network trained with ReLU, its channels spread as BatchNorm-trained networks' are), both on
   fixtures/mbnet's 64 calibration and 256 held-out images, and high_bias (a block whose first
   layer has channels on a high BatchNorm bias, fixtures/models; 32 + 32 samples, no labels: top-1
   is agreement with fp32). Weights: int8 per channel, int8 per tensor, int4 per channel, int4 in
   blocks of 32 (int4: the tensorrt target only). Each variant (plain: --rounding nearest;
   --equalize without absorption; --bias-absorption; --equalize, which brings absorption;
   --bias-correction, each with nearest rounding; --rounding gptq; all) is quantized with
   the release binary (wall and peak RSS of the process) and run in ONNX Runtime with graph
   optimizations off (exact Q/DQ semantics) and on: top-1 on the held-out labels and output
   SQNR against the fp32 model. ONNX Runtime's quantize_static (QDQ, MinMax, per tensor and per
   channel) runs on the same samples; with --quark, AMD Quark too (its default setup, and its
   CNN recipe CLE + AdaRound), through ../shared/peers/quantize.py
   (`../shared/peers/setup.sh --with-quark` installs it).
2. Cost: the ResNet-18-shaped model, 128 samples: plain min/max against every algorithm on,
   medians of `--repeat` runs (wall, peak RSS).
Prints markdown tables (docs/accuracy.md and docs/benchmarks.md hold copies).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from calibration import ensure_data, measured, median_run  # noqa: E402

FIX = os.path.join(ROOT, "fixtures")
FIXTURES = [  # (name, model, calibration samples, held-out samples, their labels or None)
    ("digits CNN", "digits/digits_cnn.onnx", "digits/calib.npy", "digits/eval_x.npy", "digits/eval_y.npy"),
    ("digits ViT", "vit/vit.onnx", "digits/calib.npy", "digits/eval_x.npy", "digits/eval_y.npy"),
    ("mbnet", "mbnet/mbnet.onnx", "mbnet/calib.npy", "mbnet/eval_x.npy", "mbnet/eval_y.npy"),
    ("dwnet", "mbnet/dwnet.onnx", "mbnet/calib.npy", "mbnet/eval_x.npy", "mbnet/eval_y.npy"),
    # no labels: top-1 is agreement with fp32
    ("high_bias", "models/high_bias.onnx", "models/high_bias_calib.npy", "models/high_bias_eval.npy", None),
]
ALL = ["--equalize", "--bias-correction", "--rounding", "gptq"]  # --equalize brings absorption
NEAREST = ["--rounding", "nearest"]  # the default (auto) already takes GPTQ for 4-bit weights
NO_ABSORPTION = "bias_absorption: off\n"  # a variant's settings, added to the weights' own
VARIANTS = [("plain", NEAREST), ("equalize", ["--equalize", NO_ABSORPTION, *NEAREST]),
            ("absorption", ["--bias-absorption", *NEAREST]),
            ("equalize + absorption", ["--equalize", *NEAREST]),
            ("bias correction", ["--bias-correction", *NEAREST]), ("gptq", ["--rounding", "gptq"]),
            ("all", ALL)]


def weights():
    """(name, flags, settings file text, targets) of each weight setting."""
    return [("int8", [], "", ["tensorrt", "ort"]),
            ("int8 per tensor", [], "weights:\n  per_channel: false\n", ["tensorrt", "ort"]),
            ("int4", ["--weight-type", "int4"], "", ["tensorrt"]),
            ("int4 blocks of 32", ["--weight-type", "int4", "--block-size", "32"], "", ["tensorrt"])]


def flags_with_settings(work, flags, settings):
    """`flags` with the settings text (and any a variant adds: its lines ending in a newline)
    written to one --config file."""
    settings += "".join(f for f in flags if f.endswith("\n"))
    flags = [f for f in flags if not f.endswith("\n")]
    if not settings:
        return flags
    path = os.path.join(work, f"settings-{abs(hash(settings))}.yaml")
    with open(path, "w") as fh:
        fh.write(settings)
    return [*flags, "--config", path]


def cpu_flags():
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        return "unknown"
    return " ".join(f for f in ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"] if f in flags)


def session(path, exact):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    if exact:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def outputs(path, x, exact):
    s = session(path, exact)
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def score(path, x, y, ref):
    row = {}
    for exact in (True, False):
        o = outputs(path, x, exact)
        key = "exact" if exact else "ort"
        row[key + "_top1"] = 100 * float((o.argmax(1) == y).mean())
        row[key + "_sqnr"] = float(10 * np.log10((ref ** 2).sum() / max(((ref - o) ** 2).sum(), 1e-30)))
    return row


def ort_static(model, calib, out, per_channel):
    code = f"""
import numpy as np, onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
x = np.load({calib!r}, mmap_mode="r")
m = onnx.load({model!r})
name = m.graph.input[0].name
class R(CalibrationDataReader):
    def __init__(self): self.k = 0
    def get_next(self):
        if self.k >= len(x): return None
        self.k += 1
        return {{name: np.ascontiguousarray(x[self.k - 1:self.k])}}
quantize_static({model!r}, {out!r}, R(), quant_format=QuantFormat.QDQ, per_channel={per_channel})
"""
    return measured([sys.executable, "-c", code])[0]


def quark(peers, model, calib, out, tool):
    """AMD Quark through ../shared/peers/quantize.py (its own venv): `quark` is its default
    setup (per-tensor weights, CLE), `quark-best` its CNN accuracy recipe (per-channel, CLE +
    AdaRound, 1000 iterations on the CPU)."""
    return measured([sys.executable, os.path.join(peers, "quantize.py"), "--tool", tool, "--model", model,
                     "--calib", calib, "--out", out])[0]


def accuracy(a, rows):
    only = set(filter(None, a.only.split(",")))
    for name, model, calib, eval_x, eval_y in FIXTURES:
        if only and name not in only:
            continue
        model = os.path.join(FIX, model)
        calib = os.path.join(FIX, calib)
        x = np.load(os.path.join(FIX, eval_x))
        ref = outputs(model, x, True)
        y = np.load(os.path.join(FIX, eval_y)) if eval_y else ref.argmax(1)
        fp32 = 100 * float((ref.argmax(1) == y).mean())
        rows.append(dict(fixture=name, weights="fp32", target="-", variant="-", exact_top1=fp32,
                         ort_top1=fp32, exact_sqnr=float("inf"), ort_sqnr=float("inf")))
        for wname, wflags, settings, targets in weights():
            for target in targets:
                for vname, vflags in VARIANTS:
                    vflags = flags_with_settings(a.work, [*wflags, *vflags], settings)
                    out = os.path.join(a.work, f"{os.path.basename(model)}-{wname}-{target}-{vname}.onnx".replace(" ", "_"))
                    st, _, err = measured([a.bin, model, out, "--calib", calib, "--target", target, "-q",
                                           *vflags])
                    row = dict(fixture=name, weights=wname, target=target, variant=vname,
                               wall=st["wall"], peak_mb=st["peak_mb"])
                    if st["rc"] != 0:
                        row["error"] = err.strip().splitlines()[-1] if err.strip() else f"exit {st['rc']}"
                    else:
                        row.update(score(out, x, y, ref))
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        for pc in (False, True):
            out = os.path.join(a.work, f"{os.path.basename(model)}-ort-static-pc{int(pc)}.onnx")
            st = ort_static(model, calib, out, pc)
            row = dict(fixture=name, weights="int8" + ("" if pc else " per tensor"), target="ORT quantize_static",
                       variant="MinMax", wall=st["wall"], peak_mb=st["peak_mb"])
            row.update(score(out, x, y, ref) if st["rc"] == 0 else {"error": f"exit {st['rc']}"})
            rows.append(row)
            print(json.dumps(row), flush=True)
        for tool, weights_name, recipe in [("quark", "int8 per tensor", "default (CLE)"),
                                           ("quark-best", "int8", "CLE + AdaRound")]:
            if not a.quark:
                break
            out = os.path.join(a.work, f"{os.path.basename(model)}-{tool}.onnx")
            st = quark(a.peers, model, calib, out, tool)
            row = dict(fixture=name, weights=weights_name, target="AMD Quark", variant=recipe,
                       wall=st["wall"], peak_mb=st["peak_mb"])
            row.update(score(out, x, y, ref) if st["rc"] == 0 and os.path.exists(out)
                       else {"error": f"exit {st['rc']}"})
            rows.append(row)
            print(json.dumps(row), flush=True)


def cost(a):
    model, calib = ensure_data(argparse.Namespace(work=a.work, peers=a.peers, samples=[128]), sys.executable)
    out = []
    for name, flags in [("plain min/max", NEAREST), ("--equalize (with absorption)", ["--equalize"]),
                        ("--bias-correction", ["--bias-correction"]), ("--rounding gptq", ["--rounding", "gptq"]),
                        ("all", ALL)]:
        report = os.path.join(a.work, "cost-report.json")
        st, _, err = median_run([a.bin, model, os.path.join(a.work, "cost.onnx"), "--calib", calib,
                                 "--max-samples", "128", "-q", "--report", report, *flags], a.repeat)
        stages = dict(json.load(open(report))["timings_ms"]) if st["rc"] == 0 else {}
        out.append(dict(name=name, wall=st["wall"], peak_mb=st["peak_mb"], walls=st.get("walls"),
                        stages=stages, error=None if st["rc"] == 0 else err))
        print(json.dumps(out[-1]), flush=True)
    return out


def fmt(v, digits=2):
    return "-" if v is None else ("inf" if v == float("inf") else f"{v:.{digits}f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "onnx-quant"))
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "onnx-quant-engine"))
    ap.add_argument("--peers", default=os.path.join(ROOT, "..", "shared", "peers"))
    ap.add_argument("--quark", action="store_true",
                    help="also AMD Quark, through ../shared/peers/quantize.py (setup.sh --with-quark)")
    ap.add_argument("--only", default="", help="fixtures to run, comma-separated names (default: all)")
    ap.add_argument("--skip-cost", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, flags: {cpu_flags()}")
    rows = []
    accuracy(a, rows)
    print("\n| fixture | weights | target | variant | top-1 exact | top-1 ORT | SQNR exact dB | SQNR ORT dB | wall s | peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['fixture']} | {r['weights']} | {r['target']} | {r['variant']} | error: {r['error']} | | | | | |")
            continue
        print(f"| {r['fixture']} | {r['weights']} | {r['target']} | {r['variant']} | {fmt(r['exact_top1'])} | "
              f"{fmt(r['ort_top1'])} | {fmt(r['exact_sqnr'], 1)} | {fmt(r['ort_sqnr'], 1)} | "
              f"{fmt(r.get('wall'))} | {fmt(r.get('peak_mb'), 0)} |")
    if a.skip_cost:
        return
    costs = cost(a)
    base = costs[0]
    print("\n| ResNet-18, 128 samples | wall s | × plain | peak MB | × plain | calibrate s | rewrite s |")
    print("|---|---|---|---|---|---|---|")
    for c in costs:
        st = c["stages"]
        print(f"| {c['name']} | {fmt(c['wall'])} | {fmt(c['wall'] / base['wall'])} | {fmt(c['peak_mb'], 0)} | "
              f"{fmt(c['peak_mb'] / base['peak_mb'])} | {fmt(st.get('calibrate', 0) / 1e3)} | "
              f"{fmt(st.get('rewrite', 0) / 1e3)} |")


if __name__ == "__main__":
    main()
