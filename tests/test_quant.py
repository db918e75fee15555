"""Post-training quantization: quantizers, quantize (copy semantics, modes, BN folding), calibration."""

import importlib

import pytest
import torch
import torch.nn as nn

from dsg_viz.data import normalize
from dsg_viz.errors import ConfigError, DsgVizError
from dsg_viz.evaluate import evaluate
from dsg_viz.quant import (ActQuantizer, NotCalibratedError, QuantAct, QuantConfig, QuantConv2d, QuantLinear,
                           QuantModel, WeightQuantizer, calibrate, fake_quantize, parse_bits, quantize, weight_range)

calibrate_module = importlib.import_module("dsg_viz.quant.calibrate")  # the package exports the function by that name
from dsg_viz.quant.quantizer import quant_error


@pytest.fixture(scope="module")
def calib_images(resnet20, test_subset):
    """200 real test images in the model's input space, float [200, 3, 32, 32]."""
    return normalize(test_subset.images[:200], resnet20.spec.mean, resnet20.spec.std)


def _snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(n, type(m)) for n, m in model.named_modules()])


# --- quantizers -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("symmetric", [False, True])
def test_round_trip_error_falls_as_bits_rise(symmetric):
    x = torch.randn(20000, generator=torch.Generator().manual_seed(0))
    errs = [quant_error(x, x.min(), x.max(), b, symmetric).item() for b in (2, 3, 4, 6, 8, 16)]
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 1e-8
    w = torch.randn(16, 8, 3, 3) * torch.logspace(-2, 0, 16).view(-1, 1, 1, 1)
    werrs = [(WeightQuantizer(b, weight=w)(w) - w).pow(2).mean().item() for b in (2, 4, 8)]
    assert werrs[0] > werrs[1] > werrs[2]


def test_zeroq_arithmetic_and_zero_exact():
    x = torch.linspace(-1.0, 3.0, 1001)
    xq = fake_quantize(x, torch.tensor(-1.0), torch.tensor(3.0), 4)
    assert xq.unique().numel() <= 16
    assert (xq - x).abs().max() <= 0.5 * 4.0 / 15 + 1e-6  # half a step inside the range
    assert fake_quantize(torch.zeros(3), torch.tensor(-1.0), torch.tensor(3.0), 4).abs().max() == 0


def test_per_channel_and_mse_weights_beat_per_tensor_minmax():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(32, 16, 3, 3, generator=g) * torch.logspace(-2, 0, 32).view(-1, 1, 1, 1)
    w[0, 0, 0, 0] = 5.0  # an outlier
    def err(**kw):
        return (WeightQuantizer(4, weight=w, **kw)(w) - w).pow(2).mean().item()
    assert err(granularity="channel") < err(granularity="tensor")
    assert err(method="mse") <= err(method="minmax")
    lo, hi = weight_range(w, 4, "channel", method="mse")
    lo0, hi0 = weight_range(w, 4, "channel")
    assert lo.shape == hi.shape == (32,) and (hi <= hi0).all() and (lo >= lo0).all()


def test_bits_outside_range_raise_config_error():
    for bad in (1, 17, 0, 4.0):
        with pytest.raises(ConfigError):
            QuantConfig(w_bits=bad)
        with pytest.raises(ConfigError):
            QuantConfig(a_bits=bad)
    with pytest.raises(ConfigError):
        WeightQuantizer(1)
    with pytest.raises(ConfigError):
        ActQuantizer(17)
    assert QuantConfig(w_bits=16, a_bits=2).bits == "W16A2"


def test_parse_bits_and_config_errors():
    assert parse_bits("W4A4") == (4, 4)
    assert parse_bits("w8a6") == (8, 6)
    for bad in ("4/4", "W4", "W1A4", "W4A32", "A4W4"):
        with pytest.raises(ConfigError):
            parse_bits(bad)
    assert QuantConfig.from_bits("W6A8", act_method="mse") == QuantConfig(w_bits=6, a_bits=8, act_method="mse")
    for kw in ({"convention": "ptq"}, {"act_method": "ema2"}, {"w_granularity": "group"}, {"percentile": 0}):
        with pytest.raises(ConfigError):
            QuantConfig(**kw)


def test_describe_is_one_line():
    text = QuantConfig.from_bits("W4A4").describe()
    assert "\n" not in text and text.startswith("W4A4") and "per-channel" in text and "not folded" in text
    assert "8 bits" in QuantConfig(convention="brecq", fold_bn=True).describe()


