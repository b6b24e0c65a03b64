#!/usr/bin/env python3
"""A script written for ONNX Runtime's quantize_static, as users write them: a
CalibrationDataReader over a .npy file, the usual arguments. With --onnx-quant, the one import
line changes and nothing else (tests/python and bench/python_api.py run it both ways).

usage: ort_script.py MODEL OUT CALIB.npy [--onnx-quant] [--per-tensor] [--entropy]
"""
import sys

import numpy as np
import onnx

if "--onnx-quant" in sys.argv:
    from onnx_quant import quantize_static
else:
    from onnxruntime.quantization import quantize_static
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType


class NpyReader(CalibrationDataReader):
    """One sample per get_next(), batch 1, from a .npy stacking samples on axis 0."""

    def __init__(self, path, model_path):
        self.data = np.load(path, mmap_mode="r")
        self.input_name = onnx.load(model_path, load_external_data=False).graph.input[0].name
        self.i = 0

    def get_next(self):
        if self.i >= len(self.data):
            return None
        x = np.ascontiguousarray(self.data[self.i : self.i + 1], dtype=np.float32)
        self.i += 1
        return {self.input_name: x}

    def rewind(self):
        self.i = 0


def main():
    model, out, calib = sys.argv[1:4]
    quantize_static(
        model,
        out,
        NpyReader(calib, model),
        quant_format=QuantFormat.QDQ,
        per_channel="--per-tensor" not in sys.argv,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.Entropy if "--entropy" in sys.argv else CalibrationMethod.MinMax,
    )


if __name__ == "__main__":
    main()
