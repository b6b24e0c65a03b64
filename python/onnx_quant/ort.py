"""``quantize_static`` with ONNX Runtime's signature: change one import
(``from onnx_quant import quantize_static``) and a script written for
``onnxruntime.quantization.quantize_static`` runs on onnx-quant.

Each argument maps onto an onnx-quant setting (docs/python.md has the table); an argument or
``extra_options`` key without an equivalent raises :class:`~onnx_quant.errors.NotSupportedError`
instead of being ignored. Arguments left out take onnx-quant's defaults for ``target`` (for
TensorRT: symmetric int8 activations, int8 weights per output channel, MSE ranges), not ONNX
Runtime's (per-tensor weights, asymmetric activations, min/max ranges): pass them to get ONNX
Runtime's choices. The enums are accepted from ``onnxruntime.quantization`` or from this module
(same names); onnxruntime is never imported.
"""

from __future__ import annotations

import enum
import os
import tempfile
from typing import Any, Dict, List, Optional, Sequence

from .api import Report, calibrate, quantize
from .errors import NotSupportedError, UsageError

__all__ = [
    "quantize_static",
    "QuantType",
    "QuantFormat",
    "CalibrationMethod",
    "CalibrationDataReader",
]


class QuantType(enum.Enum):
    """Element types, named as ONNX Runtime names them."""

    QInt8 = 0
    QUInt8 = 1
    QFLOAT8E4M3FN = 2
    QInt16 = 3
    QUInt16 = 4
    QInt4 = 5
    QUInt4 = 6


class QuantFormat(enum.Enum):
    QOperator = 0
    QDQ = 1


class CalibrationMethod(enum.Enum):
    MinMax = 0
    Entropy = 1
    Percentile = 2
    Distribution = 3


class CalibrationDataReader:
    """ONNX Runtime's reader protocol: ``get_next()`` returns a ``dict`` of input name ->
    ``numpy.ndarray`` per sample, then ``None``. Subclassing is optional: any object with
    ``get_next`` works."""

    def get_next(self) -> Optional[Dict[str, Any]]:
        raise NotImplementedError

    def __iter__(self) -> "CalibrationDataReader":
        return self

    def __next__(self) -> Dict[str, Any]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def _name(value: Any) -> str:
    """An enum member's name (ours or onnxruntime's), or a string as given."""
    return value if isinstance(value, str) else getattr(value, "name", str(value))


_ACTIVATION = {"QInt8": "int8", "QUInt8": "uint8", "QInt16": "int16", "QFLOAT8E4M3FN": "fp8"}
_WEIGHT = {"QInt8": "int8", "QInt4": "int4", "QUInt4": "uint4", "QFLOAT8E4M3FN": "fp8"}
_METHOD = {"MinMax": "minmax", "Entropy": "entropy", "Percentile": "percentile"}


def _regex_escape(name: str) -> str:
    """``name`` as a literal in Rust ``regex`` syntax."""
    return "".join("\\" + c if c in "\\.+*?()|[]{}^$#&-~" else c for c in name)


def _exact(names: Sequence[str]) -> str:
    return "^(?:" + "|".join(_regex_escape(n) for n in names) + ")$"


