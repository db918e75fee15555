"""Does diversity predict accuracy? (issue 15): rank correlations with bootstrap CIs (pooled and within sources),
flattening of measurement records, the reading computed from the table, the scatter figure, the benchmark script
and ``dsg-viz diagnose --accuracy``. No real data and no network beyond ``tiny_bn``."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from dsg_viz.diagnostics import study as S

REPO = Path(__file__).resolve().parents[1]
SCORES = ("rel_d_mu", "offdiag_pearson_feature", "erank_feature", "w1")


# ---------------------------------------------------------------------------------------------- ρ and its CI

@pytest.mark.parametrize("f", [lambda x: x, np.exp, lambda x: x ** 3 + 5])
def test_monotone_gives_one_with_ci_at_one(f):
    x = np.linspace(-2, 3, 15)
    r = S.rank_correlation(x, f(x), n_boot=500)
    assert r["rho"] == pytest.approx(1.0)
    assert r["ci"] == pytest.approx([1.0, 1.0])
    assert r["p"] < 1e-6 and r["n"] == 15 and r["n_boot"] == 500 and r["note"] is None


def test_reversed_gives_minus_one():
    x = np.arange(12.0)
    r = S.rank_correlation(x, -np.log1p(x), n_boot=500)
    assert r["rho"] == pytest.approx(-1.0) and r["ci"] == pytest.approx([-1.0, -1.0])


@pytest.mark.parametrize("seed", range(4))
def test_independent_ci_contains_zero(seed):
    rng = np.random.default_rng(100 + seed)
    r = S.rank_correlation(rng.normal(size=80), rng.normal(size=80), n_boot=800, seed=seed)
    lo, hi = r["ci"]
    assert -1 <= lo < 0 < hi <= 1 and lo <= r["rho"] <= hi and r["p"] > 0.05


def test_deterministic_and_ci_narrows_with_more_rows():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = x + rng.normal(size=200)
    assert S.rank_correlation(x, y, seed=3) == S.rank_correlation(x, y, seed=3)
    small, big = S.rank_correlation(x[:30], y[:30], n_boot=800), S.rank_correlation(x, y, n_boot=800)
    assert big["ci"][1] - big["ci"][0] < small["ci"][1] - small["ci"][0]
    assert big["ci"][0] > 0  # a real association: the CI excludes 0


def test_errors_ties_and_constant_input():
    with pytest.raises(ValueError, match="differ in length"):
        S.rank_correlation([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 3"):
        S.rank_correlation([1, 2], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        S.rank_correlation([1, 2, np.nan], [1, 2, 3])
    with pytest.raises(ValueError, match="n_boot"):
        S.rank_correlation([1, 2, 3], [1, 2, 3], n_boot=0)
    const = S.rank_correlation([2, 2, 2, 2], [1, 2, 3, 4])
    assert math.isnan(const["rho"]) and math.isnan(const["p"]) and all(math.isnan(v) for v in const["ci"])
    assert "constant" in const["note"] and "undefined" in const["note"]
    ties = S.rank_correlation([1, 1, 2, 2, 3, 3], [1, 2, 3, 4, 5, 6], n_boot=300)
    assert 0 < ties["rho"] < 1 and "ties" in ties["note"]
    few = S.rank_correlation([1, 1, 1, 2], [1, 2, 3, 4], n_boot=300)  # ~1/3 of the resamples have a constant x
    assert "left out" in few["note"] and 100 < few["n_boot"] < 300 and math.isfinite(few["ci"][0])


def _simpson(n_per=12, groups=3, sign_within=-1.0, shift=10.0):
    """Within each group y falls with x; the groups sit on a rising line: pooled ρ > 0, within ρ < 0."""
    rng = np.random.default_rng(0)
    xs, ys, gs = [], [], []
    for g in range(groups):
        x = rng.uniform(0, 1, n_per)
        xs.append(x + g * shift / 10)
        ys.append(sign_within * x + g * shift + rng.normal(0, 0.05, n_per))
        gs += [f"g{g}"] * n_per
    return np.concatenate(xs), np.concatenate(ys), gs


def test_within_group_disagrees_with_pooled_on_simpson_data():
    x, y, g = _simpson()
    pooled = S.rank_correlation(x, y, n_boot=500)
    within = S.within_group_correlation(x, y, g, n_boot=500)
    assert pooled["rho"] > 0.5 and pooled["ci"][0] > 0
    assert within["rho"] < -0.5 and within["ci"][1] < 0 and within["p"] < 0.01
    assert set(within["groups"]) == {"g0", "g1", "g2"} and within["n"] == len(x)
    assert all(v["rho"] < 0 for v in within["groups"].values())
    # no association inside the groups, a strong one between them: pooled says yes, within says no
    rng = np.random.default_rng(1)
    x2 = np.repeat([0.0, 1.0, 2.0], 15) + rng.normal(0, 0.1, 45)
    y2 = np.repeat([0.0, 10.0, 20.0], 15) + rng.normal(0, 1, 45)
    g2 = np.repeat(["a", "b", "c"], 15)
    assert S.rank_correlation(x2, y2, n_boot=300)["ci"][0] > 0.5
    w2 = S.within_group_correlation(x2, y2, g2, n_boot=300)
    assert w2["ci"][0] < 0 < w2["ci"][1] and w2["p"] > 0.05


def test_within_group_small_or_constant_groups_left_out():
    x, y, g = _simpson(n_per=6)
    x = np.append(x, [5.0, 6.0, 7.0])
    y = np.append(y, [1.0, 1.0, 1.0])
    g = list(g) + ["flat"] * 3
    r = S.within_group_correlation(x, y, g, n_boot=200, min_group=3)
    assert math.isnan(r["groups"]["flat"]["rho"]) and "flat (constant y)" in r["note"] and r["n"] == 18
    r = S.within_group_correlation(x[:18], y[:18], g[:18], n_boot=200, min_group=7)
    assert math.isnan(r["rho"]) and "no usable group" in r["note"]
    with pytest.raises(ValueError, match="one label per row"):
        S.within_group_correlation(x, y, g[:-1])


# ---------------------------------------------------------------------------------------------- rows and table

def _records(seed=0, n_seeds=3, noise=0.3):
    """Measurement records shaped like benchmarks/steps_curve.py's cells files: accuracy rises with diversity."""
    rng = np.random.default_rng(seed)
    base = {"zeroq": 0.2, "dsg": 0.6}
    recs = []
    for src in ("zeroq", "dsg", "real", "gaussian"):
        for s in range(n_seeds):
            cells = {}
            for k in ([25, 100, 500] if src in base else [0]):
                d = {"real": 1.0, "gaussian": 0.0}.get(src) if src not in base else \
                    base[src] + 0.1 * np.log(k) / 6 + rng.normal(0, 0.02)
                sc = {"rel_d_mu": d + rng.normal(0, 0.02), "offdiag_pearson_feature": 1 - d + rng.normal(0, 0.02),
                      "erank_feature": 1 + 5 * d, "w1": 0.3 + rng.normal(0, 0.1), "bn_loss": None}
                acc = {"calib/W4A4": 80 + 8 * d + rng.normal(0, noise), "calib/W3A3": 50 + 20 * d}
                if k in (0, 500):
                    acc["brecq/W4A4"] = 85 + 4 * d
                cells[str(k)] = {"acc": acc, "scores": sc, "seconds": {}}
            recs.append({"source": src, "seed": s, "cells": cells, "eval_split": "val"})
    return recs