def test_ste_gradient_wrt_input(tiny):
    q = ActQuantizer(4)
    q.set_range(0.0, 2.0)
    x = torch.linspace(-1, 3, 50, requires_grad=True)
    q(x).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # pure straight-through, no clipping mask
    qm = quantize(tiny, "W4A4")
    calibrate(qm, torch.randn(16, 3, 16, 16))
    xi = torch.randn(4, 3, 16, 16, requires_grad=True)
    qm(xi).sum().backward()
    assert xi.grad.abs().sum() > 0
    assert all(p.grad is not None for p in qm.parameters() if p.dim() > 1)  # weights get STE gradients too


# --- quantize: copy semantics, modes, conventions ---------------------------------------------------------------

@pytest.mark.parametrize("cfg", [QuantConfig(), QuantConfig(w_bits=4, a_bits=4, fold_bn=True, w_method="mse")])
def test_quantize_leaves_fp_model_untouched(resnet20, cfg):
    sd, mods = _snapshot(resnet20)
    qm = quantize(resnet20, cfg)
    calibrate(qm, torch.randn(8, 3, 32, 32))
    qm.set_mode("full")(torch.randn(2, 3, 32, 32))
    sd2, mods2 = _snapshot(resnet20)
    assert mods2 == mods
    assert sd2.keys() == sd.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    fp_params = {id(p) for p in resnet20.parameters()}
    assert not any(id(p) in fp_params for p in qm.parameters())
    assert qm.spec == resnet20.spec and not resnet20.training


def test_quantize_replaces_layers(resnet20):
    qm = quantize(resnet20, "W4A4")
    mods = dict(qm.model.named_modules())
    assert isinstance(mods["conv1"], QuantConv2d) and isinstance(mods["linear"], QuantLinear)
    assert not any(type(m) in (nn.Conv2d, nn.Linear) for m in qm.model.modules())
    relus = [m for m in qm.model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 19 and all(any(q.act is r for q in qm.model.modules() if isinstance(q, QuantAct))
                                    for r in relus)
    assert len(qm.weight_quantizers()) == 20 and len(qm.act_quantizers()) == 19  # 19 convs + fc; 19 ReLUs
    assert {q.bits for q in qm.weight_quantizers().values()} == {4}
    with pytest.raises(ConfigError, match="already quantized"):
        quantize(qm)


def test_brecq_convention_keeps_first_last_at_8_bits(resnet20):
    qm = quantize(resnet20, QuantConfig(w_bits=4, a_bits=4, convention="brecq"))
    wq, aq = qm.weight_quantizers(), qm.act_quantizers()
    assert wq["conv1"].bits == 8 and wq["linear"].bits == 8 and wq["layer1.0.conv1"].bits == 4
    assert aq["layer3.2.relu2"].bits == 8 and sum(q.bits == 8 for q in aq.values()) == 1


def test_fp_mode_is_bit_exact_and_uncalibrated_full_raises(resnet20, calib_images):
    qm = quantize(resnet20, "W4A4")
    x = calib_images[:32]
    with pytest.raises(NotCalibratedError, match="calibrate") as e:
        qm(x)
    assert isinstance(e.value, DsgVizError)
    with torch.no_grad():
        ref = resnet20(x)
        assert torch.equal(qm.set_mode("fp")(x), ref)
        w_out = qm.set_mode("weight")(x)
        assert not torch.equal(w_out, ref)
        with qm.using_mode("fp"):
            assert torch.equal(qm(x), ref)
        assert qm.mode == "weight"
    with pytest.raises(ConfigError):
        qm.set_mode("int8")


def test_w8_weight_only_accuracy_within_half_a_point(resnet20, data_root):
    from dsg_viz.data import load_split

    split = load_split("test", data_root)
    sub = split.subset(torch.randperm(len(split), generator=torch.Generator().manual_seed(1))[:500])
    qm = quantize(resnet20, QuantConfig(w_bits=8, a_bits=8, w_granularity="channel")).set_mode("weight")
    fp, q8 = evaluate(resnet20, sub)["top1"], evaluate(qm, sub)["top1"]
    assert fp > 80 and abs(fp - q8) < 0.5, (fp, q8)


# --- BN folding -------------------------------------------------------------------------------------------------

def _torchvision_resnet18():
    from dsg_viz import create_model

    m = create_model("resnet18")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-trivial BN statistics so that folding is really exercised
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.normal_(0, 0.1, generator=g)
                bn.running_var.uniform_(0.5, 1.5, generator=g)
                bn.weight.uniform_(0.5, 1.5, generator=g)
                bn.bias.normal_(0, 0.1, generator=g)
    return m


@pytest.mark.parametrize("name", ["tiny", "resnet20", "resnet18"])
def test_fold_bn_keeps_fp_output(name, tiny, request):
    model = _torchvision_resnet18() if name == "resnet18" else request.getfixturevalue(name)
    size = {"tiny": 16, "resnet20": 32, "resnet18": 64}[name]
    x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(0))
    sd, _ = _snapshot(model)
    qm = quantize(model, QuantConfig(fold_bn=True)).set_mode("fp")
    with torch.no_grad():
        ref, out = model(x), qm(x)
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4), (out - ref).abs().max()
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert len(qm.folded) == n_bn and not any(isinstance(m, nn.BatchNorm2d) for m in qm.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in sd.items())


