"""The Python API: every calibration-source form gives the command line's bytes; results come
back as Python objects; errors as exceptions with the command's exit code."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import onnx_quant as oq
from onnx_quant import errors

from conftest import CALIB, EVAL_X, EVAL_Y, MODEL, consumers, run_cli


@pytest.fixture(scope="module")
def cli_model(tmp_path_factory):
    """The command line's output for the fixture with default settings."""
    out = tmp_path_factory.mktemp("cli") / "q.onnx"
    run_cli(MODEL, out, "--calib", CALIB, "--quiet")
    return out.read_bytes()


class Reader:
    """ONNX Runtime's CalibrationDataReader protocol, without importing onnxruntime."""

    def __init__(self, x):
        self.it = iter({"input": x[i : i + 1]} for i in range(len(x)))

    def get_next(self):
        return next(self.it, None)


def sources(x):
    yield "path", str(CALIB)
    yield "pathlib", CALIB
    yield "list of arrays", [x[i : i + 1] for i in range(len(x))]
    yield "generator of dicts", ({"input": x[i : i + 1]} for i in range(len(x)))
    yield "reader", Reader(x)
    # arrays without the batch axis: one feed each, as a .npy with one axis less
    yield "arrays without batch axis", (x[i] for i in range(len(x)))
    # one array stacking the samples on axis 0, as a .npy file holds them
    yield "one array", x


@pytest.mark.parametrize("form", [name for name, _ in sources(np.zeros((1, 1, 8, 8)))])
def test_every_calibration_source_gives_the_command_lines_bytes(form, tmp_path, calib_array, cli_model):
    source = dict(sources(calib_array))[form]
    out = tmp_path / "q.onnx"
    report = oq.quantize(MODEL, out, calib=source, quiet=True)
    assert out.read_bytes() == cli_model
    assert report.samples == 128
    assert report.quantized_nodes == ["/conv1/Conv", "/conv2/Conv", "/pool/MaxPool", "/conv3/Conv", "/fc1/MatMul"]
    assert report.float_nodes["/fc2/Gemm"].startswith("K = 64")
    assert report.output == str(out)


def test_max_samples_stops_reading_the_iterable(tmp_path, calib_array):
    taken = []

    def gen():
        for i in range(len(calib_array)):
            taken.append(i)
            yield calib_array[i : i + 1]

    r = oq.quantize(MODEL, tmp_path / "q.onnx", calib=gen(), max_samples=16, quiet=True)
    assert r.samples == 16
    assert len(taken) <= 17
    ref = tmp_path / "ref.onnx"
    run_cli(MODEL, ref, "--calib", CALIB, "--max-samples", 16, "--quiet")
    assert (tmp_path / "q.onnx").read_bytes() == ref.read_bytes()


def test_settings_as_keywords_and_config_dict_match_the_flags(tmp_path):
    ref = tmp_path / "ref.onnx"
    run_cli(MODEL, ref, "--calib", CALIB, "--method", "minmax", "--per-tensor", "--weight-type", "int4", "--quiet")
    a = tmp_path / "a.onnx"
    oq.quantize(MODEL, a, calib=CALIB, method="minmax", per_tensor=True, weight_type="int4", quiet=True)
    assert a.read_bytes() == ref.read_bytes()
    b = tmp_path / "b.onnx"
    cfg = {"activations": {"method": "minmax"}, "weights": {"per_channel": False, "dtype": "int4"}}
    oq.quantize(MODEL, b, calib=CALIB, config=cfg, quiet=True)
    assert b.read_bytes() == ref.read_bytes()


def test_overrides_in_a_config_dict(tmp_path):
    r = oq.quantize(
        MODEL, tmp_path / "q.onnx", calib=CALIB, quiet=True,
        config={"overrides": [{"match": {"name": "/conv1/Conv"}, "skip": True}]},
    )
    assert "/conv1/Conv" not in r.quantized_nodes
    assert "/conv2/Conv" in r.quantized_nodes


def test_errors_carry_the_exit_code_category_and_message(tmp_path, calib_array):
    with pytest.raises(errors.ModelError) as e:
        oq.quantize(tmp_path / "missing.onnx", tmp_path / "o.onnx", calib=CALIB)
    assert e.value.exit_code == 3 and "missing.onnx" in str(e.value)
    with pytest.raises(errors.CalibrationError) as e:
        oq.quantize(MODEL, tmp_path / "o.onnx", calib=[np.zeros((1, 3, 8, 8), np.float32)])
    assert e.value.exit_code == 4 and "input" in str(e.value)
    with pytest.raises(errors.UsageError) as e:
        oq.quantize(MODEL, tmp_path / "o.onnx", calib=CALIB, no_such_setting=1)
    assert e.value.exit_code == 2 and "--no-such-setting" in str(e.value)
    with pytest.raises(errors.UsageError) as e:
        oq.quantize(MODEL, tmp_path / "o.onnx", calib=CALIB, config={"activations": {"methd": "minmax"}})
    assert "methd" in str(e.value)
    with pytest.raises(errors.UsageError, match="no samples"):
        oq.quantize(MODEL, tmp_path / "o.onnx", calib=iter([]))
    with pytest.raises(errors.UsageError, match="a tuple"):
        oq.quantize(MODEL, tmp_path / "o.onnx", calib=[(calib_array[:1],)])
    with pytest.raises(errors.UsageError, match="a dict after arrays"):
        oq.quantize(MODEL, tmp_path / "o.onnx", calib=[calib_array[:1], {"input": calib_array[:1]}])
    with pytest.raises(errors.UsageError, match="CalibrationDataReader"):
        oq.quantize(MODEL, tmp_path / "o.onnx", calib=42)
    with pytest.raises(errors.UsageError, match="give --calib"):
        oq.quantize(MODEL, tmp_path / "o.onnx")
    with pytest.raises(errors.UsageError, match="give calib="):
        oq.calibrate(MODEL, tmp_path / "s.json", None)
    assert not (tmp_path / "o.onnx").exists()
    assert isinstance(e.value, oq.OnnxQuantError)


