"""The package ships `py.typed`: its annotations must hold. mypy --strict over a copy of the
installed package's source (numpy's stubs included); the copy keeps mypy from reading the rest
of site-packages as the project's own modules."""

import os
import shutil
import subprocess
import sys

import onnx_quant


def test_the_package_type_checks_strictly(tmp_path):
    shutil.copytree(os.path.dirname(onnx_quant.__file__), tmp_path / "onnx_quant",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    p = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--ignore-missing-imports", "--no-incremental",
         "-p", "onnx_quant"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "no issues found" in p.stdout
