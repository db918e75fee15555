"""Generation precision (issue 19): bf16 autocast on the fused path keeps statistics and losses in fp32 and matches
the fp32 loss to a stated tolerance; ``precision="auto"`` resolves by hardware capability. Runs on any CPU: bf16
is emulated where the CPU lacks AMX-BF16/AVX512-BF16 (slow, but these tensors are tiny)."""

import warnings

import pytest
import torch

from dsg_viz import _hw, generation
from dsg_viz.bn import bn_targets, stats_copy
from dsg_viz.errors import ConfigError
from dsg_viz.generation import (GenerationConfig, SampleSet, build_objective, generate, preset,
                                resolve_precision)
from dsg_viz.margins import compute_margins
from dsg_viz.objectives import StepContext

# bf16 network vs fp32 network, same pixels, same objective. Measured (tiny net, 3 seeds × dsg/zeroq/zeroq+ce):
# loss ≤ 7e-3 relative, gradient cosine ≥ 0.9989; on ResNet-20 (batch 64): loss ≤ 1.7e-3, cosine ≥ 0.990 — the
# hook path under autocast (BN statistics from forward pre-hooks) differs from fp32 as much (1e-3, 0.10 relative
# gradient error), so the error is the bf16 convolutions', not the fused statistics'
LOSS_RTOL = 1.5e-2
GRAD_COS = 0.99


def _loss_and_grad(model, x, y, cfg, margins, bf16: bool):
    obj = build_objective(cfg, len(bn_targets(model)), margins)
    net, layers = stats_copy(model, channels_last=True)
    x = x.clone().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = net(x)
    stats = [m.stats for m in layers]
    ctx = StepContext(x, logits.float(), y, stats, bn_targets(model), noise=torch.Generator().manual_seed(3))
    loss, values = obj(ctx)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), values, grad, stats, logits


@pytest.mark.parametrize("method", ["dsg", "zeroq+ce"])
def test_bf16_loss_matches_fp32(tiny, method):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 16, 16, generator=g)
    y = torch.randint(0, 4, (16,), generator=g)
    cfg = preset(method)
    margins = compute_margins(tiny, 16, seed=0) if cfg.sda else None
    l0, v0, g0, _, _ = _loss_and_grad(tiny, x, y, cfg, margins, bf16=False)
    l1, v1, g1, stats, logits = _loss_and_grad(tiny, x, y, cfg, margins, bf16=True)
    assert logits.dtype == torch.bfloat16  # the network really ran in bf16 ...
    assert all(m.dtype == torch.float32 and s.dtype == torch.float32 for m, s in stats)  # ... its statistics did not
    assert all(v.dtype == torch.float32 for v in v1.values()) and l1.dtype == torch.float32
    assert abs(float(l1 - l0)) <= LOSS_RTOL * abs(float(l0)), (float(l0), float(l1))
    assert torch.nn.functional.cosine_similarity(g0.flatten(), g1.flatten(), dim=0) > GRAD_COS
    assert g1.dtype == torch.float32 and torch.isfinite(g1).all()


