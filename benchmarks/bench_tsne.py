"""t-SNE timing of the diagnostics embedding (issue: 2,000 points must embed in < 60 s on 2 cores).

Penultimate (64-d) features of 2,000 real train images through the JPEG-fine-tuned ResNet-20, embedded with
``dsg_viz.diagnostics.metrics.embed`` (sklearn t-SNE, perplexity 30, 1,000 iterations, fixed seed); 1 and 2
OpenMP threads alternate over the repeats; medians reported.

    python benchmarks/bench_tsne.py --repeats 3 --out docs/bench_tsne.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from dsg_viz import create_model
from dsg_viz.data import normalize, resolve_data_root, sample_calibration
from dsg_viz.diagnostics.metrics import collect_features, embed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    root = resolve_data_root(a.data_root)
    model = create_model("resnet20_cifar10", str(root / "models/cifar10/resnet20_cifar10_jpeg.pt"))
    imgs = sample_calibration(a.points, seed=0, data_root=root)
    x = normalize(imgs.images, model.spec.mean, model.spec.std)
    feats = collect_features(model, x).penultimate  # [N, 64]
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(a.repeats):
        for th in (1, 2):
            t = time.perf_counter()
            emb = embed(feats, "tsne", seed=0, threads=th)
            times[th].append(time.perf_counter() - t)
            print(th, f"{times[th][-1]:.1f} s", emb.shape, flush=True)
    t = time.perf_counter()
    embed(feats, "pca")
    pca = time.perf_counter() - t
    res = {"points": a.points, "dims": int(feats.shape[1]), "repeats": a.repeats,
           "median_seconds": {f"{k}_thread": statistics.median(v) for k, v in times.items()},
           "all_seconds": {f"{k}_thread": v for k, v in times.items()}, "pca_seconds": pca,
           "date": time.strftime("%Y-%m-%d %H:%M")}
    print(json.dumps(res, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
