"""onnx-quant: post-training quantization of ONNX models for TensorRT, OpenVINO and ONNX
Runtime, from Python.

>>> import onnx_quant
>>> report = onnx_quant.quantize("model.onnx", "model.int8.onnx", calib="data/")

``quantize`` also takes samples from an iterable or an ONNX Runtime ``CalibrationDataReader``;
``quantize_static`` has ONNX Runtime's signature; ``calibrate`` / ``merge_stats`` split
calibration into shards (``onnx_quant.distributed`` runs them on Dask); ``eval``, ``check`` and
``explain`` return their reports as Python objects. Failures raise the
:mod:`onnx_quant.errors` class of the command line's exit code. docs/python.md has the details.
"""

from . import errors
from ._native import version as _version
from .api import (
    CheckResult,
    EvalResult,
    Explanation,
    NodeFate,
    Report,
    Stats,
    calibrate,
    check,
    eval,
    explain,
    merge_stats,
    quantize,
    run,
)
from .errors import OnnxQuantError
from .ort import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

__version__ = _version()

__all__ = [
    "errors",
    "OnnxQuantError",
    "quantize",
    "quantize_static",
    "calibrate",
    "merge_stats",
    "eval",
    "check",
    "explain",
    "run",
    "Report",
    "Stats",
    "EvalResult",
    "CheckResult",
    "Explanation",
    "NodeFate",
    "QuantType",
    "QuantFormat",
    "CalibrationMethod",
    "CalibrationDataReader",
]
