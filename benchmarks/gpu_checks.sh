#!/usr/bin/env bash
# Every check that needs a GPU, in one run of at most 9 minutes (timeouts: 180 + 45 + 120 + 2 x 100 s;
# a device session has 15 minutes in all): run from the repository root on a CUDA machine,
#   OUT=some/folder bash benchmarks/gpu_checks.sh
# 1. tests/test_kernels.py with CUDA tensors and compiled kernels (DLLM_TEST_DEVICE=cuda) and
#    tests/test_graphs.py (its CUDA-graph tests run only here);
# 2. python -m benchmarks.kernels (fused reduction vs PyTorch, 32 x 126464 bf16 among the shapes);
# 3. python -m benchmarks.step: the LLaDA-8B-shaped cached step, eager vs CUDA graph, kernels off/on,
#    against the weight-bandwidth floor;
# 4. python -m benchmarks.cache: end-to-end none vs dual, eager vs CUDA graphs, and against Fast-dLLM's
#    own code on the same weights when benchmarks/prepare_gpu_checks.sh has put its llada/ folder
#    and transformers 4.49 wheels in .fast-dllm/ and .whl/ (carry both to the GPU machine).
# Each writes into $OUT (at most 8 files, what the device tool brings back); a failing step
# does not stop the later ones.
set -uo pipefail
OUT=${OUT:-gpu_checks}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

# dllm without a network: editable install against the machine's own torch/triton, else the
# subpackages linked into dllm/ (pyproject maps kernels/, evals/, ... to dllm.kernels, ...)
if ! $PY -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$OUT/install.log" 2>&1; then
    for d in kernels evals schedulers constraints; do ln -sfn "../$d" "dllm/$d"; done
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } \
    >"$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

step() { echo "== $1"; shift; SECONDS=0; timeout "$@"; echo "== rc=$? in ${SECONDS}s"; }

step "tests on the GPU" 180 env DLLM_TEST_DEVICE=cuda TRITON_INTERPRET=0 $PY -m pytest -q -p no:cacheprovider --maxfail=10 \
    tests/test_kernels.py tests/test_graphs.py 2>&1 | tee "$OUT/pytest.log" | tail -25
step "kernels" 45 $PY -m benchmarks.kernels --output "$OUT/kernels.json"
step "step, LLaDA-8B shape" 120 $PY -m benchmarks.step --modes eager,cuda --output "$OUT/step.json"
fd=() fdenv=()
if [ -f .fast-dllm/llada/generate.py ] && ls .whl/transformers-4.49*.whl >/dev/null 2>&1 \
        && $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/fdsite .whl/*.whl; then
    fd=(--fast-dllm)   # its llada/ folder and transformers 4.49 first on the path, for these runs only
    fdenv=("PYTHONPATH=/tmp/fdsite:$PWD/.fast-dllm/llada${PYTHONPATH:+:$PYTHONPATH}")
fi
for g in none cuda; do
    step "cache end to end, graphs=$g ${fd[*]}" 100 env "${fdenv[@]}" \
        $PY -m benchmarks.cache --device cuda --dtype bfloat16 --lengths 256,512 --blocks 32 --modes none,dual \
        --repeats 3 --graphs "$g" "${fd[@]}" --output "$OUT/cache_$g.json"
done
