#!/usr/bin/env bash
# The calibration-only comparison on CUDA (issue 15's rows, ZeroQ convention, ema calibration): 256 samples × 500
# steps per set, 3 seeds, W4A4/W3A3/W2A4, evaluated on the 10,000 test images. Rows in the order they are filled
# (results.json is written after every cell, so an interrupted run keeps finished cells and resumes):
# the published ZeroQ and the paper's DSG first, then noise, real, the CE base, the tuned DSG and the released DSG.
# Usage: DSG_VIZ_DATA_ROOT=<root> bash benchmarks/gpu_results_table.sh [OUT_DIR] [extra compare options]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-runs/gpu_table}; shift || true
PY=${PYTHON:-python3}
ROOT=${DSG_VIZ_DATA_ROOT:-../shared}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export DSG_VIZ_SAMPLE_CACHE=${DSG_VIZ_SAMPLE_CACHE:-$OUT_DIR/samples_cache}
$PY -m dsg_viz compare --device "${GPU_CHECK_DEVICE:-cuda}" --data-root "$ROOT" \
    --checkpoint "$ROOT/models/cifar10/resnet20_cifar10_jpeg.pt" \
    --sources zeroq,dsg,gaussian,real,zeroq+ce,dsg-tuned,dsg-official --bits W4A4,W3A3,W2A4 --seeds 3 \
    --num-samples 256 --convention zeroq --calibration ema --out "$OUT_DIR" "$@"
