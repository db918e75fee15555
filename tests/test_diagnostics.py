"""Diagnostics: pure metrics on synthetic arrays, plots (type and axes only), feature collection and the report."""

import json

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn as nn

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402

from dsg_viz.bn import bn_targets, capture_bn, has_hooks, per_sample_stats  # noqa: E402
from dsg_viz.diagnostics import metrics as M  # noqa: E402
from dsg_viz.diagnostics import plots as P  # noqa: E402
from dsg_viz.errors import ConfigError  # noqa: E402

torch.set_num_threads(2)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------ metrics

def test_identical_samples_correlate_fully_and_do_not_disperse():
    x = torch.randn(1, 3, 8, 8, generator=_gen()).repeat(6, 1, 1, 1)
    for k in (M.cosine_matrix(x), M.pearson_matrix(x)):
        assert k.shape == (6, 6)
        np.testing.assert_allclose(k, 1.0, atol=1e-10)
        assert M.mean_abs_offdiag(k) == pytest.approx(1.0)
    assert M.effective_rank(M.cosine_matrix(x)) == pytest.approx(1.0, abs=1e-6)
    mu, sd = per_sample_stats(x)
    d_mu, d_sigma = M.dispersion(mu, sd, torch.ones(3))
    assert d_mu == pytest.approx(0.0, abs=1e-7) and d_sigma == pytest.approx(0.0, abs=1e-7)


def test_orthonormal_rows_offdiag_zero_and_full_effective_rank():
    q, _ = torch.linalg.qr(torch.randn(40, 12, generator=_gen(), dtype=torch.float64))
    rows = q.T  # 12 orthonormal rows of dimension 40
    k = M.cosine_matrix(rows)
    assert M.mean_abs_offdiag(k) == pytest.approx(0.0, abs=1e-10)
    assert M.effective_rank(k) == pytest.approx(12.0, rel=1e-9)
    assert M.effective_rank(np.ones(12)) == pytest.approx(12.0)  # eigenvalues in directly
    lam = M.eigenspectrum(k)
    assert lam.shape == (12,) and np.all(np.diff(lam) <= 1e-12)


def test_gaussian_reference_is_seeded_and_nearly_uncorrelated():
    a, b = M.gaussian_reference((64, 3, 16, 16), 3), M.gaussian_reference((64, 3, 16, 16), 3)
    assert torch.equal(a, b)
    off = M.mean_abs_offdiag(M.cosine_matrix(a))
    assert off == pytest.approx(np.sqrt(2 / (np.pi * 768)), rel=0.15)  # §F.3: about sqrt(2 / (pi d))


def test_samples_from_the_bn_gaussian_score_zero_distance():
    mu, sigma = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.0, 0.3, 2.5])
    v = mu[:, None] + sigma[:, None] * torch.randn(3, 20000, generator=_gen())
    w1 = M.wasserstein_to_gaussian(v, mu, sigma)
    kl = M.kl_to_gaussian(v, mu, sigma)
    assert w1.shape == (3,) and np.all(w1 < 0.03)
    assert np.all(kl < 0.01)
    # a shift of 0.5 sigma and a doubled std are detected, in sigma units
    assert M.wasserstein_to_gaussian(v + 0.5 * sigma[:, None], mu, sigma) == pytest.approx([0.5] * 3, abs=0.03)
    assert np.all(M.kl_to_gaussian(mu[:, None] + 2 * (v - mu[:, None]), mu, sigma) > 0.2)
    # batch-level statistics from per-sample stats: offset ~0, ratio ~1
    x = mu.view(1, 3, 1, 1) + sigma.view(1, 3, 1, 1) * torch.randn(256, 3, 8, 8, generator=_gen(1))
    m, s = per_sample_stats(x)
    mh, sh = M.pooled_stats(m, s, 64)
    assert np.all(M.batch_offset(mh, mu, sigma) < 0.02)
    np.testing.assert_allclose(M.std_ratio(sh, sigma), 1.0, atol=0.02)


def test_closed_form_w1_matches_scipy():
    from scipy.special import ndtri
    from scipy.stats import wasserstein_distance

    z = torch.randn(3000, generator=_gen(2)) * 1.3 + 0.2
    q = ndtri((np.arange(200_000) + 0.5) / 200_000)
    assert M.wasserstein_to_gaussian(z, 0.0, 1.0) == pytest.approx(wasserstein_distance(z.numpy(), q), abs=2e-4)


