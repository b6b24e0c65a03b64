"""Shared paths and helpers of the Python API tests (run by tests/run.sh with the venv's pytest,
against the installed wheel)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "fixtures" / "digits"
MODEL = DIGITS / "digits_cnn.onnx"
CALIB = DIGITS / "calib.npy"
EVAL_X = DIGITS / "eval_x.npy"
EVAL_Y = DIGITS / "eval_y.npy"
CHECK = ROOT / "tests" / "interop" / "check.py"


def cli() -> list:
    """The wheel's `onnx-quant` console command."""
    exe = shutil.which("onnx-quant", path=os.path.dirname(sys.executable))
    assert exe, "the onnx-quant command is not installed beside this Python"
    return [exe]


def run_cli(*args, check=True) -> subprocess.CompletedProcess:
    p = subprocess.run(cli() + [str(a) for a in args], capture_output=True, text=True)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def consumers(quant: Path, ref: Path = MODEL, x: Path = EVAL_X, y: Path = EVAL_Y) -> dict:
    """tests/interop/check.py on `quant`: onnx.checker with full shape inference, ONNX Runtime,
    OpenVINO and the TensorRT-RTX parser and builder."""
    p = subprocess.run(
        [sys.executable, str(CHECK), "--quant", str(quant), "--ref", str(ref), "--x", str(x),
         "--y", str(y), "--ort", "--openvino", "--trt"],
        capture_output=True, text=True,
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.fixture
def calib_array() -> np.ndarray:
    return np.load(CALIB)
