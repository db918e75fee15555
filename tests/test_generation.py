"""Generation: objectives, margins, the loop, sample sets and the CLI."""

import json

import pytest
import torch

from dsg_viz.bn import bn_targets, capture_bn, has_hooks
from dsg_viz.cli import main
from dsg_viz.errors import ConfigError, DataError
from dsg_viz.generation import (PRESETS, GenerationError, SampleSet, build_objective, generate, make_samples,
                                preset)
from dsg_viz.margins import compute_margins, load_margins, margins_from_inputs
from dsg_viz.objectives import (BNAlignment, CorrelationInhibition, CrossEntropy, ImageL2, InputStats,
                                LayerwiseEnhancement, Margins, SlackBNAlignment, StepContext, TotalVariation,
                                cosine_gram, lse_weights, sci_loss)


def _ctx(model, x, labels=None):
    with capture_bn(model) as cap:
        logits = model(x)
    labels = labels if labels is not None else torch.zeros(len(x), dtype=torch.long)
    return StepContext(x, logits, labels, cap.stats, bn_targets(model), noise=torch.Generator().manual_seed(0))


def _margins(model, value):
    t = bn_targets(model)
    return Margins([torch.full_like(m, value) for m in t.mean], [torch.full_like(m, value) for m in t.mean])


TERMS = {
    "bn": lambda m: BNAlignment(),
    "sda": lambda m: SlackBNAlignment(_margins(m, 0.05)),
    "lse": lambda m: LayerwiseEnhancement(None, 2.0),
    "sci": lambda m: CorrelationInhibition("intended"),
    "sci_offdiag": lambda m: CorrelationInhibition("offdiag"),
    "input": lambda m: InputStats(),
    "ce": lambda m: CrossEntropy(),
    "tv": lambda m: TotalVariation(),
    "l2": lambda m: ImageL2(),
}


@pytest.mark.parametrize("name", sorted(TERMS))
def test_each_objective_decreases(tiny, name):
    term = TERMS[name](tiny)
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(8, 3, 16, 16, generator=g) + 0.5 * torch.randn(1, 3, 16, 16, generator=g)).requires_grad_(True)
    labels = torch.arange(8) % 4
    opt = torch.optim.Adam([x], lr=0.01)
    weights = {k: v.clone() for k, v in tiny.state_dict().items()}
    vals = []
    for _ in range(6):
        ctx = _ctx(tiny, x, labels)
        ctx.noise = torch.Generator().manual_seed(0)  # same Gaussian reference each step
        v = term(ctx)
        vals.append(v.item())
        opt.zero_grad()
        v.backward()
        opt.step()
    assert vals[-1] < vals[0], vals
    assert x.grad is not None and x.grad.abs().sum() > 0  # the term reaches the pixels...
    assert all(torch.equal(v, tiny.state_dict()[k]) for k, v in weights.items())  # ...and only the pixels change


def test_sda_zero_margin_equals_zeroq(tiny):
    ctx = _ctx(tiny, torch.randn(6, 3, 16, 16))
    assert torch.allclose(SlackBNAlignment(_margins(tiny, 0.0))(ctx), BNAlignment()(ctx), rtol=1e-6)
    assert SlackBNAlignment(_margins(tiny, 0.5))(ctx) < BNAlignment()(ctx)
    assert SlackBNAlignment(_margins(tiny, 1e6))(ctx) == 0


def test_lse_weights_formula():
    W = lse_weights(3, 5, weight=2.0)
    expect = torch.ones(5, 3)
    for j in range(5):
        expect[j, j % 3] = 2.0
    assert torch.equal(W, expect)
    W = lse_weights(30, 25, weight=4.0, limit=20)  # the official code: only samples/layers < 20
    assert W[19, 19] == 4 and W[20, 20] == 1 and W[24, 24] == 1


def test_lse_plus_sda_is_weighted_matrix(tiny):
    ctx = _ctx(tiny, torch.randn(5, 3, 16, 16))
    m = _margins(tiny, 0.01)
    M = ctx.sda_matrix(m)  # [N, L]
    W = lse_weights(3, 5, 2.0)
    total = SlackBNAlignment(m)(ctx) + LayerwiseEnhancement(m, 2.0)(ctx)
    assert torch.allclose(total, (W * M).sum() / 5)
    # hand-made: sample 0 counts layer 0 twice, sample 1 layer 1, ...
    assert torch.allclose(LayerwiseEnhancement(m, 2.0)(ctx), (M[0, 0] + M[1, 1] + M[2, 2] + M[3, 0] + M[4, 1]) / 5)


