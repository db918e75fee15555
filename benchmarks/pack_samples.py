"""Pack the sample sets found under a folder into a few files of at most ``--max-mb`` MB each (float32 images,
labels and provenance), e.g. to bring GPU-generated sets back from a machine that returns few, small files.

Usage: python benchmarks/pack_samples.py SRC_DIR DEST_PREFIX [--max-mb 15]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dest")
    ap.add_argument("--max-mb", type=float, default=15.0)
    a = ap.parse_args()
    packs, cur, size = [], {}, 0
    for f in sorted(Path(a.src).rglob("*.pt")):
        try:
            d = torch.load(f, map_location="cpu", weights_only=True)  # tensors and plain containers only
        except Exception as e:  # noqa: BLE001
            print(f"skip {f}: {type(e).__name__}")
            continue
        if not isinstance(d, dict) or "images" not in d:
            continue
        keep = {k: v for k, v in d.items() if k != "snapshots"}
        n = d["images"].numel() * 4
        if cur and size + n > a.max_mb * 2**20:
            packs.append(cur)
            cur, size = {}, 0
        cur[f.stem] = keep
        size += n
    if cur:
        packs.append(cur)
    for i, p in enumerate(packs):
        torch.save(p, f"{a.dest}_{i}.pt")
        print(f"{a.dest}_{i}.pt: {len(p)} sets: {', '.join(p)}")


if __name__ == "__main__":
    main()
