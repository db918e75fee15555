#!/usr/bin/env bash
# A small CIFAR-10 data root for a machine that cannot see ../shared (e.g. a lent GPU machine): the JPEG ResNet-20
# checkpoint, the whole test split, and the last 1,000 train images of each class (the validation subset is the last
# 500, so validation scores equal the full data root's; real calibration then draws from the other 500 per class).
# Usage: benchmarks/make_small_data_root.sh DEST [SRC (default ../shared)]
set -euo pipefail
DEST=$1; SRC=${2:-../shared}
mkdir -p "$DEST/models/cifar10" "$DEST/datasets/cifar10-jpeg"
cp "$SRC/models/cifar10/resnet20_cifar10_jpeg.pt" "$DEST/models/cifar10/"
cp -r "$SRC/datasets/cifar10-jpeg/test" "$DEST/datasets/cifar10-jpeg/"
for d in "$SRC"/datasets/cifar10-jpeg/train/*/; do
    c=$(basename "$d"); mkdir -p "$DEST/datasets/cifar10-jpeg/train/$c"
    ls "$d" | sort | tail -n 1000 | while read -r f; do cp "$d/$f" "$DEST/datasets/cifar10-jpeg/train/$c/"; done
done
du -sh "$DEST"