def test_study_rows_flatten_and_validate():
    rows = S.study_rows(_records())
    assert len(rows) == 2 * 3 * 3 + 2 * 3
    r = rows[0]
    assert (r["source"], r["seed"], r["steps"]) == ("zeroq", 0, 25)
    assert r["brecq/W4A4"] is None and r["bn_loss"] is None and isinstance(r["calib/W3A3"], float)
    assert [x["steps"] for x in rows if x["source"] == "dsg" and x["seed"] == 1] == [25, 100, 500]
    with pytest.raises(ValueError, match="twice"):
        S.study_rows(_records() + _records()[:1])
    with pytest.raises(ValueError, match="not a"):
        S.study_rows([{"source": "x"}])
    with pytest.raises(ValueError, match="list"):
        S.study_rows({"runs": []})


def test_correlation_table_is_json_and_reading_is_computed():
    rows = S.study_rows(_records())
    t = S.correlation_table(rows, list(SCORES) + ["bn_loss"], ["calib/W4A4", "calib/W3A3", "brecq/W4A4"],
                            n_boot=300)
    json.dumps(t, allow_nan=False)  # NaN written as None
    assert t["pooled"]["calib/W3A3"]["rel_d_mu"]["n"] == len(rows)
    assert t["pooled"]["brecq/W4A4"]["rel_d_mu"]["n"] == 2 * 3 + 2 * 3  # only the sets with BRECQ
    undefined = t["pooled"]["calib/W4A4"]["bn_loss"]
    assert undefined["rho"] is None and "only 0 rows" in undefined["note"]
    assert S.excludes_zero(t["pooled"]["calib/W3A3"]["rel_d_mu"])
    assert t["pooled"]["calib/W3A3"]["offdiag_pearson_feature"]["rho"] < 0
    assert set(t["within"]["calib/W3A3"]["rel_d_mu"]["groups"]) == {"zeroq", "dsg", "real", "gaussian"}
    text = S.study_reading(t)
    assert "Pooled over sources" in text and "Within sources" in text
    assert "`rel_d_mu` (calib/W4A4" in text and "more diverse → more accurate" in text
    assert "by chance alone" in text
    # unrelated accuracy: nothing found, and the reading says so
    rng = np.random.default_rng(5)
    for r in rows:
        r["calib/W4A4"] = float(rng.normal())
    t0 = S.correlation_table(rows, ["w1"], ["calib/W4A4"], n_boot=300)
    if not any(S.excludes_zero(t0[k]["calib/W4A4"]["w1"]) for k in ("pooled", "within")):
        assert S.study_reading(t0).count("no score's 95% CI excludes 0") == 2