def test_cosine_gram_matches_float64_row_normalisation():
    """The input-dtype product normalised in float64 equals normalising the rows in float64 first (value and
    gradient), including a zero row (F.normalize's eps)."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(9, 3, 4, 4, generator=g) * 3 + 0.5)
    x[4] = 0
    ref_x, new_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ref = torch.nn.functional.normalize(ref_x.flatten(1).double(), dim=1)
    ref = ref @ ref.T
    new = cosine_gram(new_x)
    assert new.dtype == torch.float64
    assert torch.allclose(new, ref, atol=1e-6)
    w = torch.randn(9, 9, generator=g, dtype=torch.float64)
    (gr,) = torch.autograd.grad((ref * w).sum(), ref_x)
    (gn,) = torch.autograd.grad((new * w).sum(), new_x)
    assert torch.allclose(gn, gr, rtol=1e-4, atol=1e-5)


def test_sci_has_gradient_and_lowers_correlation():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 3 * 8 * 8, generator=g)
    x = (base + 0.3 * torch.randn(12, 3 * 8 * 8, generator=g)).requires_grad_(True)
    off0 = (cosine_gram(x.detach()) - torch.eye(12, dtype=torch.float64)).abs().sum() / (12 * 11)
    for mode in ("intended", "offdiag"):
        xm = x.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([xm], lr=0.2)
        for _ in range(30):
            loss = sci_loss(xm, mode, torch.Generator().manual_seed(1))
            opt.zero_grad()
            loss.backward()
            assert xm.grad.abs().sum() > 0
            opt.step()
        off = (cosine_gram(xm.detach()) - torch.eye(12, dtype=torch.float64)).abs().sum() / (12 * 11)
        assert off < 0.8 * off0, (mode, off, off0)
    xf = x.detach().clone().requires_grad_(True)
    lf = sci_loss(xf, "faithful", torch.Generator().manual_seed(1))
    assert not lf.requires_grad or torch.autograd.grad(lf, xf, allow_unused=True)[0] is None


def test_margins_finite_positive(tiny):
    for source in ("per_sample", "batch"):
        for axis in ("layer", "channel"):
            m = compute_margins(tiny, 16, 0.9, source, axis)
            for d, gm, t in zip(m.delta, m.gamma, bn_targets(tiny).mean):
                assert d.shape == t.shape and torch.isfinite(d).all() and (d > 0).all() and (gm > 0).all()
    a = compute_margins(tiny, 16, 0.5)
    b = compute_margins(tiny, 16, 0.9)
    assert all((x <= y).all() for x, y in zip(a.delta, b.delta))
    with pytest.raises(ConfigError):
        margins_from_inputs(tiny, torch.randn(4, 3, 16, 16), quantile=1.5)


def test_margins_file_roundtrip(tiny, tmp_path):
    import numpy as np

    m = compute_margins(tiny, 16)
    torch.save(m.to_dict(), tmp_path / "m.pt")
    m2 = load_margins(tmp_path / "m.pt", tiny)
    assert all(torch.equal(a, b) for a, b in zip(m.delta, m2.delta))
    d = tmp_path / "official"
    d.mkdir()
    np.save(d / "m.npy", np.array([0.1, -0.2, 0.3]))
    np.save(d / "n.npy", np.array([0.1, 0.2, 0.3]))
    m3 = load_margins(d, tiny)
    assert m3.delta[1].shape == (16,) and float(m3.delta[1][0]) == pytest.approx(0.2)
    np.save(d / "n.npy", np.array([0.1, 0.2]))
    with pytest.raises(DataError, match="BN layers"):
        load_margins(d, tiny)


@pytest.mark.parametrize("method", [m for m in PRESETS if m != "gaussian"])
def test_every_preset_runs_and_lowers_total(tiny, method):
    cfg = preset(method, num_samples=8, batch_size=8, steps=30)
    s = generate(tiny, cfg, seed=0, progress=False)
    assert s.images.shape == (8, 3, 16, 16) and torch.isfinite(s.images).all()
    total = s.history["total"][0]
    assert total[-1] < total[0]
    assert not has_hooks(tiny) and not tiny.training
    assert tiny.conv1.weight.grad is None


def test_objective_terms_named(tiny):
    obj = build_objective(PRESETS["dsg"], 3, _margins(tiny, 0.1))
    assert obj.names == ["sda", "lse", "sci", "input", "ce", "tv", "l2"]
    obj = build_objective(PRESETS["zeroq+ce"], 3, None)
    assert obj.names == ["bn", "input", "ce", "tv", "l2"]
    obj = build_objective(PRESETS["zeroq"], 3, None)  # the published ZeroQ: BN and input statistics only
    assert obj.names == ["bn", "input"]


def test_gaussian_and_batches(tiny):
    s = make_samples(tiny, "gaussian", 10, seed=3, batch_size=4, progress=False)
    assert len(s) == 10 and s.config["steps"] == 0


def test_determinism_and_fp_model_untouched(tiny):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    cfg = preset("dsg", num_samples=6, batch_size=3, steps=4)
    a = generate(tiny, cfg, seed=7, progress=False)
    b = generate(tiny, cfg, seed=7, progress=False)
    c = generate(tiny, cfg, seed=8, progress=False)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert all(torch.equal(v, tiny.state_dict()[k]) for k, v in before.items())


def test_nan_stops_with_clear_error(tiny):
    with torch.no_grad():  # a broken checkpoint: the BN alignment term is infinite from the first step
        tiny.bn2.running_mean[0] = float("inf")
    cfg = preset("zeroq", num_samples=4, batch_size=4, steps=5)
    with pytest.raises(GenerationError, match=r"batch 0, step 0 \(term\(s\): bn\)"):
        generate(tiny, cfg, progress=False)
    with pytest.raises(ConfigError, match="lr"):  # a non-finite learning rate never starts
        preset("zeroq", lr=float("inf"))


def test_keyboard_interrupt_returns_partial(tiny):
    cfg = preset("zeroq", num_samples=12, batch_size=4, steps=5)

    def cb(b, step, values):
        if b == 1 and step == 2:
            raise KeyboardInterrupt

    s = generate(tiny, cfg, progress=False, callback=cb)
    assert s.interrupted and len(s) == 8  # batch 0 finished, batch 1 as it stood


def test_save_load_roundtrip_and_corrupt(tiny, tmp_path):
    s = make_samples(tiny, "dsg", 4, batch_size=4, steps=2, progress=False)
    p = s.save(tmp_path / "s.pt", mean=tiny.spec.mean, std=tiny.spec.std)
    assert (tmp_path / "s.png").is_file()
    r = SampleSet.load(p)
    assert torch.equal(r.images, s.images) and r.method == "dsg" and r.margins is not None
    assert r.history.keys() == s.history.keys() and r.config["lse_weight"] == 2.0
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="not a readable"):
        SampleSet.load(tmp_path / "bad.pt")
    torch.save({"foo": 1}, tmp_path / "foreign.pt")
    with pytest.raises(DataError, match="not a dsg_viz sample set"):
        SampleSet.load(tmp_path / "foreign.pt")
    with pytest.raises(DataError, match="does not exist"):
        SampleSet.load(tmp_path / "missing.pt")


def test_real_source_draws_from_train(data_root):
    s = make_samples(__import__("dsg_viz").create_model("resnet20_cifar10"), "real", 20, seed=0,
                     data_root=str(data_root))
    assert len(s) == 20 and s.method == "real" and s.images.dtype == torch.float32


def test_cli_generate_json(tmp_path, capsys, data_root):
    out = tmp_path / "g.pt"
    rc = main(["generate", "--model", "tiny_bn", "--method", "dsg", "--num-samples", "4", "--batch-size", "4",
               "--steps", "2", "--out", str(out), "--json"])
    assert rc == 0
    obj = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert obj["num_samples"] == 4 and out.is_file() and "sda" in obj["final_loss"]
    rc = main(["generate", "--model", "tiny_bn", "--method", "dsg", "--num-samples", "0", "--out", str(out)])
    assert rc == 2


@pytest.mark.parametrize("method", ["zeroq", "dsg"])
def test_keep_steps_equals_a_shorter_run(tiny, method):
    """Issue 19's steps curve takes the sets of every step count from one run: the kept images after k steps are
    bitwise the images of a k-step run (same seed, same threads; the plateau schedule never looks ahead)."""
    cfg = preset(method, num_samples=6, batch_size=3, steps=12, plateau_patience=2)
    full = generate(tiny, cfg, seed=5, progress=False, keep_steps=[3, 7])
    for k in (3, 7):
        short = generate(tiny, preset(method, num_samples=6, batch_size=3, steps=k, plateau_patience=2), seed=5,
                         progress=False)
        at = full.at(k)
        assert torch.equal(at.images, short.images) and at.config["steps"] == k
        assert at.history["total"] == short.history["total"]
    assert full.at(12) is full
    with pytest.raises(ConfigError, match="no images kept at step 5"):
        full.at(5)
    with pytest.raises(ConfigError, match="keep_steps must lie in 1..12"):
        generate(tiny, cfg, seed=5, progress=False, keep_steps=[13])
