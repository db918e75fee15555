"""Generative data-free QAT: a conditional generator trained against the frozen FP model with GDFQ's or DSG's
losses, and a quantized student distilled from the FP model on the generated images (dsg-method.md §A.2, §C.2).

The generator objective reuses the terms of :mod:`dsg_viz.objectives` (CE, LSE, SCI) and adds the batch-statistic
alignment GDFQ's generator uses. Its presets sit side by side in :data:`GENERATOR_PRESETS`:

* ``gdfq``: ``CE + 0.1 · (1/L) Σ_l [mean_c (μ̂-μ)² + mean_c (v̂-v)²]`` on batch statistics (mean, biased
  variance) of the BN inputs against ``running_mean``/``running_var`` (GDFQ's released loss).
* ``dsg`` (the paper's intent, §G items 2, 4, 5, 6):
  ``CE + 0.1 · (1/L) Σ_l Σ_c ([|μ̂-μ|-δ]_+² + [|σ̂-σ|-γ]_+²)``
  (hinge SDA on batch mean and std, margins from the ε = 0.9 quantile of an N(0, 1) batch's deviations), plus the
  per-sample LSE term ``0.1/L · (w-1)/N Σ_j l^SDA_{a(j)}(x_j)`` with ``a(j) = j mod L``, ``w = 2`` (per-sample
  statistics, per-sample margins), plus differentiable SCI ("intended") weighted ``1/L``.
* ``dsg-official`` (the released QAT code, its defects included, §B.1, §B.2, §B.3): ``(|Δ| - m)²`` (the abs that
  turns the hinge into a target gap) on the batch mean and **variance**, LSE as weight 2 on *channel* ``l`` of
  layer ``l`` (no per-sample effect), SCI computed without gradient. The released margin files are not shipped;
  the ε = 0.9 noise-batch quantile (in variance units) stands in for them.

QAT (:func:`train_qat`), as GDFQ: each iteration samples ``z``, ``y``, takes one Adam step on the generator, then
(after ``warmup_epochs``) one SGD step on the student with ``α·T²·KL(teacher ‖ student at temperature T) + CE`` on
the detached images and teacher logits. The student is ``quantize(fp_model, QuantConfig.from_bits(bits))``
(straight-through estimator; per-channel weight ranges recomputed every forward; BN in eval mode, so running
statistics stay frozen); its activation ranges follow an EMA (β = 0.9) of each batch's min/max during the first
``act_warmup_epochs`` epochs and are frozen afterwards. The FP model is never modified.

Model selection is honest: every epoch is scored on a validation split (held-out train images, never test); the
final epoch and the best validation epoch are both evaluated on the test split at the end. Checkpoints are written
atomically after every epoch, ``resume=True`` continues bit-identically, and ``log.jsonl`` holds one line per epoch.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .bn import STAT_EPS, batch_stats, bn_layers, bn_targets, capture_bn, per_sample_stats
from .errors import ConfigError, DataError
from .margins import bn_inputs_eval, compute_margins
from .objectives import (CorrelationInhibition, CrossEntropy, LayerwiseEnhancement, Margins, Objective, StepContext,
                         Term)

STATS = ("var", "std")
REDUCES = ("mean", "sum")
SDA_FORMS = ("off", "hinge", "abs")
LSE_MODES = ("off", "sample", "channel")
SCI_MODES = ("off", "intended", "offdiag", "faithful")
KD_REDUCTIONS = ("batchmean", "mean")
CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
RESULT = "result.json"


# --- generator objective -------------------------------------------------------------------------------------------

class GeneratorContext(StepContext):
    """A :class:`StepContext` for a generator step: it also holds the raw BN inputs of the teacher.

    Args:
        x: generated images [N, 3, H, W] (model input space, part of the generator's graph).
        logits: teacher logits [N, K]; labels: sampled labels [N].
        inputs: the BN inputs ``a_l`` [N, C_l, H_l, W_l] per layer (from ``capture_bn(keep="inputs")``).
        targets: BN running means and stds; running_var: BN running variances [C_l] per layer.
        noise: CPU generator for SCI's Gaussian reference.

    ``ctx.batch`` gives the batch statistics ``(mean, biased var)`` [C_l] per layer; ``ctx.stats`` the per-sample
    ``(mean, std)`` [N, C_l] (computed on first use only, so GDFQ's loss never pays for them).
    """

    def __init__(self, x, logits, labels, inputs, targets, running_var, noise: torch.Generator | None = None):
        self._inputs = inputs
        self._stats = None
        self.running_var = running_var
        super().__init__(x, logits, labels, None, targets, noise)

    @property
    def stats(self):
        if self._stats is None:
            self._stats = [per_sample_stats(a) for a in self._inputs]
        return self._stats

    @stats.setter
    def stats(self, value):
        self._stats = value

    @property
    def batch(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if "batch" not in self._memo:
            self._memo["batch"] = [batch_stats(a) for a in self._inputs]
        return self._memo["batch"]


class BatchBNAlignment(Term):
    """BN alignment on **batch** statistics (GDFQ's generator loss, §A.2), averaged over the L layers.

    Per layer: ``red_c (μ̂_c - μ_c)² + red_c (s_c - t_c)²`` where ``s`` is the biased batch variance and ``t`` the
    running variance (``stat="var"``, GDFQ), or ``s = sqrt(var + 1e-6)`` against ``sqrt(running_var + 1e-6)``
    (``stat="std"``, §G item 6); ``red`` is the mean over channels (``"mean"``, GDFQ's ``MSELoss``) or the sum
    (``"sum"``, DSG's ``norm()**2``). ``channel_lse`` multiplies the squared term of channel ``l`` of layer ``l``
    (the released QAT code's LSE, §B.2 "QAT code"; 1 = off).
    """

    name = "bn"

    def __init__(self, stat: str = "var", reduce: str = "mean", channel_lse: float = 1.0):
        self.stat, self.reduce, self.channel_lse = stat, reduce, channel_lse

    def _gaps(self, ctx: GeneratorContext, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        mu, var = ctx.batch[layer]
        dm = (mu - ctx.targets.mean[layer].to(mu)).abs()
        rv = ctx.running_var[layer].to(var)
        if self.stat == "var":
            ds = (var - rv).abs()
        else:
            ds = (torch.sqrt(var + STAT_EPS) - torch.sqrt(rv + STAT_EPS)).abs()
        return dm, ds

    def _slack(self, dm, ds, layer):  # no margins
        return dm, ds

    def __call__(self, ctx: GeneratorContext) -> torch.Tensor:
        total = 0.0
        for layer in range(ctx.num_layers):
            dm, ds = self._slack(*self._gaps(ctx, layer), layer)
            sq = dm.square() + ds.square()  # [C_l]
            if self.channel_lse != 1.0 and layer < sq.numel():
                w = torch.ones_like(sq)
                w[layer] = self.channel_lse
                sq = sq * w
            total = total + (sq.mean() if self.reduce == "mean" else sq.sum())
        return total / ctx.num_layers

    def __repr__(self):
        return f"{type(self).__name__}(stat={self.stat!r}, reduce={self.reduce!r}, channel_lse={self.channel_lse})"


class BatchSlackAlignment(BatchBNAlignment):
    """SDA on batch statistics: :class:`BatchBNAlignment` with per-layer margins subtracted from the gaps.

    ``form="hinge"``: ``[|Δ| - m]_+`` (the paper, §B.1); ``form="abs"``: ``|(|Δ| - m)|`` (the released QAT code's
    defect, which also penalizes gaps *inside* the band). ``margins.delta[l]`` / ``margins.gamma[l]`` [C_l] are in
    the units of ``stat`` (mean; variance or std).
    """

    name = "sda"

    def __init__(self, margins: Margins, stat: str = "std", reduce: str = "sum", form: str = "hinge",
                 channel_lse: float = 1.0):
        super().__init__(stat, reduce, channel_lse)
        self.margins, self.form = margins, form

    def _slack(self, dm, ds, layer):
        md = self.margins.delta[layer].to(dm)
        mg = self.margins.gamma[layer].to(ds)
        if self.form == "hinge":
            return F.relu(dm - md), F.relu(ds - mg)
        return (dm - md).abs(), (ds - mg).abs()


@dataclass(frozen=True)
class GeneratorObjectiveConfig:
    """Generator loss settings (see the module docstring for the three presets).

    ``ce_weight`` (CE to the sampled labels), ``bn_weight`` (on the layer-averaged batch alignment; GDFQ 0.1),
    ``stat`` ("var" | "std"), ``reduce`` over channels ("mean" | "sum"), ``sda`` ("off" | "hinge" | "abs"),
    margins (``margin_quantile`` ε, ``margin_scale``, ``margin_axis`` "layer" | "channel", from one N(0, 1) batch of
    the QAT batch size), ``lse`` ("off" | "sample" | "channel") with diagonal weight ``lse_weight``, ``sci`` mode
    with weight ``sci_weight`` (``None`` = 1/L).
    """

    method: str = "custom"
    ce_weight: float = 1.0
    bn_weight: float = 0.1
    stat: str = "var"
    reduce: str = "mean"
    sda: str = "off"
    margin_quantile: float = 0.9
    margin_scale: float = 1.0
    margin_axis: str = "layer"
    lse: str = "off"
    lse_weight: float = 2.0
    sci: str = "off"
    sci_weight: float | None = None

    def validate(self) -> None:
        """Raise :class:`ConfigError` on unknown or out-of-range values."""
        for value, allowed, what in ((self.stat, STATS, "stat"), (self.reduce, REDUCES, "reduce"),
                                     (self.sda, SDA_FORMS, "sda"), (self.lse, LSE_MODES, "lse"),
                                     (self.sci, SCI_MODES, "sci"), (self.margin_axis, ("layer", "channel"),
                                                                    "margin_axis")):
            if value not in allowed:
                raise ConfigError(f"unknown generator-objective {what} {value!r}; use one of {allowed}")
        if not 0.0 < self.margin_quantile <= 1.0:
            raise ConfigError(f"margin_quantile must be in (0, 1] (got {self.margin_quantile}); the paper uses 0.9")
        if self.lse != "off" and self.lse_weight < 1:
            raise ConfigError(f"lse_weight must be >= 1 (got {self.lse_weight}); the paper's diagonal weight is 2")
        if min(self.ce_weight, self.bn_weight, self.margin_scale) < 0:
            raise ConfigError("ce_weight, bn_weight and margin_scale must be >= 0")


_GDFQ = GeneratorObjectiveConfig(method="gdfq")
GENERATOR_PRESETS: dict[str, GeneratorObjectiveConfig] = {
    "gdfq": _GDFQ,
    "dsg": replace(_GDFQ, method="dsg", stat="std", reduce="sum", sda="hinge", lse="sample", sci="intended"),
    "dsg-official": replace(_GDFQ, method="dsg-official", stat="var", reduce="sum", sda="abs", lse="channel",
                            sci="faithful"),
}


def generator_preset(name: str, **overrides) -> GeneratorObjectiveConfig:
    """Return generator-objective preset ``name`` with ``overrides`` (``dataclasses.replace``) applied."""
    if name not in GENERATOR_PRESETS:
        raise ConfigError(f"unknown generator objective {name!r}; choose one of: {', '.join(GENERATOR_PRESETS)}")
    cfg = replace(GENERATOR_PRESETS[name], **overrides)
    cfg.validate()
    return cfg


@torch.no_grad()
def batch_margins(model: nn.Module, batch_size: int, stat: str = "std", quantile: float = 0.9, axis: str = "layer",
                  scale: float = 1.0, seed: int = 0) -> Margins:
    """Return SDA margins for the batch-statistic loss: the ε-quantile (per layer, or per channel) of the
    deviations of one N(0, 1) batch's BN-input batch statistics from the running ones (§B.1 recipe, §G item 1).

    ``stat="std"`` (mean / std margins) is :func:`dsg_viz.margins.compute_margins` with ``source="batch"``;
    ``stat="var"`` gives mean / variance margins (the released QAT code's units, §B.1 "compute γ on variances").
    """
    if stat == "std":
        return compute_margins(model, batch_size, quantile, "batch", axis, scale, seed)
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    x = torch.randn((batch_size, *model.spec.input_size), generator=g).to(device)
    delta, gamma = [], []
    for a, (_, bn) in zip(bn_inputs_eval(model, x), bn_layers(model)):
        mu, var = batch_stats(a)
        dm, dv = (mu - bn.running_mean.float()).abs(), (var - bn.running_var.float()).abs()
        if axis == "layer":
            dm, dv = torch.quantile(dm, quantile).expand(mu.shape), torch.quantile(dv, quantile).expand(var.shape)
        delta.append((scale * dm).clone().cpu())
        gamma.append((scale * dv).clone().cpu())
    return Margins(delta, gamma, {"quantile": quantile, "source": "batch", "stat": "var", "axis": axis,
                                  "scale": scale, "n": batch_size, "from": "noise", "seed": seed})


def generator_margins(model: nn.Module, gcfg: GeneratorObjectiveConfig, batch_size: int,
                      seed: int = 0) -> tuple[Margins | None, Margins | None]:
    """Return ``(batch_margins, sample_margins)`` a generator objective needs (``None`` where unused)."""
    bm = sm = None
    if gcfg.sda != "off":
        bm = batch_margins(model, batch_size, gcfg.stat, gcfg.margin_quantile, gcfg.margin_axis, gcfg.margin_scale,
                           seed)
    if gcfg.lse == "sample" and gcfg.sda != "off":
        sm = compute_margins(model, batch_size, gcfg.margin_quantile, "per_sample", gcfg.margin_axis,
                             gcfg.margin_scale, seed)
    return bm, sm


def build_generator_objective(gcfg: GeneratorObjectiveConfig, num_layers: int, batch_m: Margins | None = None,
                              sample_m: Margins | None = None) -> Objective:
    """Return the generator :class:`Objective`; its terms are named ``ce``, ``bn`` or ``sda``, ``lse``, ``sci``."""
    gcfg.validate()
    channel_lse = gcfg.lse_weight if gcfg.lse == "channel" else 1.0
    if gcfg.sda == "off":
        align: Term = BatchBNAlignment(gcfg.stat, gcfg.reduce, channel_lse)
    else:
        if batch_m is None:
            raise ConfigError(f"generator objective {gcfg.method!r} uses SDA and needs margins")
        align = BatchSlackAlignment(batch_m, gcfg.stat, gcfg.reduce, gcfg.sda, channel_lse)
    terms: list[tuple[float, Term]] = [(gcfg.ce_weight, CrossEntropy()), (gcfg.bn_weight, align)]
    if gcfg.lse == "sample":
        # per-sample enhancement of the assigned layer, on the scale of one layer of the layer-averaged alignment
        terms.append((gcfg.bn_weight / num_layers, LayerwiseEnhancement(sample_m, gcfg.lse_weight)))
    if gcfg.sci != "off":
        w = gcfg.sci_weight if gcfg.sci_weight is not None else 1.0 / num_layers
        terms.append((w, CorrelationInhibition(gcfg.sci, "pixels")))
    return Objective([(w, t) for w, t in terms if w != 0])


# --- QAT configuration ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QATConfig:
    """Settings of one QAT run. The schedule and optimizer defaults are the DSG QAT release
    (``imagenet_resnet.hocon``, dsg-method.md §C.2); the defaults differ from that release in exactly these points:

    * ``generator="dsg"``: the paper's objective (hinge SDA on batch mean/std, per-sample LSE, differentiable SCI);
      the released loss is ``generator="dsg-official"``;
    * ``kd_reduction="batchmean"``: the per-sample KL; the release averages over all N·K elements (``"mean"``);
    * ``gen_output="pixel"``: tanh → RGB → the model's normalization; the release's affine-free BN head is
      ``gen_output="bn"``;
    * SDA margins come from the ε = 0.9 noise recipe (``margin_scale`` 1); the release loads unshipped margin files;
    * model selection: each epoch is scored on ``val_limit`` held-out train images and the final and best-validation
      students are tested once; the release reports the best *test* epoch (from epoch 49 on);
    * the release's faulty EMA bias correction of the activation ranges (§D) and its ``main.py`` syntax error are
      not reproduced.

    Attributes:
        generator: generator-objective preset (:data:`GENERATOR_PRESETS`).
        bits: ``"W4A4"``-style bit widths of the student (ZeroQ/GDFQ convention, §D).
        epochs, iters, batch_size: 400 × 200 iterations of 16 images (paper; GDFQ's CIFAR recipe uses 200).
        warmup_epochs: epochs in which only the generator trains (DSG 50; GDFQ 4).
        act_warmup_epochs: epochs in which activation ranges follow the EMA (0–3 in the release), then frozen.
        act_ema_beta: EMA factor of the activation ranges (0.9).
        lr_s, momentum, nesterov, weight_decay: the student's SGD (1e-6, 0.9, Nesterov, 1e-4).
        lr_g, betas_g: the generator's Adam (1e-3, (0.5, 0.999)).
        milestones, lr_decay: both learning rates ×0.1 at epochs 100, 200, 300.
        latent_dim: size of ``z`` (100).
        temperature, kd_weight, ce_weight: student loss ``kd_weight·T²·KL + ce_weight·CE`` (T = 20, α = 1).
        kd_reduction: ``"batchmean"`` (the KL per sample, the correct scaling) or ``"mean"`` (the released code's
            element-wise mean, i.e. the per-sample KL divided by the number of classes).
        gen_output, gen_bn_eps: the generator's output stage and BN eps (see :mod:`dsg_viz.models.generator`).
        margin_scale: multiplies the SDA margins of the ``dsg`` / ``dsg-official`` objectives (1 = the recipe).
        val_limit: validation images scored each epoch (a fixed random subset; ``None`` = all 5,000).
        seed: seeds the generator's initialization, the noise and the margins.
    """

    generator: str = "dsg"
    bits: str = "W4A4"
    epochs: int = 400
    iters: int = 200
    batch_size: int = 16
    warmup_epochs: int = 50
    act_warmup_epochs: int = 4
    act_ema_beta: float = 0.9
    lr_s: float = 1e-6
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    lr_g: float = 1e-3
    betas_g: tuple[float, float] = (0.5, 0.999)
    milestones: tuple[int, ...] = (100, 200, 300)
    lr_decay: float = 0.1
    latent_dim: int = 100
    temperature: float = 20.0
    kd_weight: float = 1.0
    ce_weight: float = 1.0
    kd_reduction: str = "batchmean"
    gen_output: str = "pixel"
    gen_bn_eps: float = 0.8
    margin_scale: float = 1.0
    val_limit: int | None = 1000
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "betas_g", tuple(self.betas_g))
        object.__setattr__(self, "milestones", tuple(self.milestones))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` on unknown or out-of-range values."""
        from .models.generator import OUTPUTS
        from .quant import parse_bits

        if self.generator not in GENERATOR_PRESETS:
            raise ConfigError(f"unknown generator objective {self.generator!r}; choose one of: "
                              f"{', '.join(GENERATOR_PRESETS)}")
        parse_bits(self.bits)
        for name in ("epochs", "iters", "latent_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.batch_size < 2:
            raise ConfigError(f"batch_size must be >= 2 (got {self.batch_size}): the generator's BN and the "
                              "batch-statistic loss need several images per batch")
        if self.warmup_epochs < 0 or self.act_warmup_epochs < 1:
            raise ConfigError(f"warmup_epochs must be >= 0 and act_warmup_epochs >= 1 (got {self.warmup_epochs}, "
                              f"{self.act_warmup_epochs}); activation ranges need at least one epoch of warm-up")
        if not 0.0 <= self.act_ema_beta < 1.0:
            raise ConfigError(f"act_ema_beta must be in [0, 1) (got {self.act_ema_beta})")
        if self.lr_s <= 0 or self.lr_g <= 0:
            raise ConfigError(f"learning rates must be positive (got lr_s={self.lr_s}, lr_g={self.lr_g})")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be positive (got {self.temperature})")
        if self.kd_reduction not in KD_REDUCTIONS:
            raise ConfigError(f"unknown kd_reduction {self.kd_reduction!r}; use 'batchmean' (clean) or 'mean' "
                              "(the released code's element-wise mean)")
        if self.gen_output not in OUTPUTS:
            raise ConfigError(f"unknown gen_output {self.gen_output!r}; use one of {OUTPUTS}")
        if self.val_limit is not None and self.val_limit < 1:
            raise ConfigError(f"val_limit must be >= 1 or None (got {self.val_limit})")
        if min(self.kd_weight, self.ce_weight, self.weight_decay, self.momentum, self.margin_scale) < 0:
            raise ConfigError("kd_weight, ce_weight, weight_decay, momentum and margin_scale must be >= 0")

    def lr_at(self, base: float, epoch: int) -> float:
        """Return the multi-step learning rate of ``base`` at ``epoch``."""
        return base * self.lr_decay ** sum(epoch >= m for m in self.milestones)


_PAPER = QATConfig()
QAT_PRESETS: dict[str, QATConfig] = {
    # DSG's released QAT settings (imagenet_resnet.hocon)
    "paper": _PAPER,
    # GDFQ's CIFAR recipe (cifar100_resnet20.hocon): 400 × 200 iterations of 200 images, lr_S 1e-4, warm-up 4
    "cifar": replace(_PAPER, batch_size=200, lr_s=1e-4, warmup_epochs=4),
    # a CPU-sized schedule (~17 min on one core, docs/results/qat.md): 8 epochs × 60 iterations of 32 images with
    # GDFQ's CIFAR optimizer; one warm-up epoch (generator only; activation ranges by EMA, then frozen). 480
    # iterations lie inside GDFQ's first learning-rate phase (epochs 0–100 × 200 iterations), so no decay.
    "cpu": replace(_PAPER, epochs=8, iters=60, batch_size=32, lr_s=1e-4, warmup_epochs=1, act_warmup_epochs=1,
                   milestones=()),
    # the ~1-hour CPU schedule of issue 8 (20 epochs × 200 iterations of 32 images = 4,000 iterations, one core per
    # run, docs/results/qat.md); still inside GDFQ's first learning-rate phase (20,000 iterations), so no decay
    "hour": replace(_PAPER, epochs=20, iters=200, batch_size=32, lr_s=1e-4, warmup_epochs=1, act_warmup_epochs=1,
                    milestones=()),
}


def qat_preset(name: str, **overrides) -> QATConfig:
    """Return QAT preset ``name`` (``paper``, ``cifar``, ``cpu``) with ``overrides`` applied (``None`` ignored)."""
    if name not in QAT_PRESETS:
        raise ConfigError(f"unknown QAT preset {name!r}; choose one of: {', '.join(QAT_PRESETS)}")
    return replace(QAT_PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


# --- student helpers -----------------------------------------------------------------------------------------------

def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            reduction: str = "batchmean") -> torch.Tensor:
    """Return ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` for logits [N, K]: summed over classes and averaged over
    samples (``"batchmean"``), or averaged over all N·K elements (``"mean"``, the released code)."""
    t = temperature
    log_p = F.log_softmax(student_logits.float() / t, dim=1)
    log_q = F.log_softmax(teacher_logits.float() / t, dim=1)
    kl = (log_q.exp() * (log_q - log_p)).sum()
    denom = student_logits.shape[0] if reduction == "batchmean" else student_logits.numel()
    return kl / denom * t * t


class _EMARange:
    """Observer that sets an :class:`~dsg_viz.quant.ActQuantizer`'s range to an EMA of each batch's global
    min/max (initialized by the first batch; the released code's faulty bias correction is not reproduced)."""

    def __init__(self, quantizer, beta: float):
        self.q, self.beta = quantizer, beta

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        lo, hi = x.min().item(), x.max().item()
        if bool(self.q.calibrated):
            lo = self.beta * self.q.x_min.item() + (1 - self.beta) * lo
            hi = self.beta * self.q.x_max.item() + (1 - self.beta) * hi
        self.q.set_range(lo, hi)


def _observe_ranges(qm, beta: float | None) -> None:
    """Attach EMA observers to every activation quantizer (``beta``), or detach them (``None``: ranges frozen)."""
    for q in qm.act_quantizers().values():
        q.observer = None if beta is None else _EMARange(q, beta)


@contextlib.contextmanager
def _static_weights(qm):
    """Evaluate with weight ranges computed once (and cached) instead of on every forward; restore afterwards."""
    wqs = list(qm.weight_quantizers().values())
    mods = {id(m.weight_quantizer): m for m in qm.modules() if hasattr(m, "weight_quantizer")}
    try:
        for wq in wqs:
            wq.set_range(mods[id(wq)].weight.detach())
            wq.dynamic = False
        yield qm
    finally:
        for wq in wqs:
            wq.dynamic = True


def _evaluate(qm, split) -> dict:
    from .evaluate import evaluate

    with _static_weights(qm):
        return evaluate(qm, split)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _state_copy(module: nn.Module) -> dict:
    return {k: v.detach().clone().cpu() for k, v in module.state_dict().items()}


# settings a resumed run may change: only how far it goes
_RESUMABLE = ("epochs",)


# --- the loop ------------------------------------------------------------------------------------------------------

def train_qat(model: nn.Module, cfg: QATConfig, out: str | os.PathLike, *, val=None, test=None,
              resume: bool = False, max_epochs: int | None = None, progress: bool = True, log=print,
              checkpoint_sha256: str | None = None, fp_reference: bool = True) -> dict:
    """Train a generator and a quantized student of ``model``; return the result dict (also ``out/result.json``).

    Args:
        model: the FP teacher from :func:`dsg_viz.create_model` (with BN layers and a ``spec``); never modified
            (no gradients land on it; its train/eval flag is restored). Everything runs on its device.
        cfg: the :class:`QATConfig`.
        out: run directory: ``checkpoint.pt`` (atomic, every epoch), ``log.jsonl`` (one line per epoch),
            ``result.json``.
        val: :class:`~dsg_viz.data.Split` scored after every epoch for model selection (held-out train images;
            never the test split). ``None``: no selection.
        test: :class:`~dsg_viz.data.Split` evaluated once the last epoch is done, for the final and for the
            validation-selected student.
        resume: continue from ``out/checkpoint.pt`` (the same settings, except ``epochs``, are required).
            Without it an existing checkpoint is an error.
        max_epochs: stop after this many epochs in this call (a planned interruption; ``None`` = run to the end).
        log: ``log(str)`` for one-line messages.
        fp_reference: also evaluate the FP model on ``val`` and ``test`` at the end (``result["fp"]``).

    Returns ``{"complete", "epochs_done", "history", "final", "val_selected", "fp", "seconds", ...}``;
    ``final``/``val_selected`` carry ``epoch``, ``val`` and (when complete and ``test`` is given) ``test``.
    A ``KeyboardInterrupt`` stops after the last finished epoch's checkpoint and returns ``interrupted=True``.
    """
    from . import __version__
    from .evaluate import evaluate
    from .models.generator import create_generator
    from .quant import QuantConfig, quantize

    cfg.validate()
    spec = getattr(model, "spec", None)
    if spec is None:
        raise ConfigError("model has no .spec; build it with dsg_viz.create_model")
    gcfg = generator_preset(cfg.generator, margin_scale=cfg.margin_scale)
    device = next(model.parameters()).device
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = out / CHECKPOINT, out / LOG
    targets = bn_targets(model)
    L = len(targets)
    running_var = tuple(bn.running_var.detach().clone().float() for _, bn in bn_layers(model))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        gen = create_generator(spec, latent_dim=cfg.latent_dim, output=cfg.gen_output,
                               bn_eps=cfg.gen_bn_eps).to(device)
    qcfg = QuantConfig.from_bits(cfg.bits)
    qm = quantize(model, qcfg).eval()
    for wq in qm.weight_quantizers().values():
        wq.dynamic = True
    opt_s = torch.optim.SGD(qm.parameters(), lr=cfg.lr_s, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                            nesterov=cfg.nesterov and cfg.momentum > 0)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr_g, betas=cfg.betas_g)
    rng = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    best: dict | None = None
    seconds = 0.0
    start = 0
    margins = None

    if ckpt_path.is_file():
        if not resume:
            raise ConfigError(f"{ckpt_path} exists; pass resume=True (--resume) to continue it, or use another "
                              "output directory")
        try:
            ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001
            raise DataError(f"cannot read QAT checkpoint {ckpt_path} ({type(e).__name__}); delete it to restart")
        old = ck.get("config", {})
        diff = [f.name for f in fields(QATConfig) if f.name not in _RESUMABLE
                and _jsonable(old.get(f.name, f.default)) != _jsonable(getattr(cfg, f.name))]  # new fields: default
        if ck.get("model") != spec.name:
            diff.append("model")
        if checkpoint_sha256 and ck.get("checkpoint_sha256") not in (None, checkpoint_sha256):
            diff.append("checkpoint")
        if diff:
            raise ConfigError(f"{ckpt_path} was written with different settings ({', '.join(diff)} differ); "
                              "resume with the same settings (only --epochs may change) or use another --out")
        qm.load_state_dict(ck["student"])
        gen.load_state_dict(ck["generator"])
        opt_s.load_state_dict(ck["opt_s"])
        opt_g.load_state_dict(ck["opt_g"])
        rng.set_state(ck["rng"])
        history, best, seconds, start = ck["history"], ck["best"], ck["seconds"], ck["epoch"]
        margins = ck["margins"]
        _atomic_write(log_path, "".join(json.dumps(h) + "\n" for h in history))
        log(f"resuming {out} after epoch {start}/{cfg.epochs}")
    elif log_path.exists():
        log_path.unlink()

    if margins is None:
        bm, sm = generator_margins(model, gcfg, cfg.batch_size, cfg.seed)
        margins = {"batch": bm.to_dict() if bm else None, "sample": sm.to_dict() if sm else None}
    bm = Margins.from_dict(margins["batch"]) if margins["batch"] else None
    sm = Margins.from_dict(margins["sample"]) if margins["sample"] else None
    objective = build_generator_objective(gcfg, L, bm, sm)
    gen_params = [p for p in gen.parameters() if p.requires_grad]

    was_training = model.training
    model.eval()
    interrupted = False
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.iters, leave=False)
    run_epochs = 0
    try:
        for epoch in range(start, cfg.epochs):
            if max_epochs is not None and run_epochs >= max_epochs:
                break
            t0 = time.perf_counter()
            lr_s, lr_g = cfg.lr_at(cfg.lr_s, epoch), cfg.lr_at(cfg.lr_g, epoch)
            for grp in opt_s.param_groups:
                grp["lr"] = lr_s
            for grp in opt_g.param_groups:
                grp["lr"] = lr_g
            train_student = epoch >= cfg.warmup_epochs
            act_live = epoch < cfg.act_warmup_epochs
            _observe_ranges(qm, cfg.act_ema_beta if act_live else None)
            sums: dict[str, float] = {}
            if bar is not None:
                bar.reset(total=cfg.iters)
                bar.set_description(f"qat {cfg.generator} {cfg.bits} epoch {epoch + 1}/{cfg.epochs}")
            for it in range(cfg.iters):
                z = torch.randn(cfg.batch_size, cfg.latent_dim, generator=rng).to(device)
                y = torch.randint(0, spec.num_classes, (cfg.batch_size,), generator=rng).to(device)
                # generator step: the teacher is frozen (gradients go to the generator's parameters only)
                with capture_bn(model, keep="inputs") as cap:
                    x = gen(z, y)
                    t_logits = model(x)
                ctx = GeneratorContext(x, t_logits.float(), y, cap.inputs, targets, running_var, noise=rng)
                loss_g, values = objective(ctx)
                if not math.isfinite(loss_g.item()):
                    from .generation import GenerationError

                    bad = [k for k, v in values.items() if not torch.isfinite(v).all()]
                    raise GenerationError(f"generator loss became {loss_g.item()} at epoch {epoch}, iteration {it} "
                                          f"(term(s): {', '.join(bad) or 'total'}); lower lr_g")
                grads = torch.autograd.grad(loss_g, gen_params)
                for p, g_ in zip(gen_params, grads):
                    p.grad = g_
                opt_g.step()
                # student step on the detached images and teacher logits (GDFQ)
                xs, tl = x.detach(), t_logits.detach()
                with contextlib.nullcontext() if train_student else torch.no_grad():
                    s_logits = qm(xs)
                    kd = kd_loss(s_logits, tl, cfg.temperature, cfg.kd_reduction)
                    ce = F.cross_entropy(s_logits.float(), y)
                    loss_s = cfg.kd_weight * kd + cfg.ce_weight * ce
                if train_student:
                    opt_s.zero_grad(set_to_none=True)
                    loss_s.backward()
                    opt_s.step()
                step = {f"gen_{k}": v.item() for k, v in values.items()}
                step.update(gen_total=loss_g.item(), student_kd=kd.item(), student_ce=ce.item(),
                            student_total=loss_s.item(),
                            teacher_acc_gen=(tl.argmax(1) == y).float().mean().item(),
                            student_acc_gen=(s_logits.detach().argmax(1) == y).float().mean().item())
                for k, v in step.items():
                    sums[k] = sums.get(k, 0.0) + v
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(G=f"{loss_g.item():.3f}", S=f"{loss_s.item():.3f}", refresh=False)
            if act_live and epoch + 1 >= cfg.act_warmup_epochs:
                _observe_ranges(qm, None)
            train_s = time.perf_counter() - t0
            rec = {"epoch": epoch + 1, "lr_s": lr_s, "lr_g": lr_g, "student_trained": train_student,
                   "act_ranges": "ema" if act_live else "frozen"}
            rec.update({k: v / cfg.iters for k, v in sums.items()})
            if val is not None:
                r = _evaluate(qm, val)
                rec.update(val_top1=r["top1"], val_top5=r["top5"], val_n=r["n"])
                if best is None or r["top1"] > best["val_top1"]:
                    best = {"epoch": epoch + 1, "val_top1": r["top1"], "val_top5": r["top5"],
                            "student": _state_copy(qm)}
            epoch_s = time.perf_counter() - t0
            seconds += epoch_s
            rec.update(train_seconds=round(train_s, 2), epoch_seconds=round(epoch_s, 2),
                       iter_seconds=round(train_s / cfg.iters, 4))
            history.append(rec)
            _atomic_save({"format": "dsg_viz.qat/1", "version": __version__, "config": asdict(cfg),
                          "generator_objective": asdict(gcfg), "model": spec.name,
                          "checkpoint_sha256": checkpoint_sha256, "epoch": epoch + 1, "student": _state_copy(qm),
                          "generator": _state_copy(gen), "opt_s": opt_s.state_dict(), "opt_g": opt_g.state_dict(),
                          "rng": rng.get_state(), "history": history, "best": best, "seconds": seconds,
                          "margins": margins}, ckpt_path)
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            run_epochs += 1
            msg = (f"epoch {epoch + 1}/{cfg.epochs}: G {rec['gen_total']:.3f}  S {rec['student_total']:.3f}  "
                   f"teacher acc on G {100 * rec['teacher_acc_gen']:.1f}%")
            if val is not None:
                msg += f"  val top-1 {rec['val_top1']:.2f}"
            log(msg + f"  ({epoch_s:.0f} s)")
    except KeyboardInterrupt:
        interrupted = True
        log(f"interrupted; {len(history)} epoch(s) checkpointed in {ckpt_path} (rerun with --resume)")
    finally:
        _observe_ranges(qm, None)
        model.train(was_training)
        if bar is not None:
            bar.close()

    done = len(history)
    complete = done >= cfg.epochs and not interrupted
    result = {"format": "dsg_viz.qat-result/1", "version": __version__, "model": spec.name,
              "checkpoint_sha256": checkpoint_sha256, "config": asdict(cfg), "generator_objective": asdict(gcfg),
              "quantization": qcfg.describe() + "; QAT: straight-through estimator, per-channel weight ranges "
              "recomputed every forward, activation ranges EMA(β=%g) of batch min/max for %d epoch(s) then frozen, "
              "student BN in eval mode" % (cfg.act_ema_beta, cfg.act_warmup_epochs),
              "margins": {k: (Margins.from_dict(v).layer_means() if v else None) for k, v in margins.items()},
              "complete": complete, "interrupted": interrupted, "epochs_done": done, "seconds": round(seconds, 1),
              "iter_seconds": (round(sum(h["train_seconds"] for h in history) / (done * cfg.iters), 4)
                               if done else None),
              "history": history}
    last = history[-1] if history else None
    result["final"] = ({"epoch": last["epoch"], "val_top1": last.get("val_top1"), "val_top5": last.get("val_top5")}
                       if last else None)
    result["val_selected"] = ({k: best[k] for k in ("epoch", "val_top1", "val_top5")} if best else None)
    if complete and test is not None:
        t0 = time.perf_counter()
        result["final"]["test"] = _evaluate(qm, test)
        if best is not None:
            if best["epoch"] == last["epoch"]:
                result["val_selected"]["test"] = result["final"]["test"]
            else:
                qb = quantize(model, qcfg).eval()
                qb.load_state_dict(best["student"])
                qb.to(device)
                result["val_selected"]["test"] = _evaluate(qb, test)
        if fp_reference:
            result["fp"] = {"test": evaluate(model, test)}
            if val is not None:
                result["fp"]["val"] = evaluate(model, val)
        result["test_eval_seconds"] = round(time.perf_counter() - t0, 1)
    _atomic_write(out / RESULT, json.dumps(result, indent=1))
    return result


def _jsonable(v):
    return json.loads(json.dumps(v)) if v is not None else None


# --- data, samples, one-call cell ----------------------------------------------------------------------------------

def qat_splits(data_root: str | None = None, val_limit: int | None = 1000, seed: int = 0):
    """Return ``(val, test)``: a fixed random ``val_limit`` subset of the validation split (the last 500 train
    images of each class; ``None`` = all 5,000) and the full CIFAR-10 test split."""
    from .data import load_split, train_val_split

    val = train_val_split(data_root)[1]
    if val_limit is not None and val_limit < len(val):
        val = val.subset(torch.randperm(len(val), generator=torch.Generator().manual_seed(seed))[:val_limit])
    return val, load_split("test", data_root)


@torch.no_grad()
def export_generator_samples(generator: nn.Module, n: int, batch_size: int = 64, seed: int = 0,
                             labels: torch.Tensor | None = None, method: str = "generator",
                             checkpoint_sha256: str | None = None):
    """Return a :class:`~dsg_viz.generation.SampleSet` of ``n`` images [n, 3, H, W] (model input space) drawn from
    ``generator`` with uniform labels (or ``labels`` [n]), so they flow into diagnostics and calibration like any
    other sample set. The generator runs, as in training, with BN on batch statistics, on a copy (its running
    statistics are untouched)."""
    from . import __version__
    from .generation import SampleSet

    if n < 1 or batch_size < 2:
        raise ConfigError(f"n must be >= 1 and batch_size >= 2 (got {n}, {batch_size})")
    spec = generator.model_spec
    g = torch.Generator().manual_seed(seed)
    if labels is None:
        labels = torch.randint(0, spec.num_classes, (n,), generator=g)
    elif labels.shape != (n,):
        raise ConfigError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    gen = copy.deepcopy(generator).train()
    device = next(gen.parameters()).device
    t0 = time.perf_counter()
    imgs = []
    for s in range(0, n, batch_size):
        y = labels[s:s + batch_size]
        if len(y) == 1:  # BN in train mode needs two samples: pad and drop
            y = torch.cat([y, y])
        z = torch.randn(len(y), gen.latent_dim, generator=g)
        imgs.append(gen(z.to(device), y.to(device)).float().cpu()[:len(labels[s:s + batch_size])])
    return SampleSet(images=torch.cat(imgs), labels=labels.clone(), method=method,
                     config={"generator": generator.gen_spec.name, "output": generator.output,
                             "latent_dim": generator.latent_dim, "batch_size": batch_size},
                     seed=seed, model=spec.name, checkpoint_sha256=checkpoint_sha256, version=__version__,
                     seconds=time.perf_counter() - t0)


def load_generator(path: str | os.PathLike, model_spec=None) -> nn.Module:
    """Return the generator stored in a QAT ``checkpoint.pt`` (or run directory), rebuilt for ``model_spec``
    (default: the checkpoint's model)."""
    from .models import get_spec
    from .models.generator import create_generator

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise DataError(f"QAT checkpoint {path} does not exist; run 'dsg-viz qat' first")
    ck = torch.load(path, map_location="cpu", weights_only=False)
    cfg = ck["config"]
    gen = create_generator(model_spec or get_spec(ck["model"]), latent_dim=cfg["latent_dim"],
                           output=cfg["gen_output"], bn_eps=cfg["gen_bn_eps"])
    gen.load_state_dict(ck["generator"])
    return gen


def qat_cell(model: nn.Module, bits: str, cfg: QATConfig | None = None, *, out: str | os.PathLike | None = None,
             data_root: str | None = None, resume: bool = True, progress: bool = False,
             checkpoint_sha256: str | None = None) -> dict:
    """Run (or resume) QAT of ``model`` at ``bits`` and return a compare-style cell.

    ``{"top1", "top5", "n"}`` are the **final** epoch's test accuracy (no selection at all); ``"val_selected"``
    holds the epoch chosen on the validation split and its test accuracy. ``cfg`` defaults to the ``cpu`` preset;
    ``out`` (default: a temporary directory) keeps the checkpoints so an interrupted cell resumes.
    """
    cfg = replace(cfg or QAT_PRESETS["cpu"], bits=bits)
    val, test = qat_splits(data_root, cfg.val_limit, cfg.seed)
    with contextlib.ExitStack() as stack:
        if out is None:
            out = stack.enter_context(tempfile.TemporaryDirectory(prefix="dsg_viz_qat_"))
        r = train_qat(model, cfg, out, val=val, test=test, resume=resume, progress=progress,
                      log=(lambda *_: None), checkpoint_sha256=checkpoint_sha256)
    if not r["complete"]:
        raise KeyboardInterrupt("QAT cell interrupted")
    fin, sel = r["final"], r["val_selected"]
    return {"top1": fin["test"]["top1"], "top5": fin["test"]["top5"], "n": fin["test"]["n"],
            "final_epoch": fin["epoch"], "val_selected": sel, "generator": cfg.generator, "epochs": cfg.epochs,
            "iters": cfg.iters, "batch_size": cfg.batch_size, "seconds": r["seconds"],
            "convention": r["quantization"]}
