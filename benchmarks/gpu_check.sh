#!/usr/bin/env bash
# descend on a CUDA GPU, end to end in under 8 minutes: install without network, the CUDA tests, the overhead
# benchmark (descend against the hand-written loop) and the Fashion-MNIST example, each timed. The summary and one
# log per step go to $OUT when it is set (the device tool's folder), else to runs/gpu_check/.
#
#   here, once, with network:    bash benchmarks/gpu_wheels.sh        # .gpu/: wheels + Fashion-MNIST files
#   on the GPU machine:          bash benchmarks/gpu_check.sh         # device tool: carry=[".gpu"]
#   anywhere, to see the steps:  bash benchmarks/gpu_check.sh --dry-run
#
# The machine's own Python (PYTHON, default python3) with its CUDA build of torch is used as it is: descend is
# installed with `pip install --no-deps --no-build-isolation -e .` (falling back to PYTHONPATH=src), the carried
# wheels only for packages missing there, then `python -m benchmarks.requirements` says whether every requirement
# in pyproject.toml is met, and which version is needed where one is not. A failing step is recorded and the
# script goes on; the exit status is the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; fi
BUNDLE=${GPU_BUNDLE:-.gpu}
RESULTS=${OUT:-runs/gpu_check}
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/descend-site}  # the carried wheels go here (PYTHONPATH), leaving the machine's packages alone
mkdir -p "$RESULTS"
SUMMARY="$RESULTS/summary.md"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg DESCEND_DATA="$PWD/$BUNDLE/fashion-mnist"
failed=0

{
    echo "# descend GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "| step | limit s | seconds | exit | log |"
    echo "|---|---|---|---|---|"
} >"$SUMMARY"

# step NAME LIMIT_SECONDS COMMAND...: run it with a time limit, its output in NAME.log, one row in the summary
step() {
    local name=$1 limit=$2
    shift 2
    if [[ $DRY == 1 ]]; then
        echo "[dry-run] $name (limit ${limit}s): $*"
        echo "| $name | $limit | - | dry run | $name.log |" >>"$SUMMARY"
        return 0
    fi
    local started rc seconds
    started=$(date +%s%N)
    # bash -c: timeout runs programs, and the steps are functions of this script (exported below)
    timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" >"$RESULTS/$name.log" 2>&1
    rc=$?
    seconds=$(( ($(date +%s%N) - started) / 1000000 ))
    seconds="$((seconds / 1000)).$(( (seconds % 1000) / 100 ))"
    echo "| $name | $limit | $seconds | $rc$([[ $rc == 124 || $rc == 137 ]] && echo ' (time limit)') | $name.log |" >>"$SUMMARY"
    echo "== $name: exit $rc in ${seconds}s"
    tail -n 25 "$RESULTS/$name.log"
    if [[ $rc != 0 ]]; then failed=$((failed + 1)); fi
    return 0
}

install() {
    local missing=() whl dist
    for whl in "$BUNDLE"/wheels/*.whl; do
        [[ -e $whl ]] || continue
        dist=$(basename "$whl" | cut -d- -f1)
        if ! "$PY" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$dist" 2>/dev/null; then
            missing+=("$whl")
        fi
    done
    echo "carried wheels for missing packages: ${#missing[@]}"
    if ((${#missing[@]})); then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
            "${missing[@]}" || return 1
    fi
    if ! "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e .; then
        echo "pip could not install descend (editable); using PYTHONPATH=src instead"
    fi
    "$PY" -m benchmarks.requirements
}

environment() {
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv || true
    "$PY" -c "import sys, torch; print('Python', sys.version.split()[0], '| torch', torch.__version__, '| CUDA',
torch.version.cuda, '| cuda available', torch.cuda.is_available())"
    "$PY" -m benchmarks.machine
}

# the CUDA tests: tests/test_cuda.py, and the CUDA cases of the other files (they skip without a GPU)
cuda_tests() {
    local rc=0
    "$PY" -m pytest -p no:cacheprovider -q -rfEs --timeout 120 -m cuda tests/test_cuda.py || rc=$?
    "$PY" -m pytest -p no:cacheprovider -q -rfEs --timeout 60 -k cuda tests/test_streams.py tests/test_batches.py \
        tests/test_checkpoint.py tests/test_early_stopping.py tests/test_optim_no_sync.py || rc=$?
    return "$rc"
}

if [[ $DRY == 0 ]]; then
    export PYTHONPATH="$SITE:$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PY BUNDLE SITE
export -f environment install cuda_tests
# the limits add up to 470 s: the whole check ends within 8 minutes whatever hangs
step environment 30 environment
step install 60 install
step cuda_tests 150 cuda_tests
step overhead 100 "$PY" -m benchmarks.overhead --device cuda --epochs 3 --repeats 5
step fashion_mnist 130 "$PY" -m benchmarks.time_to_accuracy examples/fashion_mnist.toml --seeds 1 \
    --set train.device=cuda

{
    echo
    echo "failed steps: $failed"
    for name in environment install cuda_tests overhead fashion_mnist; do
        [[ -f "$RESULTS/$name.log" ]] || continue
        echo
        echo "## $name (last lines)"
        echo
        echo '```'
        tail -n 20 "$RESULTS/$name.log"
        echo '```'
    done
} >>"$SUMMARY"
echo "summary: $SUMMARY"
exit "$failed"
