"""SCI term cost: ``sci_loss`` fwd+bwd with the current ``cosine_gram`` vs the earlier all-float64 normalisation.

    python benchmarks/bench_sci.py --sizes 64,256 --repeats 9 --threads 1

The two variants alternate inside one run; medians in ms are printed as JSON, with the loss and gradient agreement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

import dsg_viz.objectives as O


def gram_float64_rows(x: torch.Tensor) -> torch.Tensor:
    """The earlier implementation: normalise the [N, D] rows in float64, then ``f fᵀ``."""
    f = F.normalize(x.flatten(1).double(), dim=1)
    return f @ f.T


def run(n: int, repeats: int) -> dict:
    x = (torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.1).requires_grad_(True)
    variants = {"current": O.cosine_gram, "float64_rows": gram_float64_rows}
    times = {k: [] for k in variants}
    out = {}
    original = O.cosine_gram
    try:
        for r in range(repeats + 1):
            for name, fn in variants.items():
                O.cosine_gram = fn
                x.grad = None
                t0 = time.perf_counter()
                loss = O.sci_loss(x, "intended", torch.Generator().manual_seed(1))
                loss.backward()
                dt = time.perf_counter() - t0
                if r:  # first round is warm-up
                    times[name].append(dt * 1e3)
                out[name] = (loss.item(), x.grad.clone())
    finally:
        O.cosine_gram = original
    (l0, g0), (l1, g1) = out["current"], out["float64_rows"]
    return {"n": n, **{f"{k}_ms": round(statistics.median(v), 2) for k, v in times.items()},
            "ratio_float64_rows_over_current": round(statistics.median(times["float64_rows"])
                                                     / statistics.median(times["current"]), 2),
            "loss_rel_diff": abs(l0 - l1) / abs(l1), "grad_rel_diff": ((g0 - g1).norm() / g1.norm()).item()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="64,256")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(json.dumps([run(int(n), a.repeats) for n in a.sizes.split(",")], indent=1))


if __name__ == "__main__":
    main()