def test_pooled_stats_are_exact():
    x = torch.randn(10, 4, 5, 7, generator=_gen()) * 3 + 1
    mh, sh = M.pooled_stats(*per_sample_stats(x), 35)
    var, mean = torch.var_mean(x.double(), dim=(0, 2, 3), correction=0)
    np.testing.assert_allclose(mh, mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(sh, var.sqrt().numpy(), rtol=1e-5)


def test_sda_matrix_matches_the_objective(tiny):
    from dsg_viz.objectives import BNAlignment, Margins, StepContext

    x = torch.randn(6, 3, 16, 16, generator=_gen())
    with capture_bn(tiny) as cap:
        logits = tiny(x)
    t = bn_targets(tiny)
    mat = M.sda_matrix([s[0] for s in cap.stats], [s[1] for s in cap.stats], t)
    assert mat.shape == (len(t), 6)
    ctx = StepContext(x, logits, torch.zeros(6, dtype=torch.long), cap.stats, t)
    assert mat.sum() / 6 == pytest.approx(BNAlignment()(ctx).item(), rel=1e-5)
    big = Margins([torch.full_like(m, 1e3) for m in t.mean], [torch.full_like(m, 1e3) for m in t.mean])
    assert np.all(M.sda_matrix([s[0] for s in cap.stats], [s[1] for s in cap.stats], t, big.to_dict()) == 0)


def test_embeddings_are_seeded():
    x = np.random.default_rng(0).normal(size=(60, 8))
    a, b = M.embed(x, "tsne", perplexity=10, seed=1), M.embed(x, "tsne", perplexity=10, seed=1)
    assert a.shape == (60, 2)
    np.testing.assert_allclose(a, b)
    assert M.embed(x, "pca").shape == (60, 2)
    X, g, idx, names = M.stack_sources({"a": x, "b": x[:10]}, max_points=40, seed=0)
    assert names == ["a", "b"] and X.shape == (30, 8) and (g == 0).sum() == 20 and (g == 1).sum() == 10
    np.testing.assert_allclose(X[g == 0], x[idx[g == 0]].astype(np.float32))
    with pytest.raises(ValueError):
        M.embed(x, "umap")


# ------------------------------------------------------------------------------------------- features

def test_collect_features_tiny(tiny):
    tiny.train()
    x = torch.randn(20, 3, 16, 16, generator=_gen())
    f = M.collect_features(tiny, x, batch_size=8, max_values=500)
    assert tiny.training and not has_hooks(tiny)
    tiny.eval()
    assert len(f) == 20 and f.num_layers == 3 and f.spatial == (256, 64, 64)
    assert [v.shape for v in f.values] == [(8, 500), (16, 500), (16, 500)]
    assert [m.shape for m in f.mean] == [(20, 8), (20, 16), (20, 16)]
    assert f.penultimate.shape == (20, 16)
    torch.testing.assert_close(f.logits, tiny(x), atol=1e-5, rtol=1e-5)
    with capture_bn(tiny) as cap:
        tiny(x)
    torch.testing.assert_close(f.std[2], cap.stats[2][1])
    # every value kept when the pool is small enough; only the chosen layers keep values
    g = M.collect_features(tiny, x[:2], max_values=10**6, value_layers=["bn3"])
    assert g.values[0] is None and g.values[2].shape == (16, 2 * 64)


def test_collect_features_without_features_method():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3)).eval()
    x = torch.randn(5, 3, 8, 8)
    f = M.collect_features(net, x)
    torch.testing.assert_close(f.penultimate, net[:5](x))
    assert not has_hooks(net)


def test_summarize_relative_to_reference(tiny):
    x = torch.randn(16, 3, 16, 16, generator=_gen())
    fa = M.collect_features(tiny, x, max_values=300)
    fb = M.collect_features(tiny, x[:1].repeat(16, 1, 1, 1), max_values=300)
    s = M.summarize({"copies": fb, "real": fa}, bn_targets(tiny))
    assert s["sources"] == ["real", "copies"] and s["reference"] == "real" and s["n"] == 16
    assert s["scores"]["real"]["rel_d_mu"] == pytest.approx(1.0)
    assert s["scores"]["copies"]["d_mu"] == pytest.approx(0.0, abs=1e-6)
    assert s["scores"]["copies"]["offdiag_cos_pixel"] == pytest.approx(1.0)
    assert set(s["scores"]["real"]) == set(M.SCORES)
    json.dumps(s)
    md = M.summary_markdown(s)
    assert "real (ref)" in md.splitlines()[0] and md.count("\n|") == len(M.SCORES) + 1
    no_ref = M.summarize({"copies": fb}, bn_targets(tiny))
    assert no_ref["reference"] is None and no_ref["scores"]["copies"]["rel_d_mu"] is None


# ---------------------------------------------------------------------------------------------- plots

def _n_axes(fig):
    return len(fig.axes)