def test_format_rho():
    assert S.format_rho({"rho": 0.5, "ci": [0.1, 0.8]}) == "+0.50 [+0.10, +0.80]"
    assert S.format_rho({"rho": None, "ci": [None, None]}) == "–"


# ---------------------------------------------------------------------------------------------- plot

def test_plot_one_axes_per_score_with_rho_in_titles():
    from dsg_viz.diagnostics import new_figure, plot_diversity_vs_accuracy

    rows = S.study_rows(_records())
    fig = plot_diversity_vs_accuracy(rows, "calib/W3A3", SCORES, n_boot=100)
    assert isinstance(fig, Figure) and len(fig.axes) == len(SCORES)
    assert all("ρ" in a.get_title() and "within" in a.get_title() for a in fig.axes)
    t = S.correlation_table(rows, SCORES[:2], ["brecq/W4A4"], n_boot=100)
    f2, axes = new_figure(2)
    assert plot_diversity_vs_accuracy(rows, "brecq/W4A4", SCORES[:2], table=t, ax=axes, legend=False) is f2
    assert S.format_rho(t["pooled"]["brecq/W4A4"][SCORES[0]]) in axes[0].get_title()
    with pytest.raises(ValueError):
        plot_diversity_vs_accuracy(rows, "calib/W3A3", SCORES, ax=axes)  # needs 4 axes


# ---------------------------------------------------------------------------------------------- the benchmark

