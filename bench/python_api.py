#!/usr/bin/env python3
"""The Python API against ONNX Runtime: one script written for `onnxruntime.quantization.
quantize_static` (bench/ort_script.py: a CalibrationDataReader over a .npy, per channel,
QInt8/QInt8, MinMax, QDQ), run as written and with its import changed to onnx_quant.

usage: python bench/python_api.py [--peers ../shared/peers] [--work /tmp/onnx-quant-pyapi]
         [--samples 128] [--repeat 3] [--methods minmax,entropy]

Needs onnx-quant's wheel, onnxruntime, openvino and tensorrt_rtx in this Python (the test venv
after `bash tests/run.sh`). For the shipped digits fixture and the ResNet-18-shaped model of
`peers/make_models.py` (data from `peers/make_calib.py`, generated into --work on first use):
each process's wall time and peak RSS (medians of --repeat runs, Python start-up and imports
included), and what the consumers say of each output (tests/interop/check.py): onnx.checker,
top-1 agreement and SQNR against fp32 in ONNX Runtime and OpenVINO on held-out samples, the
TensorRT-RTX parser and engine build, and `onnx_quant.check`'s TensorRT rule violations.
Prints a markdown table.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from calibration import median_run  # noqa: E402


def cpu_flags():
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        return "?"
    return " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f in flags)


def consumers(quant, ref, x):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "interop", "check.py"), "--quant", quant,
                        "--ref", ref, "--x", x, "--ort", "--openvino", "--trt"], capture_output=True, text=True)
    r = json.loads(p.stdout) if p.returncode == 0 else {}
    import onnx_quant

    r["violations"] = len(onnx_quant.check(quant, "tensorrt").violations)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers", default=os.path.join(ROOT, "..", "shared", "peers"))
    ap.add_argument("--work", default="/tmp/onnx-quant-pyapi")
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--methods", default="minmax,entropy",
                    help="calibrate_method of the script: MinMax as written, or Entropy (--entropy)")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    resnet = os.path.join(a.work, "resnet18.onnx")
    calib = os.path.join(a.work, f"calib{a.samples}.npy")
    held = os.path.join(a.work, "eval32.npy")
    if not os.path.exists(resnet):
        subprocess.run([sys.executable, os.path.join(a.peers, "make_models.py"), "--out", a.work, "--models", "resnet18"],
                       check=True)
    if not os.path.exists(calib):
        subprocess.run([sys.executable, os.path.join(a.peers, "make_calib.py"), resnet, "--n", str(a.samples),
                        "--out", calib, "--eval-n", "32", "--eval-out", held], check=True)
    digits = os.path.join(ROOT, "fixtures", "digits")
    models = [
        ("digits CNN (fixture)", os.path.join(digits, "digits_cnn.onnx"), os.path.join(digits, "calib.npy"),
         os.path.join(digits, "eval_x.npy")),
        (f"ResNet-18-shaped, {a.samples} samples", resnet, calib, held),
    ]
    script = os.path.join(HERE, "ort_script.py")
    rows = []
    for (label, model, data, x), method in [(m, meth) for m in models for meth in a.methods.split(",")]:
        label = f"{label}, {method}"
        for tool, extra in (("ONNX Runtime quantize_static", []), ("onnx_quant.quantize_static", ["--onnx-quant"])):
            if method == "entropy":
                extra = extra + ["--entropy"]
            out = os.path.join(a.work, f"{os.path.basename(model)}-{method}-{'oq' if '--onnx-quant' in extra else 'ort'}.onnx")
            st, _, err = median_run([sys.executable, script, model, out, data, *extra], a.repeat)
            if st["rc"] != 0:
                print(err, file=sys.stderr)
                raise SystemExit(f"{tool} failed on {model}")
            r = consumers(out, model, x)
            rows.append((label, tool, st, r))
            print(f"[bench] {label}, {tool}: {st['wall']:.2f} s, {st['peak_mb']:.0f} MB", file=sys.stderr)
    print(f"\n### Python API, `quantize_static` drop-in ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, flags: {cpu_flags()}), {time.strftime('%Y-%m-%d')}\n")
    print("| model | tool | wall s | peak MB | ORT top-1 agr. | ORT SQNR dB | OpenVINO top-1 agr. | OpenVINO SQNR dB"
          " | TensorRT-RTX parse / build | TensorRT rule violations |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, tool, st, r in rows:
        ort, ov, trt = r.get("ort", {}), r.get("openvino", {}), r.get("trt", {})
        print(f"| {label} | {tool} | {st['wall']:.2f} | {st['peak_mb']:.0f} | {ort.get('agreement', 0) * 100:.1f} % "
              f"| {ort.get('sqnr_db', float('nan')):.1f} | {ov.get('agreement', 0) * 100:.1f} % "
              f"| {ov.get('sqnr_db', float('nan')):.1f} | {'yes' if trt.get('parsed') else 'no'} / "
              f"{'yes' if trt.get('built') else 'no'} | {r['violations']} |")
    print()
    for label, _, _, _ in rows[::2]:
        o, q = [row for row in rows if row[0] == label]
        print(f"- {label}: wall ONNX Runtime / onnx-quant = {o[2]['wall'] / q[2]['wall']:.2f}, "
              f"peak RSS ONNX Runtime / onnx-quant = {o[2]['peak_mb'] / q[2]['peak_mb']:.2f}")


if __name__ == "__main__":
    main()
