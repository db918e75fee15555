"""Sample generation by direct image optimization: configs, presets, the loop and saved sample sets.

``GenerationConfig`` is a frozen dataclass; :data:`PRESETS` holds the named variants side by side:

* ``zeroq``: the published ZeroQ objective and settings (BN + input statistics only, tiny-variance uniform start);
* ``zeroq+ce``: ZeroQ's BN alignment plus cross-entropy to random labels, TV and L2 priors and an N(0, 1) start
  — the shared base DSG's released code builds on; ``zeroq+ce+sda`` / ``+lse`` / ``+sci`` add one DSG component;
* ``dsg``: the paper's method on that base (noise-derived ε = 0.9 SDA margins, LSE weight 2, differentiable SCI),
  so the diff between ``zeroq+ce`` and ``dsg`` *is* the method;
* ``dsg-tuned``: ``dsg`` with the SDA margins scaled by 0.3 (the scale chosen on the validation subset);
* ``dsg-official``: the released code's settings.

Names that were renamed (``zeroq-original``, ``zeroq+sda``, ...) still work for one release with a
:class:`DeprecatedNameWarning` (see :data:`DEPRECATED_NAMES`). :func:`generate` runs Adam on the pixels of each batch
and returns a :class:`SampleSet` (images, labels, per-term loss history, margins, config).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn

from . import _faults, _io
from ._modes import eval_mode
from .bn import bn_targets, capture_bn, stats_copy
from .errors import ConfigError, DataError, DsgVizError
from .margins import compute_margins, load_margins
from .objectives import (BNAlignment, CorrelationInhibition, CrossEntropy, ImageL2, InputStats,
                         LayerwiseEnhancement, Margins, Objective, SlackBNAlignment, StepContext, TotalVariation)

INITS = ("gaussian", "uniform", "zeroq_uniform")
SCI_MODES = ("off", "intended", "offdiag", "faithful")
SCI_ON = ("pixels", "logits")
MARGIN_SOURCES = ("per_sample", "batch")
MARGIN_AXES = ("layer", "channel")
PRECISIONS = ("auto", "fp32", "bf16")
MAX_LR = 10.0  # generation learning rates above this diverge at once (the presets use 0.5 and 0.9)


@dataclass(frozen=True)
class MarginConfig:
    """How SDA margins are obtained (dsg-method.md §B.1, §G item 1). ``file`` overrides the computation."""

    quantile: float = 0.9
    source: str = "per_sample"  # "per_sample" | "batch"
    axis: str = "layer"  # "layer" | "channel"
    scale: float = 1.0
    file: str | None = None


@dataclass(frozen=True)
class GenerationConfig:
    """Settings of one generation run. Defaults are the shared base ``zeroq+ce`` of the DSG presets.

    Loss weights: ``bn`` (ZeroQ per-sample alignment, margin 0), ``sda`` (slack alignment), ``lse_weight`` (the
    diagonal weight of X_LSE; 1 = off), ``sci`` mode (:data:`SCI_MODES`) on ``sci_on`` (:data:`SCI_ON`: the pixels,
    as in the released code, or the logits) with weight ``sci_weight`` (``None`` = 1/L), ``input``, ``ce``, ``tv``
    and ``l2`` priors. ``plateau_patience=None`` keeps the learning rate constant.

    Speed switches (the loss is the same up to fp32 rounding; timings in docs/benchmarks.md "Speed"):
    ``fused_stats`` runs a frozen copy of the network whose BN layers compute the per-sample statistics in the
    same autograd node (:func:`dsg_viz.bn.stats_copy`) instead of forward pre-hooks; ``channels_last`` makes
    that copy NHWC. All off = the plain reference path.

    ``precision`` (:data:`PRECISIONS`): ``"bf16"`` runs the network's forward/backward under bf16 autocast, with
    the BN statistics and every loss term in fp32 (:class:`dsg_viz.bn.StatsBatchNorm2d`); ``"fp32"`` does not;
    ``"auto"`` (default) picks bf16 on the fused channels-last path where the device has native bf16 matrix
    units (AMX-BF16 CPUs, CUDA: :func:`dsg_viz._hw.native_bf16`), fp32 elsewhere — :func:`resolve_precision`.
    Accuracy parity of bf16-generated sets: docs/benchmarks.md "Generation speed". ``autocast_bf16=True`` is the
    deprecated spelling of ``precision="bf16"`` (mapped, with a ``FutureWarning``).

    ``compile=True`` runs the fused copy through ``torch.compile`` (inductor fuses the element-wise work around the
    convolutions; a C++ compiler is needed, and a failed compile falls back to eager with a warning). It pays only
    when the compile time is: docs/benchmarks.md "Generation speed" has both, cold and warm cache.
    """

    method: str = "custom"
    num_samples: int = 256
    batch_size: int = 64
    steps: int = 500
    lr: float = 0.5
    plateau_patience: int | None = 100  # ReduceLROnPlateau on the total loss; None = constant lr
    min_lr: float = 1e-4
    init: str = "gaussian"
    bn_weight: float = 1.0
    sda: bool = False
    margins: MarginConfig = field(default_factory=MarginConfig)
    lse_weight: float = 1.0
    lse_limit: int | None = None
    sci: str = "off"
    sci_weight: float | None = None
    sci_on: str = "pixels"
    input_weight: float = 1.0
    ce_weight: float = 1.0
    tv_weight: float = 0.01
    l2_weight: float = 0.01
    autocast_bf16: bool = False  # deprecated: precision="bf16"
    channels_last: bool = True
    fused_stats: bool = True
    precision: str = "auto"  # "auto" | "fp32" | "bf16"
    compile: bool = False  # torch.compile the fused copy (opt-in: minutes of compiling; docs/benchmarks.md)

    def __post_init__(self):
        if self.autocast_bf16:  # the old switch: map it, so equal settings give equal configs (and cache keys)
            if self.precision == "fp32":
                raise ConfigError("autocast_bf16=True contradicts precision='fp32'; use precision alone")
            warnings.warn("GenerationConfig(autocast_bf16=True) is deprecated; use precision='bf16'", FutureWarning,
                          stacklevel=3)
            object.__setattr__(self, "precision", "bf16")
            object.__setattr__(self, "autocast_bf16", False)

    def validate(self) -> None:
        """Raise :class:`ConfigError` on inconsistent values."""
        for name in ("num_samples", "batch_size", "steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ConfigError(f"{name} must be an integer (got {v!r})")
        if not isinstance(self.lr, (int, float)) or isinstance(self.lr, bool):
            raise ConfigError(f"lr must be a number (got {self.lr!r})")
        for name in ("lr", "min_lr", "bn_weight", "lse_weight", "input_weight", "ce_weight", "tv_weight", "l2_weight",
                     "sci_weight"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0 (got {v!r})")
        if self.lr > MAX_LR:
            raise ConfigError(f"lr {self.lr:g} is out of range (0, {MAX_LR:g}]: images are optimized in the model's "
                              "input space, where the presets use 0.5-0.9")
        for name in ("plateau_patience", "lse_limit"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise ConfigError(f"{name} must be None or an integer >= 0 (got {v!r})")
        if self.num_samples < 1 or self.batch_size < 1:
            raise ConfigError(f"num_samples and batch_size must be >= 1 (got {self.num_samples}, {self.batch_size})")
        if self.steps < 0:
            raise ConfigError(f"steps must be >= 0 (got {self.steps})")
        if self.init not in INITS:
            raise ConfigError(f"unknown init {self.init!r}; use one of {INITS}")
        if self.sci not in SCI_MODES:
            raise ConfigError(f"unknown SCI mode {self.sci!r}; use one of {SCI_MODES}")
        if self.sci_on not in SCI_ON:
            raise ConfigError(f"unknown sci_on {self.sci_on!r}; use one of {SCI_ON}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive (got {self.lr})")
        if self.lse_weight < 1:
            raise ConfigError(f"lse_weight must be >= 1 (1 = off), got {self.lse_weight}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; use one of {PRECISIONS}")
        m = self.margins
        if not isinstance(m, MarginConfig):
            raise ConfigError(f"margins must be a MarginConfig (got {type(m).__name__})")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (m.quantile, m.scale)):
            raise ConfigError(f"margin quantile and scale must be finite numbers (got {m.quantile!r}, {m.scale!r})")
        if not 0.0 < m.quantile <= 1.0:
            raise ConfigError(f"margin quantile must be in (0, 1] (got {m.quantile}); the paper uses 0.9")
        if m.source not in MARGIN_SOURCES or m.axis not in MARGIN_AXES:
            raise ConfigError(f"margin source/axis must be one of {MARGIN_SOURCES} / {MARGIN_AXES} "
                              f"(got {m.source!r}, {m.axis!r})")
        if m.scale < 0:
            raise ConfigError(f"margin scale must be >= 0 (got {m.scale})")


_BASE = GenerationConfig()
# SDA margin scale chosen on the validation subset (benchmarks/results_table.py --stage tune; docs/margins.md)
TUNED_MARGINS = MarginConfig(scale=0.3)
PRESETS: dict[str, GenerationConfig] = {
    # noise: N(0, 1) in the model's input space, no optimization
    "gaussian": replace(_BASE, method="gaussian", steps=0),
    # the published ZeroQ (Cai et al. 2020, its released distill_data.py; dsg-method.md §A.1, §C.1 last paragraph):
    # per-sample BN alignment + input statistics only, tiny-variance uniform init (randint(0,255)-127.5)/5418.75,
    # Adam lr 0.5, ReduceLROnPlateau patience 100 (min lr 1e-4), 500 steps; no CE, no image priors
    "zeroq": replace(_BASE, method="zeroq", init="zeroq_uniform", ce_weight=0.0, tv_weight=0.0, l2_weight=0.0),
    # the shared base DSG's released code builds on: ZeroQ's BN + input terms plus CE to random labels (weight 1),
    # TV (0.01) and L2 (0.01) priors, N(0, 1) init, Adam 0.5, patience 100 (= the GenerationConfig defaults)
    "zeroq+ce": replace(_BASE, method="zeroq+ce"),
    # the paper (§B): SDA with noise-derived margins (ε = 0.9 quantile of an N(0, 1) batch's per-sample deviations,
    # one scalar per layer, scale 1) + LSE (diagonal weight 2, a(j) = j mod L) + SCI (differentiable, weight 1/L),
    # on the zeroq+ce base: the diff zeroq+ce → dsg is the method
    "dsg": replace(_BASE, method="dsg", bn_weight=0.0, sda=True, lse_weight=2.0, sci="intended"),
    # dsg with the margins scaled by 0.3: the scale chosen on the validation subset (docs/margins.md); at scale 1 the
    # slack loss is ~0 from the first step on this testbed. Not the paper's setting.
    "dsg-tuned": replace(_BASE, method="dsg-tuned", bn_weight=0.0, sda=True, lse_weight=2.0, sci="intended",
                         margins=TUNED_MARGINS),
    # single-component ablations: the zeroq+ce base plus one DSG component, as in dsg
    "zeroq+ce+sda": replace(_BASE, method="zeroq+ce+sda", bn_weight=0.0, sda=True),
    "zeroq+ce+lse": replace(_BASE, method="zeroq+ce+lse", lse_weight=2.0),
    "zeroq+ce+sci": replace(_BASE, method="zeroq+ce+sci", sci="intended"),
    # the released code (dsg-method.md §C.1): lr 0.9, patience 260, U[0,1) init, batch 40, LSE ×2 before squaring
    # (= 4) on samples/layers < 20, SCI with no gradient, CE counted twice. Its margin files are not shipped: the
    # ε = 0.9 noise-derived margins at scale 1 stand in for them
    "dsg-official": replace(_BASE, method="dsg-official", lr=0.9, plateau_patience=260, init="uniform",
                            bn_weight=0.0, sda=True, lse_weight=4.0, lse_limit=20, sci="faithful", ce_weight=2.0,
                            batch_size=40),
}
# names of earlier releases → today's preset (same config). ``zeroq`` and ``dsg`` themselves changed meaning (the old
# ``zeroq`` is ``zeroq+ce``, the old ``dsg`` is ``dsg-tuned``; CHANGELOG.md), so they cannot warn.
DEPRECATED_NAMES: dict[str, str] = {
    "zeroq-original": "zeroq",
    "zeroq+sda": "zeroq+ce+sda",
    "zeroq+lse": "zeroq+ce+lse",
    "zeroq+sci": "zeroq+ce+sci",
}
METHODS = tuple(PRESETS) + ("real",)


class DeprecatedNameWarning(FutureWarning):
    """A preset was asked for by a name of an earlier release; the message names the new one."""


class _NotGiven:
    def __repr__(self) -> str:
        return "NOT_GIVEN"


# "option not given" for :func:`preset` overrides: ``None`` is a value some fields take (``plateau_patience=None``
# = constant lr, ``sci_weight=None`` = 1/L, ``lse_limit=None`` = no limit), so callers pass this instead
NOT_GIVEN = _NotGiven()


def resolve_method(name: str, warn: bool = True) -> str:
    """Return today's name of preset/source ``name``: a deprecated name maps to its replacement (with a
    :class:`DeprecatedNameWarning` naming it); an unknown name raises :class:`ConfigError` listing the choices."""
    if name in DEPRECATED_NAMES:
        new = DEPRECATED_NAMES[name]
        if warn:
            warnings.warn(f"generation method {name!r} is deprecated and will be removed in the next release; use "
                          f"{new!r} (same settings)", DeprecatedNameWarning, stacklevel=3)
        return new
    if name not in METHODS:
        raise ConfigError(f"unknown generation method {name!r}; choose one of: {', '.join(METHODS)}")
    return name


def preset(name: str, **overrides) -> GenerationConfig:
    """Return the preset ``name`` with ``overrides`` (:class:`GenerationConfig` fields) applied
    (``dataclasses.replace``), validated.

    Every given value is applied, ``None`` included (e.g. ``plateau_patience=None`` for a constant learning rate);
    a value of :data:`NOT_GIVEN` keeps the preset's own, so callers can pass options that were not given as is.
    A deprecated name (:data:`DEPRECATED_NAMES`) gives its replacement with a :class:`DeprecatedNameWarning`.
    """
    name = resolve_method(name)
    if name == "real":
        raise ConfigError("'real' is a sample source, not a generation preset; use make_samples or real_samples")
    given = {k: v for k, v in overrides.items() if v is not NOT_GIVEN}
    unknown = sorted(set(given) - set(GenerationConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"unknown GenerationConfig field(s) {', '.join(unknown)}")
    cfg = replace(PRESETS[name], **given)
    cfg.validate()
    return cfg


def build_objective(cfg: GenerationConfig, num_layers: int, margins: Margins | None) -> Objective:
    """Return the :class:`Objective` a config describes. ``margins`` are needed when ``cfg.sda``."""
    terms = []
    if cfg.bn_weight:
        terms.append((cfg.bn_weight, BNAlignment()))
    if cfg.sda:
        if margins is None:
            raise ConfigError("SDA needs margins")
        terms.append((1.0, SlackBNAlignment(margins)))
    if cfg.lse_weight != 1.0:
        terms.append((1.0, LayerwiseEnhancement(margins if cfg.sda else None, cfg.lse_weight, cfg.lse_limit)))
    if cfg.sci != "off":
        w = cfg.sci_weight if cfg.sci_weight is not None else 1.0 / num_layers
        terms.append((w, CorrelationInhibition(cfg.sci, cfg.sci_on)))
    terms += [(cfg.input_weight, InputStats()), (cfg.ce_weight, CrossEntropy()), (cfg.tv_weight, TotalVariation()),
              (cfg.l2_weight, ImageL2())]
    return Objective([(w, t) for w, t in terms if w != 0])


def resolve_precision(cfg: GenerationConfig, device: torch.device | str = "cpu") -> tuple[str, str]:
    """Return ``(precision, reason)``: the precision (``"fp32"`` or ``"bf16"``) :func:`generate` runs ``cfg`` in on
    ``device``, and why. ``"fp32"``/``"bf16"`` are taken as asked; ``"auto"`` gives bf16 only on the fused
    channels-last path and where :func:`dsg_viz._hw.native_bf16` finds native bf16 matrix units."""
    from ._hw import native_bf16

    if cfg.precision != "auto":
        return cfg.precision, "requested"
    if not (cfg.fused_stats and cfg.channels_last):
        return "fp32", "auto: bf16 is used only on the fused channels-last path"
    ok, why = native_bf16(device)
    return ("bf16" if ok else "fp32"), f"auto: {why}"


@dataclass
class SampleSet:
    """A generated (or real) sample set.

    Attributes:
        images: float32 [N, 3, H, W] in the model's input space.
        labels: int64 [N] (the sampled target labels; true labels for ``real``).
        method: preset name (``"gaussian"``, ``"zeroq"``, ``"dsg"``, ``"real"``...).
        config: ``asdict`` of the :class:`GenerationConfig` (empty for ``real``).
        margins: ``Margins.to_dict()`` or ``None``.
        history: ``{term: [[value per step] per batch]}``, including ``"total"``.
        seed, model, checkpoint_sha256, version, interrupted, seconds: provenance. ``interrupted=True`` marks a
            partial set (Ctrl-C during :func:`generate`): :meth:`load` refuses it unless ``allow_partial=True``.
        threads: ``torch.get_num_threads()`` when the set was made (images differ between thread counts; see
            :func:`generate`).
        snapshots: optional list of ``(batch, step, images)`` captured during optimization.
        precision: how the network ran: ``{"requested": cfg.precision, "resolved": "fp32"|"bf16", "reason": ...,
            "device": ...}`` (:func:`resolve_precision`); empty for ``real`` and for sets saved before it existed.
    """

    images: torch.Tensor
    labels: torch.Tensor
    method: str
    config: dict = field(default_factory=dict)
    margins: dict | None = None
    history: dict = field(default_factory=dict)
    seed: int = 0
    model: str = ""
    checkpoint_sha256: str | None = None
    version: str = ""
    interrupted: bool = False
    seconds: float = 0.0
    snapshots: list = field(default_factory=list)
    precision: dict = field(default_factory=dict)
    threads: int = 0

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def at(self, steps: int) -> "SampleSet":
        """Return the set as it stood after ``steps`` optimization steps of every batch, kept by
        ``generate(..., keep_steps=[..., steps, ...])``: the images, the loss history cut at ``steps`` and
        ``config["steps"] = steps``. The learning-rate schedule (ReduceLROnPlateau) never looks ahead, so this is
        exactly the set a ``steps``-step run with the same seed and thread count makes (``tests/test_generation.py``
        checks it bitwise). Kept images live in memory only; :meth:`save` does not write them."""
        kept = getattr(self, "_kept", {})
        if steps == self.config.get("steps"):
            return self
        if steps not in kept:
            raise ConfigError(f"no images kept at step {steps} (kept: {sorted(kept) or 'none'}); generate with "
                              f"keep_steps=[..., {steps}]")
        cfg = dict(self.config, steps=steps)
        hist = {k: [v[:steps] for v in per_batch] for k, per_batch in self.history.items()}
        return replace(self, images=kept[steps].clone(), config=cfg, history=hist, snapshots=[],
                       seconds=self.seconds * steps / max(self.config.get("steps") or 1, 1))

    def to_dict(self) -> dict:
        """Return the set as a plain dict (every field, plus ``"format": "dsg_viz.samples/1"``): what
        :meth:`save` writes with ``torch.save``."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["format"] = "dsg_viz.samples/1"
        return d

    def save(self, path: str | os.PathLike, grid: bool = True, mean=None, std=None) -> Path:
        """Write the set to ``path`` (``torch.save``, atomically) and, if ``grid``, a PNG grid beside it.

        Under ``torchrun`` every rank holds the same set and only rank 0 writes (the others return ``path``)."""
        from .distributed import context

        path = Path(path)
        if not context().is_main:
            return path
        _io.save(self.to_dict(), path)
        if grid and mean is not None:
            save_grid(self.images, path.with_suffix(".png"), mean, std)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, allow_partial: bool = False) -> "SampleSet":
        """Read a set written by :meth:`save` (``torch.load(weights_only=True)``: a file holding anything but tensors
        and plain containers is refused, since loading it could run code). A missing, corrupt or foreign file gives
        a clear :class:`DataError`; so does a partial set (interrupted generation) unless ``allow_partial``."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"sample file {str(path)!r} does not exist; create it with 'dsg-viz generate'")
        d = _io.load(path, "sample file", "regenerate it with 'dsg-viz generate'")
        if not isinstance(d, dict) or "images" not in d or "labels" not in d:
            raise DataError(f"sample file {str(path)!r} is not a dsg_viz sample set (needs keys 'images' and "
                            "'labels'); regenerate it with 'dsg-viz generate'")
        imgs, labels = d["images"], d["labels"]
        if not (isinstance(imgs, torch.Tensor) and imgs.ndim == 4 and imgs.shape[1] == 3 and imgs.is_floating_point()):
            raise DataError(f"sample file {str(path)!r}: 'images' must be a float tensor [N, 3, H, W], got "
                            f"{getattr(imgs, 'shape', type(imgs))}")
        if not isinstance(labels, torch.Tensor) or labels.shape != (imgs.shape[0],):
            raise DataError(f"sample file {str(path)!r}: 'labels' must be a tensor of {imgs.shape[0]} labels")
        if not torch.isfinite(imgs).all():
            raise DataError(f"sample file {str(path)!r} holds non-finite pixels; regenerate it")
        if d.get("interrupted") and not allow_partial:
            n = (d.get("config") or {}).get("num_samples", "?")
            raise DataError(f"sample file {str(path)!r} is a partial set (generation was interrupted: "
                            f"{imgs.shape[0]} of {n} samples, the last batch unfinished); regenerate it, or load it with "
                            "SampleSet.load(path, allow_partial=True) to inspect it")
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known.setdefault("method", "unknown")
        return cls(**known)

    def check_fit(self, model: nn.Module, allow_mismatch: bool = False, name: str | None = None) -> None:
        """Check that the set was made for ``model``: the input shape always; for optimized sets also the model
        name and the checkpoint SHA-256 (when both are known); ``real`` and ``gaussian`` sets only need the same
        input normalization. A mismatch raises :class:`DataError`, or with ``allow_mismatch`` (a deliberate
        cross-model study) warns with :class:`SampleMismatchWarning`; a wrong input shape always raises."""
        spec = model.spec
        what = f"sample set {name!r}" if name else f"{self.method} sample set"
        if tuple(self.images.shape[1:]) != tuple(spec.input_size):
            raise DataError(f"{what} holds {tuple(self.images.shape[1:])} images but {spec.name} takes "
                            f"{tuple(spec.input_size)}; use samples made for this model")
        problems = []
        if self.model and self.model != spec.name:
            if self.method in ("real", "gaussian"):
                from .models import get_spec

                try:
                    other = get_spec(self.model)
                    same_input = (tuple(other.mean), tuple(other.std)) == (tuple(spec.mean), tuple(spec.std))
                except Exception:  # noqa: BLE001 - an unknown model name
                    same_input = False
                if not same_input:
                    problems.append(f"it was drawn for {self.model} (another input normalization) and this model is "
                                    f"{spec.name}")
            else:
                problems.append(f"it was made for {self.model} and this model is {spec.name}")
        sha = getattr(model, "checkpoint_sha256", None)
        if (not problems and self.method not in ("real", "gaussian") and self.checkpoint_sha256 and sha
                and self.checkpoint_sha256 != sha):
            problems.append(f"it was made with checkpoint sha256 {self.checkpoint_sha256[:12]}… and this model's is "
                            f"{sha[:12]}…")
        if not problems:
            return
        msg = f"{what}: {'; '.join(problems)}"
        if allow_mismatch:
            warnings.warn(msg + " (allowed: --allow-mismatch)", SampleMismatchWarning, stacklevel=2)
            return
        raise DataError(msg + "; use samples made for this model and checkpoint, or pass --allow-mismatch "
                        "(allow_mismatch=True) for a deliberate cross-model study")


class SampleMismatchWarning(UserWarning):
    """A sample set is used with a model it was not made for (allowed explicitly)."""


def save_grid(images: torch.Tensor, path: str | os.PathLike, mean, std, nrow: int = 16, max_images: int = 128):
    """Write the first ``max_images`` images (model space) de-normalized as a PNG grid."""
    from torchvision.utils import save_image

    from .data import denormalize

    x = denormalize(images[:max_images].detach().float().cpu(), mean, std)
    with _io.atomic_path(path) as tmp:
        save_image(x, tmp, nrow=nrow, padding=1)


def _init_images(cfg: GenerationConfig, shape, g: torch.Generator) -> torch.Tensor:
    if cfg.init == "gaussian":
        return torch.randn(shape, generator=g)
    if cfg.init == "uniform":
        return torch.rand(shape, generator=g)
    return (torch.randint(0, 256, shape, generator=g).float() - 127.5) / 5418.75


class GenerationError(DsgVizError, RuntimeError):
    """Raised when the loss becomes NaN/Inf; names the batch, the step and the term(s)."""


def generate(model: nn.Module, cfg: GenerationConfig, seed: int = 0, margins: Margins | None = None,
             progress: bool = True, snapshot_every: int | None = None, checkpoint_sha256: str | None = None,
             callback=None, batches: list[int] | None = None, keep_steps=None) -> SampleSet:
    """Generate ``cfg.num_samples`` images for ``model`` by optimizing pixels, batch by batch.

    Args:
        model: a BN network built by :func:`dsg_viz.create_model` (its ``spec`` gives the input shape). It is
            not modified: weights get no gradients and its train/eval flag is restored.
        cfg: the generation config (see :data:`PRESETS`).
        seed: batch ``b`` uses ``seed * 1_000_003 + b``; same seed and same thread count
            (``torch.get_num_threads()``, recorded in the set) → bitwise-identical images on CPU. Different thread
            counts change the order of floating-point reductions, so the images differ (a mean absolute
            difference of 0.21 in the model's input space was measured between two thread counts); so do other
            devices.
        margins: SDA margins; computed from the model (``cfg.margins``) when ``None`` and ``cfg.sda``.
        snapshot_every: keep a copy of the first 16 images of each batch every this many steps.
        callback: ``callback(batch, step, values)`` called after each step (e.g. a live plot).
        batches: optimize only these batch indices (in this order); ``None`` = all. Under ``torchrun`` with
            several ranks (:mod:`dsg_viz.distributed`) and ``batches=None`` the batches are spread over the
            ranks and every rank returns the whole set — the same images as one process.
        keep_steps: step counts (each in ``1..cfg.steps``) after which a copy of every batch is kept in memory;
            :meth:`SampleSet.at` returns the set as it stood then (one run gives the whole steps curve).

    Returns a :class:`SampleSet`. A ``KeyboardInterrupt`` returns the batches finished so far plus the current
    batch as it stands, marked ``interrupted=True`` (a partial set: the cache never stores it, ``compare`` never
    calibrates on it, :meth:`SampleSet.load` refuses it by default). A NaN/Inf loss raises
    :class:`GenerationError` naming the batch, step and term(s).
    """
    from . import __version__
    from .distributed import context, generate_sharded

    cfg.validate()
    keep = sorted({int(k) for k in keep_steps or ()})
    if keep and (keep[0] < 1 or keep[-1] > cfg.steps):
        raise ConfigError(f"keep_steps must lie in 1..{cfg.steps} (the config's steps); got {keep}")
    if keep and context().enabled:
        raise ConfigError("keep_steps is not supported under torchrun; run it in one process")
    if batches is None and context().enabled:
        return generate_sharded(model, cfg, seed, margins=margins, progress=progress, snapshot_every=snapshot_every,
                                checkpoint_sha256=checkpoint_sha256, callback=callback)
    spec = model.spec
    device = next(model.parameters()).device
    targets = bn_targets(model)
    L = len(targets)
    if margins is None and cfg.sda:
        if cfg.margins.file:
            margins = load_margins(cfg.margins.file, model, cfg.margins.scale)
        else:
            mc = cfg.margins
            margins = compute_margins(model, cfg.batch_size, mc.quantile, mc.source, mc.axis, mc.scale, seed=seed)
    objective = build_objective(cfg, L, margins)
    names = objective.names + ["total"]
    history: dict[str, list[list[float]]] = {n: [] for n in names}
    images, labels, snapshots = [], [], []
    kept: dict[int, list] = {k: [] for k in keep}
    pending = None
    interrupted = False
    t0 = time.perf_counter()
    nb = math.ceil(cfg.num_samples / cfg.batch_size)
    todo = list(range(nb)) if batches is None else list(batches)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo) * max(cfg.steps, 1), desc=f"generate {cfg.method}", leave=False)
    prec, prec_reason = resolve_precision(cfg, device)
    # bf16: the network under autocast; statistics (StatsBatchNorm2d / per_sample_stats) and losses stay fp32
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if prec == "bf16" else contextlib.nullcontext()
    fused = cfg.fused_stats and cfg.steps > 0
    net, stat_layers = model, []
    if fused:  # a frozen copy: the caller's model keeps its modules, flags and memory format
        net, stat_layers = stats_copy(model, cfg.channels_last)
    elif cfg.channels_last and cfg.steps > 0:
        net = copy.deepcopy(model).to(memory_format=torch.channels_last)
        for p in net.parameters():
            p.requires_grad_(False)
    forward = torch.compile(net) if fused and cfg.compile else net  # statistics: module attributes, kept by dynamo
    try:
        with eval_mode(net):
            for b in todo:
                n = min(cfg.batch_size, cfg.num_samples - b * cfg.batch_size)
                g = torch.Generator().manual_seed(seed * 1_000_003 + b)
                x = _init_images(cfg, (n, *spec.input_size), g).to(device)
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = torch.randint(0, spec.num_classes, (n,), generator=g).to(device)
                for n_ in names:
                    history[n_].append([])
                if cfg.steps == 0:
                    images.append(x.detach().cpu())
                    labels.append(y.cpu())
                    if bar is not None:
                        bar.update(1)
                    continue
                x.requires_grad_(True)
                opt = torch.optim.Adam([x], lr=cfg.lr)
                sched = (torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=cfg.plateau_patience,
                                                                    min_lr=cfg.min_lr)
                         if cfg.plateau_patience is not None else None)
                try:
                    with contextlib.nullcontext() if fused else capture_bn(net, keep="stats") as cap:
                        for step in range(cfg.steps):
                            with amp:
                                try:
                                    logits = forward(x)
                                except Exception as e:  # noqa: BLE001 - a failed compile falls back to eager
                                    if forward is net:
                                        raise
                                    warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e)[:200]}); "
                                                  "generating without it", RuntimeWarning, stacklevel=2)
                                    forward = net
                                    logits = net(x)
                            stats = [m.stats for m in stat_layers] if fused else cap.stats
                            ctx = StepContext(x, logits.float(), y, stats, targets, noise=g)
                            loss, values = objective(ctx)
                            if _faults.hit("generate") == "nan":  # the reliability suite's NaN injection
                                values = dict(values)
                                k = next(iter(values))
                                values[k], loss = values[k] * math.nan, loss * math.nan
                            lv = loss.item()
                            if not math.isfinite(lv):
                                bad = [k for k, v in values.items() if not torch.isfinite(v).all()]
                                raise GenerationError(
                                    f"loss became {lv} at batch {b}, step {step} (term(s): {', '.join(bad) or 'total'}"
                                    "); lower the learning rate or that term's weight, or check the model's BN "
                                    "statistics")
                            (grad,) = torch.autograd.grad(loss, x)
                            x.grad = grad
                            opt.step()
                            if sched is not None:
                                sched.step(lv)
                            for k, v in values.items():
                                history[k][-1].append(v.item())
                            history["total"][-1].append(lv)
                            if snapshot_every and (step % snapshot_every == 0 or step == cfg.steps - 1):
                                snapshots.append((b, step, x.detach()[:16].cpu().contiguous().clone()))
                            if step + 1 in kept:
                                kept[step + 1].append(x.detach().float().cpu().contiguous().clone())
                            if callback is not None:
                                callback(b, step, values)
                            if bar is not None:
                                bar.update(1)
                finally:
                    pending = (x.detach().cpu().contiguous(), y.cpu())
                    for m in stat_layers:  # drop the last step's graph before the next batch
                        m.stats = None
                images.append(pending[0])
                labels.append(pending[1])
                pending = None
    except KeyboardInterrupt:
        interrupted = True
        if pending is not None:  # the batch being optimized, as it stands
            images.append(pending[0])
            labels.append(pending[1])
    finally:
        if bar is not None:
            bar.close()
    if not images:
        if todo:
            raise KeyboardInterrupt("generation interrupted before any batch existed")
        images, labels = [torch.empty(0, *spec.input_size)], [torch.empty(0, dtype=torch.int64)]  # a rank with no batch
    out = SampleSet(
        images=torch.cat(images).float(), labels=torch.cat(labels), method=cfg.method, config=asdict(cfg),
        margins=margins.to_dict() if margins is not None else None, history=history, seed=seed, model=spec.name,
        checkpoint_sha256=checkpoint_sha256, version=__version__, interrupted=interrupted,
        precision={"requested": cfg.precision, "resolved": prec, "reason": prec_reason, "device": str(device)},
        seconds=time.perf_counter() - t0, snapshots=snapshots, threads=torch.get_num_threads())
    if kept and not interrupted:
        out._kept = {k: torch.cat(v) for k, v in kept.items()}
    return out


def real_samples(model_name: str, n: int, seed: int = 0, data_root: str | None = None) -> SampleSet:
    """Return ``n`` real train images (never test, never the validation subset) as a :class:`SampleSet`
    (CIFAR-10 train images, or ImageNet ``train/`` images for ImageNet models: :func:`dsg_viz.data.sample_real`)."""
    from . import __version__
    from .data import normalize, sample_real
    from .models import get_spec

    spec = get_spec(model_name)
    split = sample_real(spec, n, seed, data_root)
    return SampleSet(images=normalize(split.images, spec.mean, spec.std), labels=split.labels, method="real",
                     seed=seed, model=model_name, version=__version__, threads=torch.get_num_threads())


def make_samples(model: nn.Module, method: str, num_samples: int, seed: int = 0, data_root: str | None = None,
                 progress: bool = True, checkpoint_sha256: str | None = None, **overrides) -> SampleSet:
    """Return a sample set of ``method`` (any preset or ``"real"``): the one entry point CLI, compare and widgets
    share. ``overrides`` are :class:`GenerationConfig` fields."""
    if method == "real":
        return real_samples(model.spec.name, num_samples, seed, data_root)
    cfg = preset(method, num_samples=num_samples, **overrides)
    return generate(model, cfg, seed=seed, progress=progress, checkpoint_sha256=checkpoint_sha256)
