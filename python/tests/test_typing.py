"""The package ships `py.typed`: its annotations must hold. mypy --strict over the installed
package's source (numpy's stubs included)."""

import os
import subprocess
import sys

import onnx_quant


def test_the_package_type_checks_strictly():
    package = os.path.dirname(onnx_quant.__file__)
    p = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--ignore-missing-imports", "--no-incremental",
         "-p", "onnx_quant"],
        capture_output=True, text=True, cwd=os.path.dirname(package),
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "no issues found" in p.stdout
