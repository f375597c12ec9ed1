#!/usr/bin/env bash
# The GPU figures of benchmarks/README.md in one command, each part under its own time limit so a
# hang or an out-of-memory in one does not cost the others:
#   1. gpu_ld3m.py: LD3M at the paper's model size, DM and DC s/it and peak memory (128 and 256 px);
#   2. bench_evaluators.py accuracy: the five evaluators on random real Fashion-MNIST, IPC 10, 3 seeds;
#   3. bench_dc_mtt.py accuracy: pixel + DC at IPC 1 (fp32 and bf16 real side) against random real
#      (eager real side, as measured; compiling on the GPU is untimed and this step has 120 s);
#   4. dc_reference.py: the reference DC re-typed against ddbench's DC on the same 8 draws (accuracy).
# Usage: benchmarks/gpu_checks.sh OUT_DIR        (Fashion-MNIST found as ddbench finds it: $DDBENCH_DATA, ...)
#        SMOKE=1 DEVICE=cpu benchmarks/gpu_checks.sh OUT_DIR   (tiny sizes: checks the script, not the GPU)
set -uo pipefail
out=${1:?usage: gpu_checks.sh OUT_DIR}
device=${DEVICE:-cuda}
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
export PYTHONUNBUFFERED=1
if [[ -n "${SMOKE:-}" ]]; then
  ld3m=(--small --iters 1 --budget-s 60) eval=(--eval-epochs 2 --test-size 200 --seeds 1) dc=(--eval-epochs 2 --dc-iterations 2 --seeds 1 --train-per-class 50)
  dcref=(--draws 0 --seeds 1 --iterations 1 --train-per-class 50 --test-size 200)
else
  ld3m=(--budget-s 170) eval=(--eval-epochs 300 --seeds 3) dc=(--eval-epochs 300 --seeds 3)
  dcref=(--draws 0,1,2,3,4,5,6,7 --seeds 3 --iterations 50)
fi
python -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
step() {  # step NAME LIMIT_S CMD...: run CMD under a time limit, log to OUT_DIR/NAME.log, report its status
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s): $*"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
  echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
}
step evaluators 180 python "$here/bench_evaluators.py" accuracy --device "$device" --out "$out/evaluators" "${eval[@]}"
step gpu_ld3m 210 python "$here/gpu_ld3m.py" --device "$device" "${ld3m[@]}"
step dc_accuracy 120 python "$here/bench_dc_mtt.py" accuracy --device "$device" --out "$out/dc" --precisions fp32,bf16 --mtt-image-lrs '' --skip-dc-dsa --dc-compile false "${dc[@]}"
step dc_reference 240 python "$here/dc_reference.py" --device "$device" --out "$out/dcref" --precisions fp32 --dc-compile false "${dcref[@]}"
