#!/usr/bin/env bash
# Issue 13's GPU figures in one device call (a lent machine has ~15 minutes in all, start
# included, so every step has its own time limit and the whole stays under ~9 minutes).
#
# Here, once (copies the RLTiles sheet into .gpu-data/, which git ignores; the device
# machine has no ../shared and no internet):
#     bash bench/gpu_session.sh --stage
# Then, through the device tool:
#     run(command="bash bench/gpu_session.sh", carry=[".gpu-data"], timeout_s=600)
# Each step's log comes back as $OUT/<step>.log; bench/README.md "End to end" says what to
# record from them.
#     run(command="bash bench/gpu_session.sh quality", carry=[".gpu-data"], timeout_s=600)
# instead trains issue 14's float-code models at their full 1M inputs on the device, side by
# side (QUALITY_FILES, each FILE:ENTRY), within QUALITY_LIMIT seconds each, then reports them
# there (inrlab evaluate --bytes --refine-steps 100, log $OUT/quality.log; checkpoints
# are too big to come back).
# DEVICE=cpu INPUTS=1000 STEP_LIMIT=90 runs the same steps on a CPU (QUALITY_INPUTS=1000 in
# the quality mode), with a python3 that has torch (a check of the script, not a figure; the
# slow steps stop at their limit).
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=.gpu-data
SHEET=../shared/datasets/rltiles/rltiles-2d.png

if [[ "${1:-}" == "--stage" ]]; then
    install -D -m 644 "$SHEET" "$DATA/cache/tiles/rltiles/rltiles-2d.png"
    echo "staged $DATA (carry it: carry=[\"$DATA\"])"
    exit 0
fi

DEVICE=${DEVICE:-cuda}
INPUTS=${INPUTS:-200000}        # per end-to-end run: enough for a steady images/s figure
STEP_LIMIT=${STEP_LIMIT:-170}   # seconds per step
OUT=${OUT:-$(mktemp -d)}
export INRLAB_CACHE_DIR=$PWD/$DATA/cache PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
if [[ ! -f "$INRLAB_CACHE_DIR/tiles/rltiles/rltiles-2d.png" && ! -f "$SHEET" ]]; then
    echo "no RLTiles sheet: run 'bash bench/gpu_session.sh --stage' first and carry $DATA" >&2
    exit 2
fi

step() {  # step NAME COMMAND...: run with a time limit, log to $OUT/NAME.log
    local name=$1
    shift
    echo "== $name: $*"
    timeout "$STEP_LIMIT" "$@" 2>&1 | tee "$OUT/$name.log"
    echo "== $name: exit ${PIPESTATUS[0]}"
}

{ nvidia-smi -L 2>/dev/null; python3 -c "import torch; print('torch', torch.__version__)"; } \
    | tee "$OUT/machine.log"
if [[ "${1:-}" == "quality" ]]; then
    read -ra items <<< "${QUALITY_FILES:-experiments/float-codes/rltiles-conv.yml:up:8 \
experiments/float-codes/rltiles-wide.yml:*}"
    STEP_LIMIT=${QUALITY_LIMIT:-400}
    budget=() files=()
    [[ -n "${QUALITY_INPUTS:-}" ]] && budget=(--max-inputs "$QUALITY_INPUTS")
    for item in "${items[@]}"; do  # trained at once: one small model leaves a GPU idle
        file=${item%%:*} entry=${item#*:}
        files+=("$file")
        step "train-$(basename "$file" .yml)" python3 -m inrlab run "$file" --only "$entry" \
            --device "$DEVICE" --runs-dir "$OUT/runs" --no-tensorboard "${budget[@]}" &
    done
    wait
    # checkpoints are too big to come back: evaluate on the device (its CPUs refine the codes)
    STEP_LIMIT=150
    step quality python3 -m inrlab evaluate "${files[@]}" --bytes --runs-dir "$OUT/runs" \
        --refine-steps 100 --no-save
    rm -rf "$OUT/runs"
    exit 0
fi

# The 8x2x128 decoder's training step against the bf16 GEMM rate, and 1024x1024 renders.
step decoder python3 bench/throughput.py --device "$DEVICE" --only 8x2x128 --compile \
    --quality-inputs 0
# Whole `inrlab run` steps at the logs' batch of 64, then at 512 (the equal-loss check).
step end-to-end-64 python3 bench/throughput.py --device "$DEVICE" --end-to-end \
    experiments/float-codes/rltiles-baseline.yml experiments/float-codes/rltiles-best.yml --max-inputs "$INPUTS"
step end-to-end-512 python3 bench/throughput.py --device "$DEVICE" --end-to-end \
    experiments/float-codes/rltiles-baseline.yml experiments/float-codes/rltiles-best.yml --max-inputs "$INPUTS" \
    --set batch_size=512 learnrate=0.002
echo "logs in $OUT"
