#!/usr/bin/env bash
# GPU readiness check and benchmarks, in under 8 minutes on one GPU. From the repository root:
#
#     bash benchmarks/gpu.sh
#
# Steps (each under `timeout`; a failed or timed-out step is reported and the next one runs):
#   1. the GPU (nvidia-smi) and the torch version;
#   2. setup, installing nothing that is present: `pip install --no-deps -e .` only if ssvae_lib does
#      not import, ipywidgets only if missing (offline the panel test then skips);
#   3. tests/test_cuda.py (-m cuda);
#   4. benchmarks/throughput.py on the GPU;
#   5. benchmarks/sweep_throughput.py on the GPU: runs one by one vs stacked (R = 1, 8, 32, 80);
#   6. benchmarks/alpha_grid_time.py: the thesis's α grid (320 runs × 40 epochs on MNIST-10k),
#      timed on one stack of 80 runs × 2 epochs and extrapolated;
#   7. a markdown summary table of all of it.
#
# Environment:
#   SSVAE_DATA_DIR  folder with MNIST's t10k-*-ubyte.gz (default: .gpu_data/ in the repository root;
#                   copy ../shared/data/mnist/t10k-* there: the GPU machine gets only the repository)
#   OUT             if set, everything printed is also written to $OUT/gpu.log
#   PYTHON          interpreter (default: python3)
#   GPU_SH_BUDGET   seconds for all steps together (default 420); no step runs past it
#   GPU_SH_SMOKE=1  tiny sizes everywhere, and the CPU when there is no GPU (test_cuda then runs with
#                   SSVAE_TEST_DEVICE=cpu): checks this script end to end in about a minute, without a GPU
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
SMOKE=${GPU_SH_SMOKE:-0}
BUDGET=${GPU_SH_BUDGET:-420}
export SSVAE_DATA_DIR=${SSVAE_DATA_DIR:-$ROOT/.gpu_data}
export PYTHONUNBUFFERED=1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
STEPS=()            # "name|status" per step, for the table

# run_step NAME SECONDS COMMAND...: the command under `timeout` (at most what is left of the budget),
# its output shown and kept in $WORK/NAME.log; its outcome recorded in STEPS; never stops the script.
run_step() {
    local name=$1 want=$2 left limit rc started
    shift 2
    left=$((BUDGET - SECONDS))
    limit=$((want < left ? want : left))
    echo
    echo "=== $name (limit ${limit} s): $*"
    if ((limit < 10)); then
        STEPS+=("$name|skipped: no time left")
        echo "skipped: only ${left} s of the ${BUDGET} s budget left"
        return 0
    fi
    started=$SECONDS
    set +e
    timeout -k 5 "$limit" "$@" 2>&1 | tee "$WORK/$name.log"
    rc=${PIPESTATUS[0]}
    set -e
    case $rc in
        0) STEPS+=("$name|ok ($((SECONDS - started)) s)") ;;
        124 | 137) STEPS+=("$name|TIMED OUT after ${limit} s") ;;
        *) STEPS+=("$name|FAILED (exit $rc, $((SECONDS - started)) s)") ;;
    esac
}

# setup: install only what is missing (nothing, on a machine that has it all); reports what it did.
setup() {
    local where
    where=$(cd / && "$PY" -c 'import ssvae_lib, os; print(os.path.dirname(os.path.dirname(ssvae_lib.__file__)))' \
        2>/dev/null || true)
    if [ "$where" = "$ROOT" ]; then
        echo "ssvae_lib: importable from this checkout"
    elif [ -z "$where" ] && timeout 120 "$PY" -m pip install -q --no-deps --no-build-isolation --retries 0 \
            --timeout 10 -e . && (cd / && "$PY" -c 'import ssvae_lib'); then
        echo "ssvae_lib: installed (pip install --no-deps -e .)"
    else   # not installable, or another copy installed: use this checkout's without touching that one
        export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
        echo "ssvae_lib: ${where:+installed from $where; }using PYTHONPATH=$ROOT"
    fi
    for module in pytest ipywidgets; do
        if "$PY" -c "import $module" 2>/dev/null; then
            echo "$module: present"
        elif timeout 60 "$PY" -m pip install -q --retries 0 --timeout 10 "$module"; then
            echo "$module: installed"
        else
            echo "$module: missing and not installable here (offline?)"
        fi
    done
    if [ ! -e "$SSVAE_DATA_DIR/t10k-images-idx3-ubyte.gz" ] && [ -d "$ROOT/../shared/data/mnist" ]; then
        mkdir -p "$SSVAE_DATA_DIR" && cp "$ROOT"/../shared/data/mnist/t10k-* "$SSVAE_DATA_DIR"/
    fi
    ls "$SSVAE_DATA_DIR"/t10k-images-idx3-ubyte.gz "$SSVAE_DATA_DIR"/t10k-labels-idx1-ubyte.gz \
        || echo "WARNING: no MNIST-10k in SSVAE_DATA_DIR=$SSVAE_DATA_DIR: the sweep and α-grid steps will fail"
}

