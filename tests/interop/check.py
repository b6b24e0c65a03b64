#!/usr/bin/env python3
"""Check a quantized model with the real consumers and print one JSON object.

usage: check.py --quant Q.onnx [--ref FP32.onnx --x X.npy|X.npz [--y Y.npy]] [--ort] [--openvino] [--trt]
                [--ort-fused] [--output NAME] [--channels A:B]

  checker   onnx.checker.check_model(Q, full_check=True) (full shape inference)
  metrics   on the first output, or --output NAME, restricted to channels A:B of axis 1 with
            --channels
  qdq       Q/DQ counts, zero-point element types, non-zero zero-points, per-channel DQs
  ort       ONNX Runtime CPU: runs Q (and REF) on X; top1 vs Y, argmax agreement, SQNR, cosine
            (X may also be a directory of per-sample .npy/.npz files, one feed each)
  ort_exact with --ort-exact: the same with graph optimizations off (the Q/DQ arithmetic)
  openvino  OpenVINO CPU with f32 inference precision: the same metrics (reference: REF in ORT)
  openvino_exact  with --openvino-exact: OpenVINO with its low-precision transformations off
            (LP_TRANSFORMS_MODE=NO: FakeQuantize computed in float, no int8 kernel)
            --openvino-isa ISA caps the instruction set OpenVINO's oneDNN kernels use
            (ONEDNN_MAX_CPU_ISA, e.g. AVX2: the kernels of x86 CPUs without VNNI, whatever this
            CPU has); the JSON says it under `openvino_isa`

  Whenever ONNX Runtime or OpenVINO run (or --sim), `pairs` is computed too (see below); when it
  finds a layer whose pairs can saturate without VNNI, `ort_exact` and `openvino_exact` are
  added: on such a CPU only those compute what the Q/DQ nodes say.
  trt       TensorRT-RTX ONNX parser + CPU-only ahead-of-time engine build for SM89
  ort_fused the op counts of the model ONNX Runtime runs after its graph optimisations
            (QLinearConv, QLinearMatMul, ... replace complete Q/DQ node units)
  pairs     with --pairs: an emulation of the int8 kernels of x86 CPUs without VNNI (ONNX
            Runtime's MLAS and OpenVINO's oneDNN on AVX2): for every Conv/ConvTranspose/MatMul/Gemm
            whose weight is an int8 DequantizeLinear constant and whose data input is dequantized,
            the weights are laid out the way those kernels pack them and paired as VPMADDUBSW
            pairs bytes; with uint8 activations anywhere in [0, 255] (ONNX Runtime adds 128 to
            int8 ones), a pair whose extreme sum leaves int16 can saturate. Per layer: pairs,
            overflowing pairs, the worst same-sign |w| + |w'|
  sim       with --sim S.npz (`onnx-quant eval --save-outputs`): onnx-quant's simulated outputs
            of Q against ONNX Runtime running Q on X, with its int8 kernels (default graph
            optimisations) and with the Q/DQ arithmetic as written (optimisations off)

The Rust interop tests (tests/it/interop.rs) run this and assert on the JSON.
"""
import argparse
import json
import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper

NP = {1: np.float32, 6: np.int32, 7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64}


def load_x(path, model):
    """The inputs: arrays stacked on axis 0, or (a directory of per-sample files) a list of feeds."""
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if os.path.isdir(path):
        feeds = []
        for f in sorted(os.listdir(path)):
            full = os.path.join(path, f)
            if f.endswith(".npz"):
                z = np.load(full)
                feeds.append({k: z[k] if z[k].ndim == 0 or z[k].ndim == len(next(
                    i for i in inputs if i.name == k).type.tensor_type.shape.dim) else z[k][None]
                    for k in z.files})
            elif f.endswith(".npy"):
                feeds.append({inputs[0].name: np.load(full)})
        return feeds
    if path.endswith(".npz"):
        z = np.load(path)
        arrays = {i.name: z[i.name] for i in inputs}
    else:
        arrays = {inputs[0].name: np.load(path)}
    rank = {i.name: len(i.type.tensor_type.shape.dim) for i in inputs}
    # one more axis than the input: a stack of feeds, concatenated along the batch axis
    return {k: v.reshape(-1, *v.shape[2:]) if v.ndim == rank[k] + 1 else v for k, v in arrays.items()}


