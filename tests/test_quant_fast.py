"""The inference fast path of the fake-quantizers equals the autograd path (up to rounding ties)."""

import pytest
import torch

from dsg_viz.quant import QuantConfig, calibrate, quantize
from dsg_viz.quant.quantizer import WeightQuantizer, _quant_dequant, fake_quantize_inference


@pytest.mark.parametrize("bits", [2, 4, 6, 8])
@pytest.mark.parametrize("symmetric", [False, True])
def test_inference_path_matches_reference(bits, symmetric):
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(4096, generator=g) * 2.5
    lo, hi = torch.tensor(-1.7), torch.tensor(3.2)
    ref = _quant_dequant(x, lo, hi, bits, symmetric)
    fast = fake_quantize_inference(x, lo, hi, bits, symmetric)
    step = float((hi - lo) / (2 ** bits - 1))
    diff = (ref - fast).abs()
    assert (diff > 1e-6).float().mean() < 1e-3 and diff.max() <= step * 1.001  # only ties, by one step
    w = torch.randn(8, 3, 3, 3, generator=g)
    wl, wh = w.flatten(1).amin(1).clamp_max(0), w.flatten(1).amax(1)
    ref_w = _quant_dequant(w, wl.view(-1, 1, 1, 1), wh.view(-1, 1, 1, 1), bits, symmetric)
    assert torch.allclose(fake_quantize_inference(w, wl, wh, bits, symmetric, axis=0), ref_w, atol=1e-6)


def test_weight_cache_follows_in_place_updates():
    w = torch.nn.Parameter(torch.randn(4, 2, 3, 3))
    q = WeightQuantizer(4, weight=w.detach())
    with torch.no_grad():
        a = q(w).clone()
        w.mul_(0.5)  # in-place change of the weights
        b = q(w)
        assert not torch.equal(a, b)
        q.set_range(w)  # new range
        c = q(w)
    d = q(w)  # autograd path
    assert torch.allclose(c, d.detach(), atol=1e-6)


def test_model_outputs_agree_between_paths(tiny):
    qm = quantize(tiny, QuantConfig(w_bits=4, a_bits=4))
    x = torch.randn(32, *tiny.spec.input_size, generator=torch.Generator().manual_seed(0))
    calibrate(qm, x)
    qm.eval()
    with torch.no_grad():
        fast = qm(x)
    slow = qm(x)  # grad enabled → STE path
    assert (fast - slow.detach()).abs().max() < 1e-4
