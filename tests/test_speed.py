"""Speed paths (issue 9): the fast path computes the same loss as the reference paths; the switches work;
generation in batches keeps no graph alive. No test here asserts a timing (those live in benchmarks/bench_speed.py).

Tolerances: losses agree to 1e-5 relative and gradients to 1e-4 relative (fp32 rounding of reordered sums).
"""

import sys
import weakref
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from dsg_viz import generation
from dsg_viz.bn import StatsBatchNorm2d, bn_targets, capture_bn, has_hooks, per_sample_stats, stats_copy
from dsg_viz.generation import build_objective, generate, preset
from dsg_viz.margins import compute_margins
from dsg_viz.objectives import StepContext

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from dsg_reference_loop import reference_loss, register_hooks, write_margin_files  # noqa: E402

LOSS_RTOL, GRAD_RTOL = 1e-5, 1e-4


def _plain_stats(x):
    """The textbook autograd chain: spatial mean and sqrt(unbiased var + 1e-6)."""
    f = x.flatten(2)
    return f.mean(-1), torch.sqrt(f.var(-1, unbiased=True) + 1e-6)


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@pytest.mark.parametrize("shape", [(5, 4, 6, 7), (3, 8, 2, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_per_sample_stats_matches_autograd_chain(shape, channels_last):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g) * 2 + 0.7
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w1, w2 = torch.randn(shape[:2], generator=g), torch.randn(shape[:2], generator=g)
    xa = x.clone().requires_grad_(True)
    mu, sd = per_sample_stats(xa)
    (ga,) = torch.autograd.grad((mu * w1).sum() + (sd.square() * w2).sum(), xa)
    xb = x.contiguous().requires_grad_(True)
    mu_b, sd_b = _plain_stats(xb)
    (gb,) = torch.autograd.grad((mu_b * w1).sum() + (sd_b.square() * w2).sum(), xb)
    assert torch.allclose(mu, mu_b, atol=1e-6) and torch.allclose(sd, sd_b, rtol=1e-5)
    assert _rel(ga, gb) < GRAD_RTOL
    with torch.no_grad():  # the no-grad path gives the same values
        mu_n, sd_n = per_sample_stats(x)
    assert torch.allclose(mu_n, mu) and torch.allclose(sd_n, sd)


def test_stats_copy_matches_bn_and_leaves_model_alone(tiny):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    flags = [p.requires_grad for p in tiny.parameters()]
    net, layers = stats_copy(tiny, channels_last=True)
    assert len(layers) == 3 and all(isinstance(m, StatsBatchNorm2d) for m in layers)
    assert all(isinstance(m, nn.BatchNorm2d) for _, m in [("", tiny.bn1), ("", tiny.bn2), ("", tiny.bn3)])
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), capture_bn(tiny) as cap:
        ref = tiny(x)
    out = net(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5)
    for (m0, s0), layer in zip(cap.stats, layers):
        assert torch.allclose(layer.stats[0], m0, atol=1e-5) and torch.allclose(layer.stats[1], s0, rtol=1e-5)
    assert all(torch.equal(v, tiny.state_dict()[k]) for k, v in before.items())
    assert [p.requires_grad for p in tiny.parameters()] == flags and tiny.conv1.weight.is_contiguous()
    assert not has_hooks(tiny)


def _loss_and_grad(model, x, y, cfg, margins, path):
    """Total loss and d loss / d x of ``cfg``'s objective, statistics from the hook or the fused path."""
    obj = build_objective(cfg, len(bn_targets(model)), margins)
    x = x.clone()
    if path == "hooks":
        x.requires_grad_(True)
        with capture_bn(model) as cap:
            logits = model(x)
            stats = cap.stats
    else:
        net, layers = stats_copy(model, channels_last=(path == "fused_cl"))
        if path == "fused_cl":
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        logits = net(x)
        stats = [m.stats for m in layers]
    ctx = StepContext(x, logits, y, stats, bn_targets(model), noise=torch.Generator().manual_seed(3))
    loss, values = obj(ctx)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), values, grad.contiguous()


@pytest.mark.parametrize("method", ["dsg", "dsg-official", "zeroq", "zeroq+ce"])
def test_fast_path_agrees_with_hook_path(tiny, method):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 16, 16, generator=g)
    y = torch.randint(0, 4, (8,), generator=g)
    cfg = preset(method)
    margins = compute_margins(tiny, 8, seed=0) if cfg.sda else None
    l0, v0, g0 = _loss_and_grad(tiny, x, y, cfg, margins, "hooks")
    for path in ("fused", "fused_cl"):
        l1, v1, g1 = _loss_and_grad(tiny, x, y, cfg, margins, path)
        assert abs(float(l1 - l0)) <= LOSS_RTOL * abs(float(l0)), (path, float(l0), float(l1))
        assert v1.keys() == v0.keys()
        assert _rel(g1, g0) < GRAD_RTOL, path


