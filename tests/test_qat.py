"""Generative QAT: generators, generator objectives, the QAT loop (checkpoint, JSONL, resume), exports, errors."""

import json
from dataclasses import replace

import pytest
import torch

from dsg_viz import get_spec
from dsg_viz.bn import bn_targets, capture_bn, has_hooks, per_sample_stats
from dsg_viz.cli import main as cli_main
from dsg_viz.data import Split
from dsg_viz.errors import ConfigError, ModelError
from dsg_viz.generation import SampleSet
from dsg_viz.models.generator import (CifarGenerator, ImageNetGenerator, create_generator, default_generator,
                                      list_generators)
from dsg_viz.objectives import lse_weights
from dsg_viz.qat import (GENERATOR_PRESETS, GeneratorContext, QATConfig, build_generator_objective,
                         export_generator_samples, generator_margins, generator_preset, kd_loss, load_generator,
                         qat_preset, train_qat)

SPEC = get_spec("tiny_bn")  # 16×16 inputs, 4 classes, 3 BN layers
TINY_CFG = dict(epochs=2, iters=2, batch_size=8, warmup_epochs=1, act_warmup_epochs=1, lr_s=1e-2, milestones=(),
                val_limit=None)


def _split(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8),
                 torch.randint(0, 4, (n,), generator=g))


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# --- generators ----------------------------------------------------------------------------------------------------

def test_generator_shape_and_pixel_range():
    torch.manual_seed(0)
    g = create_generator(SPEC)
    assert isinstance(g, CifarGenerator) and g.training and default_generator(SPEC) == "gdfq_cifar"
    z, y = torch.randn(6, 100), torch.arange(6) % 4
    x = g(z, y)
    assert x.shape == (6, 3, 16, 16) and torch.isfinite(x).all()
    mean, std = torch.tensor(SPEC.mean).view(1, 3, 1, 1), torch.tensor(SPEC.std).view(1, 3, 1, 1)
    rgb = x * std + mean  # back to [0, 1]
    assert rgb.min() >= -1e-5 and rgb.max() <= 1 + 1e-5
    xb = create_generator(SPEC, output="bn")(z, y)  # GDFQ's affine-free BN head: standardized batch
    assert xb.mean(dim=(0, 2, 3)).abs().max() < 1e-4


def test_imagenet_generator_and_registry():
    assert set(list_generators()) >= {"gdfq_cifar", "gdfq_imagenet"}
    assert default_generator(get_spec("resnet18")) == "gdfq_imagenet"
    torch.manual_seed(0)
    g = create_generator(SPEC, "gdfq_imagenet")  # same design at the tiny size (label only through CCBN)
    assert isinstance(g, ImageNetGenerator)
    z, y = torch.randn(4, 100), torch.tensor([0, 1, 2, 3])
    assert g(z, y).shape == (4, 3, 16, 16)
    g.eval()  # running statistics: samples are independent
    with torch.no_grad():
        x1 = g(z, y)
        g.bn1.weight.weight[1].mul_(3.0)  # class 1's conditional scale changes only the class-1 image
        changed = (g(z, y) - x1).flatten(1).abs().amax(1) > 0
    assert changed.tolist() == [False, True, False, False]
    big = create_generator(get_spec("resnet18"))
    with torch.no_grad():
        assert big(torch.randn(2, 100), torch.tensor([0, 999])).shape == (2, 3, 224, 224)
    with pytest.raises(ConfigError):
        create_generator(SPEC, output="sigmoid")
    with pytest.raises(ModelError):
        create_generator(replace(SPEC, input_size=(3, 18, 18)))
    with pytest.raises(ModelError):
        create_generator(SPEC, "nope")


# --- generator objectives ------------------------------------------------------------------------------------------

