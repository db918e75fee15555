"""Margin sanity check (issue: SDA margins vs the spread of real data).

Compares the paper's noise-derived SDA margins with the same ε-quantile of per-sample statistic deviations of
real images from the validation subset, and reports how much of the BN loss each margin leaves active. Margins
far wider than real data's spread switch SDA off instead of relaxing it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .bn import bn_targets, capture_bn
from .margins import compute_margins, margins_from_inputs
from .objectives import StepContext


@torch.no_grad()
def _loss_left(model, x, margins) -> tuple[float, float]:
    """Return (SDA loss with ``margins``, ZeroQ loss) of inputs ``x``, averaged over samples."""
    with capture_bn(model) as cap:
        logits = model(x)
    ctx = StepContext(x, logits, torch.zeros(len(x), dtype=torch.long), cap.stats, bn_targets(model))
    n = len(x)
    return ctx.sda_matrix(margins).sum().item() / n, ctx.sda_matrix(None).sum().item() / n


def margin_report(model: nn.Module, real_images: torch.Tensor, batch_size: int = 64, quantile: float = 0.9,
                  source: str = "per_sample", axis: str = "layer", seed: int = 0) -> dict:
    """Return per-layer noise margins next to real-data quantiles, and the fraction of BN loss they leave.

    ``real_images`` [N, 3, H, W] (model input space) must come from the validation subset of train.
    Keys: ``layers`` (rows with ``delta_noise``, ``delta_real``, ``gamma_noise``, ``gamma_real``, ratios),
    ``median_ratio_delta``, ``median_ratio_gamma``, ``loss_left_noise_init`` (SDA/ZeroQ loss of a fresh noise
    batch: what SDA still asks of the initial images), ``loss_left_real`` (same for real images).
    """
    noise = compute_margins(model, batch_size, quantile, source, axis, seed=seed)
    real = margins_from_inputs(model, real_images, quantile, source, axis)
    nd, ng = noise.layer_means()
    rd, rg = real.layer_means()
    t = bn_targets(model)
    rows = [{"layer": name, "delta_noise": a, "delta_real": b, "ratio_delta": a / max(b, 1e-12),
             "gamma_noise": c, "gamma_real": d, "ratio_gamma": c / max(d, 1e-12)}
            for name, a, b, c, d in zip(t.names, nd, rd, ng, rg)]
    g = torch.Generator().manual_seed(seed + 1)
    x0 = torch.randn((batch_size, *model.spec.input_size), generator=g)
    sda0, bn0 = _loss_left(model, x0, noise)
    sdar, bnr = _loss_left(model, real_images, noise)
    med = lambda v: float(torch.tensor(v).median())  # noqa: E731
    return {"quantile": quantile, "source": source, "axis": axis, "batch_size": batch_size, "layers": rows,
            "median_ratio_delta": med([r["ratio_delta"] for r in rows]),
            "median_ratio_gamma": med([r["ratio_gamma"] for r in rows]),
            "loss_left_noise_init": sda0 / bn0, "loss_left_real": sdar / max(bnr, 1e-12),
            "zeroq_loss_noise_init": bn0, "zeroq_loss_real": bnr}


def report_markdown(rep: dict) -> str:
    """Return a Markdown table of :func:`margin_report`."""
    lines = [f"ε = {rep['quantile']}, source `{rep['source']}`, axis `{rep['axis']}`, noise batch {rep['batch_size']}",
             "", "| layer | δ noise | δ real | ratio | γ noise | γ real | ratio |", "|---|---|---|---|---|---|---|"]
    for r in rep["layers"]:
        lines.append(f"| {r['layer']} | {r['delta_noise']:.3f} | {r['delta_real']:.3f} | {r['ratio_delta']:.2f} | "
                     f"{r['gamma_noise']:.3f} | {r['gamma_real']:.3f} | {r['ratio_gamma']:.2f} |")
    lines += ["", f"median ratio noise/real: δ {rep['median_ratio_delta']:.2f}, γ {rep['median_ratio_gamma']:.2f}; "
              f"SDA keeps {100 * rep['loss_left_noise_init']:.1f} % of the ZeroQ loss of a fresh noise batch and "
              f"{100 * rep['loss_left_real']:.1f} % of that of real validation images."]
    return "\n".join(lines)
