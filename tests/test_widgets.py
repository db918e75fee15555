"""Widget panels: construct, set values, call run() (what a Run click does), check result and error display;
plus the notebook helpers they share."""

import math

import pytest
import torch

pytest.importorskip("ipywidgets")

from dsg_viz import create_model, make_samples  # noqa: E402
from dsg_viz import notebook_utils as nu  # noqa: E402
from dsg_viz.bn import has_hooks  # noqa: E402
from dsg_viz.compare import CompareConfig, quantize_calibrate_eval, results_markdown  # noqa: E402
from dsg_viz.data import Split  # noqa: E402
from dsg_viz.errors import ConfigError  # noqa: E402
from dsg_viz.generation import GenerationConfig, SampleSet, preset  # noqa: E402
from dsg_viz.widgets import (ConfigForm, DiagnosticsConfig, DiagnosticsPanel, GenerationPanel,  # noqa: E402
                             LayerChannelConfig, LayerChannelPanel, QuantPanel)



@pytest.fixture(autouse=True)
def one_thread():
    """Small workloads: one intra-op thread is much faster than two on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _kinds(panel) -> list[set]:
    return [set(o.get("data", {})) for o in panel.output.outputs]


def _has_image(panel) -> bool:
    return any("image/png" in k for k in _kinds(panel))


def _error_html(panel) -> str:
    return "".join(o["data"].get("text/html", "") for o in panel.output.outputs)


@pytest.fixture(scope="module")
def tiny_model():
    return create_model("tiny_bn")


@pytest.fixture(scope="module")
def tiny_sets(tiny_model):
    return {s: make_samples(tiny_model, s, 8, seed=0, progress=False, **({} if s == "gaussian" else {"steps": 2}))
            for s in ("gaussian", "zeroq", "dsg")}


@pytest.fixture(scope="module")
def tiny_test():
    g = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (48, 3, 16, 16), dtype=torch.uint8, generator=g),
                 torch.randint(0, 4, (48,), generator=g))


# -------------------------------------------------------------------------------------------------- form

def test_config_form_round_trips_and_parses_nested_and_optional_fields():
    cfg = preset("dsg")
    form = ConfigForm(cfg, ["method", "margins.quantile", "lse_weight", "sci_weight", "steps", "plateau_patience"],
                      choices={"method": ["zeroq", "dsg"]})
    assert form.to_config() == cfg
    form.widgets["margins.quantile"].value = 0.5
    form.widgets["steps"].value = 7
    form.widgets["sci_weight"].value = "0.25"
    form.widgets["plateau_patience"].value = ""
    new = form.to_config()
    assert isinstance(new, GenerationConfig)
    assert (new.margins.quantile, new.steps, new.sci_weight, new.plateau_patience) == (0.5, 7, 0.25, None)
    assert new.margins.scale == cfg.margins.scale and new.lse_weight == cfg.lse_weight
    form.widgets["sci_weight"].value = "a lot"
    with pytest.raises(ConfigError, match="cannot read 'a lot'"):
        form.to_config()
    form.widgets["sci_weight"].value = ""
    form.widgets["steps"].value = -3
    with pytest.raises(ConfigError, match="steps must be >= 0"):  # the config's own validate()
        form.to_config()


def test_config_form_tuple_fields():
    cfg = CompareConfig(sources=("zeroq", "dsg"), bits=("W4A4",))
    form = ConfigForm(cfg, ["bits", "sources"], choices={"sources": ["gaussian", "zeroq", "dsg"]})
    form.widgets["bits"].value = "W4A4, W8A8"
    form.widgets["sources"].value = ("dsg",)
    new = form.to_config()
    assert new.bits == ("W4A4", "W8A8") and new.sources == ("dsg",)


# ---------------------------------------------------------------------------------------------- generation

def test_generation_panel_runs_shows_images_and_keeps_result(tiny_model):
    zq = make_samples(tiny_model, "zeroq", 4, steps=1, progress=False)
    p = GenerationPanel(tiny_model, "dsg", seed=3, compare_to={"zeroq": zq}, num_samples=6, steps=3, batch_size=6)
    assert p.result is None
    p.form.widgets["lse_weight"].value = 3.0
    p.form.widgets["margins.quantile"].value = 0.5
    s = p.run()
    assert s is p.result and isinstance(s, SampleSet) and p.error is None
    assert len(s) == 6 and s.seed == 3 and s.method == "dsg"
    assert s.config["lse_weight"] == 3.0 and s.config["margins"]["quantile"] == 0.5 and s.config["steps"] == 3
    assert {"sda", "lse", "sci", "total"} <= set(s.history) and all(len(b) == 3 for b in s.history["total"])
    assert torch.isfinite(s.images).all()
    assert _has_image(p) and p.progress.value == p.progress.max and p.progress.bar_style == "success"
    assert not has_hooks(tiny_model)
    # choosing another preset loads its settings; the sample count and steps stay (gaussian keeps 0 steps)
    p.form.widgets["method"].value = "zeroq"
    v = p.form.values()
    assert (v["lse_weight"], v["sci"], v["num_samples"], v["steps"]) == (1.0, "off", 6, 3)
    p.form.widgets["method"].value = "gaussian"
    assert p.form.values()["steps"] == 0
    p.form.widgets["method"].value = "zeroq+ce+sci"
    assert p.form.values()["steps"] == 3 and p.form.values()["sci"] == "intended"


def test_generation_panel_shows_a_clear_error_and_keeps_the_last_result(tiny_model):
    p = GenerationPanel(tiny_model, "dsg", num_samples=4, steps=1, batch_size=4)
    first = p.run()
    p.form.widgets["margins.quantile"].value = 2.0
    assert p.run() is None
    assert "quantile" in p.error and "(0, 1]" in p.error
    html = _error_html(p)
    assert "error:" in html and "Traceback" not in html and p.progress.bar_style == "danger"
    assert p.result is first  # a failed run leaves the last good result in place
    p.form.widgets["margins.quantile"].value = 0.9
    p.form.widgets["steps"].value = -1
    assert p.run() is None and "steps must be >= 0" in p.error


def test_generation_panel_click_equals_run_and_cache(tiny_model, tmp_path):
    p = GenerationPanel(tiny_model, "zeroq", seed=1, cache_dir=tmp_path, num_samples=4, steps=2, batch_size=4)
    p.run_button.click()  # the button's handler calls run()
    assert isinstance(p.result, SampleSet) and not p.from_cache and _has_image(p)
    first = p.result
    again = p.run()
    assert p.from_cache and torch.equal(again.images, first.images)
    p.recompute.value = True
    p.run()
    assert not p.from_cache and torch.equal(p.result.images, first.images)  # same seed → same images
    p.seed.value = 2
    p.recompute.value = False
    assert not torch.equal(p.run().images, first.images) and not p.from_cache


def test_generation_panel_on_resnet20_two_steps(resnet20):
    p = GenerationPanel(resnet20, "dsg", num_samples=4, steps=2, batch_size=4)
    s = p.run()
    assert p.error is None and s.images.shape == (4, 3, 32, 32) and s.model == "resnet20_cifar10"
    assert all(math.isfinite(v) for b in s.history["total"] for v in b) and _has_image(p)


# -------------------------------------------------------------------------------------------- layer/channel

def test_layer_channel_panel_updates_live(tiny_model, tiny_sets):
    noise = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    p = LayerChannelPanel(tiny_model, {"noise": noise, "zeroq": tiny_sets["zeroq"]}, max_values=500)
    r = p.run()
    assert r["layer"] == "bn2" and r["channel"] == 0 and set(r["w1"]) == {"noise", "zeroq"}
    assert all(math.isfinite(v) and v >= 0 for v in r["w1"].values()) and _has_image(p)
    p.form.widgets["layer"].value = "bn1"  # live: no run() call needed
    assert p.result["layer"] == "bn1" and p.result["layer_index"] == 0
    assert p.form.widgets["channel"].max == 7  # bn1 has 8 channels
    p.form.widgets["channel"].value = 5
    assert p.result["channel"] == 5 and p.result["mu"] == pytest.approx(tiny_model.bn1.running_mean[5].item())
    assert not has_hooks(tiny_model)


def test_layer_channel_panel_error(tiny_model):
    p = LayerChannelPanel(tiny_model, {"noise": torch.randn(4, 3, 16, 16)}, LayerChannelConfig(layer="layer9"),
                          live=False)
    assert p.run() is None and "unknown BN layer 'layer9'" in p.error and "bn1" in p.error


# -------------------------------------------------------------------------------------------- quantization

def test_quant_panel_table_matches_the_cli_cell(tiny_model, tiny_sets, tiny_test):
    p = QuantPanel(tiny_model, tiny_sets, tiny_test)
    p.form.widgets["bits"].value = "w4a4, W8A8"
    p.form.widgets["sources"].value = ("zeroq", "dsg")
    p.form.widgets["convention"].value = "brecq"
    r = p.run()
    assert p.error is None and r is p.result
    assert set(r["table"]["calib"]) == {"zeroq", "dsg"}
    assert set(r["table"]["calib"]["dsg"]) == {"W4A4", "W8A8"} and len(r["cells"]) == 4
    assert r["fp"]["n"] == len(tiny_test)
    direct = quantize_calibrate_eval(tiny_model, tiny_sets["dsg"].images, "W4A4", p.config, tiny_test)
    assert r["cells"]["calib|dsg|W4A4|seed0"]["top1"] == direct["top1"]
    assert "brecq convention" in r["cells"]["calib|dsg|W4A4|seed0"]["convention"]
    assert "| dsg |" in results_markdown(r, p.config) and _has_image(p)


def test_quant_panel_errors(tiny_model, tiny_sets, tiny_test):
    p = QuantPanel(tiny_model, tiny_sets, tiny_test)
    p.form.widgets["bits"].value = "W4"
    assert p.run() is None and "cannot parse bit-widths 'W4'" in p.error
    p.form.widgets["bits"].value = "W4A4"
    p.form.widgets["sources"].value = ()
    assert p.run() is None and "at least one sample source" in p.error
    assert "Traceback" not in _error_html(p)


# --------------------------------------------------------------------------------------------- diagnostics

def test_diagnostics_panel(tiny_model, tiny_sets, tmp_path):
    p = DiagnosticsPanel(tiny_model, tiny_sets, tmp_path / "diag", DiagnosticsConfig(tsne_points=24, max_values=500))
    p.form.widgets["channel"].value = 2
    s = p.run()
    assert p.error is None and set(s["scores"]) == {"gaussian", "zeroq", "dsg"}
    assert s["meta"]["channel"] == 2 and (tmp_path / "diag" / "report.html").is_file()
    assert sum("image/png" in k for k in _kinds(p)) == 3
    p.form.widgets["channel"].value = 99
    assert p.run() is None and "channel 99 out of range" in p.error


def test_panels_display_as_widgets(tiny_model, tiny_sets, tiny_test):
    p = QuantPanel(tiny_model, tiny_sets, tiny_test)
    bundle = p._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle


# --------------------------------------------------------------------------------------------- notebook utils

def test_cached_samples_generates_then_loads(tiny_model, tmp_path):
    logs = []
    cfg = nu.sample_config(4, 2, 4)
    a = nu.cached_samples(tiny_model, "dsg", cfg, 0, tmp_path, progress=False, log=logs.append)
    b = nu.cached_samples(tiny_model, "dsg", cfg, 0, tmp_path, progress=False, log=logs.append)
    assert "generated" in logs[0] and "loaded" in logs[1] and str(tmp_path) in logs[1]
    assert torch.equal(a.images, b.images)
    g = nu.cached_samples(tiny_model, "gaussian", cfg, 0, tmp_path, progress=False, log=logs.append)
    assert g.config["steps"] == 0 and not any(len(h) for v in g.history.values() for h in v)  # noise stays noise


def test_quantize_sources_rejects_unknown_source(tiny_model, tiny_sets, tiny_test):
    with pytest.raises(ConfigError, match="no sample set named 'real'"):
        nu.quantize_sources(tiny_model, tiny_sets, CompareConfig(sources=("real",), bits=("W4A4",)), tiny_test)


def test_preset_diff_and_score_line():
    diff = nu.preset_diff("zeroq+ce", "dsg")  # the base and the method: the diff is SDA + LSE + SCI
    for field in ("`sda`", "`lse_weight`", "`sci`", "`bn_weight`"):
        assert field in diff
    for field in ("`lr`", "`init`", "`ce_weight`", "`margins.scale`"):
        assert field not in diff
    assert "`margins.scale`" in nu.preset_diff("dsg", "dsg-tuned")
    summary = {"sources": ["real", "zeroq", "dsg"], "reference": "real",
               "scores": {"real": {"d_mu": 1.0}, "zeroq": {"d_mu": 0.2}, "dsg": {"d_mu": 0.7}},
               "noise_reference": {}}
    line = nu.score_line(summary, "d_mu")
    assert "real 1" in line and "**dsg** is closer to real than zeroq" in line
    summary["scores"]["dsg"]["d_mu"] = 0.1
    assert "**zeroq** is closer" in nu.score_line(summary, "d_mu")


def test_optional_module():
    assert nu.optional_module("dsg_viz.no_such_module") is None
    assert nu.optional_module("dsg_viz.no_pkg.sub") is None
    mod = nu.optional_module("dsg_viz.margins")
    assert mod is not None and "`dsg_viz.margins`" in nu.module_summary(mod)


# --------------------------------------------------------------------------------- progress, status, issue 19

def test_panels_end_on_done_and_quant_panel_reuses_fp_and_looks_at_a_subset_first(tiny_model, tiny_sets, tiny_test):
    from dsg_viz import evaluate

    fp = evaluate(tiny_model, tiny_test)
    p = QuantPanel(tiny_model, tiny_sets, tiny_test, fp=fp, first_look=20)
    r = p.run()
    assert p.error is None and p.status.value.startswith("done in") and "cell(s) on 48 test images" in p.status.value
    # the FP accuracy of the whole split was given: only the subset's FP was evaluated by the panel itself
    assert r["fp"] is fp and r["first_look"]["fp"]["n"] == 20
    md = "".join(o["data"].get("text/markdown", "") for o in p.output.outputs)
    assert "First look: a fixed subset of 20 test images" in md and "All 48 test images" in md
    assert "\n# " not in "\n" + md and "\n## " not in "\n" + md  # no page-size headings in an output
    assert p.progress.value == p.progress.max
    q = QuantPanel(tiny_model, tiny_sets, tiny_test)  # 48 ≤ 2,000: no first look
    assert q.first_look is None and "first_look" not in q.run()


def test_generation_panel_streams_a_live_loss_curve(tiny_model):
    p = GenerationPanel(tiny_model, "dsg", num_samples=4, steps=6, batch_size=2, cache_dir=False, live_every=0.0)
    shown = []
    p.live.observe(lambda ch: shown.append(len(ch["new"])), names="value")
    p.run()
    assert shown and all(n > 1000 for n in shown)  # PNG bytes, drawn while generating
    assert p.live.layout.display == "none"  # hidden once the final curves are in the output
    assert p.status.value.startswith("done in") and "4 samples generated" in p.status.value


def test_diagnostics_panel_says_done_and_links_the_report(tiny_model, tiny_sets, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = DiagnosticsPanel(tiny_model, tiny_sets, tmp_path / "diag", DiagnosticsConfig(tsne_points=24, max_values=500))
    p.run()
    assert p.status.value.startswith("done in") and "diagnosing" not in p.status.value
    html = _error_html(p)
    assert '<a href="diag/report.html" target="_blank"' in html and str(tmp_path / "diag" / "report.html") in html


def test_no_tqdm_bars_from_notebook_helpers(tiny_model, tiny_sets, tiny_test, tmp_path, monkeypatch, capsys):
    """tqdm.auto bars become widgets in a kernel, and a closed one shows "Error displaying widget" in JupyterLab:
    the notebook helpers report progress through CellProgress instead (generation and reconstruction included)."""
    import tqdm.auto

    def no_tqdm(*a, **k):
        raise AssertionError("a tqdm bar was created")

    monkeypatch.setattr(tqdm.auto, "tqdm", no_tqdm)
    lines = []
    nu.cached_samples(tiny_model, "dsg", nu.sample_config(4, 3, 4), 0, tmp_path, progress=True, log=lines.append)
    cfg = CompareConfig(sources=("dsg",), bits=("W4A4",), methods=("calib", "adaround"), recon_iters=2)
    r = nu.quantize_sources(tiny_model, tiny_sets, cfg, tiny_test, log=lines.append)
    assert set(r["table"]) == {"calib", "adaround"}
    assert lines[0].startswith("dsg: generated 4 samples") and "2 cell(s) on 48 test images" in lines[-1]
    assert capsys.readouterr().err == ""


def test_cell_progress_updates_one_display_in_a_kernel(monkeypatch):
    shown = []

    class Handle:
        def update(self, bundle, raw=False):
            shown.append(("update", bundle["text/plain"]))

    monkeypatch.setattr(nu, "_in_kernel", lambda: True)
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", lambda b, raw=False, display_id=False: shown.append(
        ("display", b["text/plain"])) or Handle())
    bar = nu.CellProgress("work", 4, "steps", interval=0.0)
    for i in range(1, 5):
        bar.update(i, f"note {i}")
    bar.close("finished")
    assert [k for k, _ in shown].count("display") == 1 and shown[-1] == ("update", "finished")
    assert "4/4 steps" in shown[-2][1] and "█" in shown[-2][1]


def test_settings_announce_verdict_and_quick_vs_paper(tmp_path, monkeypatch):
    monkeypatch.delenv("DSG_VIZ_SMOKE", raising=False)
    assert nu.settings_mode("quick") == "quick" and nu.settings_mode("paper") == "paper"
    with pytest.raises(ConfigError, match="'quick' or 'paper'"):
        nu.settings_mode("fast")
    monkeypatch.setenv("DSG_VIZ_SMOKE", "1")
    assert nu.settings_mode("paper") == "smoke"
    monkeypatch.setattr(nu, "EXPECTED_TIMES", {"00_quickstart": {"quick": (95.0, 12.0), "paper": (1500.0, 300.0)}})
    monkeypatch.setattr(nu, "RECORDED", str(tmp_path / "nothing-recorded.json"))
    lines = []
    for mode, what in (("paper", "256 samples"), ("quick", ""), ("smoke", "")):
        nu.announce("00_quickstart", mode, what, log=lines.append)
    assert "the paper's settings (256 samples)" in lines[0] and "25 min from a cold" in lines[0] and "5.0 min" in lines[0]
    assert "1.6 min from a cold" in lines[1] and "smoke mode" in lines[2]
    assert "within the noise" in nu.verdict(0.2, 2000) and "clear in this run" in nu.verdict(3.0, 10_000)
    assert nu.accuracy_se(2000) == pytest.approx(0.798, abs=1e-3)
    rec = tmp_path / "bench.json"
    assert "No run at the paper's settings" in nu.quick_vs_paper({"a": 1.0}, "00_quickstart", "quick", rec)
    rec.write_text('{"notebooks": {"00_quickstart": {"quick": {"summary": {"a": 84.0}, "date": "d1"}, '
                   '"paper": {"summary": {"a": 85.5}, "date": "d2"}}}}')
    table = nu.quick_vs_paper({"a": 84.2}, "00_quickstart", "quick", rec)
    assert "| a | 84.20 | 84.00 | 85.50 | -1.50 |" in table and "quick d1, paper d2" in table
    # times measured by benchmarks/bench_notebooks.py win over the built-in table: medians of the recorded runs
    rec.write_text('{"notebooks": {"00_quickstart": {"quick": {"cold": [50, 70, 60], "warm": [20, 10, 30]}}}}')
    assert nu.recorded_times("00_quickstart", "quick", rec) == (60, 20)
    assert nu.recorded_times("00_quickstart", "paper", rec) is None
    monkeypatch.setattr(nu, "RECORDED", str(rec))
    nu.announce("00_quickstart", "quick", "", log=lines.append)
    assert "60 s from a cold sample cache, 20 s when" in lines[-1]


def test_results_table_and_plot_legend_outside(tiny_model, tiny_sets, tiny_test):
    cfg = CompareConfig(sources=("zeroq", "dsg"), bits=("W4A4", "W8A8"))
    r = nu.quantize_sources(tiny_model, tiny_sets, cfg, tiny_test, progress=False)
    md = nu.results_table(r, cfg)
    assert md.startswith("**") and "\n#" not in md and "| dsg |" in md
    fig = nu.plot_results(r, cfg)
    ax = fig.axes[0]
    fig.canvas.draw()
    legend, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= axes_box.x1 - 1  # right of the axes: it covers no bar
    assert "48 test images" in ax.get_ylabel()