def test_every_plot_returns_a_figure_with_expected_axes():
    rng = np.random.default_rng(0)
    srcs = ["real", "zeroq", "dsg"]
    per_layer = {s: {k: list(rng.random(5) + 0.1) for k in M.LAYER_SCORES} for s in srcs}
    k = {s: M.cosine_matrix(rng.normal(size=(10, 20))) for s in srcs}
    emb = rng.normal(size=(30, 2))
    groups = np.repeat(np.arange(3), 10)
    hist = {"bn": [[3.0, 2.0, 1.0], [4.0, 2.5, 1.5]], "sci": [[-0.1, -0.2, -0.3]] * 2,
            "total": [[3.0, 1.8, 0.7]] * 2}
    cases = [
        (P.plot_bn_histograms({s: rng.normal(size=500) for s in srcs}, 0.0, 1.0, notes={"real": "x"}), 3),
        (P.plot_mean_std_scatter({s: (rng.normal(size=10), rng.random(10)) for s in srcs}, (0.0, 1.0)), 1),
        (P.plot_dispersion_curves(per_layer, layer_names=[f"l{i}" for i in range(5)]), 2),
        (P.plot_layer_scores(per_layer, ("w1", "offset", "std_ratio")), 3),
        (P.plot_sda_matrix({s: rng.random((5, 10)) for s in srcs}), 4),
        (P.plot_correlation_matrices(k), 4),
        (P.plot_eigenspectra({**{s: M.eigenspectrum(v) for s, v in k.items()}, "N(0,1) noise": np.ones(10)}), 1),
        (P.plot_embedding(emb, groups, srcs), 1),
        (P.plot_embedding(emb, np.array(srcs)[groups]), 1),
        (P.plot_embedding_by_class(emb, groups, rng.integers(0, 4, 30), srcs), 3),
        (P.plot_image_grid({s: torch.randn(12, 3, 8, 8) for s in srcs}, (0.5,) * 3, (0.25,) * 3, n=8, nrow=4), 3),
        (P.plot_image_grid(torch.randn(4, 3, 8, 8)), 1),
        (P.plot_loss_curves(hist), 1),
        (P.plot_loss_curves_by_source({"zeroq": hist, "dsg": hist}), 2),
    ]
    for fig, n in cases:
        assert isinstance(fig, Figure)
        assert _n_axes(fig) == n
        fig.canvas.draw()  # renders without error (no pixel checks)
    # composing into caller-supplied axes returns the caller's figure
    fig, axes = P.new_figure(2)
    assert P.plot_eigenspectra({"a": np.ones(4)}, ax=axes[0]) is fig
    assert P.plot_mean_std_scatter({"a": (np.zeros(3), np.ones(3))}, (0, 1), ax=axes[1]) is fig
    with pytest.raises(ValueError):
        P.plot_dispersion_curves(per_layer, ax=axes[0])  # needs 2 axes


# ---------------------------------------------------------------------------------------------- report

@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    from dsg_viz import create_model, make_samples
    from dsg_viz.diagnostics import diagnose

    model = create_model("tiny_bn")
    sets = {"gaussian": make_samples(model, "gaussian", 32, progress=False),
            "zeroq": make_samples(model, "zeroq", 32, steps=3, batch_size=16, progress=False),
            "small": make_samples(model, "gaussian", 24, seed=1, progress=False)}
    out = tmp_path_factory.mktemp("diag")
    res = diagnose(model, sets, out, layer="bn2", channel=3, tsne_points=64, perplexity=10, progress=False)
    return model, sets, out, res


def test_diagnose_writes_all_outputs(tiny_report):
    from dsg_viz.diagnostics import FIGURES

    model, sets, out, res = tiny_report
    assert not has_hooks(model)
    names = {p.name for p in out.iterdir()}
    expected = {f"{n}.png" for n in FIGURES} | {"summary.json", "summary.md", "report.html"}
    assert names == expected  # every figure (zeroq has a loss history), nothing half-written left behind
    s = json.loads((out / "summary.json").read_text())
    assert s["n"] == 24 and s["meta"]["n"] == 24  # truncated to the smallest set
    assert s["meta"]["layer_name"] == "bn2" and s["meta"]["channel"] == 3
    assert set(s["scores"]) == {"gaussian", "zeroq", "small"} and s["reference"] is None
    assert s["meta"]["tsne_points"] == 63  # 64 // 3 per source
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(FIGURES)
    assert "<table>" in html and all(cap in html for cap in ("Homogenized", "BN point"))
    assert (out / "summary.md").read_text().startswith("| score |")
    assert res["files"]["report.html"] == str(out / "report.html")


def test_diagnose_rejects_bad_layer_or_channel(tiny_report, tmp_path):
    from dsg_viz.diagnostics import diagnose

    model, sets, _, _ = tiny_report
    with pytest.raises(ConfigError):
        diagnose(model, sets, tmp_path, layer="nope", progress=False)
    with pytest.raises(ConfigError):
        diagnose(model, sets, tmp_path, layer=0, channel=8, progress=False)
    assert list(tmp_path.iterdir()) == []
