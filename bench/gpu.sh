#!/usr/bin/env bash
# The GPU benchmark, as one prepared script for a lent CUDA machine (finishes in under 8 minutes).
#
#   bench/gpu.sh              on the GPU machine: figures go to $OUT (default: a new temp dir)
#   bench/gpu.sh --dry-run    anywhere, on CPU: the same steps at toy sizes, to check the plumbing
#
# Steps (each under its own time limit, results written as they come, so a limit keeps what ran;
# every step's output goes to one steps.log, so the folder holds at most 7 files):
#   1. machine facts (nvidia-smi, torch, CUDA device)
#   2. accuracy: ETTh1 M and ETTm1 M, L=336, H=96, every family, TrainingConfig device=cuda, amp=true
#   3. speed: training throughput of every deep family and of the plain-PyTorch loop at the fixed
#      size (hidden 64, 2 layers, L=96, H=96, batch 32, 1000 steps) on CUDA with bf16 autocast
#   4. with CELLS set: those ETT cells through `forecast run` on the GPU (bench/cells.py)
#   5. the markdown tables, printed and saved
#
# Environment: PY (python with torch+CUDA and the project's dependencies; default .venv/bin/python,
# else python3), ETT_DIR (folder with ETTh1.csv/ETTm1.csv; default ../shared/data/ett, ./shared/data/ett,
# or data/ which holds ETTh1 only), OUT (output folder).
set -euo pipefail

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi

cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1
if [[ -z "${PY:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT="${OUT:-$(mktemp -d -t gpu-bench-XXXX)}"
mkdir -p "$OUT"
START=$(date +%s)
BUDGET=470  # seconds for everything: stays under 8 minutes with start-up

left() { echo $((BUDGET - ($(date +%s) - START))); }
step() {  # step SECONDS LOGNAME COMMAND...: run with a time limit, never fail the script
  local limit=$1 name=$2; shift 2
  local avail; avail=$(left)
  if ((avail < 10)); then echo "skip $name: time budget spent" | tee -a "$OUT/gpu.log"; return 0; fi
  ((limit > avail)) && limit=$avail
  echo "== $name (limit ${limit}s, load $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$OUT/gpu.log"
  echo "== $name" >> "$OUT/steps.log"
  timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$OUT/steps.log" || \
    echo "   $name ended with status ${PIPESTATUS[0]} (124: time limit)" | tee -a "$OUT/gpu.log"
}

if ((DRY)); then
  DEVICE=(--device cpu)
  SPEED=(--only train --steps 5 --families linear --threads 1)
  ACC=(--models naive linear --epochs 1 --max-steps 5 --threads 1 --scorer lean --first-variant)
  echo "dry run on CPU: toy sizes, figures mean nothing" | tee "$OUT/gpu.log"
else
  DEVICE=(--device cuda --amp)
  SPEED=(--only train)
  ACC=(--scorer lean --first-variant)  # one variant per family: every family fits in the time limit
  nvidia-smi 2>&1 | tee "$OUT/nvidia-smi.txt" || true
fi

"$PY" - <<'EOF' 2>&1 | tee "$OUT/machine.json"
import json, os, sys
sys.path.insert(0, "bench")
from _common import machine, ett_dir
info = machine()
info["ett_dir"] = str(ett_dir())
print(json.dumps(info))
EOF

for ds in ETTh1 ETTm1; do
  if ! "$PY" -c "import sys; sys.path.insert(0, 'bench'); from _common import ett_path; ett_path('$ds')" 2>/dev/null; then
    echo "skip $ds: not found (set ETT_DIR)" | tee -a "$OUT/gpu.log"
    continue
  fi
  step 130 "accuracy_$ds" "$PY" bench/accuracy.py --datasets "$ds" --features M --horizons 96 \
    --lookbacks 336 "${ACC[@]}" "${DEVICE[@]}" --out "$OUT/accuracy.csv"
done

# CELLS="ETTm1:M:720 ETTm2:M:720": the ETT cells too costly on 2 cores, through `forecast run` with
# the deep families on the GPU (bench/cells.py --device cuda); rows in $OUT/cells.csv, the run
# folders outside $OUT. Off unless named: each cell takes minutes of the budget.
if [[ -n "${CELLS:-}" ]]; then
  CELL_ARGS=(--device cuda)
  ((DRY)) && CELL_ARGS=(--device cpu --quick)
  # shellcheck disable=SC2086  # CELLS is a space-separated list of cells
  step 300 cells "$PY" bench/cells.py --cells $CELLS "${CELL_ARGS[@]}" --out "$OUT/cells.csv" \
    --work "$(mktemp -d -t cells-XXXX)"
fi

# speed last: 16 fresh processes (~10 s of CUDA start-up each); interrupted, it keeps its rows
step 320 speed "$PY" bench/speed.py "${SPEED[@]}" "${DEVICE[@]}" --out "$OUT/speed.json"

"$PY" bench/accuracy.py --report --out "$OUT/accuracy.csv" > "$OUT/accuracy.md" 2>&1 || true
cat "$OUT/accuracy.md"
echo "done in $(( $(date +%s) - START )) s; figures in $OUT" | tee -a "$OUT/gpu.log"
