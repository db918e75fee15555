"""Reconstruction-based PTQ (AdaRound, BRECQ-style blocks with LSQ and QDrop) on tiny models."""

import copy

import pytest
import torch

from dsg_viz.data import Split
from dsg_viz.errors import ConfigError
from dsg_viz.evaluate import evaluate
from dsg_viz.models.cifar_resnet import CifarResNet
from dsg_viz.quant import QuantConfig, WeightQuantizer, calibrate, quantize
from dsg_viz.quant.modules import QuantConv2d, QuantLinear
from dsg_viz.quant.reconstruct import (AdaRoundQuantizer, ReconstructionConfig, ReconstructionResult, _LSQFunction,
                                       _weight_grid, reconstruct, rectified_sigmoid)

FAST = dict(iters=60, batch_size=16)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: a second intra-op thread only adds synchronization (badly so on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def images():
    """Random 16×16 inputs [48, 3, 16, 16] in the model's input space."""
    return torch.randn(48, 3, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def resnet8():
    """A CifarResNet with one block per stage (3 residual blocks), random weights, eval mode."""
    torch.manual_seed(0)
    return CifarResNet(1, num_classes=4).eval()


def _calibrated(model, images, bits="W3A4", **kw):
    qm = quantize(model, QuantConfig.from_bits(bits, **kw))
    return calibrate(qm, images)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [(n, type(m)) for n, m in model.named_modules()]


def _nearest(qm):
    """Weights as the calibrated quantizers round them to nearest, {layer: tensor}."""
    with torch.no_grad():
        return {n: m.weight_quantizer(m.weight).clone() for n, m in qm.model.named_modules()
                if isinstance(m, (QuantConv2d, QuantLinear))}


def test_rounding_variables_converge_to_binary(tiny, images):
    qm = _calibrated(tiny, images)
    # the tiny model's outputs are large, so λ is raised for the regularizer to win within 300 steps
    res = reconstruct(qm, tiny, images, ReconstructionConfig(kind="adaround", iters=300, batch_size=8,
                                                             reg_weight=1.0), progress=False)
    assert [u.name for u in res.units] == ["conv1", "conv2", "conv3", "linear"]
    assert [u.modules for u in res.units][:1] == [["conv1", "bn1", "relu1"]]
    for u in res.units:
        assert u.binary > 0.95, (u.name, u.binary)
        assert u.history[-1] < u.history[0] or u.loss_after <= u.loss_before * 1.05
    # the rectified sigmoid itself saturates at both ends and passes 0.5 at V = 0
    h = rectified_sigmoid(torch.tensor([-10.0, 0.0, 10.0]))
    assert h.tolist() == pytest.approx([0.0, 0.5, 1.0])


@pytest.mark.parametrize("kind", ["adaround", "brecq"])
def test_reconstruction_lowers_unit_error(resnet8, images, kind):
    qm = _calibrated(resnet8, images)
    res = reconstruct(qm, resnet8, images, ReconstructionConfig(kind=kind, **FAST), progress=False)
    assert isinstance(res, ReconstructionResult) and not res.interrupted and not res.pending
    if kind == "brecq":  # the three residual blocks are units of their own; stem and head are chains
        assert [(u.name, u.kind) for u in res.units] == [("conv1", "layer"), ("layer1.0", "block"),
                                                          ("layer2.0", "block"), ("layer3.0", "block"),
                                                          ("linear", "layer")]
        assert res.units[0].modules == ["conv1", "bn1", "relu"] and res.units[0].acts == ["relu"]
        assert res.units[1].acts == ["layer1.0.relu1", "layer1.0.relu2"]
    else:
        assert len(res.units) == 8 and all(u.kind == "layer" for u in res.units)
    before = sum(u.loss_before for u in res.units)
    after = sum(u.loss_after for u in res.units)
    assert after < 0.9 * before, [(u.name, u.loss_before, u.loss_after) for u in res.units]
    blocks = [u for u in res.units if u.kind == "block"] or res.units
    assert sum(u.loss_after < u.loss_before for u in blocks) >= len(blocks) - 1
    # the quantized model is consistent: plain quantizers back, weights on the grid, evaluates in mode "full"
    assert all(type(q) is WeightQuantizer for q in qm.weight_quantizers().values())
    for name, w in _nearest(qm).items():
        assert torch.equal(w, dict(qm.model.named_modules())[name].weight.detach()), name
    split = Split((torch.rand(20, 3, 16, 16) * 255).to(torch.uint8), torch.randint(0, 4, (20,)))
    r = evaluate(qm, split, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert qm.mode == "full" and r["n"] == 20


@pytest.mark.parametrize("kind", ["adaround", "brecq"])
def test_no_iterations_no_regularizer_is_nearest_rounding(resnet8, images, kind):
    qm = _calibrated(resnet8, images)
    nearest = _nearest(qm)
    with torch.no_grad():
        out_before = qm(images)
    reconstruct(qm, resnet8, images, ReconstructionConfig(kind=kind, iters=0, reg_weight=0.0), progress=False)
    after = _nearest(qm)
    for name in nearest:
        assert torch.allclose(nearest[name], after[name], atol=1e-6), name
    with torch.no_grad():
        assert torch.allclose(qm(images), out_before, atol=1e-4)


def test_adaround_quantizer_starts_at_the_weights_and_rounds_to_nearest():
    w = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    for sym in (False, True):
        wq = WeightQuantizer(4, weight=w, symmetric=sym)
        a = AdaRoundQuantizer(wq, w)
        s, lo, hi = _weight_grid(wq, w)  # ZeroQ's rounded zero point can leave the range ends just off the grid
        assert torch.allclose(a(w), torch.minimum(torch.maximum(w, lo / s), hi / s), atol=1e-5)  # h(V) = frac(s·w)
        a.soft = False
        with torch.no_grad():
            assert torch.allclose(a(w), wq(w), atol=1e-6)


def test_lsq_gradients_match_the_definition():
    x = (torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * 2).requires_grad_()
    d = torch.tensor(0.3, requires_grad=True)
    keep = (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    for k in (None, keep):
        g = torch.randn(x.shape)
        gx, gd = torch.autograd.grad(_LSQFunction.apply(x, d, -3.0, 12.0, k), (x, d), g)
        t = x / d
        inside = ((t >= -3) & (t <= 12)).float()
        q = torch.clamp(torch.round(t), -3.0, 12.0).detach()
        xq = d * (inside * (torch.round(t).detach() + t - t.detach()) + (1 - inside) * q)
        ref = xq if k is None else k * x + (1 - k) * xq
        rx, rd = torch.autograd.grad(ref, (x, d), g)
        assert torch.allclose(gx, rx, atol=1e-6) and torch.allclose(gd, rd, rtol=1e-4, atol=1e-4)


def test_interrupt_keeps_finished_units(resnet8, images):
    qm = _calibrated(resnet8, images)
    nearest = _nearest(qm)
    ranges = qm.act_ranges()
    grads = [p.requires_grad for p in qm.parameters()]

    def stop(unit, step, loss):
        if unit == "layer2.0" and step == 5:
            raise KeyboardInterrupt

    with pytest.warns(UserWarning, match="interrupted"):
        res = reconstruct(qm, resnet8, images, ReconstructionConfig(kind="brecq", **FAST), progress=False,
                          callback=stop)
    assert res.interrupted
    assert res.done == ["conv1", "layer1.0"] and res.pending == ["layer2.0", "layer3.0", "linear"]
    after, new_ranges = _nearest(qm), qm.act_ranges()
    assert any(not torch.equal(after[n], nearest[n]) for n in ("conv1", "layer1.0.conv1", "layer1.0.conv2"))
    assert new_ranges["layer1.0.relu2"] != ranges["layer1.0.relu2"]
    for n in ("layer2.0.conv1", "layer2.0.conv2", "layer3.0.conv1", "linear"):  # interrupted / pending: untouched
        assert torch.equal(after[n], nearest[n]), n
    for n in ("layer2.0.relu1", "layer2.0.relu2", "layer3.0.relu2"):
        assert new_ranges[n] == ranges[n]
    assert all(type(q) is WeightQuantizer for q in qm.weight_quantizers().values())
    assert [p.requires_grad for p in qm.parameters()] == grads
    with torch.no_grad():
        assert torch.isfinite(qm(images)).all()


def test_fp_model_unchanged_and_conventions(resnet8, images):
    model = copy.deepcopy(resnet8).train()  # even a model in training mode keeps its BN statistics and flag
    before = _state(model)
    grads = [p.requires_grad for p in model.parameters()]
    for conv in ("zeroq", "brecq"):
        qm = _calibrated(model, images, convention=conv)
        res = reconstruct(qm, model, images, ReconstructionConfig(kind="brecq", iters=10, batch_size=8),
                          progress=False)
        assert len(res.done) == 5
    after = _state(model)
    assert before[1] == after[1] and all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert model.training and [p.requires_grad for p in model.parameters()] == grads


def test_bad_config_and_inputs_raise_config_error(tiny, images):
    for bad in (dict(kind="gptq"), dict(iters=-1), dict(batch_size=0), dict(lr=0.0), dict(warmup=1.0),
                dict(beta_start=2.0, beta_end=20.0), dict(reg_weight=-1.0), dict(drop_prob=1.0), dict(iters=2.5)):
        with pytest.raises(ConfigError):
            ReconstructionConfig(**bad)
    qm = quantize(tiny, "W4A4")
    with pytest.raises(ConfigError, match="calibrate"):
        reconstruct(qm, tiny, images)
    calibrate(qm, images)
    with pytest.raises(ConfigError, match="full-precision"):
        reconstruct(qm, qm, images)
    with pytest.raises(ConfigError, match=r"\[N, C, H, W\]"):
        reconstruct(qm, tiny, images[0])
    with pytest.raises(ConfigError, match="QuantModel"):
        reconstruct(tiny, tiny, images)
