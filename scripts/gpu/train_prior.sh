#!/usr/bin/env bash
# Train ctbird's shipped CT prior on one GPU within a wall-clock budget, then pack it for transport.
#
# Usage (repository root, on the GPU machine):  bash scripts/gpu/train_prior.sh MINUTES
#
# Needs DATA (default .gpu/ct_train_subset.npz; several stack files separated by spaces) and .gpu/wheels/*.whl
# (made by python -m benchmarks.gpu.pack).
# Writes into $OUT (default ./out-gpu): prior.tar (the exported model folder "prior/": unet/ with
# fp16 EMA weights, scheduler/, model_index.json, README.md model card, loss.png, samples.png,
# loss.jsonl), samples.png, loss.png and train.log.  prior.tar is refreshed every
# EXPORT_MIN minutes while training, so a run killed at its time limit still returns a model.
# Everything (install + training + export) is kept within MINUTES.
# Overridable: PYTHON, DATA, PRESET, SIZE, BATCH, LR, WORK, EXPORT_MIN, RESERVE_MIN, COMPILE=1 (torch.compile the
# training step), ZOOM (train-prior --max-zoom, e.g. 1.3: tight fields of view, see docs/results/margins/cpu-defaults.md),
# and INIT (a prior folder to
# continue from, e.g. INIT=data/priors/ctbird-ct-256: the device machine keeps no checkpoints between sessions;
# pack with `python -m benchmarks.gpu.pack --stride 3 --offset 1` so the tree + .gpu stay under 64 MiB).
set -uo pipefail
MINUTES=${1:?usage: bash scripts/gpu/train_prior.sh MINUTES}
START=$(date +%s)
OUT=${OUT:-./out-gpu}
PYTHON=${PYTHON:-python3}
DATA=${DATA:-.gpu/ct_train_subset.npz}
PRESET=${PRESET:-small}
SIZE=${SIZE:-256}
BATCH=${BATCH:-64}
LR=${LR:-2e-4}
WORK=${WORK:-/tmp/ctbird-prior}
EXPORT_MIN=${EXPORT_MIN:-1.5}
RESERVE_MIN=${RESERVE_MIN:-0.8}   # python start-up + final checkpoint, samples and export
mkdir -p "$OUT"
exec > >(tee "$OUT/train.log") 2>&1
export PYTHONUNBUFFERED=1

if compgen -G ".gpu/wheels/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpu/wheels/*.whl || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD:${PYTHONPATH:-}
else
  export PYTHONPATH=$PWD:${PYTHONPATH:-}
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$PYTHON" -c "import sys, torch, diffusers, accelerate; print('python', sys.version.split()[0], 'torch', torch.__version__, 'diffusers', diffusers.__version__, 'accelerate', accelerate.__version__, 'cuda', torch.cuda.is_available())" || exit 1
read -ra DATA_FILES <<< "$DATA"  # one or more stack files, space-separated
for file in "${DATA_FILES[@]}"; do
  [ -f "$file" ] || { echo "missing $file: run python -m benchmarks.gpu.pack and carry .gpu"; exit 1; }
done

TRAIN_MIN=$("$PYTHON" -c "print(round(max(0.1, $MINUTES - ($(date +%s) - $START) / 60 - $RESERVE_MIN), 2))")
echo "training for $TRAIN_MIN min (budget $MINUTES min) -> $WORK"
rm -rf "$WORK"
"$PYTHON" -m ctbird.training "${DATA_FILES[@]}" --out "$WORK" --size "$SIZE" --model-preset "$PRESET" \
  --batch-size "$BATCH" --lr "$LR" --warmup-steps 200 --steps 1000000 --max-minutes "$TRAIN_MIN" \
  --mixed-precision auto --log-every 25 --sample-every 1500 --checkpoint-every 2000 \
  --export-every-minutes "$EXPORT_MIN" --archive "$OUT/prior.tar" --num-samples 16 --seed 0 \
  ${INIT:+--init-from "$INIT"} ${COMPILE:+--compile} ${ZOOM:+--max-zoom "$ZOOM"}
STATUS=$?
cp "$WORK/samples.png" "$WORK/loss.png" "$OUT/" 2>/dev/null
ls -la "$OUT" && tar tvf "$OUT/prior.tar"
SIZE_BYTES=$(stat -c %s "$OUT/prior.tar" 2>/dev/null || echo 0)
echo "prior.tar: $SIZE_BYTES bytes (limit 16 MiB = 16777216); total $(( $(date +%s) - START )) s; training exit $STATUS"
[ "$SIZE_BYTES" -gt 0 ] && [ "$SIZE_BYTES" -lt 16777216 ] || exit 1
exit $STATUS