main() {
    echo "# bash benchmarks/gpu.sh, $(date -u +%FT%TZ), budget ${BUDGET} s, smoke=${SMOKE}"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
        || echo "nvidia-smi: no GPU found"
    "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
          "available:", torch.cuda.is_available(),
          torch.cuda.get_device_name() if torch.cuda.is_available() else "")'
    DEV=$("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
    if [ "$DEV" = cpu ] && [ "$SMOKE" != 1 ]; then
        echo "no CUDA device: the tests will skip and the benchmarks fail (GPU_SH_SMOKE=1 tries them on the CPU)"
        DEV=cuda
    fi
    echo
    echo "=== setup"
    setup           # in this shell: it may set PYTHONPATH; each install has its own timeout

    if [ "$SMOKE" = 1 ]; then
        SSVAE_TEST_DEVICE=$DEV run_step test_cuda 240 "$PY" -m pytest tests/test_cuda.py -m cuda -q -rs
        run_step throughput 120 "$PY" benchmarks/throughput.py --devices "$DEV" --steps 2 --repeats 1 --warmup 1
        run_step sweep 120 "$PY" benchmarks/sweep_throughput.py --devices "$DEV" --dataset digits --max-train 300 \
            --max-test 100 --iwae-examples 50 --stack 1,2 --sequential-runs 1 --rounds 1
        run_step alpha_grid 120 "$PY" benchmarks/alpha_grid_time.py --device "$DEV" --runs 2 --epochs 1 \
            --dataset digits --max-train 1400 --max-test 100
    else
        run_step test_cuda 100 "$PY" -m pytest tests/test_cuda.py -m cuda -q -rs
        run_step throughput 60 "$PY" benchmarks/throughput.py --devices cuda
        run_step sweep 150 "$PY" benchmarks/sweep_throughput.py --devices cuda --dataset mnist-t10k \
            --max-train 8000 --stack 1,8,32,80 --sequential-runs 4 --rounds 1
        run_step alpha_grid 150 "$PY" benchmarks/alpha_grid_time.py --device cuda --runs 80 --epochs 2 \
            --dataset mnist-t10k
    fi
    summary
}

summary() {
    local tests
    echo
    echo "## Summary ($DEV, $(( SECONDS )) s in all)"
    echo
    echo "| measurement | value |"
    echo "|---|---|"
    for entry in "${STEPS[@]}"; do
        echo "| step ${entry%%|*} | ${entry#*|} |"
    done
    tests=$(grep -Eo '[0-9]+ (passed|failed|skipped|error)[^ ]*' "$WORK/test_cuda.log" 2>/dev/null | paste -sd, - || true)
    echo "| test_cuda | ${tests:-no result} |"
    grep -h "device=$DEV examples/s=" "$WORK/throughput.log" 2>/dev/null \
        | sed -E 's/^objective=([^ ]+) order=([^ ]+) device=([^ ]+) examples\/s=([^ ]+).*/| throughput \1 \2 (\3) | \4 examples\/s |/' || true
    grep -h "^device=$DEV mode=" "$WORK/sweep.log" 2>/dev/null \
        | sed -E 's/^device=([^ ]+) mode=([^ ]+) runs=([^ ]+) run-epochs\/s=([^ ]+) .*training-steps-only run-epochs\/s=([^ ]+).*/| sweep \2 R=\3 (\1) | \4 run-epochs\/s (steps only: \5) |/' || true
    grep -h "^# leakage scores" "$WORK/sweep.log" 2>/dev/null | sed -E 's/^# leakage scores: (.*)/| sweep leakage scores | \1 |/' || true
    grep -h "^measured " "$WORK/alpha_grid.log" 2>/dev/null | sed -E 's/^(.*)$/| α grid | \1 |/' \
        || echo "| α grid | no result |"
}

if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    main 2>&1 | tee -a "$OUT/gpu.log"
else
    main
fi