def test_torchvision_shared_relu_gets_one_quantizer():
    model = _torchvision_resnet18()
    qm = quantize(model, "W8A8")
    block = qm.model.layer1[0]
    assert isinstance(block.relu, QuantAct) and isinstance(qm.model.relu, QuantAct)
    assert len(qm.act_quantizers()) == 9  # stem + one shared ReLU per BasicBlock
    x = torch.randn(2, 3, 64, 64)
    calibrate(qm, x)
    assert qm.is_calibrated
    with torch.no_grad():
        fp, q = model(x), qm(x)
    assert torch.allclose(q, fp, atol=0.2 * fp.abs().max().item())


# --- calibration ------------------------------------------------------------------------------------------------

def test_calibration_ranges_are_ordered(resnet20, calib_images):
    qm = quantize(resnet20, "W8A8")
    ranges = {}
    for method in ("minmax", "ema", "percentile", "mse"):
        ranges[method] = calibrate(qm, calib_images, method=method, batch_size=128).act_ranges()
    for name, (lo, hi) in ranges["minmax"].items():
        assert lo == 0.0 and hi > 0
        for method in ("ema", "percentile", "mse"):
            m_lo, m_hi = ranges[method][name]
            assert m_lo == 0.0 and 0 < m_hi <= hi, (name, method, m_hi, hi)
        assert ranges["ema"][name][1] < hi
    # ema averages over samples, not batches: the batch size does not matter
    ema64 = calibrate(qm, calib_images, method="ema", batch_size=64).act_ranges()
    assert all(abs(ema64[n][1] - ranges["ema"][n][1]) < 1e-4 * ranges["ema"][n][1] for n in ema64)


def test_calibrate_restores_mode_and_training_and_needs_no_grad(tiny):
    qm = quantize(tiny, QuantConfig(w_bits=4, a_bits=4, act_method="percentile")).set_mode("weight")
    images = torch.randn(20, 3, 16, 16)
    calibrate(qm, images, batch_size=7)
    assert qm.mode == "weight" and not qm.training and not any(m.training for m in qm.modules())
    assert qm.is_calibrated and all(q.observer is None for q in qm.act_quantizers().values())
    assert not any(p.grad is not None for p in qm.parameters())
    bn_before = qm.model.bn1.running_mean.clone()
    qm.train()
    calibrate(qm, images)
    assert qm.training and torch.equal(qm.model.bn1.running_mean, bn_before)  # calibration runs in eval mode
    qm.eval()
    with pytest.raises(ConfigError):
        calibrate(qm, images, method="kl")
    with pytest.raises(ConfigError):
        calibrate(qm, images.to(torch.uint8))
    with pytest.raises(ConfigError):
        calibrate(tiny, images)


def test_percentile_subsample_of_huge_activations(monkeypatch):
    monkeypatch.setattr(calibrate_module, "MAX_STORED", 20000)
    x = torch.rand(50, 10000, generator=torch.Generator().manual_seed(0))  # 500k values, U[0, 1)
    obs = calibrate_module.RangeObserver("percentile", 8, num_samples=50, percentile=99.0)
    for chunk in x.split(10):
        obs.update(chunk)
    assert sum(v.numel() for v in obs.values) <= 20000 + 5
    lo, hi = obs.range()
    assert lo == 0.0 and abs(hi - 0.99) < 0.01


def test_state_dict_round_trip_keeps_calibration(tiny):
    qm = quantize(tiny, "W4A4")
    calibrate(qm, torch.randn(16, 3, 16, 16), method="mse")
    qm2 = quantize(tiny, "W4A4")
    qm2.load_state_dict(qm.state_dict())
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(qm(x), qm2(x))
    assert isinstance(qm2, QuantModel) and qm2.act_ranges() == qm.act_ranges()
