#!/usr/bin/env bash
# Runs the interop tests (or the `cargo test` filter given) with every Python consumer (ONNX
# Runtime, OpenVINO, the TensorRT-RTX parser, check.py) on an emulated Haswell CPU: AVX2 and
# FMA, no AVX-512, no VNNI, the CPUs whose int8 kernels add pairs of products into a saturating
# int16 (docs/presets.md, "x86 CPUs without VNNI"). QEMU's user-mode emulator answers CPUID for
# the CPU it emulates, so ONNX Runtime's MLAS and OpenVINO's oneDNN pick their AVX2 kernels
# whatever the host has. Needs qemu-user (Debian: apt-get install qemu-user) and the venv that
# tests/run.sh installs; roughly 10 x slower than a native run.
#
#   bash tests/haswell.sh                 # the interop tests
#   bash tests/haswell.sh cpu_targets     # a filter
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${ONNXQ_VENV:-$ROOT/.venv}
command -v qemu-x86_64 > /dev/null || { echo "tests/haswell.sh: needs qemu-x86_64 (apt-get install qemu-user)" >&2; exit 2; }
[ -x "$VENV/bin/python" ] || { echo "tests/haswell.sh: no venv at $VENV: run bash tests/run.sh once" >&2; exit 2; }
WRAP=$(mktemp -d)/python
cat > "$WRAP" <<WRAPPER
#!/usr/bin/env bash
exec qemu-x86_64 -cpu Haswell "$VENV/bin/python" "\$@" 2> >(grep -v "TCG doesn't support" >&2)
WRAPPER
chmod +x "$WRAP"
"$WRAP" -c "import openvino as ov; caps = ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES'); print('[haswell] OpenVINO CPU capabilities:', caps)"
cd "$ROOT"
ONNXQ_PYTHON=$WRAP cargo test --features interop --test it -- "${@:-interop::}" --test-threads 2
