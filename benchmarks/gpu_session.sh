#!/usr/bin/env bash
# A GPU session's checks in one call of the device tool, from the repository root (the machine's
# python3 holds torch, triton, pytest, sympy, rich; nothing is installed):
#   1. the GPU benchmark alone on the machine (`codegen.bench_gpu`, its table in bench.log; docs are
#      edited by hand from it, so the earlier devices' tables stay);
#   2. the GPU tests (tests/codegen/test_gpu.py and the CUDA test of the user tasks) beside
#   3. the discovery searches of benchmarks/gpu_discovery.sh (SEEDS, default 0 1 2) in the time left
#      before DEADLINE_S (seconds from the start; default 560, inside one call's 600): started when 1
#      passed, stopped when 2 fails, so that a failure leaves device time to rerun after a fix.
# Everything comes back under $OUT: bench.log, tests.log and seed<N>.tar.xz, each seed's folder (its
# database, log, wall time and best_optimizer.py). Back here the discovery benchmark reads them as
# its own runs and trains the winners on the real tasks (F: the call's files_at):
#   for s in 0 1 2; do tar -C D -xJf F/seed$s.tar.xz; done
#   python benchmarks/discovery.py --dir D --reuse --seeds 0,1,2 --tasks "$TASKS"   # gpu_discovery.sh's
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 MPLBACKEND=Agg
DEADLINE_S=${DEADLINE_S:-560}
TAIL_S=215  # a search's held-out checks and ablation after its budget (its --help: up to 3.5 minutes)
WORK=/tmp/gpu_discovery
rm -rf "$WORK"  # a rerun on a warm machine starts its searches afresh
t0=$(date +%s)
elapsed() { echo $(($(date +%s) - t0)); }

nvidia-smi -L
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
timeout 240 python3 -m codegen.bench_gpu --out "" > "$OUT/bench.log" 2>&1
bench=$?
tail -n 45 "$OUT/bench.log"
echo "bench: rc $bench at $(elapsed) s"

budget=$((DEADLINE_S - $(elapsed) - TAIL_S - 60))  # 60: the tests' share of the machine at the start
if [ "$bench" -eq 0 ] && [ "$budget" -ge 90 ]; then
    MODE=start WAIT_S=2 BUDGET=${budget}s WORK=$WORK bash benchmarks/gpu_discovery.sh
    echo "searches started: budget ${budget} s"
fi
timeout 200 python3 -m pytest -q -p no:cacheprovider -n 4 --durations=8 tests/codegen/test_gpu.py \
    tests/search/test_user_task.py::test_cuda_and_cpu_agree_for_builtin_and_user_tasks > "$OUT/tests.log" 2>&1
tests=$?
tail -n 30 "$OUT/tests.log"
echo "tests: rc $tests at $(elapsed) s"
if [ "$tests" -ne 0 ]; then  # a failure ends the call: the device time left is for a rerun
    pkill -f "optdsl.cli search"
    exit 1
fi

seeds=$(echo ${SEEDS:-0 1 2} | wc -w)
while [ -d "$WORK" ] && [ "$(ls "$WORK"/seed*/seed*.json 2>/dev/null | wc -l)" -lt "$seeds" ] \
    && [ "$(elapsed)" -lt "$DEADLINE_S" ]; do
    sleep 5
done
for folder in "$WORK"/seed*; do  # one archive per seed: a file back from $OUT may hold 16 MiB
    [ -d "$folder" ] || continue
    tail -n 12 "$folder/log"
    tar -C "$WORK" -cJf "$OUT/$(basename "$folder").tar.xz" "$(basename "$folder")"
done
echo "done at $(elapsed) s"
