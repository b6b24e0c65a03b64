#!/usr/bin/env python3
"""ONNX Runtime's plain inference over the first N samples of a stacked .npy, one sample per run
(default session options: all graph optimisations, intra-op threads = cores), after one warm-up
run: the floor any ORT-based calibration pays.

usage: ort_infer.py MODEL CALIB.npy N
"""
import sys
import time

import numpy as np
import onnxruntime as ort


def main():
    model, calib, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    x = np.load(calib, mmap_mode="r")
    s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    s.run(None, {name: np.ascontiguousarray(x[:1])})
    t = time.perf_counter()
    for i in range(n):
        s.run(None, {name: np.ascontiguousarray(x[i:i + 1])})
    d = time.perf_counter() - t
    print(f"ORT plain inference: {n} samples in {d:.2f} s ({1e3 * d / n:.1f} ms per sample)")


if __name__ == "__main__":
    main()
