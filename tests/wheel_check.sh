#!/usr/bin/env bash
# The installed wheel in a fresh venv (tests/run.sh makes it): the `onnx-quant` command quantizes
# the shipped fixture, `import onnx_quant` works and quantizes from an iterable, and the wheel
# brought no Python dependency but numpy.
#
#   bash tests/wheel_check.sh VENV
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$1
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
"$VENV/bin/onnx-quant" "$ROOT/fixtures/digits/digits_cnn.onnx" "$OUT/cli.onnx" \
  --calib "$ROOT/fixtures/digits/calib.npy" --quiet
"$VENV/bin/python" - "$ROOT" "$OUT" <<'PY'
import sys, numpy as np, onnx_quant
root, out = sys.argv[1], sys.argv[2]
x = np.load(f"{root}/fixtures/digits/calib.npy")
r = onnx_quant.quantize(f"{root}/fixtures/digits/digits_cnn.onnx", f"{out}/api.onnx",
                        calib=(x[i:i + 1] for i in range(len(x))), quiet=True)
assert r.samples == 128 and len(r.quantized_nodes) == 5, r
assert open(f"{out}/api.onnx", "rb").read() == open(f"{out}/cli.onnx", "rb").read()
print(f"[tests] wheel in a fresh venv: onnx-quant {onnx_quant.__version__}, command and import ok")
PY
# pip, setuptools (older Pythons) and what the wheel needs: onnx-quant and numpy only
EXTRA=$("$VENV/bin/python" -m pip list --format=freeze --disable-pip-version-check \
  | cut -d= -f1 | grep -v -i -x -E 'pip|setuptools|wheel|onnx-quant|onnx_quant|numpy' || true)
if [ -n "$EXTRA" ]; then
  echo "[tests] the wheel installed more than numpy: $EXTRA" >&2
  exit 1
fi
