#!/usr/bin/env python3
"""Conformance sweep: quantize every model of the `onnx` package's backend test data and check
what comes out with the real consumers.

usage: sweep.py --bin ONNX_QUANT [--suites pytorch-converted,pytorch-operator,simple,light]
                [--json OUT.json] [--timeout 120] [--only SUBSTRING]

For each model (`<suite>/<test>/model.onnx`, or `light/light_*.onnx`):
  calibration  its own `test_data_set_*` inputs (`--calib <test dir>`); the `light_*` models ship
               none (their weights are graph inputs too), so inputs are generated from the input
               shapes (seed 0, standard normal; integer inputs 0)
  quantize     `onnx-quant MODEL OUT --calib DATA --report R.json`, with a timeout
  outcome      quantized: exit 0, and the output passes onnx.checker (full), runs in ONNX
               Runtime on the calibration inputs, and its first float output is within 20 dB
               SQNR of the reference (80 dB when no node was quantized: then only the opset
               conversion changed the model); the reference is the test data's expected
               `output_K.pb`, else the float model in ONNX Runtime; error: a documented non-zero exit code
               (2-7) with an `error:` line and no output file; anything else is a failure:
               panic (exit 101 or "panicked"), timeout, crash (signal), invalid output (checker
               or ORT refuses it), or a file written by a failed run
Prints counts per outcome, the errors grouped by their cause, and the distribution of the output
SQNR (quantized against the float model, both in ONNX Runtime, first float output). Exits 1 when
any failure occurred. `tests/it/interop.rs` runs it on every suite.
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import numpy_helper

NP = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64}


def data_dir():
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


def cases(suites):
    root = data_dir()
    for suite in suites:
        base = os.path.join(root, suite)
        if suite == "light":
            models = sorted(glob.glob(os.path.join(base, "light_*.onnx")))
            for m in models:
                yield suite, os.path.basename(m)[:-5], m, None
        else:
            for d in sorted(glob.glob(os.path.join(base, "test_*"))):
                m = os.path.join(d, "model.onnx")
                if os.path.exists(m):
                    yield suite, os.path.basename(d), m, d


def read_sets(test_dir, kind, names):
    """Per `test_data_set_*` folder, the tensors `<kind>_K.pb` present, keyed by names[K]."""
    runs = []
    for s in sorted(glob.glob(os.path.join(test_dir, "test_data_set_*"))):
        r = {}
        for k, name in enumerate(names):
            p = os.path.join(s, f"{kind}_{k}.pb")
            if os.path.exists(p):
                t = onnx.TensorProto()
                with open(p, "rb") as fh:
                    t.ParseFromString(fh.read())
                r[name] = numpy_helper.to_array(t)
        runs.append(r)
    return runs


def expected_of(model, test_dir):
    """The outputs each test data set expects (`output_K.pb`), or None."""
    if test_dir is None:
        return None
    runs = read_sets(test_dir, "output", [o.name for o in model.graph.output])
    return runs if any(runs) else None


def feeds_of(model, test_dir, tmp):
    """The calibration path for onnx-quant and the feeds for ONNX Runtime."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if test_dir is not None:
        return test_dir, read_sets(test_dir, "input", [i.name for i in inputs])
    rng = np.random.default_rng(0)
    f = {}
    for i in inputs:
        tt = i.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in tt.shape.dim]
        dt = NP.get(tt.elem_type, np.float32)
        f[i.name] = rng.standard_normal(shape).astype(dt) if np.issubdtype(dt, np.floating) else np.zeros(shape, dt)
    path = os.path.join(tmp, "calib.npz")
    np.savez(path, **f)
    return path, [f]


def run_ort(path, feeds):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return [dict(zip(names, s.run(None, f))) for f in feeds]


def sqnr(ref_runs, out_runs):
    num = den = 0.0
    for r, o in zip(ref_runs, out_runs):
        for k, v in r.items():
            if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating) and k in o:
                a, b = v.astype(np.float64), np.asarray(o[k]).astype(np.float64)
                if a.shape != b.shape:
                    return None
                with np.errstate(over="ignore", invalid="ignore"):
                    num += float((a ** 2).sum())
                    den += float(((a - b) ** 2).sum())
                break
    if num == 0.0 or not np.isfinite(num) or np.isnan(den):
        return None  # no float output, or outputs that overflow: nothing to compare
    return float("inf") if den == 0.0 else float(10 * np.log10(num / den))


def cause(err):
    """A short key grouping errors: the op tract cannot run, or the message without names."""
    m = re.findall(r"` \(([A-Z][A-Za-z0-9_]*)\)", err)
    if "tract cannot run" in err and m:
        return "tract cannot run " + ", ".join(sorted(set(m)))
    err = re.sub(r"`[^`]*`", "`…`", err)
    err = re.sub(r"\d+(\.\d+)?", "N", err)
    return err[:140]


