"""Activation calibration: observe the activations of a :class:`QuantModel` on a batch of images, set and freeze
the range of every activation quantizer (dsg-method.md §D, "Activation-range methods").

Methods (ranges always contain 0, so after a ReLU ``x_min = 0``):

* ``"minmax"``: global min and max over all samples.
* ``"ema"`` (ZeroQ's misnomer): mean over samples of the per-sample min and of the per-sample max.
* ``"percentile"``: lower / upper ``p``-th percentile of all activation values (after a ReLU: the upper one).
* ``"mse"``: the upper clip among 80 candidates ``max * i / 80`` minimizing the L2 quantization error.

Percentile and MSE keep a uniform random subsample of at most 2^24 values per quantizer (``torch.quantile``'s
limit); the MSE search runs on a random 2^18 of them (enough to rank 80 smooth candidates).

The observation pass runs in mode ``"weight"``: weights quantized, activations float. (ZeroQ's single pass
quantizes each activation as soon as its range is set, so downstream layers see quantized inputs; multi-batch
methods such as percentile and MSE need all the data before any range exists, so all ranges here are observed on
float activations.) Because ``"ema"`` averages over all samples (not over batches), the result does not depend on
``batch_size``.
"""

from __future__ import annotations

import math
import warnings

import torch

from .. import _faults
from .._modes import eval_mode
from ..errors import ConfigError
from .quantize import ACT_METHODS, QuantModel
from .quantizer import quant_error

MAX_STORED = 2 ** 24  # torch.quantile accepts at most 2^24 elements
MSE_SAMPLES = 2 ** 18
MSE_CLIPS = 80


