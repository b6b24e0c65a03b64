#!/usr/bin/env python3
"""ONNX Runtime's quantize_static on the first N samples of a stacked .npy, for the benchmark.

usage: ort_quantize.py MODEL CALIB.npy OUT.onnx --method minmax|entropy|percentile --n N [--preprocess]

ORT's defaults otherwise (QDQ, int8 activations and weights). --preprocess first runs
`quant_pre_process` (symbolic shape inference and graph optimisation, e.g. BatchNormalization
folding), the flow ONNX Runtime's documentation recommends. Samples are fed one at a time from a
memory-mapped file, so what ORT holds in memory is its own doing.
"""
import argparse

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static

METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}


class Reader(CalibrationDataReader):
    def __init__(self, path, name, n):
        self.x = np.load(path, mmap_mode="r")
        self.name, self.n, self.k = name, min(n, len(self.x)), 0

    def get_next(self):
        if self.k >= self.n:
            return None
        self.k += 1
        return {self.name: np.ascontiguousarray(self.x[self.k - 1:self.k])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("calib")
    ap.add_argument("out")
    ap.add_argument("--method", choices=sorted(METHODS), required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--preprocess", action="store_true")
    a = ap.parse_args()
    if a.preprocess:
        from onnxruntime.quantization.shape_inference import quant_pre_process
        pre = a.out + ".pre.onnx"
        quant_pre_process(a.model, pre)
        a.model = pre
    m = onnx.load(a.model, load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    name = next(i.name for i in m.graph.input if i.name not in inits)
    quantize_static(a.model, a.out, Reader(a.calib, name, a.n), quant_format=QuantFormat.QDQ,
                    calibrate_method=METHODS[a.method])


if __name__ == "__main__":
    main()
