#!/usr/bin/env bash
# bench/mbnet_cpu.sh [OUT_DIR]: the mbnet fixture quantized by every preset (with
# weights.cpu_overflow auto, none and all) and by the peers (ONNX Runtime's quantize_static with
# its defaults and TensorRT-style settings, NNCF), each scored by ../shared/peers/evaluate.py
# --runtime all (exact ONNX Runtime, optimized ONNX Runtime, OpenVINO) on the 256 evaluation
# images, and the int8 weight pairs that x86 CPUs without VNNI could saturate
# (tests/interop/check.py --pairs). Prints one markdown table.
# Needs ../shared/peers/setup.sh (PEERS, PEERS_PY) and the test venv (.venv, for check.py).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${PEERS:-$ROOT/../shared/peers}
PY=${PEERS_PY:-$HOME/.cache/onnx-quant-peers/venv/bin/python}
TPY=${ONNXQ_VENV:-$ROOT/.venv}/bin/python
BIN=${ONNXQ_BIN:-$ROOT/target/release/onnx-quant}
O=${1:-$(mktemp -d)}
mkdir -p "$O"
M=$ROOT/fixtures/mbnet/mbnet.onnx C=$ROOT/fixtures/mbnet/calib.npy
X=$ROOT/fixtures/mbnet/eval_x.npy Y=$ROOT/fixtures/mbnet/eval_y.npy
printf 'weights:\n  cpu_overflow: none\n' > "$O/none.yaml"
printf 'weights:\n  cpu_overflow: all\n' > "$O/all.yaml"
run() { # NAME TOOL [EXTRA...]
  local name=$1 tool=$2; shift 2
  "$PY" "$PEERS/quantize.py" --tool "$tool" --model "$M" --calib "$C" --out "$O/$name.onnx" \
    --workdir "$O/work" --onnx-quant-bin "$BIN" ${@:+-- "$@"} > "$O/$name.run.json" 2> "$O/$name.run.err"
  "$PY" "$PEERS/evaluate.py" --model "$O/$name.onnx" --ref "$M" --x "$X" --y "$Y" --runtime all \
    --compact > "$O/$name.eval.json" 2> "$O/$name.eval.err"
  "$TPY" "$ROOT/tests/interop/check.py" --quant "$O/$name.onnx" --pairs > "$O/$name.pairs.json"
}
NAMES="tensorrt ort ort-none ort-all openvino openvino-none peer-ort peer-ort-trt peer-nncf"
run tensorrt onnx-quant --target tensorrt
run ort onnx-quant --target ort
run ort-none onnx-quant --target ort --config "$O/none.yaml"
run ort-all onnx-quant --target ort --config "$O/all.yaml"
run openvino onnx-quant --target openvino
run openvino-none onnx-quant --target openvino --config "$O/none.yaml"
run peer-ort ort
run peer-ort-trt ort-trt
run peer-nncf nncf
"$PY" - "$O" $NAMES <<'PY'
import json, sys
o, names = sys.argv[1], sys.argv[2:]
print("| output | ORT exact dB / top-1 | ORT dB / top-1 | OpenVINO dB / top-1 | layers with pairs over 128 (worst) |")
print("|---|---|---|---|---|")
for n in names:
    ev = json.load(open(f"{o}/{n}.eval.json"))
    def cell(k):
        r = ev.get(k) or {}
        return "error" if "error" in r or not r else f"{r['sqnr_db']:.2f} / {100 * r['top1']:.1f} %"
    layers = [l for l in json.load(open(f"{o}/{n}.pairs.json"))["pairs"]["layers"] if l["overflowing"]]
    worst = max((l["worst"] for l in layers), default=0)
    print(f"| {n} | {cell('ort-exact')} | {cell('ort')} | {cell('openvino')} | {len(layers)} ({worst}) |")
print(f"\nfp32 top-1 {100 * json.load(open(f'{o}/ort.eval.json'))['ort']['ref_top1']:.1f} %")
PY