def _settings(
    quant_format: Any,
    op_types_to_quantize: Optional[Sequence[str]],
    per_channel: Optional[bool],
    reduce_range: Optional[bool],
    activation_type: Any,
    weight_type: Any,
    nodes_to_quantize: Optional[Sequence[str]],
    nodes_to_exclude: Optional[Sequence[str]],
    calibrate_method: Any,
    calibration_providers: Optional[Sequence[str]],
    extra_options: Optional[Dict[str, Any]],
    target: str,
) -> Dict[str, Any]:
    """The onnx-quant settings file (as a dict) these arguments mean."""
    acts: Dict[str, Any] = {}
    weights: Dict[str, Any] = {}
    overrides: List[Dict[str, Any]] = []
    if quant_format is not None and _name(quant_format) != "QDQ":
        raise NotSupportedError(
            f"quant_format={_name(quant_format)}: onnx-quant writes QDQ models only (QuantFormat.QDQ); "
            "ONNX Runtime fuses their Q/DQ pairs into the same integer kernels"
        )
    if per_channel is not None:
        weights["per_channel"] = bool(per_channel)
    if reduce_range:
        # ONNX Runtime's reduce_range: weights in 7 bits, for CPUs without VNNI
        weights["cpu_overflow"] = "all"
    if activation_type is not None:
        a = _name(activation_type)
        if a not in _ACTIVATION:
            raise NotSupportedError(
                f"activation_type={a}: onnx-quant quantizes activations to "
                + ", ".join(_ACTIVATION)
            )
        if a in ("QUInt8", "QInt16") and target == "tensorrt":
            raise NotSupportedError(
                f"activation_type={a} with target='tensorrt': TensorRT takes int8 (QInt8) or "
                "float8 activations only; pass target='ort' or 'openvino' for this type"
            )
        acts["dtype"] = _ACTIVATION[a]
        if a == "QUInt8":
            acts["symmetric"] = False
    if weight_type is not None:
        w = _name(weight_type)
        if w not in _WEIGHT:
            raise NotSupportedError(
                f"weight_type={w}: onnx-quant quantizes weights to " + ", ".join(_WEIGHT)
            )
        weights["dtype"] = _WEIGHT[w]
    if calibrate_method is not None:
        m = _name(calibrate_method)
        if m not in _METHOD:
            raise NotSupportedError(
                f"calibrate_method={m}: onnx-quant has MinMax, Entropy and Percentile "
                "(and mse, its own default: leave calibrate_method out)"
            )
        acts["method"] = _METHOD[m]
    if calibration_providers:
        others = [p for p in calibration_providers if p != "CPUExecutionProvider"]
        if others:
            raise NotSupportedError(
                f"calibration_providers={list(calibration_providers)}: onnx-quant calibrates on "
                "the CPU in tract (CPUExecutionProvider only)"
            )
    extra = dict(extra_options or {})
    for key, value in extra.items():
        if key == "ActivationSymmetric":
            acts["symmetric"] = bool(value)
        elif key == "CalibTensorRangeSymmetric":
            if value:
                acts["symmetric"] = True
        elif key == "WeightSymmetric":
            if not value:
                raise NotSupportedError(
                    "extra_options WeightSymmetric=False: onnx-quant's int8 weights are "
                    "symmetric (uint4 weights carry zero-points: weight_type=QUInt4)"
                )
        elif key == "CalibPercentile":
            acts["percentile"] = float(value)
        elif key == "CalibMovingAverage":
            acts["moving_average"] = bool(value)
        else:
            raise NotSupportedError(
                f"extra_options key `{key}` has no onnx-quant equivalent (supported: "
                "ActivationSymmetric, WeightSymmetric=True, CalibTensorRangeSymmetric, "
                "CalibPercentile, CalibMovingAverage)"
            )
    if "percentile" in acts and acts.get("method") != "percentile":
        raise UsageError(
            "extra_options CalibPercentile goes with calibrate_method=CalibrationMethod.Percentile"
        )
    if nodes_to_exclude:
        overrides.append({"match": {"name_regex": _exact(list(nodes_to_exclude))}, "skip": True})
    if nodes_to_quantize:
        overrides.append({"match": {"name_regex": _exact(list(nodes_to_quantize))}, "skip": False})
    if op_types_to_quantize:
        overrides.append({"match": {"op_type": list(op_types_to_quantize)}, "skip": False})
    if nodes_to_quantize or op_types_to_quantize:
        # earlier entries protect what they name from this one (docs/config.md, precedence)
        overrides.append({"match": {"name": "*"}, "skip": True})
    config: Dict[str, Any] = {}
    if acts:
        config["activations"] = acts
    if weights:
        config["weights"] = weights
    if overrides:
        config["overrides"] = overrides
    return config