def batches(model, x):
    """Feeds: the whole set at once when the batch axis is symbolic, else one batch at a time
    (0-d arrays are fed unchanged with every batch)."""
    if isinstance(x, list):
        return x
    first = model.graph.input[0].type.tensor_type.shape.dim[0]
    n = len(next(v for v in x.values() if v.ndim > 0))
    if first.HasField("dim_value") and first.dim_value > 0:
        b = first.dim_value
        return [{k: v if v.ndim == 0 else v[i:i + b] for k, v in x.items()} for i in range(0, n, b)]
    return [x]


def metrics(out, ref, y):
    out, ref = out.astype(np.float64), ref.astype(np.float64)
    r = {
        "agreement": float((out.reshape(len(out), -1).argmax(1) == ref.reshape(len(ref), -1).argmax(1)).mean()),
        "sqnr_db": float(10 * np.log10((ref ** 2).sum() / max(((ref - out) ** 2).sum(), 1e-30))),
        "cosine": float((out * ref).sum() / max(np.linalg.norm(out) * np.linalg.norm(ref), 1e-30)),
        "max_abs_diff": float(np.abs(out - ref).max()),
    }
    if y is not None:
        r["top1"] = float((out.reshape(len(out), -1).argmax(1) == y).mean())
        r["ref_top1"] = float((ref.reshape(len(ref), -1).argmax(1) == y).mean())
    return r


OUTPUT, CHANNELS = None, None


def pick(x):
    return x if CHANNELS is None else x[:, CHANNELS[0]:CHANNELS[1]]


ORT_BASIC = False
ORT_EXACT = False


def run_ort(path, feeds, optimize=True):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize or ORT_EXACT:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    elif ORT_BASIC:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [OUTPUT] if OUTPUT else None
    return pick(np.concatenate([s.run(names, f)[0] for f in feeds]))


def run_openvino(path, feeds, optimize=True):
    import openvino as ov
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    if not optimize:
        config["LP_TRANSFORMS_MODE"] = "NO"
    c = ov.Core().compile_model(path, "CPU", config)
    out = c.output(OUTPUT) if OUTPUT else c.output(0)
    return pick(np.concatenate([c(f)[out] for f in feeds]))


def subgraph_nodes(graph):
    """Every node inside the subgraphs of `graph`'s nodes, any depth."""
    out = []
    for n in graph.node:
        for a in n.attribute:
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                out.extend(g.node)
                out.extend(subgraph_nodes(g))
    return out


