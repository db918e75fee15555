#!/usr/bin/env bash
# ImageNet-size check (issue 17): every command on random-init resnet18 at 224 × 224 over a fake ImageNet folder
# (benchmarks/make_fake_imagenet.py), then the per-step cost of DSG generation (benchmarks/bench_imagenet.py).
# Accuracies are meaningless (random weights, random pixels); what it checks is that each command runs on DEVICE
# and what it costs (wall seconds per command, seconds per generation step, peak memory). Usage (repository root):
#
#   bash benchmarks/imagenet_check.sh [OUT_DIR] [cuda|cpu]
#
# Runs from the source tree (python -m dsg_viz), so the machine's own torch is used; set PYTHON to choose it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/imagenet_check}
DEV=${2:-cuda}
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export DSG_VIZ_SAMPLE_CACHE=$OUT/samples_cache DSG_VIZ_CACHE=$OUT/cache
mkdir -p "$OUT"
R=$OUT/fake_imagenet
$PY benchmarks/make_fake_imagenet.py "$R" --classes 4 --val 8 --train 16 >&2
C=(--model resnet18 --weights random --data-root "$R" --device "$DEV")
if [ "$DEV" = cpu ]; then N=8; ST=2; IT=1; else N=64; ST=50; IT=20; fi

step() {  # step NAME command...: run with --json, keep its last line and the wall time
    local name=$1; shift
    local t0=$(date +%s%N)
    echo "== $name: $*" >&2
    "$@" --json > "$OUT/$name.out" 2> "$OUT/$name.err" || { echo "FAILED: $name"; tail -5 "$OUT/$name.err"; }
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    echo "$name: $((ms / 1000)).$(printf %03d $((ms % 1000))) s  $(tail -c 300 "$OUT/$name.out" | tail -n 1 | cut -c1-200)"
}

step eval $PY -m dsg_viz eval "${C[@]}" --batch-size 16
step generate_dsg $PY -m dsg_viz generate "${C[@]}" --method dsg --num-samples $N --steps $ST --batch-size $N \
    --out "$OUT/dsg.pt"
step compare_calib $PY -m dsg_viz compare "${C[@]}" --sources gaussian,zeroq,dsg,real --bits W4A4,W8A8 --seeds 1 \
    --num-samples $N --steps $ST --batch-size $N --out "$OUT/compare"
step compare_brecq $PY -m dsg_viz compare "${C[@]}" --sources dsg --bits W4A4 --seeds 1 --num-samples $N \
    --steps $ST --batch-size $N --method adaround,brecq --recon-iters $IT --out "$OUT/compare_rec"
step diagnose $PY -m dsg_viz diagnose "${C[@]}" --sources gaussian,zeroq,dsg --real 16 --num-samples 16 --steps $ST \
    --batch-size 16 --tsne-points 48 --perplexity 5 --out "$OUT/diagnose"
step qat $PY -m dsg_viz qat "${C[@]}" --bits W4A4 --preset paper --epochs 1 --iters $IT --batch-size 16 \
    --warmup-epochs 0 --val-limit 16 --no-fp-reference --out "$OUT/qat"
if [ "$DEV" = cuda ]; then
    $PY benchmarks/bench_imagenet.py --device cuda --batch 64 --steps 20 --warmup 3 --precisions fp32,bf16 \
        --out "$OUT/bench_cuda_b64.json" > /dev/null && echo "bench b64: $(tr -d '\n ' < "$OUT/bench_cuda_b64.json" | cut -c1-600)"
    $PY benchmarks/bench_imagenet.py --device cuda --batch 256 --steps 10 --warmup 3 --precisions fp32,bf16 \
        --out "$OUT/bench_cuda_b256.json" > /dev/null && echo "bench b256: $(tr -d '\n ' < "$OUT/bench_cuda_b256.json" | cut -c1-600)"
fi
