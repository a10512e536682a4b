#!/usr/bin/env bash
# The GPU benchmarks in one go, for a machine with a CUDA GPU (benchmarks/README.md, "On a GPU"):
#   1. tests/train/test_cuda.py — training, --resume, fp16 loss scaling and predict on the GPU;
#   2. time to 93% Fashion-MNIST test accuracy: --recipe fast (fast-cnn-v2, batch 128, 5 epochs) and
#      --recipe fast-gpu (the same at batch 512, peak rate 0.008, 6 epochs: a GPU runs an epoch 3.5× sooner);
#   3. time to 94%: the fast recipe with benchmarks/models/fast-cnn-wide.yaml (twice the width), 15 epochs,
#      at batch 128 and 512;
#   4. guide-cnn training throughput at batch 128 and 512, cnnlab against the plain PyTorch loop (the
#      guide's Keras code is timed on the CPU only).
#
#   benchmarks/gpu.sh [OUTPUT_FOLDER]      # default benchmarks/results/gpu; PYTHON=... picks the interpreter
#
# Every step runs even if one before it failed; the exit status says whether all passed. About 5
# minutes on an H200.
set -u
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/gpu}
python=${PYTHON:-python3}
note=${NOTE:-}
mkdir -p "$out"
failed=()

step() {  # step NAME COMMAND...: run it, say how long it took, remember a failure
  local name=$1 started=$SECONDS
  shift
  echo "=== $name: $*"
  "$@" || failed+=("$name")
  echo "=== $name: $((SECONDS - started)) s"
}

if ! "$python" -c "import cnnlab" 2>/dev/null; then
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # a checkout without `pip install -e .`
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
"$python" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())"

tta() {  # tta NAME ARGS...: benchmarks/time_to_accuracy.py on the GPU into $out/NAME.{md,json}
  local name=$1
  shift
  step "$name" "$python" benchmarks/time_to_accuracy.py --device cuda --note "$note" --output "$out/$name" "$@"
}
step cuda-tests "$python" -m pytest -q -p no:cacheprovider tests/train/test_cuda.py
wide=(--set recipe=fast --set model=benchmarks/models/fast-cnn-wide.yaml --epochs 15 --targets 0.93,0.94)
tta time_to_accuracy_fast --set recipe=fast --epochs 5 --targets 0.91,0.92,0.93
tta time_to_accuracy_fast_gpu --set recipe=fast-gpu --targets 0.92,0.93
tta time_to_accuracy_wide "${wide[@]}"
tta time_to_accuracy_wide_b512 "${wide[@]}" --batch-size 512 --set lr=0.008
for batch in 128 512; do
  suffix=$([ "$batch" = 128 ] || echo "_b$batch")
  step "throughput$suffix" "$python" benchmarks/train_throughput.py --device cuda --only cnnlab --only plain \
    --batch-size "$batch" --note "$note" --output "$out/train_throughput$suffix"
done

if ((${#failed[@]})); then
  echo "failed: ${failed[*]}"
  exit 1
fi
echo "all steps passed; results in $out"
