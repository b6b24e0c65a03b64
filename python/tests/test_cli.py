"""The wheel's `onnx-quant` command: the same program as the Rust binary."""

import subprocess
import sys

import onnx_quant

from conftest import CALIB, MODEL, cli, consumers, run_cli


def test_version_matches_the_package():
    p = run_cli("--version")
    assert p.stdout.strip() == f"onnx-quant {onnx_quant.__version__}"


def test_quantizes_the_shipped_fixture_and_the_consumers_accept_it(tmp_path):
    out = tmp_path / "q.onnx"
    p = run_cli(MODEL, out, "--calib", CALIB)
    assert "quantized 5 of 14 nodes" in p.stderr
    r = consumers(out)
    assert r["checker"] == "ok"
    assert r["trt"]["parsed"] and r["trt"]["built"]
    assert abs(r["ort"]["top1"] - r["ort"]["ref_top1"]) <= 0.01
    assert abs(r["openvino"]["top1"] - r["openvino"]["ref_top1"]) <= 0.01


def test_exit_codes_are_the_binarys(tmp_path):
    # usage (2), model (3), calibration data (4)
    assert run_cli("quantize", "--no-such-flag", check=False).returncode == 2
    p = run_cli(tmp_path / "missing.onnx", tmp_path / "o.onnx", "--calib", CALIB, check=False)
    assert p.returncode == 3 and "missing.onnx" in p.stderr
    p = run_cli(MODEL, tmp_path / "o.onnx", "--calib", tmp_path / "nothing", check=False)
    assert p.returncode == 4 and "nothing" in p.stderr
    assert not (tmp_path / "o.onnx").exists()


def test_python_dash_m_runs_the_command():
    p = subprocess.run([sys.executable, "-m", "onnx_quant", "--version"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("onnx-quant ")
    assert cli()