def test_bf16_statistics_are_exact_fp32_statistics_of_the_bf16_input(tiny):
    """Under autocast the BN input is bf16; its per-sample statistics are those of the bf16 values, computed in
    fp32 (two-pass), so they agree with a float64 computation to fp32 rounding."""
    net, layers = stats_copy(tiny, channels_last=True)
    seen = []
    h = layers[1].register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1)).contiguous(
        memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net(x)
    h.remove()
    a = seen[0]
    assert a.dtype == torch.bfloat16
    ref = a.double().flatten(2)
    mean, std = layers[1].stats
    torch.testing.assert_close(mean.double(), ref.mean(2), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(std.double(), (ref.var(2) + 1e-6).sqrt(), rtol=1e-5, atol=1e-6)


def test_auto_resolves_by_capability(tiny, monkeypatch):
    monkeypatch.setattr(_hw, "native_bf16", lambda device="cpu": (False, "no native bf16 (test)"))
    cfg = preset("dsg", num_samples=4, batch_size=4, steps=2)
    assert cfg.precision == "auto"
    assert resolve_precision(cfg) == ("fp32", "auto: no native bf16 (test)")
    s = generate(tiny, cfg, progress=False)
    assert s.precision == {"requested": "auto", "resolved": "fp32", "reason": "auto: no native bf16 (test)",
                           "device": "cpu"}
    assert s.config["precision"] == "auto"  # the config keeps what was asked; s.precision what ran

    monkeypatch.setattr(_hw, "native_bf16", lambda device="cpu": (True, "AMX (test)"))
    assert resolve_precision(cfg) == ("bf16", "auto: AMX (test)")
    assert resolve_precision(preset("dsg", fused_stats=False))[0] == "fp32"  # bf16 only on the fast path
    assert resolve_precision(preset("dsg", channels_last=False))[0] == "fp32"
    assert resolve_precision(preset("dsg", precision="fp32")) == ("fp32", "requested")
    s = generate(tiny, cfg, progress=False)
    assert s.precision["resolved"] == "bf16" and torch.isfinite(s.images).all()
    assert s.images.dtype == torch.float32


def test_explicit_precisions_run_and_are_saved(tiny, tmp_path):
    runs = {p: generate(tiny, preset("dsg", num_samples=4, batch_size=4, steps=3, precision=p), seed=2,
                        progress=False) for p in ("fp32", "bf16")}
    for p, s in runs.items():
        assert s.precision["resolved"] == p and torch.isfinite(s.images).all()
        s.save(tmp_path / f"{p}.pt", grid=False)
        back = SampleSet.load(tmp_path / f"{p}.pt")
        assert back.precision == s.precision and back.config["precision"] == p
    # three Adam steps from the same start: the bf16 run follows the fp32 one closely
    h0, h1 = runs["fp32"].history["total"][0], runs["bf16"].history["total"][0]
    assert h1[0] == pytest.approx(h0[0], rel=LOSS_RTOL)


def test_native_bf16_answers_everywhere(monkeypatch):
    ok, why = _hw.native_bf16("cpu")
    assert isinstance(ok, bool) and why
    flags = _hw.cpu_flags()
    assert ok == ("amx_bf16" in flags and torch.backends.mkldnn.is_available())  # AVX512-BF16 alone: slower
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN limited to AVX2: bf16 would be emulated
    assert _hw.native_bf16("cpu")[0] is False
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")  # bf16 dot products, no AMX tiles
    assert _hw.native_bf16("cpu")[0] is False
    info = _hw.cpu_info()
    assert set(info["flags"]) == set(_hw.RELEVANT_FLAGS) and info["cpu_model"] and info["native_bf16"] is False


def test_autocast_bf16_is_a_deprecated_alias():
    with pytest.warns(FutureWarning, match="precision='bf16'"):
        cfg = preset("dsg", autocast_bf16=True)
    assert cfg.precision == "bf16" and cfg.autocast_bf16 is False
    assert cfg == preset("dsg", precision="bf16")  # same config, same cache key
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with pytest.raises(ConfigError, match="contradicts"):
            GenerationConfig(autocast_bf16=True, precision="fp32")
    with pytest.raises(ConfigError, match="precision"):
        preset("dsg", precision="fp16")
    assert generation.PRECISIONS == ("auto", "fp32", "bf16")


def test_compile_falls_back_to_eager(tiny, monkeypatch):
    """``compile=True`` wraps the fused copy in ``torch.compile``; a compile that fails falls back to the eager copy
    with a warning and gives the eager images (the real compile takes minutes: docs/benchmarks.md)."""
    calls = []

    def broken(module, **kw):
        calls.append(module)

        def fn(x):
            raise RuntimeError("no C++ compiler (test)")
        return fn

    monkeypatch.setattr(torch, "compile", broken)
    cfg = preset("zeroq+ce", num_samples=4, batch_size=4, steps=3, precision="fp32")
    ref = generate(tiny, cfg, seed=1, progress=False)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        s = generate(tiny, preset("zeroq+ce", num_samples=4, batch_size=4, steps=3, precision="fp32", compile=True),
                     seed=1, progress=False)
    assert len(calls) == 1 and torch.equal(s.images, ref.images) and s.config["compile"] is True
