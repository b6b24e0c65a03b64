"""`quantize_static` with ONNX Runtime's signature: ONNX Runtime's own enums and reader class
work, each supported argument gives the same bytes as the equivalent command line, the others
raise."""

import subprocess
import sys

import numpy as np
import pytest
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType

import onnx_quant
from onnx_quant import errors, quantize_static

from conftest import CALIB, MODEL, ROOT, consumers, run_cli


class OrtReader(CalibrationDataReader):
    def __init__(self):
        x = np.load(CALIB)
        self.feeds = iter([{"input": x[i : i + 1]} for i in range(len(x))])

    def get_next(self):
        return next(self.feeds, None)


CASES = {
    "ort defaults spelled out": (
        dict(quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
             weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax),
        ["--method", "minmax"],
    ),
    "per tensor, entropy": (
        dict(per_channel=False, calibrate_method=CalibrationMethod.Entropy),
        ["--per-tensor", "--method", "entropy"],
    ),
    "percentile": (
        dict(calibrate_method=CalibrationMethod.Percentile, extra_options={"CalibPercentile": 99.9}),
        ["--method", "percentile", "--percentile", "99.9"],
    ),
    "int4 weights": (dict(weight_type=QuantType.QInt4), ["--weight-type", "int4"]),
    "asymmetric uint8 for ort": (
        dict(activation_type=QuantType.QUInt8, target="ort"),
        ["--target", "ort", "--activation-type", "uint8", "--asymmetric"],
    ),
    "asymmetric int8 by extra option": (
        dict(extra_options={"ActivationSymmetric": False}, target="ort"),
        ["--target", "ort", "--asymmetric"],
    ),
    "nodes to exclude": (
        dict(nodes_to_exclude=["/conv1/Conv"]),
        ["--config", "EXCLUDE"],
    ),
    "reduce range": (dict(reduce_range=True, target="ort"), ["--target", "ort", "--config", "REDUCE"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_argument_gives_the_command_lines_bytes(case, tmp_path):
    kwargs, flags = CASES[case]
    configs = {
        "EXCLUDE": "overrides:\n  - match: {name: /conv1/Conv}\n    skip: true\n",
        "REDUCE": "weights:\n  cpu_overflow: all\n",
    }
    for i, f in enumerate(flags):
        if f in configs:
            path = tmp_path / "settings.yaml"
            path.write_text(configs[f])
            flags = flags[:i] + [str(path)] + flags[i + 1 :]
    ref = tmp_path / "cli.onnx"
    run_cli(MODEL, ref, "--calib", CALIB, "--quiet", *flags)
    out = tmp_path / "api.onnx"
    report = quantize_static(str(MODEL), str(out), OrtReader(), quiet=True, **kwargs)
    assert out.read_bytes() == ref.read_bytes()
    assert report.samples == 128


def test_node_and_op_type_selection(tmp_path):
    r = quantize_static(str(MODEL), str(tmp_path / "a.onnx"), OrtReader(), nodes_to_quantize=["/conv2/Conv"], quiet=True)
    assert r.quantized_nodes == ["/conv2/Conv"]
    r = quantize_static(str(MODEL), str(tmp_path / "b.onnx"), OrtReader(), op_types_to_quantize=["Conv"], quiet=True)
    assert r.quantized_nodes == ["/conv1/Conv", "/conv2/Conv", "/conv3/Conv"]
    r = quantize_static(str(MODEL), str(tmp_path / "c.onnx"), OrtReader(), nodes_to_exclude=["/conv2/Conv"], quiet=True)
    assert "/conv2/Conv" not in r.quantized_nodes and "/conv3/Conv" in r.quantized_nodes


def test_a_calibration_cache_is_written_then_read(tmp_path):
    cache = tmp_path / "ranges.json"
    a = tmp_path / "a.onnx"
    quantize_static(str(MODEL), str(a), OrtReader(), calibration_cache_path=str(cache), quiet=True)
    assert cache.exists()
    # second call: no reader, ranges from the cache, same bytes
    b = tmp_path / "b.onnx"
    quantize_static(str(MODEL), str(b), None, calibration_cache_path=str(cache), quiet=True)
    assert a.read_bytes() == b.read_bytes()
    ref = tmp_path / "ref.onnx"
    run_cli(MODEL, ref, "--calib", CALIB, "--quiet")
    assert a.read_bytes() == ref.read_bytes()
    other = tmp_path / "ort-cache.json"
    other.write_text('{"input": [0.0, 1.0]}')
    with pytest.raises(errors.NotSupportedError, match="not an onnx-quant statistics file"):
        quantize_static(str(MODEL), str(b), OrtReader(), calibration_cache_path=str(other))
    with pytest.raises(errors.UsageError, match="calibration_data_reader"):
        quantize_static(str(MODEL), str(b))


def test_a_model_proto_and_external_data(tmp_path):
    import onnx

    out = tmp_path / "q.onnx"
    quantize_static(onnx.load(str(MODEL)), str(out), OrtReader(), use_external_data_format=True, quiet=True)
    assert (tmp_path / "q.onnx.data").stat().st_size > 0
    m = onnx.load(str(out), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)
    assert consumers(out)["ort"]["agreement"] > 0.95


@pytest.mark.parametrize(
    "kwargs, says",
    [
        (dict(quant_format=QuantFormat.QOperator), "QDQ models only"),
        (dict(activation_type=QuantType.QUInt16), "activation_type=QUInt16"),
        (dict(weight_type=QuantType.QUInt8), "weight_type=QUInt8"),
        (dict(calibrate_method=CalibrationMethod.Distribution), "Distribution"),
        (dict(calibration_providers=["CUDAExecutionProvider"]), "CPUExecutionProvider only"),
        (dict(extra_options={"DedicatedQDQPair": True}), "DedicatedQDQPair"),
        (dict(extra_options={"WeightSymmetric": False}), "WeightSymmetric=False"),
    ],
)
def test_unsupported_arguments_raise_instead_of_being_ignored(kwargs, says, tmp_path):
    with pytest.raises(errors.NotSupportedError, match=says) as e:
        quantize_static(str(MODEL), str(tmp_path / "q.onnx"), OrtReader(), **kwargs)
    assert e.value.exit_code == 2
    assert not (tmp_path / "q.onnx").exists()


def test_activation_types_tensorrt_refuses_are_refused_for_it(tmp_path):
    for t in (QuantType.QUInt8, QuantType.QInt16):
        with pytest.raises(errors.NotSupportedError, match="target='tensorrt'"):
            quantize_static(str(MODEL), str(tmp_path / "q.onnx"), OrtReader(), activation_type=t)
    assert not (tmp_path / "q.onnx").exists()


def test_an_ort_script_runs_unchanged_and_the_consumers_accept_its_model(tmp_path):
    """bench/ort_script.py, written for onnxruntime.quantization, with only its import changed."""
    out = tmp_path / "q.onnx"
    script = ROOT / "bench" / "ort_script.py"
    p = subprocess.run([sys.executable, str(script), str(MODEL), str(out), str(CALIB), "--onnx-quant"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    r = consumers(out)
    assert r["checker"] == "ok"
    assert r["qdq"]["nonzero_zero_points"] == 0
    assert r["trt"]["parsed"] and r["trt"]["built"], r["trt"]
    assert r["ort"]["top1"] >= r["ort"]["ref_top1"] - 0.01
    assert r["openvino"]["top1"] >= r["openvino"]["ref_top1"] - 0.01
    assert onnx_quant.check(out).ok