def _gen_step_loss(model, gen, objective, z, y):
    targets = bn_targets(model)
    rv = tuple(m.running_var.clone() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with capture_bn(model, keep="inputs") as cap:
        x = gen(z, y)
        logits = model(x)
    ctx = GeneratorContext(x, logits, y, cap.inputs, targets, rv, noise=torch.Generator().manual_seed(1))
    return objective(ctx)


@pytest.mark.parametrize("name", list(GENERATOR_PRESETS))
def test_each_generator_objective_decreases(tiny, name):
    gcfg = generator_preset(name)
    bm, sm = generator_margins(tiny, gcfg, 8)
    objective = build_generator_objective(gcfg, 3, bm, sm)
    torch.manual_seed(0)
    gen = create_generator(SPEC)
    opt = torch.optim.Adam(gen.parameters(), lr=1e-3, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(8, 100, generator=g), torch.randint(0, 4, (8,), generator=g)
    before = _snapshot(tiny)
    losses = []
    for _ in range(4):
        loss, values = _gen_step_loss(tiny, gen, objective, z, y)
        losses.append(loss.item())
        grads = torch.autograd.grad(loss, list(gen.parameters()))
        for p, gr in zip(gen.parameters(), grads):
            p.grad = gr
        opt.step()
    assert losses[-1] < losses[0], losses
    assert {"ce"} < set(values) and ("bn" in values or "sda" in values)
    assert all(p.grad is None for p in tiny.parameters())  # the teacher gets no gradient
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items()) and not has_hooks(tiny)


def test_preset_terms_differ_as_documented():
    assert {t.name for _, t in build_generator_objective(generator_preset("gdfq"), 3).terms} == {"ce", "bn"}
    d = GENERATOR_PRESETS["dsg"]
    assert (d.sda, d.stat, d.lse, d.sci) == ("hinge", "std", "sample", "intended")
    o = GENERATOR_PRESETS["dsg-official"]
    assert (o.sda, o.stat, o.lse, o.sci) == ("abs", "var", "channel", "faithful")


def test_per_sample_lse_weights_the_assigned_layer(tiny):
    """The dsg LSE term is (bn_weight / L)·(w-1)/N · Σ_j M[j, j mod L] with per-sample statistics."""
    gcfg = generator_preset("dsg", sci="off")
    bm, sm = generator_margins(tiny, gcfg, 8)
    sm = type(sm)([d * 0 for d in sm.delta], [g * 0 for g in sm.gamma])  # zero margins: every gap counts
    objective = build_generator_objective(gcfg, 3, bm, sm)
    torch.manual_seed(0)
    gen = create_generator(SPEC)
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(8, 100, generator=g), torch.randint(0, 4, (8,), generator=g)
    _, values = _gen_step_loss(tiny, gen, objective, z, y)
    with torch.no_grad(), capture_bn(tiny, keep="inputs") as cap:
        tiny(gen(z, y))
    t = bn_targets(tiny)
    M = torch.stack([((per_sample_stats(a)[0] - m).square() + (per_sample_stats(a)[1] - s).square()).sum(1)
                     for a, m, s in zip(cap.inputs, t.mean, t.std)], 1)  # [N, L]
    W = lse_weights(3, 8, 2.0)
    assert (W[torch.arange(8), torch.arange(8) % 3] == 2).all() and (W == 2).sum() == 8
    expected = 0.1 / 3 * ((W - 1) * M).sum() / 8
    assert values["lse"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_official_sda_penalizes_inside_the_band(tiny):
    from dsg_viz.objectives import Margins
    from dsg_viz.qat import BatchSlackAlignment

    torch.manual_seed(0)
    gen = create_generator(SPEC)
    z, y = torch.randn(8, 100), torch.randint(0, 4, (8,))
    huge = Margins([torch.full((c,), 1e3) for c in (8, 16, 16)], [torch.full((c,), 1e3) for c in (8, 16, 16)])
    for form, positive in (("hinge", False), ("abs", True)):
        obj = 1.0 * BatchSlackAlignment(huge, "var", "sum", form)
        loss, _ = _gen_step_loss(tiny, gen, obj, z, y)
        assert (loss.item() > 0) == positive


def test_kd_loss_reductions():
    s, t = torch.randn(5, 10), torch.randn(5, 10)
    bm, m = kd_loss(s, t, 4.0, "batchmean"), kd_loss(s, t, 4.0, "mean")
    assert bm.item() == pytest.approx(10 * m.item(), rel=1e-5)
    assert kd_loss(t, t, 4.0).abs().item() < 1e-6


# --- the QAT loop --------------------------------------------------------------------------------------------------

def test_qat_epoch_checkpoint_log_resume(tiny, tmp_path):
    cfg = QATConfig(generator="dsg", **TINY_CFG)
    val = _split()
    fp_before = _snapshot(tiny)
    full = train_qat(tiny, cfg, tmp_path / "full", val=val, test=val, progress=False, log=lambda *_: None)
    assert full["complete"] and full["epochs_done"] == 2
    assert "test" in full["final"] and "test" in full["val_selected"] and 1 <= full["val_selected"]["epoch"] <= 2
    lines = [json.loads(x) for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and lines[0]["student_trained"] is False
    assert {"gen_ce", "gen_sda", "gen_lse", "gen_sci", "student_kd", "val_top1"} <= set(lines[1])
    assert (tmp_path / "full" / "checkpoint.pt").is_file() and (tmp_path / "full" / "result.json").is_file()
    # the FP teacher is unchanged, with no gradients and no hooks left
    assert all(torch.equal(fp_before[k], v) for k, v in tiny.state_dict().items())
    assert all(p.grad is None for p in tiny.parameters()) and not has_hooks(tiny) and not tiny.training

    # interrupted after one epoch, then resumed: identical to the uninterrupted run
    part = train_qat(tiny, cfg, tmp_path / "part", val=val, progress=False, max_epochs=1, log=lambda *_: None)
    assert not part["complete"] and part["epochs_done"] == 1
    with pytest.raises(ConfigError, match="resume"):
        train_qat(tiny, cfg, tmp_path / "part", val=val, progress=False, log=lambda *_: None)
    with pytest.raises(ConfigError, match="lr_s"):
        train_qat(tiny, replace(cfg, lr_s=1.0), tmp_path / "part", resume=True, progress=False, log=lambda *_: None)
    res = train_qat(tiny, cfg, tmp_path / "part", val=val, test=val, resume=True, progress=False,
                    log=lambda *_: None)
    assert res["complete"] and res["epochs_done"] == 2
    ck_full = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    ck_part = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)
    for key in ("student", "generator"):
        assert all(torch.equal(ck_full[key][k], ck_part[key][k]) for k in ck_full[key]), key
    assert res["final"]["test"] == full["final"]["test"]
    assert len((tmp_path / "part" / "log.jsonl").read_text().splitlines()) == 2
    # the student learned: its weights moved away from the FP copy's; activation ranges were set then frozen
    st = ck_full["student"]
    assert any(not torch.equal(st[k], fp_before[k.removeprefix("model.")]) for k in st if k.endswith("conv1.weight"))
    assert all(bool(v) for k, v in st.items() if k.endswith("quantizer.calibrated"))


def test_student_frozen_during_warmup_and_export(tiny, tmp_path):
    cfg = QATConfig(generator="gdfq", **(TINY_CFG | {"epochs": 1}))
    r = train_qat(tiny, cfg, tmp_path, progress=False, log=lambda *_: None)
    st = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["student"]
    assert all(torch.equal(st["model." + k], v) for k, v in tiny.state_dict().items())  # warm-up only
    assert r["final"]["val_top1"] is None and r["val_selected"] is None
    gen = load_generator(tmp_path)
    s = export_generator_samples(gen, 10, batch_size=4, seed=3, method="qat-gdfq")
    assert isinstance(s, SampleSet) and s.images.shape == (10, 3, 16, 16) and s.labels.shape == (10,)
    s2 = SampleSet.load(s.save(tmp_path / "samples.pt", grid=False))
    assert torch.equal(s2.images, s.images) and s2.model == "tiny_bn"
    assert torch.equal(gen.bn1.running_mean, load_generator(tmp_path).bn1.running_mean)  # export left it alone


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(batch_size=1), dict(generator="zeroq"), dict(bits="W4"),
                                 dict(kd_reduction="sum"), dict(gen_output="sigmoid"), dict(act_warmup_epochs=0),
                                 dict(lr_s=0.0), dict(temperature=-1.0)])