def test_an_existing_output_survives_a_failed_run(tmp_path):
    out = tmp_path / "o.onnx"
    out.write_bytes(b"keep me")
    with pytest.raises(errors.CalibrationError):
        oq.quantize(MODEL, out, calib=[np.zeros((1, 1, 9, 9), np.float32)])
    assert out.read_bytes() == b"keep me"


def test_eval_check_explain_return_their_reports(tmp_path):
    q = tmp_path / "q.onnx"
    oq.quantize(MODEL, q, calib=CALIB, quiet=True)
    e = oq.eval(MODEL, q, EVAL_X, labels=EVAL_Y)
    assert e.samples == 360
    assert e.sqnr_db["logits"] > 30
    assert e.labels["top1_drop"] < 1.0
    with pytest.raises(errors.AccuracyMissed) as miss:
        oq.eval(MODEL, q, EVAL_X, min_sqnr=200)
    assert miss.value.exit_code == 7
    c = oq.check(q, "tensorrt")
    assert c.ok and c.quantize_nodes == 5 and c.target == "tensorrt"
    ex = oq.explain(MODEL)
    assert ex.quantized == ["/conv1/Conv", "/conv2/Conv", "/pool/MaxPool", "/conv3/Conv", "/fc1/MatMul"]
    conv = next(n for n in ex.nodes if n.name == "/conv1/Conv")
    assert any("weight `conv1.weight`" in d for d in conv.details)
    skipped = oq.explain(MODEL, config={"overrides": [{"match": {"op_type": "MatMul"}, "skip": True}]})
    assert "/fc1/MatMul" not in skipped.quantized


def test_check_reports_violations_without_raising(tmp_path):
    q = tmp_path / "q.onnx"
    # asymmetric activations: a TensorRT rule violation (non-zero zero-points)
    oq.quantize(MODEL, q, calib=CALIB, target="ort", asymmetric=True, quiet=True)
    c = oq.check(q, "tensorrt")
    assert not c.ok
    assert all({"rule", "node", "message"} <= set(v) for v in c.violations)


def test_calibrate_and_merge_stats_equal_one_run(tmp_path, calib_array):
    whole = oq.calibrate(MODEL, tmp_path / "all.json", CALIB, quiet=True)
    a = oq.calibrate(MODEL, tmp_path / "a.json", [calib_array[i : i + 1] for i in range(64)], quiet=True)
    b = oq.calibrate(MODEL, tmp_path / "b.json", [calib_array[i : i + 1] for i in range(64, 128)], quiet=True)
    merged = oq.merge_stats([a.path, b.path], tmp_path / "m.json")
    assert merged.samples == whole.samples == 128
    assert merged.tensors == whole.tensors
    q1, q2 = tmp_path / "q1.onnx", tmp_path / "q2.onnx"
    oq.quantize(MODEL, q1, stats=merged.path, method="entropy", quiet=True)
    oq.quantize(MODEL, q2, calib=CALIB, method="entropy", quiet=True)
    assert q1.read_bytes() == q2.read_bytes()


def test_the_gil_is_released_while_a_job_runs(tmp_path, calib_array):
    import threading

    ticks = []
    done = threading.Event()

    def ticker():
        while not done.is_set():
            ticks.append(1)
            done.wait(0.001)

    big = tmp_path / "big.npy"
    np.save(big, np.repeat(calib_array, 40, axis=0))
    t = threading.Thread(target=ticker)
    t.start()
    try:
        oq.quantize(MODEL, tmp_path / "q.onnx", calib=big, quiet=True, method="entropy", threads=1)
    finally:
        done.set()
        t.join()
    # a Python thread kept running while Rust worked (with the GIL held it would barely tick)
    assert len(ticks) > 50


def test_ctrl_c_cancels_cleanly(tmp_path, calib_array):
    """SIGINT during calibration: KeyboardInterrupt, no output, no temporary file left."""
    big = tmp_path / "big.npy"
    np.save(big, np.repeat(calib_array, 200, axis=0))
    out = tmp_path / "out" / "q.onnx"
    out.parent.mkdir()
    script = textwrap.dedent(
        f"""
        import sys, time, onnx_quant
        print("ready", flush=True)
        t = time.time()
        try:
            onnx_quant.quantize({str(MODEL)!r}, {str(out)!r}, calib={str(big)!r}, quiet=True, threads=1)
            print("finished", flush=True)
        except KeyboardInterrupt:
            print("interrupted after", round(time.time() - t, 2), flush=True)
        """
    )
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    import time

    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    rest, _ = p.communicate(timeout=60)
    assert rest.startswith("interrupted after"), rest
    assert os.listdir(out.parent) == []
