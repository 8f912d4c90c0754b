#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one command that fits ~8 minutes on a borrowed machine:
#   1. the GPU-only tests (Triton kernels vs the torch reference on the device; the hybrid
#      engine with Triton hot neurons and attention on the GPU vs the dense model),
#   2. benchmarks/triton_bandwidth.py (sparse kernel vs dense cuBLAS FFN, 0/50/90% sparsity),
#   3. benchmarks/hybrid_7b.py (issue #7: hybrid vs layer-wise split vs transformers offload).
# No `make install`: it runs the first Python whose torch sees CUDA, of $PYTHON, .venv/bin/python
# and python3 (a GPU image's own torch, triton, numba, transformers and accelerate will do; the
# package is imported from this checkout). Logs and the JSON report go to $OUT when set, else
# out/gpu_check/. Each step has its own time limit; a failed step does not stop the next ones,
# and the exit status is 1 if any failed.
#
#     bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
dest="${OUT:-out/gpu_check}"
mkdir -p "$dest"

py=""
for candidate in ${PYTHON:-} .venv/bin/python python3; do
    if "$candidate" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
        py="$candidate"
        break
    fi
done
if [ -z "$py" ]; then
    echo "gpu_check.sh: no Python whose torch sees a CUDA GPU (tried ${PYTHON:+$PYTHON, }.venv/bin/python, python3)" >&2
    exit 1
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    lscpu 2>/dev/null | grep -E '^(Model name|CPU\(s\)|Thread|Core|Socket|NUMA node\(s\))'
    free -g 2>/dev/null | head -2
    "$py" - <<'EOF'
import importlib, sys
print("python", sys.version.split()[0], sys.executable)
for name in ("torch", "triton", "numba", "llvmlite", "numpy", "transformers", "accelerate"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as e:  # report, do not stop: the steps below say what fails
        print(name, "MISSING:", e)
EOF
} 2>&1 | tee "$dest/env.txt"

failed=()
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $dest/NAME.txt
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$dest/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - start))s"
    [ "$rc" -eq 0 ] || failed+=("$name (exit $rc)")
}

step gpu_tests 150 "$py" -m pytest -q -p no:cacheprovider \
    tests/runtime/kernels/test_triton_sparse.py tests/runtime/test_hybrid_bench.py \
    tests/runtime/test_placed.py
step triton_bandwidth 90 "$py" benchmarks/triton_bandwidth.py
step hybrid_7b 240 "$py" benchmarks/hybrid_7b.py --json "$dest/hybrid_7b.json"

if [ ${#failed[@]} -gt 0 ]; then
    echo "gpu_check.sh: failed: ${failed[*]}"
    exit 1
fi
echo "gpu_check.sh: all steps passed; logs in $dest"