def test_bad_config_is_a_clear_error(bad):
    with pytest.raises(ConfigError):
        QATConfig(**bad)
    with pytest.raises(ConfigError):
        qat_preset("nope")
    with pytest.raises(ConfigError):
        generator_preset("dsg", sda="square")


def test_presets_keep_paper_defaults():
    p = QATConfig()
    assert (p.epochs, p.iters, p.batch_size, p.warmup_epochs, p.lr_s, p.lr_g, p.temperature) == (
        400, 200, 16, 50, 1e-6, 1e-3, 20.0)
    assert p.lr_at(1.0, 99) == 1.0 and p.lr_at(1.0, 300) == pytest.approx(1e-3)
    c = qat_preset("cifar")
    assert (c.epochs, c.iters, c.batch_size, c.lr_s, c.warmup_epochs) == (400, 200, 200, 1e-4, 4)


def test_cli_qat_tiny(tmp_path, capsys):
    rc = cli_main(["qat", "--model", "tiny_bn", "--generator", "gdfq", "--preset", "cpu", "--epochs", "1",
                   "--iters", "2", "--batch-size", "4", "--out", str(tmp_path / "run"), "--export", "6", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["epochs_done"] == 1 and out["complete"] and (tmp_path / "run" / "samples.pt").is_file()
    rc = cli_main(["qat", "--model", "tiny_bn", "--epochs", "0", "--out", str(tmp_path / "x")])
    assert rc == 2
