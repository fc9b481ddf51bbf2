#!/usr/bin/env bash
# The discovery benchmark's searches at 64x the proxies' batch, three seeds at once on a lent GPU
# machine (16 cores: 5 workers each), inside its 15 device minutes. On this CPU, 1x and 2x proxies
# never made sign momentum win (docs/search.md); on an H200 signum scored +0.72..+0.77 at 64-256x
# against AdamW tuned on the short grid; against AdamW swept past it, signum (0.5) ties the
# short-momentum Adam/RMSprop rules at 64x (+0.55 / +0.58, this CPU), so the family is a toss-up.
#
# Two calls of the device tool from the repository root (the machine's python3 holds torch, sympy,
# rich; the repository runs from its folder, nothing is installed):
#   1. MODE=start bash benchmarks/gpu_discovery.sh    starts the searches detached (setsid) and
#      waits WAIT_S seconds (default 570, inside one call's 600);
#   2. MODE=collect bash benchmarks/gpu_discovery.sh  within the 30 s the machine stays warm: waits
#      for the searches to end (a search's tail, the funnel and the ablation, takes up to 3.5
#      minutes past its budget), then leaves seed<N>.sqlite.xz and seed<N>.json in $OUT.
# BUDGET defaults to 8m: three 10-minute searches, their tails and the machine's start would not fit.
# Back here, the benchmark reads them as its own runs and trains the winners on the real tasks:
#   for s in 0 1 2; do mkdir -p D/seed$s; xz -dc F/seed$s.sqlite.xz > D/seed$s/seed$s.sqlite;
#     cp F/seed$s.json D/seed$s/; done     # F: the call's files_at
#   python benchmarks/discovery.py --dir D --reuse --seeds 0,1,2 --tasks "$TASKS"
set -euo pipefail
MODE=${MODE:?MODE=start or MODE=collect}
SEEDS=${SEEDS:-0 1 2}
BUDGET=${BUDGET:-8m}
WAIT_S=${WAIT_S:-570}
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-5}
TASKS=${TASKS:-quadratic@64,logreg@64,embedding@64,mlp@64,transformer@64}
WORK=${WORK:-/tmp/gpu_discovery}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 MPLBACKEND=Agg

case $MODE in
start)
    for s in $SEEDS; do
        folder=$WORK/seed$s  # a folder each: a search writes best_optimizer.py beside its database
        mkdir -p "$folder"
        setsid bash -c "t0=\$(date +%s)
            python3 -m optdsl.cli search --device $DEVICE --workers $WORKERS --budget $BUDGET --seed $s \
                --tasks $TASKS --db $folder/seed$s.sqlite > $folder/log 2>&1
            echo {\\\"wall_s\\\": \$((\$(date +%s) - t0))} > $folder/seed$s.json" \
            < /dev/null > /dev/null 2>&1 &
    done
    sleep "$WAIT_S"
    tail -n 3 "$WORK"/seed*/log
    ;;
collect)
    for s in $SEEDS; do
        while [ ! -f "$WORK/seed$s/seed$s.json" ]; do sleep 5; done
        xz -c "$WORK/seed$s/seed$s.sqlite" > "$OUT/seed$s.sqlite.xz"
        cp "$WORK/seed$s/seed$s.json" "$OUT/"
        tail -n 25 "$WORK/seed$s/log"
    done
    ;;
*)
    echo "MODE=start or MODE=collect" >&2
    exit 2
    ;;
esac
