#!/usr/bin/env bash
# GPU check (issue 17): eval, 256-sample generate (zeroq and dsg, 500 steps), a small compare and one QAT epoch,
# all with --device cuda, then a report that puts each number beside the CPU results recorded in docs/ and the time
# per step. Sized for <= 8 minutes on one GPU. Usage (repository root, a CUDA machine):
#
#   DSG_VIZ_DATA_ROOT=<data root> bash benchmarks/gpu_check.sh [OUT_DIR]
#
# The data root needs models/cifar10/resnet20_cifar10_jpeg.pt, datasets/cifar10-jpeg/test/ and a train/ folder
# (the full one, or `benchmarks/make_small_data_root.sh DEST`'s trimmed copy: the last 1,000 images of each class,
# which holds the whole validation subset and a 500-per-class pool for real calibration). Runs from the source tree
# (python -m dsg_viz), so the machine's own torch is used; set PYTHON to choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-runs/gpu_check}
PY=${PYTHON:-python3}
ROOT=${DSG_VIZ_DATA_ROOT:-../shared}
CK=$ROOT/models/cifar10/resnet20_cifar10_jpeg.pt
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 DSG_VIZ_DATA_ROOT=$ROOT
export DSG_VIZ_CACHE=${DSG_VIZ_CACHE:-$OUT_DIR/cache} DSG_VIZ_SAMPLE_CACHE=${DSG_VIZ_SAMPLE_CACHE:-$OUT_DIR/samples_cache}
mkdir -p "$OUT_DIR"
DEV=(--device "${GPU_CHECK_DEVICE:-cuda}" --checkpoint "$CK" --data-root "$ROOT")
# GPU_CHECK_QUICK=1: a dry run of the script's plumbing (a few samples and steps; e.g. on a CPU machine)
if [ -n "${GPU_CHECK_QUICK:-}" ]; then N=16; GEN=(--steps 3); CMP=(--steps 3 --eval-limit 200); QAT=(--iters 2 --batch-size 8 --val-limit 50)
else N=256; GEN=(); CMP=(); QAT=(); fi

step() {  # step NAME command...: run, keep the JSON line, time it
    local name=$1; shift
    local t0=$(date +%s%N)
    echo "== $name: $*" >&2
    "$@" --json > "$OUT_DIR/$name.out" 2> "$OUT_DIR/$name.err" || { echo "FAILED: $name (exit $?)"; tail -5 "$OUT_DIR/$name.err"; }
    tail -n 1 "$OUT_DIR/$name.out" > "$OUT_DIR/$name.json" || true
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    echo "{\"wall\": $((ms / 1000)).$(printf %03d $((ms % 1000)))}" > "$OUT_DIR/$name.wall"
}

$PY - <<'PY' > "$OUT_DIR/env.json"
import json, platform, torch
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
                  "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}))
PY
cat "$OUT_DIR/env.json"
step eval $PY -m dsg_viz eval "${DEV[@]}"
step gen_zeroq $PY -m dsg_viz generate "${DEV[@]}" --method zeroq --num-samples $N "${GEN[@]}" --out "$OUT_DIR/zeroq.pt"
step gen_dsg $PY -m dsg_viz generate "${DEV[@]}" --method dsg --num-samples $N "${GEN[@]}" --out "$OUT_DIR/dsg.pt"
step compare $PY -m dsg_viz compare "${DEV[@]}" --sources gaussian,zeroq,dsg,real --bits W4A4,W6A6,W8A8 --seeds 1 \
    --num-samples $N "${CMP[@]}" --out "$OUT_DIR/compare"
step qat $PY -m dsg_viz qat "${DEV[@]}" --generator dsg --bits W4A4 --preset cpu --epochs 1 --warmup-epochs 0 \
    "${QAT[@]}" --out "$OUT_DIR/qat"
$PY benchmarks/gpu_check_report.py "$OUT_DIR" | tee "$OUT_DIR/report.md"