def test_benchmark_script_writes_json_md_and_figures(tmp_path):
    spec = importlib.util.spec_from_file_location("diversity_study", REPO / "benchmarks" / "diversity_study.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    src = tmp_path / "steps_curve.json"
    src.write_text(json.dumps({"split": "val (test data)", "runs": _records()}))
    one = tmp_path / "extra.json"  # a single record is accepted too
    one.write_text(json.dumps(_records(seed=1, n_seeds=4)[3] | {"seed": 9}))
    out = tmp_path / "out"
    assert mod.main(["--input", str(src), str(one), "--n-boot", "100", "--scores", "rel_d_mu,w1,erank_feature",
                     "--json-out", str(out / "d.json"), "--md-out", str(out / "d.md"), "--img-dir", str(out)]) == 0
    res = json.loads((out / "d.json").read_text())
    assert res["n_rows"] == 24 + 3 and res["validation"]
    assert set(res["figures"]) == {"W4A4", "W3A3"} and res["table"]["acc_keys"] == ["calib/W4A4", "calib/W3A3",
                                                                                     "brecq/W4A4"]
    assert {p.name for p in out.glob("*.png")} == {"diversity_vs_accuracy_W4A4.png", "diversity_vs_accuracy_W3A3.png"}
    md = (out / "d.md").read_text()
    assert "## Reading" in md and res["reading"] in md and "validation split" in md and "## brecq/W4A4" in md
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(SystemExit, match="bad.json"):
        mod.main(["--input", str(bad), "--json-out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()


# ---------------------------------------------------------------------------------------------- diagnose --accuracy

def _compare_results(path: Path, model: str = "tiny_bn", sources=("gaussian", "zeroq")) -> Path:
    """A results.json as ``dsg-viz compare`` writes it (config, fp, cells ``method|source|bits|seedN``)."""
    cells = {}
    for i, src in enumerate(sources):
        for seed in range(2):
            cells[f"calib|{src}|W4A4|seed{seed}"] = {"top1": 20.0 + 10 * i + seed, "convention": "zeroq"}
        cells[f"calib|{src}|W6A6|seed0"] = {"top1": 40.0 + i}
    path.write_text(json.dumps({"config": {"model": model, "checkpoint_sha256": None, "eval_split": "test",
                                           "num_samples": 8, "steps": 3, "seeds": 2},
                                "fp": {"top1": 10.0, "n": 100}, "cells": cells}))
    return path


def _diagnose(tmp_path, acc, out="d", extra=()):
    from dsg_viz.cli import main

    return main(["diagnose", "--model", "tiny_bn", "--sources", "gaussian,zeroq", "--num-samples", "8", "--steps",
                 "2", "--tsne-points", "8", "--json", "--accuracy", str(acc), "--out", str(tmp_path / out), *extra])


def test_diagnose_accuracy_adds_rows(tmp_path, capsys):
    rc = _diagnose(tmp_path, _compare_results(tmp_path / "results.json"))
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["accuracy"]["zeroq"]["calib/W4A4"] == {"mean": 30.5, "std": pytest.approx(0.7071, abs=1e-4),
                                                          "n": 2}
    s = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert s["accuracy"]["columns"] == ["calib/W4A4", "calib/W6A6"] and s["accuracy"]["split"] == "test"
    assert s["accuracy"]["values"]["gaussian"]["calib/W6A6"]["mean"] == 40.0
    md = (tmp_path / "d" / "summary.md").read_text()
    assert "| top-1 calib W4A4 (test, %) | 20.50 ± 0.71 | 30.50 ± 0.71 | – |" in md
    html = (tmp_path / "d" / "report.html").read_text()
    assert "top-1 calib W6A6 (test, %)" in html and "results.json" in html


@pytest.mark.parametrize("kind, message", [
    ("missing", "does not exist"),
    ("notjson", "not a readable JSON file"),
    ("shape", "not a dsg_viz compare results file"),
    ("empty", "no finished cell"),
    ("model", "holds accuracy of resnet20_cifar10 and this model is tiny_bn"),
    ("sources", "none of the diagnosed sources"),
])
def test_diagnose_accuracy_bad_file_is_a_clear_error(tmp_path, capsys, kind, message):
    f = tmp_path / "results.json"
    if kind == "notjson":
        f.write_text("not json {")
    elif kind == "shape":
        f.write_text(json.dumps({"cells": {"calib|zeroq|W4A4": {"top1": 1.0}}, "config": {}}))
    elif kind == "empty":
        f.write_text(json.dumps({"cells": {}, "config": {}}))
    elif kind == "model":
        _compare_results(f, model="resnet20_cifar10")
    elif kind == "sources":
        _compare_results(f, sources=("real", "dsg"))
    rc = _diagnose(tmp_path, f)
    err = capsys.readouterr().err
    assert rc == 2 and message in err and str(f) in err and err.startswith("error: ") and len(err.splitlines()) == 1
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())  # nothing half-written


def test_reading_skips_pairs_with_too_few_rows():
    rows = [{"source": "a", "seed": 0, "steps": k, "w1": float(k), "calib/W4A4": float(k)} for k in range(5)]
    t = S.correlation_table(rows, ["w1"], ["calib/W4A4"], n_boot=100)
    assert t["pooled"]["calib/W4A4"]["w1"]["rho"] == pytest.approx(1.0)  # computed, with a warning note
    assert "too narrow to trust" in t["pooled"]["calib/W4A4"]["w1"]["note"]
    assert S.study_reading(t).count("no pair had the 10 rows") == 2


def test_diagnose_sources_go_through_the_shared_sample_cache(tmp_path, monkeypatch, capsys):
    """``diagnose --sources`` loads and stores generated sets in the one sample cache (as compare, the notebooks and
    the generation panel do): a second run with the same settings generates nothing and scores the same sets."""
    from dsg_viz import generation
    from dsg_viz.cli import main

    monkeypatch.setenv("DSG_VIZ_SAMPLE_CACHE", str(tmp_path / "cache"))
    argv = ["diagnose", "--model", "tiny_bn", "--sources", "gaussian,zeroq", "--num-samples", "8", "--steps", "2",
            "--tsne-points", "8", "--json"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cached = sorted(p.name.split("-n8-")[0] for p in (tmp_path / "cache").rglob("*.pt"))
    assert cached == ["gaussian", "zeroq"]
    calls = []
    real_generate = generation.generate
    monkeypatch.setattr(generation, "generate", lambda *a, **k: calls.append(1) or real_generate(*a, **k))
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert calls == []  # loaded, not generated again
    assert second["scores"]["zeroq"] == first["scores"]["zeroq"]