def quantize_static(
    model_input: Any,
    model_output: Any,
    calibration_data_reader: Any = None,
    quant_format: Any = None,
    op_types_to_quantize: Optional[Sequence[str]] = None,
    per_channel: Optional[bool] = None,
    reduce_range: Optional[bool] = None,
    activation_type: Any = None,
    weight_type: Any = None,
    nodes_to_quantize: Optional[Sequence[str]] = None,
    nodes_to_exclude: Optional[Sequence[str]] = None,
    use_external_data_format: bool = False,
    calibrate_method: Any = None,
    calibration_providers: Optional[Sequence[str]] = None,
    extra_options: Optional[Dict[str, Any]] = None,
    calibration_cache_path: Any = None,
    *,
    target: str = "tensorrt",
    quiet: bool = False,
) -> Report:
    """ONNX Runtime's ``quantize_static``, on onnx-quant.

    ``model_input``: a path or an ``onnx.ModelProto``; ``calibration_data_reader``: a
    ``CalibrationDataReader`` (or any form :func:`onnx_quant.quantize` takes); ``quant_format``
    QDQ; ``per_channel``; ``reduce_range`` (7-bit weights: ``weights.cpu_overflow: all``);
    ``activation_type`` QInt8, QUInt8 (asymmetric), QInt16, QFLOAT8E4M3FN; ``weight_type`` QInt8,
    QInt4, QUInt4, QFLOAT8E4M3FN; ``op_types_to_quantize``, ``nodes_to_quantize``,
    ``nodes_to_exclude`` (overrides); ``use_external_data_format`` (weights in
    ``model_output.data``); ``calibrate_method`` MinMax, Entropy, Percentile;
    ``calibration_providers`` CPUExecutionProvider; ``extra_options`` ActivationSymmetric,
    WeightSymmetric (True), CalibTensorRangeSymmetric, CalibPercentile, CalibMovingAverage;
    ``calibration_cache_path``: an onnx-quant statistics file, read when it exists (no
    calibration, the reader may be ``None``), else written by this call's calibration.
    Anything else raises :class:`~onnx_quant.errors.NotSupportedError`. Keyword-only
    extensions: ``target`` (``"tensorrt"``, ``"ort"``, ``"openvino"``) and ``quiet``. Returns
    the :class:`~onnx_quant.api.Report` (ONNX Runtime's returns ``None``)."""
    config = _settings(
        quant_format,
        op_types_to_quantize,
        per_channel,
        reduce_range,
        activation_type,
        weight_type,
        nodes_to_quantize,
        nodes_to_exclude,
        calibrate_method,
        calibration_providers,
        extra_options,
        target,
    )
    cache = os.fspath(calibration_cache_path) if calibration_cache_path is not None else None
    if cache is not None and os.path.exists(cache) and not _is_stats_file(cache):
        raise NotSupportedError(
            f"calibration_cache_path `{cache}` is not an onnx-quant statistics file (ONNX "
            "Runtime's cache format is not read): give a new path, which this call fills"
        )
    reuse = cache is not None and os.path.exists(cache)
    if calibration_data_reader is None and not reuse:
        raise UsageError(
            "quantize_static: give calibration_data_reader (or an existing calibration_cache_path)"
        )
    with tempfile.TemporaryDirectory(prefix="onnx-quant-") as scratch:
        if hasattr(model_input, "SerializeToString"):
            path = os.path.join(scratch, "model_input.onnx")
            with open(path, "wb") as f:
                f.write(model_input.SerializeToString())
            model_input = path
        settings = config or None
        if cache is not None and not reuse:
            calibrate(
                model_input, cache, calibration_data_reader, target=target, config=settings, quiet=quiet
            )
        return quantize(
            model_input,
            model_output,
            None if cache is not None else calibration_data_reader,
            stats=cache,
            target=target,
            config=settings,
            quiet=quiet,
            external_data=bool(use_external_data_format),
        )


def _is_stats_file(path: str) -> bool:
    """Whether `path` starts as an onnx-quant statistics file does (JSON, `format` first)."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return False
    return b'"onnx-quant-stats"' in head
