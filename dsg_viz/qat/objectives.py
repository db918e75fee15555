"""The generator objectives of data-free QAT: GDFQ's batch-statistic alignment, DSG's slack form, presets
(see the package docstring for the formulas)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..bn import STAT_EPS, batch_stats, bn_layers, per_sample_stats  # noqa: F401
from ..errors import ConfigError
from ..margins import bn_inputs_eval, compute_margins  # noqa: F401
from ..objectives import (CorrelationInhibition, CrossEntropy, LayerwiseEnhancement, Margins, Objective, StepContext,
                          Term)

STATS = ("var", "std")
REDUCES = ("mean", "sum")
SDA_FORMS = ("off", "hinge", "abs")
LSE_MODES = ("off", "sample", "channel")
SCI_MODES = ("off", "intended", "offdiag", "faithful")


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
