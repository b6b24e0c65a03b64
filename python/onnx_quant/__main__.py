"""``python -m onnx_quant ...`` runs the ``onnx-quant`` command."""

from ._cli import main

main()