class RangeObserver:
    """Accumulates what one calibration method needs from the activations [B, ...] passed to :meth:`update`.

    Args:
        method: one of ``"ema"``, ``"minmax"``, ``"percentile"``, ``"mse"``.
        bits: bit-width of the quantizer (used by ``"mse"``).
        num_samples: number of calibration images (sets the subsampling rate of stored values).
        percentile: in % (``"percentile"`` only).
        generator: CPU generator for the random subsample.
    """

    def __init__(self, method: str, bits: int, num_samples: int, percentile: float = 99.99,
                 generator: torch.Generator | None = None):
        self.method, self.bits, self.num_samples, self.percentile = method, bits, num_samples, percentile
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.lo, self.hi = math.inf, -math.inf
        self.sum_min = self.sum_max = 0.0
        self.count = 0
        self.values: list[torch.Tensor] = []  # CPU float32 subsample (percentile / mse)
        self.rate: float | None = None

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Record activations ``x`` [B, ...] (B = batch)."""
        flat = x.detach().float().reshape(x.shape[0], -1) if x.dim() > 1 else x.detach().float().reshape(1, -1)
        mins, maxs = flat.amin(dim=1), flat.amax(dim=1)  # [B]
        self.lo = min(self.lo, mins.min().item())
        self.hi = max(self.hi, maxs.max().item())
        self.sum_min += mins.sum().item()
        self.sum_max += maxs.sum().item()
        self.count += flat.shape[0]
        if self.method in ("percentile", "mse"):
            if self.rate is None:
                self.rate = min(1.0, MAX_STORED / max(1, flat.shape[1] * self.num_samples))
            v = flat.reshape(-1)
            k = math.ceil(self.rate * v.numel())
            if k < v.numel():
                idx = torch.randint(v.numel(), (k,), generator=self.generator).to(v.device)
                v = v[idx]
            self.values.append(v.cpu())

    def _stored(self, limit: int) -> torch.Tensor:
        v = torch.cat(self.values)
        if v.numel() > limit:
            v = v[torch.randint(v.numel(), (limit,), generator=self.generator)]
        return v

    @torch.no_grad()
    def range(self) -> tuple[float, float]:
        """Return ``(x_min, x_max)`` of the observed activations with ``x_min <= 0 <= x_max``."""
        if self.count == 0:
            raise RuntimeError("observer saw no activations")
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)
        if self.method == "minmax":
            return lo, hi
        if self.method == "ema":
            return min(self.sum_min / self.count, 0.0), max(self.sum_max / self.count, 0.0)
        if self.method == "percentile":
            v = self._stored(MAX_STORED)
            q = torch.quantile(v, torch.tensor([1.0 - self.percentile / 100.0, self.percentile / 100.0]))
            return min(q[0].item(), 0.0), max(q[1].item(), 0.0)
        # mse: search the upper clip, keep the lower end
        v = self._stored(MSE_SAMPLES)
        if hi <= 0.0:
            return lo, hi
        clips = hi * torch.arange(1, MSE_CLIPS + 1, dtype=torch.float32) / MSE_CLIPS  # [80]
        chunk = max(1, (1 << 22) // v.numel())
        errs = [quant_error(v.unsqueeze(0), torch.tensor(lo), c.view(-1, 1), self.bits, dim=(1,))  # [chunk]
                for c in clips.split(chunk)]
        return lo, clips[torch.cat(errs).argmin()].item()


@torch.no_grad()
def calibrate(qm: QuantModel, images, method: str | None = None, batch_size: int = 256,
              percentile: float | None = None, seed: int = 0) -> QuantModel:
    """Set and freeze the range of every activation quantizer of ``qm`` from ``images``; return ``qm``.

    Args:
        qm: a :class:`QuantModel` from :func:`quantize`. Its mode and training flags are restored afterwards; the
            forward passes run in eval mode (BN running statistics are not updated) under ``torch.no_grad``.
        images: float tensor [N, C, H, W] in the model's input space (normalized), or an object with such an
            ``.images`` attribute (e.g. a :class:`~dsg_viz.generation.SampleSet`).
        method: ``"ema"``, ``"minmax"``, ``"percentile"`` or ``"mse"``; default ``qm.config.act_method``.
        batch_size: images per forward pass (results do not depend on it).
        percentile: in %, for ``"percentile"``; default ``qm.config.percentile``.
        seed: seed of the random subsample kept by ``"percentile"`` / ``"mse"``.

    Quantizers that the forward pass never reaches stay uncalibrated (a warning names them).
    """
    if not isinstance(qm, QuantModel):
        raise ConfigError(f"calibrate() needs the QuantModel returned by quantize(), got {type(qm).__name__}")
    images = getattr(images, "images", images)
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point() or not len(images):
        what = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ConfigError(f"calibration images must be a non-empty float tensor [N, C, H, W] in the model's input "
                          f"space (got {what}); normalize uint8 images with dsg_viz.data.normalize first")
    method = method or qm.config.act_method
    if method not in ACT_METHODS:
        raise ConfigError(f"unknown calibration method {method!r}; use one of {', '.join(map(repr, ACT_METHODS))}")
    percentile = qm.config.percentile if percentile is None else float(percentile)
    if not 0.0 < percentile <= 100.0:
        raise ConfigError(f"percentile must be in (0, 100] (got {percentile}); 99.99 is the default")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1 (got {batch_size})")

    quantizers = qm.act_quantizers()
    gen = torch.Generator().manual_seed(seed)
    device = next(qm.parameters()).device
    n = len(images)
    observers = {}
    try:
        with qm.using_mode("weight"), eval_mode(qm):
            for name, q in quantizers.items():
                observers[name] = q.observer = RangeObserver(method, q.bits, n, percentile, gen)
            for s in range(0, n, batch_size):
                _faults.hit("calibrate")
                qm(images[s:s + batch_size].to(device))
    finally:
        for q in quantizers.values():
            q.observer = None
    unseen = [name for name, obs in observers.items() if obs.count == 0]
    for name, obs in observers.items():
        if obs.count:
            quantizers[name].set_range(*obs.range())
    if unseen:
        warnings.warn(f"activation quantizers never reached during calibration stay uncalibrated: {unseen}",
                      stacklevel=2)
    return qm
