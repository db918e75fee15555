"""Reconstruction-based PTQ on a calibrated :class:`QuantModel`: AdaRound (layer-wise) and BRECQ-style block
reconstruction with LSQ activation steps and optional QDrop.

``reconstruct(qm, fp_model, images, ReconstructionConfig(kind="brecq"))`` runs after
:func:`~dsg_viz.quant.calibrate` and changes only ``qm`` (never ``fp_model``):

* **Units.** The network is cut, in execution order, into units reconstructed one after another.
  ``kind="adaround"``: one unit per quantized conv/linear layer, extended by the modules that directly consume its
  output one after the other (its BatchNorm and activation, e.g. ``conv1 → bn1 → relu1``); the activation
  quantizer of such a chain is switched off inside the unit (AdaRound learns weights only).
  ``kind="brecq"``: one unit per residual block (every child of an ``nn.Sequential`` that holds quantized layers:
  ``layer1.0`` …), and the remaining layers (stem ``conv1 → bn1 → relu``, head ``linear``) as chains of their own.
* **Data.** The input of a unit is the input that the quantized model, with the units before it already
  reconstructed, gives it in mode ``"full"`` on ``images``; the target is the output of the same-named module of
  the FP model on the same images.
* **Weights: AdaRound** (Nagel et al. 2020). On the integer grid of the layer's calibrated range
  (``s``, ``[lo, hi]``, as :mod:`~dsg_viz.quant.quantizer`), ``w_soft = clamp(floor(s·w) + h(V), lo, hi) / s``
  with the rectified sigmoid ``h(V) = clamp(sigmoid(V)·(ζ−γ) + γ, 0, 1)``, ζ = 1.1, γ = −0.1 (AdaRound eq. 23),
  ``V`` initialized so that ``h(V) = frac(s·w)``. Loss per step (AdaRound eq. 25 / BRECQ eq. 10)::

      ||unit_q(x) − unit_fp(x)||²  (summed over channels, mean over batch and positions)
      + λ · Σ (1 − |2·h(V) − 1|^β)   (after the warm-up; β anneals linearly from beta_start to beta_end)

  At the end the hard rounding ``floor(s·w) + [V ≥ 0]`` is written into the layer's weights (on the grid, so the
  unchanged weight quantizer reproduces it exactly). With ``iters=0`` this is nearest rounding.
* **Activations (brecq only): LSQ** (Esser et al. 2020). Each activation quantizer inside the unit learns its step
  ``Δ`` (integer bounds ``[lo, hi]`` fixed by the calibrated range, ``x̂ = Δ·clamp(round(x/Δ), lo, hi)``) jointly
  with the rounding, with its own learning rate and a cosine schedule; the learned range ``[lo·Δ, hi·Δ]`` is written
  back into the quantizer (same grid arithmetic).
* **QDrop** (Wei et al. 2022, brecq only): during reconstruction each element of each activation quantizer output in
  the unit, and of the unit input, takes its full-precision value with probability ``drop_prob``.

After a finished unit its rounding and ranges are fixed; an interrupt (``KeyboardInterrupt``) restores the unit
in progress to nearest rounding and calibrated ranges, keeps the units finished so far and returns
(``result.interrupted``). Since the rounded weights are written into ``qm``'s weights, ``qm.set_mode("fp")``
afterwards runs those weights in float; the FP reference is ``fp_model``, which is never modified.

Designs read for ideas (no code copied): BRECQ (Li et al. 2021, MIT), QDrop (Wei et al. 2022), GENIE (Jeon et al.
2023, Apache-2.0).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from .. import _faults
from .._modes import eval_mode
from ..errors import ConfigError, DsgVizError
from .modules import QuantAct, QuantConv2d, QuantLinear
from .quantize import QuantModel
from .quantizer import RANGE_EPS, ActQuantizer, WeightQuantizer

KINDS = ("adaround", "brecq")
ZETA, GAMMA = 1.1, -0.1  # stretch of the rectified sigmoid (AdaRound eq. 23)
EVAL_BATCH = 256  # images per forward pass when caching data and measuring losses
_ATOMS = (QuantConv2d, QuantLinear, QuantAct)
_CHAIN_TYPES = (nn.modules.batchnorm._BatchNorm, nn.Identity, QuantAct)


@dataclass(frozen=True)
class ReconstructionConfig:
    """Settings of :func:`reconstruct`. Defaults are sized for a CPU: 200 steps per unit, so W4A4 ResNet-20
    takes a few minutes on one thread. The papers use 20,000 steps per unit, batch 32, rounding lr 1e-3, activation
    lr 4e-5, λ 0.01, warm-up 0.2, β 20 → 2, QDrop probability 0.5 (BRECQ / QDrop ImageNet settings); the two
    learning rates here are raised so that the short schedule still travels as far. They were chosen on the
    reconstruction loss of the first three ResNet-20 units on real *train* images (lr 0.1 binarizes all ``h(V)``
    in 200 steps, 1e-2 only 60-70 %; act_lr 4e-3 gave 10 % lower block error than 4e-4), never on test data.

    Attributes:
        kind: ``"adaround"`` (layer-wise, weights only) or ``"brecq"`` (block-wise, weights and LSQ activation steps).
        iters: optimization steps per unit (0 = nearest rounding; ranges unchanged).
        batch_size: images per step, drawn at random from the calibration set.
        lr: Adam learning rate of the rounding variables ``V`` (Adam moves ``V`` by about ``lr`` per step; ``h``
            saturates at ``|V| ≈ 2.4``).
        act_lr: Adam learning rate of the activation steps ``Δ`` (brecq), cosine-annealed to 0.
        warmup: fraction of ``iters`` without the rounding regularizer.
        beta_start, beta_end: β of the regularizer, annealed linearly after the warm-up.
        reg_weight: λ, weight of the rounding regularizer (0 = off).
        drop_prob: QDrop probability that an activation element keeps its FP value during reconstruction
            (brecq only; 0 = off; adaround learns no activation quantizer and ignores it).
        seed: seed of the batch sampling and of the QDrop masks.
    """

    kind: str = "brecq"
    iters: int = 200
    batch_size: int = 32
    lr: float = 0.1
    act_lr: float = 4e-3
    warmup: float = 0.2
    beta_start: float = 20.0
    beta_end: float = 2.0
    reg_weight: float = 0.01
    drop_prob: float = 0.5
    seed: int = 0

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` on an unknown kind or an out-of-range value."""
        if self.kind not in KINDS:
            raise ConfigError(f"unknown reconstruction kind {self.kind!r}; use 'adaround' or 'brecq'")
        for name in ("iters", "batch_size", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{name} must be an integer (got {v!r})")
        if self.iters < 0:
            raise ConfigError(f"iters must be >= 0 (got {self.iters}); 0 gives nearest rounding")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1 (got {self.batch_size})")
        if not (self.lr > 0 and math.isfinite(self.lr)) or not (self.act_lr >= 0 and math.isfinite(self.act_lr)):
            raise ConfigError(f"lr must be > 0 and act_lr >= 0 (got lr={self.lr}, act_lr={self.act_lr})")
        if not 0.0 <= self.warmup < 1.0:
            raise ConfigError(f"warmup is a fraction of iters in [0, 1) (got {self.warmup})")
        if not self.beta_start >= self.beta_end > 0:
            raise ConfigError(f"need beta_start >= beta_end > 0 (got {self.beta_start} → {self.beta_end}); "
                              "the paper anneals 20 → 2")
        if not self.reg_weight >= 0:
            raise ConfigError(f"reg_weight must be >= 0 (got {self.reg_weight}); 0 switches the regularizer off")
        if not 0.0 <= self.drop_prob < 1.0:
            raise ConfigError(f"drop_prob must be in [0, 1) (got {self.drop_prob}); 0 switches QDrop off")

    def beta(self, step: int) -> float:
        """Return β at ``step`` (``beta_start`` through the warm-up, then linear to ``beta_end``)."""
        start = self.warmup * self.iters
        rel = (step - start) / max(self.iters - start, 1)
        return self.beta_end + (self.beta_start - self.beta_end) * max(0.0, 1.0 - rel)


@dataclass
class UnitResult:
    """What one reconstruction unit did.

    Attributes:
        name: the block's or the first layer's dotted name; kind: ``"block"`` or ``"layer"``.
        modules: dotted names of the modules the unit runs (the block, or the chain of layers).
        layers, acts: the quantized layers whose rounding is learned; the activation quantizers whose step is
            learned (brecq).
        loss_before, loss_after: reconstruction error (squared error summed over channels, mean over images and
            positions) of the unit's output on all calibration images, with nearest rounding and calibrated ranges
            before, with the learned rounding and ranges after (no QDrop in either).
        binary: fraction of the rounding variables with ``h(V)`` within 0.01 of 0 or 1 at the end.
        history: reconstruction loss of the training batches, every ``max(1, iters // 50)`` steps.
        seconds: wall time of the unit (caching included).
    """

    name: str
    kind: str
    modules: list[str]
    layers: list[str]
    acts: list[str]
    loss_before: float = float("nan")
    loss_after: float = float("nan")
    binary: float = float("nan")
    history: list[float] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class ReconstructionResult:
    """Outcome of :func:`reconstruct`.

    Attributes:
        config: ``asdict`` of the :class:`ReconstructionConfig`.
        units: one :class:`UnitResult` per finished unit, in order.
        done: names of the finished units; pending: names of the units not (or not completely) reconstructed.
        skipped: quantized layers that could not be reconstructed (called several times), left at nearest rounding.
        interrupted: ``True`` if a ``KeyboardInterrupt`` stopped the run.
        seconds: total wall time.
    """

    config: dict
    units: list[UnitResult] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """Return a JSON-serializable dict."""
        return asdict(self)


# --- learnable quantizers used during reconstruction ----------------------------------------------------------------

def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """Return ``h(V) = clamp(sigmoid(V)·(ζ−γ) + γ, 0, 1)`` (AdaRound eq. 23), same shape, values in [0, 1]."""
    return (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


def _weight_grid(wq: WeightQuantizer, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(s, lo, hi)`` of ``wq``'s integer grid, broadcastable to ``w`` [C_out, ...] (quantizer.py arithmetic:
    ``x̂ = clamp(round(s·w), lo, hi) / s``)."""
    shape = (-1,) + (1,) * (w.dim() - 1)
    x_min = wq.x_min.detach().to(w.dtype).view(shape)
    x_max = wq.x_max.detach().to(w.dtype).view(shape)
    if wq.symmetric:
        qmax = 2 ** (wq.bits - 1) - 1
        s = qmax / torch.maximum(x_min.abs(), x_max.abs()).clamp_min(RANGE_EPS)
        return s, torch.full_like(s, -qmax), torch.full_like(s, qmax)
    s = (2 ** wq.bits - 1) / (x_max - x_min).clamp_min(RANGE_EPS)
    lo = torch.round(s * x_min)
    return s, lo, lo + (2 ** wq.bits - 1)


class AdaRoundQuantizer(nn.Module):
    """Stands in for a layer's :class:`WeightQuantizer` during reconstruction: learnable rounding of the fixed
    weights ``w`` [C_out, ...] on the quantizer's calibrated grid. ``forward`` ignores its argument and returns the
    soft (``soft=True``) or hard quantized weights, shape of ``w``."""

    def __init__(self, wq: WeightQuantizer, weight: torch.Tensor):
        super().__init__()
        w = weight.detach().float()
        s, lo, hi = _weight_grid(wq, w)
        sw = s * w
        floor = torch.floor(sw)
        rest = (sw - floor).clamp(1e-6, 1 - 1e-6)  # h(V_init) = rest
        self.register_buffer("s", s)
        self.register_buffer("lo", lo)
        self.register_buffer("hi", hi)
        self.register_buffer("floor", floor)
        self.v = nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))
        self.dtype = weight.dtype
        self.soft = True
        self.enabled = True  # QuantModel.set_mode may set it; the stand-in always quantizes

    def h(self) -> torch.Tensor:
        """Return ``h(V)``, shape of the weights, values in [0, 1]."""
        return rectified_sigmoid(self.v)

    def regularizer(self, beta: float) -> torch.Tensor:
        """Return ``Σ (1 − |2h(V) − 1|^β)`` (AdaRound eq. 24), a scalar."""
        return (1 - (2 * self.h() - 1).abs().pow(beta)).sum()

    def hard_weight(self) -> torch.Tensor:
        """Return the hard-rounded weights ``clamp(floor + [V >= 0], lo, hi) / s`` (no gradient)."""
        with torch.no_grad():
            return (torch.clamp(self.floor + (self.v >= 0).float(), self.lo, self.hi) / self.s).to(self.dtype)

    def forward(self, w: torch.Tensor) -> torch.Tensor:  # noqa: ARG002 - the weights are held as floor + rest
        if not self.soft:
            return self.hard_weight()
        return (torch.clamp(self.floor + self.h(), self.lo, self.hi) / self.s).to(self.dtype)


class _LSQFunction(torch.autograd.Function):
    """``out = keep·x + (1 − keep)·Δ·q`` with ``q = clamp(round(x/Δ), lo, hi)`` and LSQ gradients (Esser et al.
    2020, eq. 3): with ``inside = [lo ≤ x/Δ ≤ hi]``, ``d out/dx = keep + (1 − keep)·inside`` and
    ``d out/dΔ = (1 − keep)·(q − x/Δ·inside)`` (``round(x/Δ) − x/Δ`` inside, ``lo`` or ``hi`` outside).
    ``keep`` is a float 0/1 mask of x's shape (QDrop) or ``None``. No ``torch.where``: on CPU it is ten times
    slower than float arithmetic."""

    @staticmethod
    def forward(ctx, x, delta, lo: float, hi: float, keep):  # noqa: D102
        t = x / delta
        r = torch.round(t)
        q = r.clamp(lo, hi)
        out = q * delta
        if keep is not None:
            out = out + keep * (x - out)
        ctx.save_for_backward(t, q, keep if keep is not None else torch.empty(0))
        ctx.lo, ctx.hi = lo, hi
        ctx.has_keep = keep is not None
        ctx.delta_shape = delta.shape
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        t, q, keep = ctx.saved_tensors
        inside = ((t >= ctx.lo) & (t <= ctx.hi)).to(t.dtype)
        g_delta = q.sub_(t.mul_(inside))  # in place on saved tensors: backward runs once
        if ctx.has_keep:
            quant = 1.0 - keep
            g_x = grad * (keep + quant * inside)
            g_delta = g_delta.mul_(quant)
        else:
            g_x = grad * inside
        return g_x, (grad * g_delta).sum().reshape(ctx.delta_shape), None, None, None


class MaskPool:
    """Cheap Bernoulli(``p``) float masks for QDrop: views at random offsets into a pool of random 0/1 values that is
    redrawn every ``refresh`` draws (drawing a fresh mask per call costs more than the layer on a CPU)."""

    def __init__(self, numel: int, p: float, generator: torch.Generator, device, refresh: int = 8):
        self.size, self.p, self.generator, self.device, self.refresh = 2 * numel, p, generator, device, refresh
        self.draws, self.pool = 0, None

    def draw(self, shape) -> torch.Tensor:
        """Return a float 0/1 tensor of ``shape`` (1 with probability ``p``), a view into the pool."""
        n = math.prod(shape)
        if self.pool is None or self.draws % self.refresh == 0 or n > self.size // 2:
            self.size = max(self.size, 2 * n)
            self.pool = (torch.rand(self.size, generator=self.generator, device=self.device) < self.p).float()
        self.draws += 1
        off = int(torch.randint(self.size - n + 1, (1,), generator=self.generator, device=self.device))
        return self.pool[off:off + n].view(shape)


class LSQActQuantizer(nn.Module):
    """Stands in for an :class:`ActQuantizer` during brecq reconstruction: ``x̂ = Δ·clamp(round(x/Δ), lo, hi)`` with a
    learnable step ``Δ`` (LSQ gradients) and the integer bounds of the calibrated range; while ``drop`` is set,
    QDrop keeps each element's FP value with probability ``masks.p``. Any shape in, same shape out."""

    def __init__(self, aq: ActQuantizer, masks: MaskPool | None = None):
        super().__init__()
        levels = 2 ** aq.bits - 1
        delta = (aq.x_max - aq.x_min).clamp_min(RANGE_EPS).detach().float() / levels
        lo = torch.round(aq.x_min.detach().float() / delta)
        self.delta = nn.Parameter(delta.clone())
        self.lo, self.hi = float(lo), float(lo) + levels
        self.masks = masks
        self.drop = False
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = self.masks.draw(x.shape) if self.drop and self.masks is not None else None
        return _LSQFunction.apply(x, self.delta.clamp_min(RANGE_EPS).to(x.dtype), self.lo, self.hi, keep)

    def range(self) -> tuple[float, float]:
        """Return the learned ``(x_min, x_max) = (lo·Δ, hi·Δ)``."""
        d = max(float(self.delta.detach()), RANGE_EPS)
        return self.lo * d, self.hi * d


# --- units ----------------------------------------------------------------------------------------------------------

@dataclass
class _Unit:
    name: str
    kind: str  # "block" | "layer"
    modules: list[str]
    layers: list[str]
    acts: list[str]

    def run(self, mods: dict[str, nn.Module], x: torch.Tensor) -> torch.Tensor:
        for n in self.modules:
            x = mods[n](x)
        return x


class _Stop(Exception):
    """Raised by a capture hook to end a forward pass early."""


def _atoms(net: nn.Module) -> dict[str, nn.Module]:
    """Return the modules traced as indivisible steps: quantized layers, QuantAct, and other leaves outside them."""
    out, inside = {}, set()
    for n, m in net.named_modules():
        if any(n.startswith(p + ".") for p in inside):
            continue
        if isinstance(m, _ATOMS):
            out[n] = m
            inside.add(n)
        elif n and not any(True for _ in m.children()):
            out[n] = m
    return out


@torch.no_grad()
def _trace(net: nn.Module, x: torch.Tensor) -> tuple[list[tuple[str, tuple, object]], dict[str, int]]:
    """Run ``net(x)`` once; return the atom calls ``(name, args, output)`` in execution order and call counts of
    every module."""
    calls, counts, handles = [], {}, []
    atoms = _atoms(net)
    try:
        for n, m in net.named_modules():
            def count(_m, _a, _o, n=n):
                counts[n] = counts.get(n, 0) + 1
            handles.append(m.register_forward_hook(count))
            if n in atoms:
                def rec(_m, a, o, n=n):
                    calls.append((n, a, o))
                handles.append(m.register_forward_hook(rec))
        net(x)
    finally:
        for h in handles:
            h.remove()
    return calls, counts


def _find_units(net: nn.Module, x: torch.Tensor, kind: str) -> tuple[list[_Unit], list[str]]:
    """Return the units of ``net`` in execution order and the quantized layers that cannot be reconstructed."""
    calls, counts = _trace(net, x)
    mods = dict(net.named_modules())
    layer_names = [n for n, m in mods.items() if isinstance(m, (QuantConv2d, QuantLinear))]
    skipped = [n for n in layer_names if counts.get(n, 0) != 1]

    blocks: dict[str, list[str]] = {}
    if kind == "brecq":
        for pname, parent in mods.items():
            if not isinstance(parent, nn.Sequential):
                continue
            for cname, child in parent.named_children():
                n = f"{pname}.{cname}" if pname else cname
                if isinstance(child, _ATOMS) or counts.get(n, 0) != 1:
                    continue
                inner = [ln for ln in layer_names if ln.startswith(n + ".")]
                if inner and not any(ln in skipped for ln in inner) and not any(
                        n.startswith(b + ".") for b in blocks):
                    blocks[n] = inner

    def block_of(name: str) -> str | None:
        return next((b for b in blocks if name.startswith(b + ".")), None)

    units, seen_blocks = [], set()
    for i, (n, args, out) in enumerate(calls):
        b = block_of(n)
        if b is not None:
            if b not in seen_blocks:
                seen_blocks.add(b)
                acts = [a for a, m in mods.items() if a.startswith(b + ".") and isinstance(m, QuantAct)]
                units.append(_Unit(b, "block", [b], blocks[b], acts))
            continue
        if n not in layer_names or n in skipped:
            continue
        chain, prev = [n], out
        for n2, args2, out2 in calls[i + 1:]:
            m2 = mods[n2]
            if (not isinstance(m2, _CHAIN_TYPES) or block_of(n2) is not None or counts.get(n2, 0) != 1
                    or not args2 or args2[0] is not prev):
                break
            chain.append(n2)
            prev = out2
        acts = [a for a in chain if isinstance(mods[a], QuantAct)]
        units.append(_Unit(n, "layer", chain, [n], acts))
    return units, skipped


class ReconstructionError(DsgVizError, FloatingPointError):
    """The reconstruction loss became NaN/Inf; the message names the unit, the step and the term."""


@torch.no_grad()
def _capture(net: nn.Module, images: torch.Tensor, in_name: str | None, out_name: str | None,
             device, batch: int = EVAL_BATCH) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Return the input of module ``in_name`` and the output of ``out_name`` over all ``images`` (forward passes
    stop as soon as both are seen), each [N, ...], or ``None`` where the name is ``None``."""
    mods = dict(net.named_modules())
    ins, outs, handles = [], [], []

    def stop_if_done():
        if (in_name is None or len(ins) > len(batches_done)) and (out_name is None or len(outs) > len(batches_done)):
            raise _Stop

    def pre(_m, a):
        if len(ins) == len(batches_done):
            ins.append(a[0].detach().clone())
            stop_if_done()

    def post(_m, _a, o):
        if len(outs) == len(batches_done):
            outs.append(o.detach().clone())
            stop_if_done()

    batches_done: list[int] = []
    try:
        if in_name is not None:
            handles.append(mods[in_name].register_forward_pre_hook(pre))
        if out_name is not None:
            handles.append(mods[out_name].register_forward_hook(post))
        for s in range(0, len(images), batch):
            try:
                net(images[s:s + batch].to(device))
            except _Stop:
                pass
            batches_done.append(s)
    finally:
        for h in handles:
            h.remove()
    return (torch.cat(ins) if in_name is not None else None), (torch.cat(outs) if out_name is not None else None)


def _rec_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error summed over channels (dim 1), mean over batch and positions; a scalar."""
    d = (out - target).pow(2)
    return d.sum(1).mean() if d.dim() > 1 else d.mean()


@torch.no_grad()
def _full_loss(unit: _Unit, mods: dict[str, nn.Module], x: torch.Tensor, target: torch.Tensor,
               batch: int = EVAL_BATCH) -> float:
    total = 0.0
    for s in range(0, len(x), batch):
        xb = x[s:s + batch]
        total += _rec_loss(unit.run(mods, xb), target[s:s + batch]).item() * len(xb)
    return total / len(x)


# --- the driver -----------------------------------------------------------------------------------------------------

def reconstruct(qm: QuantModel, fp_model: nn.Module, images, config: ReconstructionConfig | None = None,
                progress: bool = True, callback: Callable[[str, int, float], None] | None = None,
                forward_batch_size: int = EVAL_BATCH) -> ReconstructionResult:
    """Return a :class:`ReconstructionResult` after reconstructing ``qm`` unit by unit against ``fp_model``.

    Args:
        qm: a calibrated :class:`QuantModel` (every activation quantizer has a range) built from ``fp_model``.
            Its rounding (weights) and, for brecq, activation ranges are changed in place; its mode and training
            flags are restored.
        fp_model: the full-precision model ``qm`` was quantized from; never modified.
        images: float tensor [N, C, H, W] in the model's input space (the calibration set), or an object with an
            ``.images`` attribute (a :class:`~dsg_viz.generation.SampleSet`).
        config: a :class:`ReconstructionConfig` (default: brecq with the CPU-sized defaults).
        progress: show one tqdm bar per unit.
        callback: called as ``callback(unit_name, step, loss)`` after every optimization step, ``loss`` being the
            batch reconstruction loss (for logging); a ``KeyboardInterrupt`` raised there stops the run as Ctrl-C
            does, keeping the finished units.
        forward_batch_size: images per forward pass when caching unit inputs/targets and measuring losses (memory
            only; results do not depend on it). The cached inputs and targets of one unit, for all N images, stay in
            memory while it is reconstructed (BRECQ does the same): at 224 × 224 that dominates the peak.
    """
    config = config if config is not None else ReconstructionConfig()
    if not isinstance(config, ReconstructionConfig):
        raise ConfigError(f"config must be a ReconstructionConfig (got {type(config).__name__})")
    if not isinstance(qm, QuantModel):
        raise ConfigError(f"reconstruct() needs the QuantModel returned by quantize(), got {type(qm).__name__}")
    if isinstance(fp_model, QuantModel) or any(isinstance(m, _ATOMS) for m in fp_model.modules()):
        raise ConfigError("fp_model must be the full-precision model that qm was quantized from, not a quantized one")
    images = getattr(images, "images", images)
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point() or not len(images):
        what = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ConfigError(f"reconstruction images must be a non-empty float tensor [N, C, H, W] in the model's input "
                          f"space (got {what}); normalize uint8 images with dsg_viz.data.normalize first")
    if not qm.is_calibrated:
        raise ConfigError("qm has uncalibrated activation quantizers; run dsg_viz.quant.calibrate(qm, images) "
                          "before reconstruct()")
    dynamic = [n for n, q in qm.weight_quantizers().items() if q.dynamic]
    if dynamic:
        raise ConfigError(f"weight quantizers with dynamic ranges cannot keep a learned rounding: {dynamic}")

    t_start = time.perf_counter()
    net = qm.model
    mods = dict(net.named_modules())
    fp_names = set(n for n, _ in fp_model.named_modules())
    device = next(qm.parameters()).device
    images = images.detach()
    result = ReconstructionResult(config=asdict(config))
    gen = torch.Generator().manual_seed(config.seed)
    drop_gen = torch.Generator(device=device).manual_seed(config.seed + 1)

    with qm.using_mode("full"), eval_mode(net, fp_model, freeze=True):
        units, result.skipped = _find_units(net, images[:2].to(device), config.kind)
        if result.skipped:
            warnings.warn(f"layers called more than once stay at nearest rounding: {result.skipped}", stacklevel=2)
        missing = [u.modules[-1] for u in units if u.modules[-1] not in fp_names or u.modules[0] not in fp_names]
        if missing:
            raise ConfigError(f"fp_model lacks modules {missing} of qm; pass the model qm was quantized from")
        result.pending = [u.name for u in units]
        for k, unit in enumerate(units):
            try:
                ures = _reconstruct_unit(unit, k, net, mods, fp_model, images, config, gen, drop_gen, device,
                                         progress, callback, forward_batch_size)
            except KeyboardInterrupt:
                result.interrupted = True
                warnings.warn(f"reconstruction interrupted in unit {unit.name!r}; kept {len(result.done)} finished "
                              f"unit(s): {result.done}", stacklevel=2)
                break
            result.units.append(ures)
            result.done.append(unit.name)
            result.pending.remove(unit.name)
    result.seconds = time.perf_counter() - t_start
    return result


def _reconstruct_unit(unit: _Unit, index: int, net: nn.Module, mods: dict[str, nn.Module], fp_model: nn.Module,
                      images: torch.Tensor, config: ReconstructionConfig, gen: torch.Generator,
                      drop_gen: torch.Generator, device, progress: bool, callback,
                      batch: int = EVAL_BATCH) -> UnitResult:
    """Reconstruct one unit in place; on any exception the unit's original quantizers are restored untouched."""
    t0 = time.perf_counter()
    brecq = config.kind == "brecq"
    use_drop = brecq and config.drop_prob > 0 and config.iters > 0
    ures = UnitResult(unit.name, unit.kind, list(unit.modules), list(unit.layers), list(unit.acts) if brecq else [])

    q_in, _ = _capture(net, images, unit.modules[0], None, device, batch)
    fp_in, target = _capture(fp_model, images, unit.modules[0] if use_drop else None, unit.modules[-1], device,
                             batch)

    layers = [mods[n] for n in unit.layers]
    act_mods = [mods[n] for n in unit.acts]
    orig_wq = [m.weight_quantizer for m in layers]
    orig_aq = [m.quantizer for m in act_mods]
    orig_enabled = [q.enabled for q in orig_aq]
    ada = [AdaRoundQuantizer(wq, m.weight) for wq, m in zip(orig_wq, layers)]
    masks = MaskPool(q_in[:config.batch_size].numel(), config.drop_prob, drop_gen, device) if use_drop else None
    lsq = [LSQActQuantizer(aq, masks).to(device) for aq in orig_aq] if brecq else []
    try:
        if not brecq:  # AdaRound learns weights only: the chain's activation quantizer is off inside the unit
            for q in orig_aq:
                q.enabled = False
        ures.loss_before = _full_loss(unit, mods, q_in, target, batch)
        for m, a in zip(layers, ada):
            m.weight_quantizer = a.to(device)
        for m, a in zip(act_mods, lsq):
            m.quantizer = a
        _optimize(unit, index, mods, ada, lsq, q_in, fp_in, target, config, gen, masks, progress, callback, ures)
        for a in ada:
            a.soft = False
        for a in lsq:
            a.drop = False
        ures.loss_after = _full_loss(unit, mods, q_in, target, batch)
        hs = torch.cat([a.h().detach().flatten() for a in ada]) if ada else torch.zeros(0)
        ures.binary = float(((hs < 0.01) | (hs > 0.99)).float().mean()) if hs.numel() else float("nan")
        hard = [a.hard_weight() for a in ada]
        ranges = [a.range() for a in lsq]
    finally:
        for m, wq in zip(layers, orig_wq):
            m.weight_quantizer = wq
        for m, aq, en in zip(act_mods, orig_aq, orig_enabled):
            m.quantizer = aq
            aq.enabled = en
    # commit only once the unit finished (an interrupt above leaves it at nearest rounding and calibrated ranges)
    with torch.no_grad():
        for m, w in zip(layers, hard):
            m.weight.copy_(w)
        for aq, (lo, hi) in zip(orig_aq, ranges):
            aq.set_range(lo, hi)
    ures.seconds = time.perf_counter() - t0
    return ures


def _optimize(unit: _Unit, index: int, mods, ada: list[AdaRoundQuantizer], lsq: list[LSQActQuantizer],
              q_in: torch.Tensor, fp_in: torch.Tensor | None, target: torch.Tensor, config: ReconstructionConfig,
              gen: torch.Generator, masks: MaskPool | None, progress: bool, callback, ures: UnitResult) -> None:
    """Run ``config.iters`` Adam steps on the rounding variables (and LSQ steps) of one unit."""
    if config.iters == 0:
        return
    opt = torch.optim.Adam([a.v for a in ada], lr=config.lr) if ada else None
    act_opt = sched = None
    if lsq and config.act_lr > 0:
        act_opt = torch.optim.Adam([a.delta for a in lsq], lr=config.act_lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(act_opt, T_max=config.iters, eta_min=0.0)
    for a in lsq:
        a.drop = True
    warm = int(config.warmup * config.iters)
    log_every = max(1, config.iters // 50)
    n = len(q_in)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.iters, desc=f"{config.kind} {index + 1} {unit.name}", leave=False)
    try:
        for step in range(config.iters):
            idx = torch.randint(n, (min(config.batch_size, n),), generator=gen).to(q_in.device)
            x = q_in[idx]
            if fp_in is not None and masks is not None:  # QDrop on the unit input too
                x = x + masks.draw(x.shape) * (fp_in[idx] - x)
            rec = _rec_loss(unit.run(mods, x), target[idx])
            loss = rec
            if step >= warm and config.reg_weight > 0 and ada:
                beta = config.beta(step)
                loss = loss + config.reg_weight * sum(a.regularizer(beta) for a in ada)
            if _faults.hit("reconstruct") == "nan":  # the reliability suite's NaN injection
                rec, loss = rec * math.nan, loss * math.nan
            if not torch.isfinite(loss):
                term = "reconstruction (output MSE)" if not torch.isfinite(rec) else "rounding regularizer"
                raise ReconstructionError(
                    f"reconstruction loss became {loss.item()} in unit {index + 1} {unit.name!r} at step {step} "
                    f"(term: {term}); lower ReconstructionConfig.lr or check the samples for extreme values")
            for o in (opt, act_opt):
                if o is not None:
                    o.zero_grad(set_to_none=True)
            loss.backward()
            for o in (opt, act_opt):
                if o is not None:
                    o.step()
            if sched is not None:
                sched.step()
            if step % log_every == 0 or step == config.iters - 1:
                ures.history.append(rec.item())
                if bar is not None:
                    bar.set_postfix(rec=f"{rec.item():.4g}", refresh=False)
            if bar is not None:
                bar.update(1)
            if callback is not None:
                callback(unit.name, step, rec.item())
    finally:
        if bar is not None:
            bar.close()
