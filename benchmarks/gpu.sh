#!/usr/bin/env bash
# The GPU path, measured in one go on a machine with a CUDA GPU (issue 16, item 6):
# the GPU tests (tests/test_gpu.py, CUDA against the CPU), then the evaluation, trust and
# explanation benchmarks on a random-weight ResNet-50 at 224 px, the evaluation over
# 10,000 synthetic images; each benchmark ends with its peak GPU memory.
#
#   benchmarks/gpu.sh [RESULTS]      (default: gpu-results; PYTHON: python3)
#   STEPS="tests evaluate" benchmarks/gpu.sh    (some of: tests evaluate trust explain)
#
# Each step's output goes to RESULTS/<step>.txt as it runs; a step that fails does not
# stop the next, and the script exits non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
results=$(realpath -m "${1:-gpu-results}")
mkdir -p "$results"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
failed=0

steps=" ${STEPS:-tests evaluate trust explain} "

step() {  # step NAME COMMAND...: run COMMAND, its output to the terminal and RESULTS/NAME.txt
    local name=$1
    shift
    [[ $name == machine || $steps == *" $name "* ]] || return 0
    echo "== $name: $*"
    local start=$SECONDS
    "$@" 2>&1 | tee "$results/$name.txt" || { failed=1; echo "== $name FAILED"; }
    echo "== $name took $((SECONDS - start)) s"
}

step machine nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
step tests "$python" -m pytest -q -p no:cacheprovider tests/test_gpu.py --device cuda -s
cd benchmarks
step evaluate "$python" bench_evaluate.py --arch resnet50 --images 10000 --batch-size 256 \
    --workers 12 --repeats 1 --device cuda --precision bf16
step trust "$python" bench_trust.py --arch resnet50 --image-size 224 --images 8 --repeats 1 \
    --device cuda
step explain "$python" bench_explain.py --arch resnet50 --image-size 224 --images 32 \
    --perturbation-images 4 --repeats 1 --device cuda
exit $failed
