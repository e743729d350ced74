#!/usr/bin/env bash
# The speed issue's GPU figures in one device call (estimated 5-7 minutes on one H100; a call may run 10).
#
#   here:   bash benchmarks/gpu_wheels.sh
#   device: run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)
#
# Runs, on the GPU: model step (SEV-Net vs bare resnet18, batch 256, bf16, channels_last; eager, then torch.compile),
# prepares a 46k-image synthetic set, then the input pipeline (JPEG decode vs decoded cache) and three training
# epochs with and without the decoded cache. JSON results go to $OUT (the device tool brings them back) and the log
# to $OUT/gpu_check.log; copy the figures into benchmarks/RESULTS.md and the README.
# SMOKE=1 runs the same steps tiny on a CPU (about 3 minutes on 2 cores) to check the script before spending device time.
set -uo pipefail
OUT="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, timm, transformers, accelerate, datasets; print('torch', torch.__version__, 'timm', timm.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'datasets', datasets.__version__)"
step() { echo "== $*"; local t=$SECONDS; "$@" || echo "!! failed: $*"; echo "== $((SECONDS - t)) s"; }
if [ "${SMOKE:-0}" = 1 ]; then
  B=4 R=1 N=1 W=1 DATA="--preset quick" STEPS="--max-steps 3" BATCHES=3 DEV=cpu_smoke
else
  B=256 R=5 N=20 W=5 DATA="--preset full --frames_per_task 48" STEPS="" BATCHES=40 DEV=cuda
fi
SET=$(mktemp -d)/synthetic
step python3 benchmarks/model_step.py --batch-size $B --warmup $W --rounds $R --repeats $N --name model_step_$DEV
step python3 benchmarks/model_step.py --batch-size $B --warmup $W --rounds $R --repeats $N --compile \
  --name model_step_${DEV}_compile
step python3 -m sevnet_hf.cli prepare synthetic --output "$SET" $DATA --num_workers -1 --progress false
step python3 benchmarks/input_pipeline.py --dataset "$SET" --batch-size $B --batches $BATCHES --name input_pipeline_$DEV
step python3 benchmarks/epoch.py --dataset "$SET" --batch-size $B --epochs 3 $STEPS --decoded-cache always \
  --name epoch_${DEV}_cache
step python3 benchmarks/epoch.py --dataset "$SET" --batch-size $B --epochs 2 $STEPS --decoded-cache never \
  --name epoch_${DEV}_decode
cp benchmarks/results/*_$DEV*.json "$OUT"/ 2>/dev/null
ls "$OUT"