def qdq_summary(model):
    inits = {t.name: t for t in model.graph.initializer}
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    zp_types, nonzero, per_channel = set(), 0, 0
    for n in q + dq:
        if len(n.input) > 2 and n.input[2] in inits:
            z = inits[n.input[2]]
            zp_types.add(onnx.TensorProto.DataType.Name(z.data_type))
            nonzero += int(np.any(numpy_helper.to_array(z) != 0))
        else:
            zp_types.add("none")
        if n.input[1] in inits and len(inits[n.input[1]].dims) > 0:
            per_channel += 1
    ops = sorted({n.op_type for n in model.graph.node})
    inner = subgraph_nodes(model.graph)
    return {"q": len(q), "dq": len(dq),
            "subgraph_q": sum(n.op_type == "QuantizeLinear" for n in inner),
            "subgraph_dq": sum(n.op_type == "DequantizeLinear" for n in inner), "zero_point_types": sorted(zp_types), "nonzero_zero_points": nonzero,
            "per_channel": per_channel, "ops": ops, "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))}


def trt_check(path):
    import tensorrt_rtx as trt

    class Log(trt.ILogger):
        def __init__(self):
            super().__init__()
            self.msgs = []

        def log(self, sev, msg):
            if sev <= trt.ILogger.Severity.WARNING:
                self.msgs.append(msg)

    log = Log()
    builder = trt.Builder(log)
    net = builder.create_network(0)
    parser = trt.OnnxParser(net, log)
    res = {"parsed": bool(parser.parse_from_file(path)), "errors": [], "built": False}
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        res["errors"].append(f"node {e.node_name()} ({e.node_operator()}): {e.desc()}")
    if res["parsed"]:
        cfg = builder.create_builder_config()
        dynamic = [net.get_input(i) for i in range(net.num_inputs) if -1 in tuple(net.get_input(i).shape)]
        if dynamic:
            profile = builder.create_optimization_profile()
            for t in dynamic:
                shape = tuple(1 if d == -1 else d for d in t.shape)
                profile.set_shape(t.name, shape, shape, shape)
            cfg.add_optimization_profile(profile)
        cfg.num_compute_capabilities = 1
        cfg.set_compute_capability(trt.ComputeCapability.SM89, 0)
        plan = builder.build_serialized_network(net, cfg)
        res["built"] = plan is not None
    res["log"] = log.msgs[-5:]
    return res


def ort_fused(path):
    import os
    import tempfile

    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = os.path.join(d, "optimized.onnx")
        ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        m = onnx.load(so.optimized_model_filepath)
    counts = {}
    for n in m.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


INT16 = (-32768, 32767)


def packed_rows(op, w, slot, group, trans):
    """The weight as rows of one reduction each, in the order the x86 int8 kernels pack it:
    a list of [units, K] arrays whose consecutive pairs along K VPMADDUBSW adds (K padded
    with zeros to even). None when no kernel pairs it (depthwise: widened to 16/32 bits)."""
    if op == "Conv":
        o, ig = w.shape[0], w.shape[1]
        if ig == 1 and group > 1 and o == group:
            return None
        t = w.reshape(o, ig, -1)                                       # [O, Ig, taps]
        mlas = t.transpose(0, 2, 1).reshape(o, -1)                    # im2col / QGEMM: tap-major
        padded = np.zeros((o, t.shape[2], -(-ig // 4) * 4), w.dtype)  # oneDNN: 4 channels per tap
        padded[:, :, :ig] = t.transpose(0, 2, 1)
        return [mlas, padded.reshape(-1, padded.shape[2])]
    if op == "ConvTranspose":
        i, og = w.shape[0], w.shape[1]
        ig = i // group
        t = w.reshape(group, ig, og, -1).transpose(0, 2, 3, 1).reshape(-1, ig)
        padded = np.zeros((t.shape[0], -(-ig // 4) * 4), w.dtype)
        padded[:, :ig] = t
        return [padded]
    if op in ("MatMul", "Gemm"):
        m = w.reshape(-1, w.shape[-2], w.shape[-1])
        # rows of reduction: K is axis -2 of a right operand, axis -1 of a left one (or transposed)
        right = (slot == 1) != trans
        return [(m.transpose(0, 2, 1) if right else m).reshape(-1, m.shape[1] if right else m.shape[2])]
    return None


def graphs(graph, scope=""):
    """The graph and every subgraph in it (If branches, Loop/Scan bodies), with its scope
    (`If_3/then_branch`, as `check` names it)."""
    yield scope, graph
    for n in graph.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from graphs(a.g, f"{scope}{'/' if scope else ''}{n.name or n.output[0]}/{a.name}")


def kernel_pairs(model, u8_max=255):
    layers = []
    for scope, graph in graphs(model.graph):
        layers += graph_pairs(graph, scope, u8_max)
    return {"layers": layers, "risky": sorted(x["node"] for x in layers if x["overflowing"])}


def graph_pairs(graph, scope, u8_max):
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}

    def int8_dq(name):
        n = producer.get(name)
        if n is None or n.op_type != "DequantizeLinear" or n.input[0] not in inits:
            return None
        t = inits[n.input[0]]
        return numpy_helper.to_array(t) if t.data_type == onnx.TensorProto.INT8 else None

    def dequantized(name):
        n = producer.get(name)
        return n is not None and n.op_type == "DequantizeLinear"

    layers = []
    for node in graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "MatMul", "Gemm") or len(node.input) < 2:
            continue
        slot = 1 if int8_dq(node.input[1]) is not None else 0 if node.op_type in ("MatMul", "Gemm") else None
        if slot is None or int8_dq(node.input[slot]) is None or not dequantized(node.input[1 - slot]):
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        trans = bool(attrs.get("transA" if slot == 0 else "transB", 0))
        rows = packed_rows(node.op_type, int8_dq(node.input[slot]).astype(np.int64), slot,
                           int(attrs.get("group", 1)), trans)
        if rows is None:
            continue
        pairs = over = worst = 0
        for r in rows:
            if r.shape[1] % 2:
                r = np.concatenate([r, np.zeros((r.shape[0], 1), r.dtype)], axis=1)
            a, b = r[:, 0::2], r[:, 1::2]
            hi = u8_max * (np.maximum(a, 0) + np.maximum(b, 0))   # largest sum of two u8·s8 products
            lo = u8_max * (np.minimum(a, 0) + np.minimum(b, 0))   # smallest
            pairs += a.size
            over += int(((hi > INT16[1]) | (lo < INT16[0])).sum())
            worst = max(worst, int(np.maximum(hi, -lo).max()) // u8_max)
        layers.append({"node": f"{scope}::{node.name}" if scope else node.name, "op": node.op_type, "pairs": pairs,
                       "overflowing": over, "worst": worst})
    return layers


def guarded(fn, *a):
    try:
        return fn(*a)
    except Exception as e:  # reported, and the Rust test fails on it
        return {"error": f"{type(e).__name__}: {e}"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quant", required=True)
    ap.add_argument("--ref")
    ap.add_argument("--x")
    ap.add_argument("--y")
    ap.add_argument("--ort", action="store_true")
    ap.add_argument("--openvino", action="store_true")
    ap.add_argument("--trt", action="store_true")
    ap.add_argument("--ort-fused", action="store_true")
    ap.add_argument("--output")
    ap.add_argument("--channels")
    ap.add_argument("--sim")
    ap.add_argument("--pairs", action="store_true")
    ap.add_argument("--openvino-exact", action="store_true",
                    help="also run the quantized model in OpenVINO without its low-precision "
                         "transformations (the Q/DQ arithmetic in float): `openvino_exact`")
    ap.add_argument("--ort-basic", action="store_true",
                    help="run the quantized model in ONNX Runtime with basic graph optimizations only")
    ap.add_argument("--ort-exact", action="store_true",
                    help="also run the quantized model in ONNX Runtime with graph optimizations off "
                         "(the Q/DQ arithmetic as written): `ort_exact`")
    ap.add_argument("--openvino-isa",
                    help="cap OpenVINO's kernels at this instruction set (ONEDNN_MAX_CPU_ISA: AVX2, "
                         "AVX512_CORE_VNNI, AVX512_CORE_AMX, ...)")
    a = ap.parse_args()
    if a.openvino_isa:
        # Read by oneDNN when OpenVINO first runs a kernel, so set before it is imported.
        os.environ["ONEDNN_MAX_CPU_ISA"] = a.openvino_isa
    global OUTPUT, CHANNELS, ORT_BASIC, ORT_EXACT
    OUTPUT = a.output
    ORT_BASIC = a.ort_basic
    CHANNELS = tuple(int(v) for v in a.channels.split(":")) if a.channels else None
    out = {}
    try:
        onnx.checker.check_model(a.quant, full_check=True)
        out["checker"] = "ok"
    except Exception as e:
        out["checker"] = f"{type(e).__name__}: {e}"
    model = onnx.load(a.quant, load_external_data=False)
    full = onnx.load(a.quant)
    out["qdq"] = qdq_summary(full)
    if a.openvino_isa:
        out["openvino_isa"] = a.openvino_isa
    if a.pairs or a.ort or a.openvino or a.sim:
        out["pairs"] = guarded(kernel_pairs, full)
    risky = bool(out.get("pairs", {}).get("risky"))
    if a.sim:
        x = load_x(a.x, model)
        feeds = batches(model, x)
        z = np.load(a.sim)
        name = OUTPUT or model.graph.output[0].name
        sim = z[name].reshape(-1)
        out["sim"] = {}
        for label, opt in (("ort", True), ("ort_unoptimized", False)):
            o = guarded(run_ort, a.quant, feeds, opt)
            if isinstance(o, dict):
                out["sim"][label] = o
                continue
            o = o.reshape(-1)
            if o.shape != sim.shape:
                out["sim"][label] = {"error": f"shapes {o.shape} (ort) and {sim.shape} (simulated)"}
                continue
            out["sim"][label] = metrics(sim.reshape(1, -1), o.reshape(1, -1), None)
    if a.ort or a.openvino:
        x = load_x(a.x, model)
        feeds = batches(model, x)
        y = np.load(a.y) if a.y else None
        ref = run_ort(a.ref, feeds)
        for name, runner, on in (("ort", run_ort, a.ort), ("openvino", run_openvino, a.openvino)):
            if on:
                got = guarded(runner, a.quant, feeds)
                out[name] = got if isinstance(got, dict) else metrics(got, ref, y)
        if a.ort_exact or (a.ort and risky):
            got = guarded(run_ort, a.quant, feeds, False)
            out["ort_exact"] = got if isinstance(got, dict) else metrics(got, ref, y)
        if a.openvino_exact or (a.openvino and risky):
            got = guarded(run_openvino, a.quant, feeds, False)
            out["openvino_exact"] = got if isinstance(got, dict) else metrics(got, ref, y)
    if a.trt:
        out["trt"] = guarded(trt_check, a.quant)
    if a.ort_fused:
        out["ort_fused"] = guarded(ort_fused, a.quant)
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
