#!/usr/bin/env bash
# Run here (a machine with pip access) before benchmarks/gpu_checks.sh, so that the GPU run can
# also time Fast-dLLM's own code: its llada/ folder needs transformers 4.49, which the GPU image
# (transformers 5) lacks and cannot download. This puts, in folders git ignores:
#   .fast-dllm/llada   Fast-dLLM's llada/ folder, from PATH (a checkout, its llada/ folder, or a bare git dir)
#   .whl/              wheels of transformers 4.49.0, tokenizers 0.21.4, huggingface_hub 0.36.2 for
#                      CPython 3.12 on x86-64 Linux (what the GPU image runs)
# Then call the device with carry [".whl", ".fast-dllm"] and `OUT=$OUT bash benchmarks/gpu_checks.sh`.
#   bash benchmarks/prepare_gpu_checks.sh PATH/TO/Fast-dLLM
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:?usage: bash benchmarks/prepare_gpu_checks.sh PATH/TO/Fast-dLLM}
mkdir -p .git/info
for p in /.whl/ /.fast-dllm/; do grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >> .git/info/exclude; done
rm -rf .fast-dllm .whl
mkdir -p .fast-dllm .whl
if [ -d "$src/llada" ]; then
    cp -r "$src/llada" .fast-dllm/
elif [ -f "$src/generate.py" ]; then
    cp -r "$src" .fast-dllm/llada
else   # a bare mirror: objects outside llada/ may be missing, so only that folder is read
    git --git-dir="$src" archive HEAD llada | tar -x -C .fast-dllm || true
fi
[ -f .fast-dllm/llada/generate.py ] && [ -f .fast-dllm/llada/model/modeling_llada.py ] \
    || { echo "no Fast-dLLM llada/ folder (generate.py, model/modeling_llada.py) under $src" >&2; exit 2; }
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl transformers==4.49.0 tokenizers==0.21.4 huggingface_hub==0.36.2
du -sh .fast-dllm .whl
