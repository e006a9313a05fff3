#!/usr/bin/env bash
# Full-scale throughput check on one GPU with no network (see perf/gpu_check.py's header for what it
# measures and the targets). Run from the repository root:
#
#   perf/gpu_check.sh [extra gpu_check.py arguments]        # writes perf/results/gpu_check.json
#
# open_clip is not installed on the GPU machine and it cannot download: carry the wheels in .whl/
# (open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.2.13, fetched with `pip download --no-deps
# --only-binary=:all: --python-version 3.12 -d .whl ...` on a connected machine); they are installed into
# /tmp/site here. Without them the image-encoder part is skipped and says so. Fits in 10 minutes on an H200.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
out=${OUT:-perf/results}   # on the device machine $OUT is the folder that comes back
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec "$PY" perf/gpu_check.py --out "$out/gpu_check.json" "$@"
