#!/usr/bin/env bash
# One call on a lent GPU machine: build the CUDA extension, run the GPU tests and the GPU benchmarks,
# and leave every log and JSON under $OUT; the last lines printed are a short summary (the device
# tool returns only the end of the output). Run from the repository root there:
#
#   bash benchmarks/gpu_session.sh [BUDGET_S]        (default 420: the device lends ~15 minutes in all)
#
# Steps run in order of value and each gets a timeout from what is left of the budget, so a slow
# step costs the later ones, never the whole call:
#   env, build (sm_90a only: H100/H200), info, attention GPU tests, attention + sampling suite rows
#   (bf16 decode at S = 32768 against copy bandwidth and SDPA), the peers' comparison (SDPA, SDPA
#   with repeat, FlexAttention), then the rest of the GPU tests. The machine's image has torch,
#   triton, pytest, pybind11 and nvcc (../.library/device/KINDS.md): nothing is installed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/genengine-gpu-session}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
BUDGET=${1:-420}
T0=$SECONDS
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

left() { echo $((BUDGET - (SECONDS - T0))); }

# step NAME MAX_S MIN_S COMMAND...: runs COMMAND with stdout+stderr in $OUT/NAME.log under a timeout of
# min(MAX_S, what is left); skipped when less than MIN_S is left
step() {
  local name=$1 max=$2 min=$3
  shift 3
  local budget
  budget=$(left)
  if [ "$budget" -lt "$min" ]; then
    echo "$name: skipped ($budget s left, needs $min)" >> "$SUMMARY"
    return
  fi
  [ "$budget" -gt "$max" ] && budget=$max
  local t=$SECONDS
  timeout "$budget" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local note=""
  [ $rc -eq 124 ] && note=" (timed out at ${budget}s)"
  echo "$name: rc $rc, $((SECONDS - t)) s$note" >> "$SUMMARY"
}

step env 30 5 bash -c "date -u; git log -1 --format='commit %h %s' 2>/dev/null; nvidia-smi; \
  $PY -c 'import torch, triton; print(\"torch\", torch.__version__, \"triton\", triton.__version__, torch.cuda.get_device_name())'"
step build 300 60 env GENENGINE_CUDA=1 GENENGINE_CUDA_ARCHS="${GENENGINE_CUDA_ARCHS:-90a}" "$PY" setup.py build_ext --inplace
step info 60 10 "$PY" -m genengine info
PYTEST=("$PY" -m pytest -q -p no:cacheprovider -m gpu -rf)
step test-attention 240 30 "${PYTEST[@]}" tests/test_attention.py
step bench-attention-sampling 240 60 "$PY" -m genengine.bench --ops attention,sampling --device cuda \
  --json "$OUT/bench-attention-sampling.json"
step peers-attention 180 60 "$PY" benchmarks/bench_attention.py --device cuda --json "$OUT/peers-attention.json"
step test-gpu-rest 600 60 "${PYTEST[@]}" tests --ignore=tests/test_attention.py

echo
echo "== genengine GPU session: $((SECONDS - T0)) s of $BUDGET; logs in $OUT"
cat "$SUMMARY"
for f in test-attention test-gpu-rest; do
  [ -f "$OUT/$f.log" ] && echo "$f: $(tail -1 "$OUT/$f.log")" && grep -E "^FAILED" "$OUT/$f.log" | head -8
done
[ -f "$OUT/bench-attention-sampling.log" ] && grep -E "^\(|^case|GB/s|tokens" "$OUT/bench-attention-sampling.log" | head -16
exit 0