def one(bin_, suite, name, model_path, test_dir, timeout):
    with tempfile.TemporaryDirectory() as tmp:
        model = onnx.load(model_path)
        calib, feeds = feeds_of(model, test_dir, tmp)
        out = os.path.join(tmp, "q.onnx")
        rep = os.path.join(tmp, "r.json")
        t = time.time()
        try:
            p = subprocess.run([bin_, model_path, out, "--calib", calib, "--report", rep, "-q"],
                               capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"outcome": "timeout"}
        wall = time.time() - t
        err = next((l[len("error: "):] for l in p.stderr.splitlines() if l.startswith("error: ")), None)
        r = {"exit": p.returncode, "wall_s": round(wall, 3)}
        if p.returncode == 101 or "panicked" in p.stderr:
            return {**r, "outcome": "panic", "stderr": p.stderr[-2000:]}
        if p.returncode < 0:
            return {**r, "outcome": "crash", "stderr": p.stderr[-2000:]}
        if p.returncode != 0:
            if os.path.exists(out):
                return {**r, "outcome": "partial output", "error": err}
            if err is None or p.returncode not in range(2, 8):
                return {**r, "outcome": "undocumented failure", "stderr": p.stderr[-2000:]}
            return {**r, "outcome": "error", "error": err, "cause": cause(err)}
        try:
            onnx.checker.check_model(out, full_check=True)
        except Exception as e:
            return {**r, "outcome": "invalid output", "why": f"onnx.checker: {e}"[:2000]}
        try:
            got = run_ort(out, feeds)
        except Exception as e:
            return {**r, "outcome": "invalid output", "why": f"onnxruntime: {e}"[:2000]}
        with open(rep) as fh:
            report = json.load(fh)
        quantized = sum(1 for n in report["nodes"] if n.get("quantized"))
        # reference: the outputs the test data expects, else the float model in ORT
        ref = expected_of(model, test_dir)
        if ref is None:
            try:
                ref = run_ort(model_path, feeds)
            except Exception as e:
                r["reference"] = f"{e}"[:300]
        s = sqnr(ref, got) if ref is not None else None
        r = {**r, "outcome": "quantized", "quantized_nodes": quantized, "sqnr_db": s}
        # an output far from the reference is a broken conversion, not quantization noise
        floor = MIN_SQNR_QUANTIZED if quantized else MIN_SQNR_FLOAT
        if s is not None and s < floor:
            r["outcome"] = "wrong output"
            r["why"] = f"output SQNR {s:.1f} dB against the reference, below {floor} dB"
        return r


FAILURES = {"panic", "crash", "timeout", "invalid output", "wrong output", "partial output",
            "undocumented failure"}
# Quantized models: int8 noise stays well above this; models with nothing quantized only went
# through opset conversion and must compute what they computed (float rounding aside).
MIN_SQNR_QUANTIZED = 20.0
MIN_SQNR_FLOAT = 80.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--suites", default="pytorch-converted,pytorch-operator,simple,light")
    ap.add_argument("--json")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--only")
    a = ap.parse_args()
    results = {}
    for suite, name, path, test_dir in cases(a.suites.split(",")):
        if a.only and a.only not in name:
            continue
        results[f"{suite}/{name}"] = one(a.bin, suite, name, path, test_dir, a.timeout)
    by = {}
    for k, r in results.items():
        by.setdefault(r["outcome"], []).append(k)
    print(f"onnx {onnx.__version__} backend test data: {len(results)} models")
    for o in sorted(by):
        print(f"  {o:<22} {len(by[o])}")
    with_q = [r for r in results.values() if r["outcome"] == "quantized" and r.get("quantized_nodes")]
    print(f"  (quantized with at least one quantized node: {len(with_q)}; "
          f"without any: {len(by.get('quantized', [])) - len(with_q)})")
    causes = {}
    for k, r in results.items():
        if r["outcome"] == "error":
            causes.setdefault(r["cause"], []).append(k)
    if causes:
        print("errors by cause:")
        for c, ks in sorted(causes.items(), key=lambda kv: -len(kv[1])):
            print(f"  {len(ks):>3}  {c}")
    unq = sorted(r["sqnr_db"] for r in results.values()
                 if r["outcome"] == "quantized" and not r.get("quantized_nodes") and r.get("sqnr_db") is not None)
    if unq:
        print(f"output SQNR (dB) of {len(unq)} models with nothing quantized (opset conversion only): "
              f"min {unq[0]:.1f}")
    # the light models run on random weights and inputs: their outputs saturate, so their SQNR
    # says nothing about quantization (they count for validity only)
    s = sorted(r["sqnr_db"] for k, r in results.items()
               if r["outcome"] == "quantized" and r.get("quantized_nodes") and r.get("sqnr_db") is not None
               and not k.startswith("light/"))
    if s:
        q = lambda p: s[min(len(s) - 1, int(p * len(s)))]
        print(f"output SQNR (dB) of {len(s)} quantized models with test data: min {s[0]:.1f}, p10 {q(0.1):.1f}, "
              f"median {q(0.5):.1f}, p90 {q(0.9):.1f}, max {s[-1]:.1f}")
        low = [(k, r["sqnr_db"]) for k, r in results.items()
               if r["outcome"] == "quantized" and r.get("quantized_nodes") and r.get("sqnr_db") is not None and r["sqnr_db"] < 20]
        for k, v in sorted(low, key=lambda kv: kv[1]):
            print(f"    below 20 dB: {k} {v:.1f}")
    for o in sorted(FAILURES & set(by)):
        for k in by[o]:
            r = results[k]
            print(f"FAILURE {o}: {k}: {r.get('why') or r.get('error') or r.get('stderr', '')[-500:]}")
    if a.json:
        # JSON has no infinity: identical outputs are written as "inf"
        clean = {k: {kk: (str(vv) if isinstance(vv, float) and not np.isfinite(vv) else vv) for kk, vv in r.items()}
                 for k, r in results.items()}
        with open(a.json, "w") as fh:
            json.dump(clean, fh, indent=1, sort_keys=True, allow_nan=False)
    sys.exit(1 if FAILURES & set(by) else 0)


if __name__ == "__main__":
    main()
