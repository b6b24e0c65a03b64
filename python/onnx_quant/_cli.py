"""The ``onnx-quant`` console command of the wheel: the same program as the Rust binary."""

from __future__ import annotations

import sys


def main() -> None:
    from . import _native

    argv = list(sys.argv)
    argv[0] = "onnx-quant"
    sys.exit(_native.main(argv))
