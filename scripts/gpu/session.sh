#!/usr/bin/env bash
# One prepared GPU session of ctbird on the device machine: continue training the shipped prior, then
# measure it on CUDA (docs tables for the GPU).
#
# Usage (repository root, on the GPU machine):
#   bash scripts/gpu/session.sh TRAIN_MINUTES [PART ...]
# TRAIN_MINUTES = 0 with no PART stages only: it installs the carried wheels and unpacks the carried training parts.
# TRAIN_MINUTES > 0 runs scripts/gpu/train_prior.sh from the shipped weights (INIT) for that budget, keeps the
# new prior in /tmp/ctbird-new-prior (it outlives this call while the machine stays warm) and installs it over
# data/priors/ctbird-ct-256 on this machine; 0 skips training (a later call on the warm machine reuses the
# kept prior). Then each PART, in order, each capped in seconds (a part past its cap is killed, the rest go on):
#   timing     python -m benchmarks.studies.timing: batch 1/16, detached/exact                                  (cap 90)
#   main       python -m benchmarks.ct: 30 parallel views, noiseless, all but bird-exact (or MAIN_METHODS), EVAL_SLICES
#              (cap 100 + 3 s per slice: 196 s for 32 slices, 430 s for all 110)
#   before     the same slices for fbp and bird with the prior as carried, before this session's training
#              (cap 60 + 1 s per slice)
#   exact      the same for bird-exact (backpropagation through the UNet) on 16 slices             (cap 150)
#   ablation   python -m benchmarks.ct --ablation: delta_t 20..250 on 8 slices                       (cap 150)
#   views      python -m benchmarks.ct: 8/18/60 parallel views, noiseless, fbp/sirt/tv/dds/bird-raw/bird  (cap 150)
#   fan-noise  python -m benchmarks.ct: 30 views, parallel and fan, noiseless and I0 = 1e5, 16 slices  (cap 200)
#   operators  python -m benchmarks.gpu.radon_timing 256 512                                                (cap 60)
# Results (markdown, JSON, figures) collect in /tmp/gpu-results/docs/results/<topic> (the repository's layout) and
# are packed into $OUT/results.tar
# after every part; the prior comes back as $OUT/prior.tar, the logs as $OUT/session.log and train.log.
#
# Carry .gpu and .whl, or for the whole training stack one part per call (make them with
#   python -m benchmarks.gpu.pack --parts 2 --hu-step 2 --eval-slices 110 --no-wheels
# then: call 1 carries .gpu/train_part1.npz.xz and the diffusers wheels, `bash scripts/gpu/session.sh 0`; call 2
# carries train_part2, `bash scripts/gpu/session.sh MINUTES`; call 3 carries .whl and .gpu/ct_eval_subset.npz for
# the parts). Or make a subset with (.gpu/ct_eval_subset.npz is a ctbird.stacks file: images, labels,
# pixel_spacing_mm; a pack from before that format, with "hu" arrays, must be made again)
#   python -m benchmarks.gpu.pack --stride 6 --offset 1 --eval-slices 32 --no-wheels
# (.gpu: training subset + evaluation slice pack) and the wheels of ../shared/tools/astra-cuda13/README.md in
# .whl (astra-toolbox, nvidia-cuda-runtime-cu12, diffusers, pydicom, importlib_metadata, lazy-importer, and
# the cuFFT shim in .whl/shim).
set -uo pipefail
TRAIN_MIN=${1:?usage: bash scripts/gpu/session.sh TRAIN_MINUTES [PART ...]}
shift
OUT=${OUT:-./out-gpu}
RESULTS=/tmp/gpu-results
KEPT_PRIOR=/tmp/ctbird-new-prior
BEFORE_PRIOR=/tmp/ctbird-before-prior
STAGED=/tmp/ctdata
SHIPPED=data/priors/ctbird-ct-256
EVAL=.gpu/ct_eval_subset.npz
EVAL_SLICES=${EVAL_SLICES:-32}
BATCH=${BATCH:-16}
DEVICE=${DEVICE:-cuda}               # DEVICE=cpu BIRD_ITERS=2 EVAL_SLICES=2: a dry run of the parts on a CPU
ITERS=(${BIRD_ITERS:+--iters "$BIRD_ITERS"})
mkdir -p "$OUT" "$RESULTS/docs/results"
exec > >(tee "$OUT/session.log") 2>&1
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg CTBIRD_CACHE_DIR=/tmp/radon-cache
START=$(date +%s)

