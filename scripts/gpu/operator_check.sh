#!/usr/bin/env bash
# GPU check of the operator package on the device machine (CUDA 13 only; see ../shared/tools/astra-cuda13):
# installs the carried ASTRA wheel + the cuFFT forwarding shim, runs the Radon tests on CUDA, then the timings.
# Carry .whl (astra_toolbox, nvidia_cuda_runtime_cu12 wheels and shim/libcufft.so.11).
set -x
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/astra_toolbox-*.whl .whl/nvidia_cuda_runtime_cu12-*.whl || exit 1
CUFFT=$(python3 - <<'PY'
import glob, site, sys
c = glob.glob('/opt/torch/.venv/lib/python3.12/site-packages/nvidia/**/libcufft.so.1*', recursive=True) + glob.glob('/usr/local/cuda*/lib64/libcufft.so.1*')
print(c[0] if c else '')
PY
)
echo "cufft: $CUFFT"
export CUFFT_SHIM_TARGET=$CUFFT
export LD_LIBRARY_PATH=$PWD/.whl/shim:/tmp/site/nvidia/cuda_runtime/lib:$LD_LIBRARY_PATH
export PYTHONPATH=$PWD:/tmp/site CTBIRD_CACHE_DIR=/tmp/radon-cache PYTHONUNBUFFERED=1
python3 -c "import astra; print('astra', astra.__version__, 'use_cuda', astra.use_cuda())"
timeout 240 python3 -m pytest tests/operators/test_radon.py -q -p no:cacheprovider --tb=line -rfs 2>&1 | tail -15
python3 -c "import torch; print(torch.__version__)"
python3 -m benchmarks.gpu.radon_timing
