"""The main job on the real JPEG-fine-tuned ResNet-20 at smoke size: outputs, resume, errors, CLI."""

import json

import pytest

from dsg_viz import compare
from dsg_viz.compare import CompareConfig, run_compare
from dsg_viz.errors import ConfigError

from .conftest import JPEG_CKPT


def _cfg(data_root, **kw):
    base = dict(checkpoint=str(JPEG_CKPT), sources=("gaussian", "zeroq", "real"), bits=("W4A4", "W8A8"), seeds=1,
                num_samples=8, steps=2, batch_size=8, eval_limit=200, data_root=str(data_root))
    return CompareConfig(**(base | kw))


def test_compare_writes_table_and_resumes(tmp_path, data_root, monkeypatch):
    bits = ("W2A2", "W4A4", "W8A8")
    res = run_compare(_cfg(data_root, bits=bits), tmp_path, progress=False, log=lambda *a: None)
    for f in ("results.json", "results.md", "accuracy.png"):
        assert (tmp_path / f).is_file(), f
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert set(on_disk["cells"]) == {f"calib|{s}|{b}|seed0" for s in ("gaussian", "zeroq", "real") for b in bits}
    fp = res["fp"]["top1"]
    assert res["fp"]["n"] == 200 and 80 <= fp <= 100
    real = {b: res["table"]["calib"]["real"][b]["mean"] for b in bits}
    assert abs(real["W8A8"] - fp) < 3.0  # 8-bit calibration on real (train) data is near-lossless
    # fewer bits cost accuracy: fails if activations (or weights) were not quantized at all
    assert real["W8A8"] > real["W4A4"] > real["W2A2"], real
    md = (tmp_path / "results.md").read_text()
    assert "| real |" in md and "| FP |" in md and "zeroq convention" in md
    # the sample sets are linked (with PNG grids) next to the results; they live in the shared sample cache
    assert len(list((tmp_path / "samples").glob("*.pt"))) == 3
    assert len(list((tmp_path / "samples").glob("*.png"))) == 3

    # a restart reuses every finished cell: nothing is generated or evaluated again
    def boom(*a, **k):
        raise AssertionError("finished cell recomputed")

    monkeypatch.setattr(compare, "get_samples", boom)
    monkeypatch.setattr(compare, "quantize_calibrate_eval", boom)
    again = run_compare(_cfg(data_root, bits=bits), tmp_path, progress=False, log=lambda *a: None)
    assert again["cells"] == res["cells"]


def test_full_mode_activations_lie_on_the_grid(resnet20, data_root):
    """In full mode every activation quantizer outputs values on its 2^a-level grid (calibrated on train images)."""
    import torch

    from dsg_viz.generation import real_samples
    from dsg_viz.quant import QuantConfig, calibrate, quantize

    x = real_samples("resnet20_cifar10", 16, seed=0, data_root=str(data_root)).images  # train images, never test
    for a in (2, 4):
        qm = quantize(resnet20, QuantConfig(w_bits=8, a_bits=a))
        calibrate(qm, x)
        outs = {}
        hooks = [q.register_forward_hook(lambda m, i, o, n=n: outs.__setitem__(n, o.detach()))
                 for n, q in qm.act_quantizers().items()]
        with torch.no_grad():
            qm(x[:4])
        for h in hooks:
            h.remove()
        assert outs and set(outs) == set(qm.act_quantizers())
        for n, q in qm.act_quantizers().items():
            o = outs[n]
            steps = o * (2 ** a - 1) / (q.x_max - q.x_min)  # integer multiples of the step (offset by the zero point)
            assert o.unique().numel() <= 2 ** a, (n, o.unique().numel())
            assert torch.allclose(steps, steps.round(), atol=1e-3), n


def test_compare_refuses_other_configuration(tmp_path, data_root):
    run_compare(_cfg(data_root, sources=("real",), bits=("W8A8",)), tmp_path, progress=False, log=lambda *a: None)
    with pytest.raises(ConfigError, match="num_samples"):
        run_compare(_cfg(data_root, sources=("real",), bits=("W8A8",), num_samples=16), tmp_path, progress=False,
                    log=lambda *a: None)