def test_fast_path_agrees_with_released_loop_baseline(tiny, tmp_path):
    """``dsg-official`` (fast path) and benchmarks/dsg_reference_loop.py give the same loss except for SCI, whose
    released form (unsorted eigenpairs, detached) differs in value but has no gradient in either."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 16, 16, generator=g)
    y = torch.randint(0, 4, (8,), generator=g)
    margins = compute_margins(tiny, 8, seed=0)
    l0, v0, g0 = _loss_and_grad(tiny, x, y, preset("dsg-official"), margins, "fused_cl")
    write_margin_files([d[0].item() for d in margins.delta], [d[0].item() for d in margins.gamma], tmp_path)
    hooks, bns, handles = register_hooks(tiny)
    try:
        xr = x.clone().requires_grad_(True)
        total, terms = reference_loss(tiny, hooks, bns, xr, y, tmp_path, jitter=0)
    finally:
        for h in handles:
            h.remove()
    (gr,) = torch.autograd.grad(total, xr)
    ours, ref = float(l0) - float(v0["sci"]), float(total.detach()) - terms["sci"]
    assert abs(ours - ref) <= LOSS_RTOL * abs(ref), (ours, ref)
    assert abs(float(v0["sda"] + v0["lse"]) - terms["sda+lse"]) <= LOSS_RTOL * terms["sda+lse"]
    assert _rel(g0, gr) < GRAD_RTOL
    assert not has_hooks(tiny)


def test_switches_work(tiny, monkeypatch):
    calls = []
    real = generation.stats_copy
    monkeypatch.setattr(generation, "stats_copy", lambda *a, **k: calls.append(k or a[1:]) or real(*a, **k))
    runs = {}
    for fused, cl in ((False, False), (True, False), (True, True), (False, True)):
        cfg = preset("dsg", num_samples=6, batch_size=6, steps=3, fused_stats=fused, channels_last=cl,
                     precision="fp32")  # "auto" would pick bf16 for the fused channels-last run on AMX CPUs
        runs[fused, cl] = generate(tiny, cfg, seed=1, progress=False)
        assert runs[fused, cl].config["fused_stats"] == fused and runs[fused, cl].config["channels_last"] == cl
        assert runs[fused, cl].images.is_contiguous()
    assert len(calls) == 2  # only the fused runs build the statistics copy
    bf = generate(tiny, preset("zeroq", num_samples=4, batch_size=4, steps=1, precision="bf16"), progress=False)
    assert len(calls) == 3 and torch.isfinite(bf.images).all()  # bf16 autocast runs on the fused path too
    ref = runs[False, False]
    for k, s in runs.items():  # 3 Adam steps from the same start: same images up to rounding
        assert torch.allclose(s.images, ref.images, atol=1e-3), k
        assert s.history["total"][0] == pytest.approx(ref.history["total"][0], rel=1e-4), k
    assert not has_hooks(tiny) and not tiny.training and tiny.conv1.weight.grad is None
    assert preset("dsg").fused_stats and preset("dsg").channels_last  # the fast path is the default


@pytest.mark.parametrize("fused", [True, False])
def test_batches_keep_no_graph(tiny, monkeypatch, fused):
    """num_samples > batch_size: each batch's statistics and logits (which hold the step's graph) are freed
    before the next batch starts, and the returned images carry no graph."""
    steps = 3
    batch = [0]
    refs: list = []  # (batch, weakref to a statistics tensor, weakref to the logits) per step

    class Spy(StepContext):
        def __init__(self, x, logits, labels, stats, targets, noise=None):
            super().__init__(x, logits, labels, stats, targets, noise)
            refs.append((batch[0], weakref.ref(stats[-1][1]), weakref.ref(logits)))

    def cb(b, step, values):
        assert b == batch[0]
        if step == 0:
            alive = [bb for bb, r, lg in refs if bb < b and (r() is not None or lg() is not None)]
            assert not alive, f"batch {b} started while the graph of batch(es) {sorted(set(alive))} was alive"
        if step == steps - 1:
            batch[0] += 1

    monkeypatch.setattr(generation, "StepContext", Spy)
    cfg = preset("zeroq", num_samples=10, batch_size=4, steps=steps, fused_stats=fused)
    s = generate(tiny, cfg, seed=0, progress=False, callback=cb)
    assert len(s) == 10 and [len(h) for h in s.history["total"]] == [steps] * 3 and batch[0] == 3
    assert not s.images.requires_grad and s.images.grad_fn is None
    assert len(refs) == 3 * steps and all(r() is None and lg() is None for _, r, lg in refs)