# Carried wheels (any of: ASTRA's CUDA 12 build for CUDA 13 per ../shared/tools/astra-cuda13/README.md, diffusers,
# pydicom, ...) and the cuFFT shim go to /tmp/site, which outlives this call while the machine stays warm.
export PYTHONPATH=/tmp/site:$PWD
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
fi
[ -f .whl/shim/libcufft.so.11 ] && mkdir -p /tmp/site/shim && cp .whl/shim/libcufft.so.11 /tmp/site/shim/
CUFFT=$(python3 - <<'PY'
import glob
found = glob.glob('/opt/torch/.venv/lib/python3.12/site-packages/nvidia/**/libcufft.so.1*', recursive=True) \
    + glob.glob('/usr/local/cuda*/lib64/libcufft.so.1*')
print(found[0] if found else '')
PY
)
export CUFFT_SHIM_TARGET=$CUFFT
export LD_LIBRARY_PATH=/tmp/site/shim:/tmp/site/nvidia/cuda_runtime/lib:${LD_LIBRARY_PATH:-}
python3 -c "import torch, diffusers; print('torch', torch.__version__, '| diffusers', diffusers.__version__)" || exit 1
if [ $# -gt 0 ]; then
  python3 -c "import astra; print('astra', astra.__version__, 'cuda', astra.use_cuda())" || exit 1
fi
# The prior as carried, before this session trains it: part "before" benchmarks it.
[ -d "$BEFORE_PRIOR" ] || cp -r "$SHIPPED" "$BEFORE_PRIOR"
# The whole training stack travels in parts, one per call (python -m benchmarks.gpu.pack --parts K): each call
# unpacks the parts it carries into /tmp/ctdata, and training reads every part unpacked there so far.
NEW_PARTS=()
for part in .gpu/train_part*.npz.xz; do  # a part left by an earlier call on this machine is unpacked already
  [ -f "$part" ] && [ ! -f "$STAGED/$(basename "$part" .xz)" ] && NEW_PARTS+=("$part")
done
if [ ${#NEW_PARTS[@]} -gt 0 ]; then
  python3 -m benchmarks.gpu.pack --unpack "${NEW_PARTS[@]}" --out-dir "$STAGED" || exit 1
fi
if compgen -G "$STAGED/train_part*.npz" >/dev/null; then
  export DATA="$(echo "$STAGED"/train_part*.npz)"
fi

if python3 -c "import sys; sys.exit(0 if float('$TRAIN_MIN') > 0 else 1)"; then
  OUT="$OUT" INIT=${INIT-$SHIPPED} LR=${LR:-3e-4} bash scripts/gpu/train_prior.sh "$TRAIN_MIN"
  echo "training exit $?"
  if [ -s "$OUT/prior.tar" ]; then
    rm -rf "$KEPT_PRIOR" && mkdir -p "$KEPT_PRIOR" && tar xf "$OUT/prior.tar" -C "$KEPT_PRIOR" --strip-components=1
  fi
fi
if [ -f "$KEPT_PRIOR/model_index.json" ]; then
  rm -rf "$SHIPPED" && cp -r "$KEPT_PRIOR" "$SHIPPED"
  echo "benchmarking the newly trained prior (installed as $SHIPPED on this machine)"
else
  echo "benchmarking the shipped prior as carried"
fi

part() {  # part CAP COMMAND...: run with a cap, then pack the results
  local cap=$1
  shift
  echo "=== $(( $(date +%s) - START )) s: $* (cap $cap s)"
  timeout "$cap" "$@"
  echo "=== exit $? after $(( $(date +%s) - START )) s"
  tar cf "$OUT/results.tar" -C "$RESULTS" docs
}
BENCH=(python3 -m benchmarks.ct --device "$DEVICE" --data "$EVAL" --out-dir "$RESULTS/docs" "${ITERS[@]}")
for name in "$@"; do
  case $name in
    timing) part 90 python3 -m benchmarks.studies.timing --device "$DEVICE" --tag gpu --batch-sizes 1,16 \
              --iters "${BIRD_ITERS:-10}" --out-dir "$RESULTS/docs" ;;
    main) part $(( 100 + 3 * EVAL_SLICES )) "${BENCH[@]}" --tag gpu --max-slices "$EVAL_SLICES" --batch-size "$BATCH" --views 30 \
            --geometry parallel --noise none --methods "${MAIN_METHODS:-fbp,sirt,tv,dps,dds,bird-raw,bird}" ;;
    before) part $(( 60 + EVAL_SLICES )) "${BENCH[@]}" --tag gpu-before --prior "$BEFORE_PRIOR" \
              --max-slices "$EVAL_SLICES" --batch-size "$BATCH" --views 30 --geometry parallel --noise none --methods fbp,bird ;;
    exact) part 150 "${BENCH[@]}" --tag gpu_exact --max-slices "$(( EVAL_SLICES < 16 ? EVAL_SLICES : 16 ))" \
             --batch-size 16 --views 30 --geometry parallel --noise none --methods fbp,bird-exact ;;
    ablation) part 150 "${BENCH[@]}" --ablation --tag gpu --max-slices "$(( EVAL_SLICES < 8 ? EVAL_SLICES : 8 ))" \
                --batch-size 8 ;;
    views) part 150 "${BENCH[@]}" --tag gpu_views --max-slices "$(( EVAL_SLICES < 16 ? EVAL_SLICES : 16 ))" \
             --batch-size 16 --views 8,18,60 \
             --geometry parallel --noise none --methods fbp,sirt,tv,dds,bird-raw,bird ;;
    fan-noise) part 200 "${BENCH[@]}" --tag gpu_fan_noise --max-slices "$(( EVAL_SLICES < 16 ? EVAL_SLICES : 16 ))" \
                 --batch-size 16 --views 30 --geometry parallel,fan --noise none,1e5 \
                 --methods fbp,sirt,tv,dds,bird-raw,bird ;;
    operators) part 60 python3 -m benchmarks.gpu.radon_timing 256 512 ;;
    *) echo "unknown part $name" ;;
  esac
done
echo "session done after $(( $(date +%s) - START )) s"