@pytest.mark.parametrize("kw, match", [(dict(bits=("W4X4",)), "bit"), (dict(sources=("noise",)), "unknown source"),
                                       (dict(seeds=0), "seeds"), (dict(methods=("magic",)), "quantization method"),
                                       (dict(eval_split="train"), "evaluation split")])
def test_compare_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        CompareConfig(**kw).validate()


def test_compare_cli_val_split(tmp_path, data_root, capsys):
    from dsg_viz.cli import main

    rc = main(["compare", "--checkpoint", str(JPEG_CKPT), "--data-root", str(data_root), "--sources", "real",
               "--bits", "W8A8", "--seeds", "1", "--num-samples", "8", "--eval-limit", "100", "--eval-split", "val",
               "--json", "--out", str(tmp_path)])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["table"]["calib"]["real"]["W8A8"]["n"] == 1
    assert json.loads((tmp_path / "results.json").read_text())["config"]["eval_split"] == "val"
    assert main(["compare", "--bits", "W9", "--out", str(tmp_path / "x"), "--data-root", str(data_root)]) == 2
    assert "error:" in capsys.readouterr().err


def test_compare_qat_rows_use_the_generator_of_each_source(tmp_path, data_root, monkeypatch):
    import dsg_viz.qat as qat

    seen = []

    def fake_qat_cell(model, bits, cfg, **kw):
        seen.append((cfg.generator, bits, cfg.epochs))
        return {"top1": 50.0, "top5": 90.0, "n": 10000, "convention": "test"}

    monkeypatch.setattr(qat, "qat_cell", fake_qat_cell)
    res = run_compare(_cfg(data_root, sources=("gaussian", "zeroq", "zeroq+ce"), bits=("W4A4",),
                           methods=("calib", "qat")), tmp_path, progress=False, log=lambda *a: None)
    # zeroq+ce (BN + CE) → GDFQ's generator loss; gaussian and the published zeroq have no generator counterpart
    assert seen == [("gdfq", "W4A4", qat.qat_preset("cpu").epochs)]
    assert set(res["cells"]) == {"calib|gaussian|W4A4|seed0", "calib|zeroq|W4A4|seed0", "calib|zeroq+ce|W4A4|seed0",
                                 "qat|zeroq+ce|W4A4|seed0"}
    assert "## qat" in (tmp_path / "results.md").read_text()


def test_compare_and_notebooks_share_one_sample_cache(tmp_path, data_root, resnet20, sample_cache):
    """A set made by `dsg-viz compare` (or `make demo`) loads at once in a notebook with the same settings."""
    from dsg_viz import notebook_utils as nu

    cfg = _cfg(data_root, sources=("zeroq",), bits=("W8A8",))
    run_compare(cfg, tmp_path / "cmp", progress=False, log=lambda *a: None)
    logs = []
    ncfg = nu.sample_config(cfg.num_samples, cfg.steps, cfg.batch_size, data_root=str(data_root))
    s = nu.cached_samples(resnet20, "zeroq", ncfg, 0, progress=False, log=logs.append)
    assert "loaded" in logs[0] and str(sample_cache) in logs[0] and s.method == "zeroq"
    linked = next((tmp_path / "cmp" / "samples").glob("zeroq-*.pt"))
    cached = sample_cache.glob(f"resnet20_cifar10/zeroq-n{cfg.num_samples}-seed0-*.pt")
    assert any(f.read_bytes() == linked.read_bytes() for f in cached)


def test_compare_maps_deprecated_sources_with_a_warning():
    with pytest.warns(FutureWarning, match="'zeroq\\+ce\\+sda'"):
        cfg = CompareConfig(sources=("gaussian", "zeroq+sda"))
    assert cfg.sources == ("gaussian", "zeroq+ce+sda")
    cfg.validate()
