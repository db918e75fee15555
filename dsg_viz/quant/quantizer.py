"""Uniform affine fake-quantizers on core PyTorch ops (no ``torch.ao``), with a straight-through estimator.

Arithmetic (ZeroQ/GDFQ, dsg-method.md §D), for ``k`` bits and a range ``[x_min, x_max]``::

    s = (2^k - 1) / max(x_max - x_min, 1e-8)
    z = round(s * x_min) + 2^(k-1)
    q = clamp(round(s * x - z), -2^(k-1), 2^(k-1) - 1)
    x_hat = (q + z) / s

Zero is represented exactly whenever ``x_min <= 0 <= x_max``. The symmetric variant (weights only, optional) uses
``a = max(|x_min|, |x_max|)``, ``s = (2^(k-1) - 1) / a``, ``x_hat = clamp(round(s x), -(2^(k-1)-1), 2^(k-1)-1) / s``
(a restricted, zero-point-free grid).

Backward is a pure straight-through estimator: ``d x_hat / d x = 1`` everywhere, with no clipping mask and no
gradient through the range (GDFQ's QAT quantizer, §D). Bits must lie in 2..16 (16 is a sanity mode).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ConfigError, DsgVizError

MIN_BITS, MAX_BITS = 2, 16
RANGE_EPS = 1e-8  # ZeroQ's floor on x_max - x_min
MSE_CANDIDATES = 100  # clipping ratios searched by weight_range(method="mse")


class NotCalibratedError(DsgVizError):
    """An activation quantizer was asked to quantize before :func:`dsg_viz.quant.calibrate` gave it a range."""


def check_bits(bits: int, what: str = "bits") -> int:
    """Return ``bits`` as an int; raise :class:`ConfigError` unless it is an integer in 2..16."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"{what} must be an integer in {MIN_BITS}..{MAX_BITS} (got {bits!r}); use 2-8 bits for "
                          "quantization experiments, or 16 as a near-lossless sanity check")
    return int(bits)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Return ``round(x)`` in the forward pass with an identity gradient (straight-through), same shape as ``x``."""
    return x + (torch.round(x) - x).detach()


def _quant_dequant(x: torch.Tensor, x_min: torch.Tensor, x_max: torch.Tensor, bits: int,
                   symmetric: bool) -> torch.Tensor:
    """Return the quantize–dequantize of ``x`` (no gradient trick). Ranges broadcast against ``x``."""
    if symmetric:
        a = torch.maximum(x_min.abs(), x_max.abs()).clamp_min(RANGE_EPS)
        qmax = 2 ** (bits - 1) - 1
        s = qmax / a
        return torch.clamp(torch.round(s * x), -qmax, qmax) / s
    half = 2 ** (bits - 1)
    s = (2 ** bits - 1) / (x_max - x_min).clamp_min(RANGE_EPS)
    z = torch.round(s * x_min) + half
    q = torch.clamp(torch.round(s * x - z), -half, half - 1)
    return (q + z) / s


class _FakeQuantSTE(torch.autograd.Function):
    """Quantize–dequantize forward, identity backward w.r.t. ``x`` (no gradient for the range)."""

    @staticmethod
    def forward(ctx, x, x_min, x_max, bits, symmetric):  # noqa: D102
        return _quant_dequant(x, x_min, x_max, bits, symmetric)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return grad, None, None, None, None


def fake_quantize_inference(x: torch.Tensor, x_min: torch.Tensor, x_max: torch.Tensor, bits: int,
                            symmetric: bool = False, axis: int | None = None) -> torch.Tensor:
    """Return the same values as :func:`fake_quantize` with one allocation and four in-place passes over ``x``
    (``round(s·x)`` clamped to the integer codes of the range, divided by ``s``); for inference, no autograd.

    ``x_min``/``x_max``: 0-d or [1] tensors (per tensor, ``axis=None``) or [C] tensors for channel ``axis``.
    Values can differ from :func:`fake_quantize` only at exact rounding ties.
    """
    if axis is not None:
        shape = [1] * x.dim()
        shape[axis] = -1
        x_min, x_max = x_min.reshape(shape), x_max.reshape(shape)
    x_min, x_max = x_min.to(x.dtype), x_max.to(x.dtype)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        s = qmax / torch.maximum(x_min.abs(), x_max.abs()).clamp_min(RANGE_EPS)
        lo, hi = torch.full_like(s, -qmax), torch.full_like(s, qmax)
    else:
        s = (2 ** bits - 1) / (x_max - x_min).clamp_min(RANGE_EPS)
        lo = torch.round(s * x_min)
        hi = lo + (2 ** bits - 1)
    y = torch.mul(x, s)
    y.round_()
    if axis is None:
        y.clamp_(float(lo), float(hi))
    else:
        y.clamp_(lo, hi)
    return y.div_(s)


def fake_quantize(x: torch.Tensor, x_min: torch.Tensor, x_max: torch.Tensor, bits: int,
                  symmetric: bool = False) -> torch.Tensor:
    """Return ``x`` fake-quantized to ``bits`` on the grid of ``[x_min, x_max]``, same shape and dtype as ``x``.

    Args:
        x: any shape.
        x_min, x_max: range tensors broadcastable to ``x`` (scalar for per-tensor, e.g. [C, 1, 1, 1] per channel).
        bits: 2..16.
        symmetric: use the symmetric zero-point-free grid (see module docstring).

    The gradient w.r.t. ``x`` is the identity (pure straight-through estimator); ranges get no gradient.
    """
    return _FakeQuantSTE.apply(x, x_min, x_max, bits, symmetric)


def quant_error(x: torch.Tensor, x_min: torch.Tensor, x_max: torch.Tensor, bits: int, symmetric: bool = False,
                dim: tuple[int, ...] | None = None) -> torch.Tensor:
    """Return the mean squared quantization error of ``x``; over all elements (scalar) or reduced over ``dim``."""
    err = (_quant_dequant(x, x_min, x_max, bits, symmetric) - x).pow(2)
    return err.mean() if dim is None else err.mean(dim=dim)


@torch.no_grad()
def weight_range(w: torch.Tensor, bits: int, granularity: str = "channel", symmetric: bool = False,
                 method: str = "minmax") -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(x_min, x_max)`` for a weight tensor ``w`` [C_out, ...], each of shape [C_out] or [1].

    ``"minmax"`` takes each channel's (or the tensor's) min and max; ``"mse"`` shrinks that range by the ratio
    in ``{1/100, 2/100, ..., 1}`` that minimizes the per-channel (per-tensor) weight quantization MSE.
    Ranges always contain 0.
    """
    if granularity == "channel":
        flat = w.detach().float().reshape(w.shape[0], -1)  # [C, K]
    elif granularity == "tensor":
        flat = w.detach().float().reshape(1, -1)  # [1, K]
    else:
        raise ConfigError(f"unknown weight granularity {granularity!r}; use 'channel' or 'tensor'")
    lo = flat.amin(dim=1).clamp_max(0)
    hi = flat.amax(dim=1).clamp_min(0)
    if method == "minmax":
        return lo, hi
    if method != "mse":
        raise ConfigError(f"unknown weight range method {method!r}; use 'minmax' or 'mse'")
    ratios = torch.arange(1, MSE_CANDIDATES + 1, dtype=flat.dtype, device=flat.device) / MSE_CANDIDATES  # [R]
    chunk = max(1, (1 << 22) // flat.numel())  # candidates evaluated at once, bounded memory
    errs = []
    for r in ratios.split(chunk):
        r = r.view(-1, 1, 1)  # [r, 1, 1]
        errs.append(quant_error(flat.unsqueeze(0), lo.view(1, -1, 1) * r, hi.view(1, -1, 1) * r, bits, symmetric,
                                dim=(2,)))  # [r, C]
    best = torch.cat(errs).argmin(dim=0)  # [C], the smallest error (first one on ties)
    return lo * ratios[best], hi * ratios[best]


def _version_key(*tensors: torch.Tensor):
    """Return a key that changes whenever any tensor is replaced or modified in place (``None``: not trackable,
    e.g. inference-mode tensors, which carry no version counter)."""
    try:
        return tuple((t.data_ptr(), t._version, t.dtype, t.shape) for t in tensors)
    except RuntimeError:
        return None


class WeightQuantizer(nn.Module):
    """Fake-quantizer of a weight tensor [C_out, ...]: per-channel (default) or per-tensor, asymmetric by default.

    The range is computed from the weights by :meth:`set_range` (``quantize`` does it once, at quantize time) and
    stored in the buffers ``x_min`` / ``x_max`` of shape [C_out] (per channel) or [1] (per tensor). With
    ``dynamic=True`` the range is recomputed from the weights on every forward (ZeroQ/GDFQ QAT behaviour).

    Attributes:
        bits, granularity ("channel" | "tensor"), symmetric, method ("minmax" | "mse"), dynamic, enabled
        (``False`` passes the weights through unchanged; set by ``QuantModel.set_mode``).
    """

    def __init__(self, bits: int, granularity: str = "channel", symmetric: bool = False, method: str = "minmax",
                 weight: torch.Tensor | None = None):
        super().__init__()
        self.bits = check_bits(bits, "weight bits")
        if granularity not in ("channel", "tensor"):
            raise ConfigError(f"unknown weight granularity {granularity!r}; use 'channel' or 'tensor'")
        if method not in ("minmax", "mse"):
            raise ConfigError(f"unknown weight range method {method!r}; use 'minmax' or 'mse'")
        self.granularity, self.symmetric, self.method = granularity, bool(symmetric), method
        self.dynamic = False
        self.enabled = True
        self._cache = None  # (key, quantized weight) reused by inference forwards
        self.register_buffer("x_min", torch.zeros(1))
        self.register_buffer("x_max", torch.zeros(1))
        if weight is not None:
            self.set_range(weight)

    @torch.no_grad()
    def set_range(self, weight: torch.Tensor) -> None:
        """Compute and store the range of ``weight`` [C_out, ...] with this quantizer's method."""
        lo, hi = weight_range(weight, self.bits, self.granularity, self.symmetric, self.method)
        self.x_min = lo.to(weight.device)
        self.x_max = hi.to(weight.device)
        self._cache = None

    def _view(self, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return t.view(-1, *([1] * (w.dim() - 1))).to(w.dtype)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """Return the fake-quantized weights, same shape as ``w`` [C_out, ...] (``w`` itself when disabled)."""
        if not self.enabled:
            return w
        if self.dynamic:
            self.set_range(w.detach())
        if not torch.is_grad_enabled() and not self.dynamic:
            key = _version_key(w, self.x_min, self.x_max)
            if key is None or self._cache is None or self._cache[0] != key:  # quantize once per weight/range version
                self._cache = (key, fake_quantize_inference(w, self.x_min, self.x_max, self.bits, self.symmetric,
                                                            None if self.x_min.numel() == 1 else 0).detach())
            return self._cache[1]
        return fake_quantize(w, self._view(self.x_min, w), self._view(self.x_max, w), self.bits, self.symmetric)

    def extra_repr(self) -> str:
        sym = "symmetric" if self.symmetric else "asymmetric"
        return f"bits={self.bits}, per-{self.granularity}, {sym}, method={self.method}, enabled={self.enabled}"


class ActQuantizer(nn.Module):
    """Per-tensor asymmetric fake-quantizer of activations (any shape), with a range set by calibration.

    The range lives in the scalar buffers ``x_min`` / ``x_max`` (``x_min <= 0 <= x_max``); ``calibrated`` (a bool
    buffer) is set by :func:`dsg_viz.quant.calibrate` or :meth:`set_range`. While an ``observer`` is attached
    (only inside ``calibrate``) every input is reported to it. When ``enabled`` and not calibrated, forward raises
    :class:`NotCalibratedError`: there is no lazy calibration hidden in ``forward``.

    Attributes:
        bits, enabled, name (dotted name in the model, for messages), observer (``None`` outside calibration).
    """

    def __init__(self, bits: int, name: str = ""):
        super().__init__()
        self.bits = check_bits(bits, "activation bits")
        self.name = name
        self.enabled = True
        self.observer = None
        self.register_buffer("x_min", torch.zeros(()))
        self.register_buffer("x_max", torch.zeros(()))
        self.register_buffer("calibrated", torch.tensor(False))

    @torch.no_grad()
    def set_range(self, x_min: float, x_max: float) -> None:
        """Freeze the range to ``[min(x_min, 0), max(x_max, 0)]`` and mark the quantizer calibrated."""
        self.x_min.fill_(min(float(x_min), 0.0))
        self.x_max.fill_(max(float(x_max), 0.0))
        self.calibrated.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` fake-quantized on the calibrated range (``x`` itself when disabled), same shape."""
        if self.observer is not None:
            self.observer.update(x.detach())
        if not self.enabled:
            return x
        if not bool(self.calibrated):
            raise NotCalibratedError(
                f"activation quantizer {self.name or '(unnamed)'!r} has no range; run "
                "dsg_viz.quant.calibrate(qm, images) before using mode 'full', or use qm.set_mode('weight')")
        if not torch.is_grad_enabled() and x.dtype == torch.float32:
            return fake_quantize_inference(x, self.x_min, self.x_max, self.bits)
        return fake_quantize(x, self.x_min.to(x.dtype), self.x_max.to(x.dtype), self.bits)

    def extra_repr(self) -> str:
        rng = f"[{self.x_min.item():.4g}, {self.x_max.item():.4g}]" if bool(self.calibrated) else "uncalibrated"
        return f"bits={self.bits}, per-tensor asymmetric, range={rng}, enabled={self.enabled}"
