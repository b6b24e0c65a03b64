#!/usr/bin/env python3
"""Calibration benchmark: onnx-quant next to ONNX Runtime's quantize_static, in one invocation.

usage: python bench/calibration.py [--bin target/release/onnx-quant] [--peers ../shared/peers]
         [--work /tmp/onnx-quant-bench] [--samples 32,128,512] [--methods minmax,entropy,percentile]
         [--ort-hist-max 128] [--python PY]

On the ResNet-18-shaped model of `peers/make_models.py` (generated with `peers/make_calib.py`
data on first use, kept in --work), for every method and sample count: wall time and peak RSS
of a whole onnx-quant process and of a whole ORT `quantize_static` process (its Python start-up
included), their ratios, onnx-quant's calibration stage against its plain tract inference
(`onnx-quant run`) over the same samples, and each method's peak RSS at the largest count
against the smallest. Each measurement is repeated (--repeat, default 3) and the medians are
reported. Prints a markdown table and writes the raw rows to WORK/results.jsonl.
ORT's histogram methods hold every activation in memory (about 42 MB per ResNet-18 sample
here: 5.4 GB at 128 samples, so about 21 GB at 512); --ort-hist-max (default 128) caps the
sample counts they run at. For min/max, ORT also runs after its recommended `quant_pre_process`.
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


def measured(cmd):
    """Runs `cmd` under a small wrapper that waits for it with wait4: returns ({rc, wall, peak_mb}
    of the child alone, stdout, stderr)."""
    wrapper = ("import os,sys,subprocess,time,json;t=time.time();p=subprocess.Popen(sys.argv[1:]);"
               "_,s,u=os.wait4(p.pid,0);print(json.dumps({'rc':os.waitstatus_to_exitcode(s),"
               "'wall':time.time()-t,'peak_mb':u.ru_maxrss/1024}),file=sys.stderr)")
    p = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True)
    stats = json.loads(p.stderr.strip().splitlines()[-1])
    return stats, p.stdout, "\n".join(p.stderr.strip().splitlines()[:-1])


def median_run(cmd, repeat):
    """`measured` `repeat` times: the median wall and median peak RSS (the machine is shared,
    single runs vary by 10-20 %), and the output of the median-wall run."""
    runs = [measured(cmd) for _ in range(repeat)]
    if any(r[0]["rc"] != 0 for r in runs):
        return next(r for r in runs if r[0]["rc"] != 0)
    runs.sort(key=lambda r: r[0]["wall"])
    stats, out, err = runs[len(runs) // 2]
    peaks = sorted(r[0]["peak_mb"] for r in runs)
    return dict(stats, peak_mb=peaks[len(peaks) // 2], walls=[round(r[0]["wall"], 3) for r in runs]), out, err


def ensure_data(a, py):
    model = os.path.join(a.work, "resnet18.onnx")
    calib = os.path.join(a.work, f"calib{max(a.samples)}.npy")
    if not os.path.exists(model):
        subprocess.run([py, os.path.join(a.peers, "make_models.py"), "--out", a.work, "--models", "resnet18"], check=True)
    if not os.path.exists(calib):
        subprocess.run([py, os.path.join(a.peers, "make_calib.py"), model, "--n", str(max(a.samples)), "--out", calib],
                       check=True)
    return model, calib


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "onnx-quant"))
    ap.add_argument("--peers", default=os.path.join(ROOT, "..", "shared", "peers"))
    ap.add_argument("--work", default="/tmp/onnx-quant-bench")
    ap.add_argument("--samples", default="32,128,512")
    ap.add_argument("--methods", default="minmax,entropy,percentile")
    ap.add_argument("--ort-hist-max", type=int, default=128)
    ap.add_argument("--python", default=sys.executable, help="a Python with numpy, onnx and onnxruntime")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (medians are reported)")
    a = ap.parse_args()
    a.samples = sorted(int(s) for s in a.samples.split(","))
    methods = a.methods.split(",")
    os.makedirs(a.work, exist_ok=True)
    model, calib = ensure_data(a, a.python)
    rows = []
    results = open(os.path.join(a.work, "results.jsonl"), "w")
    for n in a.samples:
        st, out, err = median_run([a.bin, "run", model, "--calib", calib, "--max-samples", str(n)], a.repeat)
        plain = float(out.split(" in ")[1].split(" s")[0]) if st["rc"] == 0 else None  # median-wall run
        for m in methods:
            report = os.path.join(a.work, f"report-{m}-{n}.json")
            cmd = [a.bin, model, os.path.join(a.work, f"oq-{m}-{n}.onnx"), "--calib", calib,
                   "--max-samples", str(n), "--method", m, "-q", "--report", report]
            runs = []
            for _ in range(a.repeat):
                st, _, _ = measured(cmd)
                stage = dict(json.load(open(report))["timings_ms"])["calibrate"] / 1e3 if st["rc"] == 0 else None
                runs.append((st, stage))
            mid = lambda xs: sorted(xs)[len(xs) // 2]
            oq = dict(runs[0][0], wall=mid([r[0]["wall"] for r in runs]), peak_mb=mid([r[0]["peak_mb"] for r in runs]),
                      rc=max(r[0]["rc"] for r in runs), walls=[round(r[0]["wall"], 3) for r in runs])
            calib_s = mid([r[1] for r in runs]) if all(r[1] for r in runs) else None
            ort = None
            if m == "minmax" or n <= a.ort_hist_max:
                ort, _, ort_err = median_run([a.python, os.path.join(HERE, "ort_quantize.py"), model, calib,
                                            os.path.join(a.work, f"ort-{m}-{n}.onnx"), "--method", m, "--n", str(n)], a.repeat)
            ort_pre = None
            if m == "minmax":
                ort_pre, _, _ = median_run([a.python, os.path.join(HERE, "ort_quantize.py"), model, calib,
                                          os.path.join(a.work, f"ortpre-{m}-{n}.onnx"), "--method", m, "--n", str(n),
                                          "--preprocess"], a.repeat)
            row = {"method": m, "samples": n, "onnx_quant": oq, "ort": ort, "ort_preprocess": ort_pre,
                   "plain_s": plain, "calibrate_s": calib_s}
            rows.append(row)
            results.write(json.dumps(row) + "\n")
            results.flush()
            print(f"[bench] {m} {n}: onnx-quant {oq['wall']:.1f} s {oq['peak_mb']:.0f} MB"
                  + (f"; ORT {ort['wall']:.1f} s {ort['peak_mb']:.0f} MB" if ort else "; ORT skipped"), file=sys.stderr)
    print(f"\n### Calibration, ResNet-18 ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs), "
          f"{time.strftime('%Y-%m-%d')}\n")
    print("| method | samples | onnx-quant wall s | peak MB | ORT wall s | peak MB | wall ORT/oq | peak ORT/oq |"
          " tract plain s | calibrate s | calibrate/plain |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        oq, ort = r["onnx_quant"], r["ort"]
        ok = lambda x: x and x["rc"] == 0
        f = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"
        print(f"| {r['method']} | {r['samples']} | {f(oq['wall'])} | {f(oq['peak_mb'], 0)} | "
              f"{f(ort['wall']) if ok(ort) else ('failed' if ort else 'skipped')} | {f(ort['peak_mb'], 0) if ok(ort) else '-'} | "
              f"{f(ort['wall'] / oq['wall'], 2) if ok(ort) else '-'} | {f(ort['peak_mb'] / oq['peak_mb'], 1) if ok(ort) else '-'} | "
              f"{f(r['plain_s'], 2)} | {f(r['calibrate_s'], 2)} | "
              f"{f(r['calibrate_s'] / r['plain_s'], 2) if r['calibrate_s'] and r['plain_s'] else '-'} |")
    print()
    for r in rows:
        pre = r.get("ort_preprocess")
        if pre and pre["rc"] == 0:
            print(f"- {r['method']} {r['samples']}: ORT with quant_pre_process first (its recommended flow) "
                  f"{pre['wall']:.1f} s, {pre['peak_mb']:.0f} MB: {pre['wall'] / r['onnx_quant']['wall']:.2f} x onnx-quant's wall")
    for m in methods:
        peaks = {r["samples"]: r["onnx_quant"]["peak_mb"] for r in rows if r["method"] == m}
        lo, hi = min(peaks), max(peaks)
        print(f"- {m}: onnx-quant peak RSS at {hi} samples = {peaks[hi] / peaks[lo]:.3f} x the peak at {lo}")


if __name__ == "__main__":
    main()
