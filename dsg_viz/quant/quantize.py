"""``quantize(model, config)``: a fake-quantized deep copy of a model, switchable between FP and quantized modes.

:class:`QuantConfig` names the convention (dsg-method.md §D, §G item 13). The ``zeroq`` default is ZeroQ's:
per-channel asymmetric min/max weights on every conv and linear layer (first and last included, same bits),
per-tensor asymmetric activation quantizers after every ``nn.ReLU`` / ``nn.ReLU6`` module and nowhere else (so the
network input is not quantized), BN not folded, activation ranges from ``ema`` calibration. The caller's model is
never modified: BN statistics are the data source of data-free quantization, so everything happens on a copy.
"""

from __future__ import annotations

import contextlib
import copy
import re
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn

from ..errors import ConfigError
from .modules import QuantAct, QuantConv2d, QuantLinear
from .quantizer import ActQuantizer, WeightQuantizer, check_bits

CONVENTIONS = ("zeroq", "brecq")
ACT_METHODS = ("ema", "minmax", "percentile", "mse")
WEIGHT_METHODS = ("minmax", "mse")
GRANULARITIES = ("channel", "tensor")
MODES = ("fp", "weight", "full")
ACT_TYPES = (nn.ReLU, nn.ReLU6)

_ACT_METHOD_TEXT = {
    "ema": "ema = mean over samples of the per-sample min/max (ZeroQ)",
    "minmax": "global min/max",
    "percentile": "{p}th percentile",
    "mse": "upper clip searched over 80 candidates for the least L2 error",
}


def parse_bits(text: str) -> tuple[int, int]:
    """Return ``(w_bits, a_bits)`` from a string such as ``"W4A4"`` (case-insensitive, e.g. ``"w8a8"``)."""
    m = re.fullmatch(r"\s*[wW](\d+)\s*[aA](\d+)\s*", str(text))
    if m is None:
        raise ConfigError(f"cannot parse bit-widths {text!r}; write W<weight bits>A<activation bits>, "
                          "e.g. 'W4A4' or 'W8A8'")
    return check_bits(int(m.group(1)), "weight bits"), check_bits(int(m.group(2)), "activation bits")


def normalize_bits(text: str) -> str:
    """Return the one spelling of a bit-width string: ``" w4a4 "`` → ``"W4A4"`` (checked as :func:`parse_bits`)."""
    w, a = parse_bits(text)
    return f"W{w}A{a}"


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize a model. Defaults are ZeroQ's evaluation quantizer at W8A8 (dsg-method.md §G item 13).

    Attributes:
        w_bits, a_bits: weight / activation bit-widths, 2..16 (16 = sanity mode).
        w_granularity: ``"channel"`` (one range per output channel) or ``"tensor"``.
        w_symmetric: symmetric zero-point-free weight grid instead of ZeroQ's asymmetric one.
        w_method: weight range, ``"minmax"`` or ``"mse"`` (per-channel clipping search), computed once at quantize
            time from the weights.
        act_method: default activation calibration method of :func:`calibrate`: ``"ema"`` (mean of per-sample
            min/max), ``"minmax"``, ``"percentile"``, ``"mse"``.
        percentile: percentile (in %) used by ``act_method="percentile"``.
        convention: ``"zeroq"`` (all layers at the same bits) or ``"brecq"`` (first conv and last linear weights at
            8 bits, and the activation quantizer feeding the last linear at 8 bits).
        fold_bn: fold each BN that directly follows a conv into the conv (on the copy) before quantizing.
    """

    w_bits: int = 8
    a_bits: int = 8
    w_granularity: str = "channel"
    w_symmetric: bool = False
    w_method: str = "minmax"
    act_method: str = "ema"
    percentile: float = 99.99
    convention: str = "zeroq"
    fold_bn: bool = False

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` on out-of-range or unknown values."""
        check_bits(self.w_bits, "w_bits")
        check_bits(self.a_bits, "a_bits")
        for value, allowed, what in ((self.w_granularity, GRANULARITIES, "w_granularity"),
                                     (self.w_method, WEIGHT_METHODS, "w_method"),
                                     (self.act_method, ACT_METHODS, "act_method"),
                                     (self.convention, CONVENTIONS, "convention")):
            if value not in allowed:
                raise ConfigError(f"unknown {what} {value!r}; use one of {', '.join(map(repr, allowed))}")
        if not 0.0 < float(self.percentile) <= 100.0:
            raise ConfigError(f"percentile must be in (0, 100] (got {self.percentile}); 99.99 is the default")

    @classmethod
    def from_bits(cls, bits: str, **overrides) -> "QuantConfig":
        """Return a config for a ``"W4A4"``-style string, with other fields from ``overrides``."""
        w, a = parse_bits(bits)
        return cls(w_bits=w, a_bits=a, **overrides)

    @property
    def bits(self) -> str:
        """``"W<w_bits>A<a_bits>"``."""
        return f"W{self.w_bits}A{self.a_bits}"

    def describe(self) -> str:
        """Return a one-line, human-readable statement of the quantization convention, for reports."""
        sym = "symmetric" if self.w_symmetric else "asymmetric"
        rng = "min/max" if self.w_method == "minmax" else "MSE-clipped"
        layers = ("every conv and linear layer incl. first and last" if self.convention == "zeroq"
                  else "every conv and linear layer, first conv and last linear at 8 bits")
        last_act = "" if self.convention == "zeroq" else "; the activation feeding the last linear at 8 bits"
        act = _ACT_METHOD_TEXT[self.act_method].format(p=self.percentile)
        bn = "BN folded into the preceding conv" if self.fold_bn else "BN not folded"
        return (f"{self.bits} ({self.convention} convention): {self.w_bits}-bit per-{self.w_granularity} {sym} "
                f"{rng} weights on {layers}; {self.a_bits}-bit per-tensor asymmetric activations after every "
                f"ReLU/ReLU6, network input not quantized{last_act}; activation ranges: {act}; {bn}")


def describe(config: QuantConfig) -> str:
    """Return ``config.describe()``: one line stating the quantization convention."""
    return config.describe()


class QuantModel(nn.Module):
    """A quantized copy of a model that switches between full precision and quantized modes.

    Modes (:meth:`set_mode`): ``"fp"`` (no quantization; bit-exact with the float model unless BN was folded),
    ``"weight"`` (weights fake-quantized, activations float), ``"full"`` (weights and activations; needs
    :func:`calibrate` first). A new ``QuantModel`` starts in ``"full"``.

    Attributes:
        model: the quantized network (``QuantConv2d`` / ``QuantLinear`` / ``QuantAct`` in place of the originals).
        config: the :class:`QuantConfig` it was built with.
        spec: the original model's ``spec`` (``None`` if it had none), used by ``evaluate`` for normalization.
        folded: ``(conv_name, bn_name)`` pairs folded when ``config.fold_bn``.

    Input [B, C, H, W] in the model's (normalized) input space → logits [B, num_classes].
    """

    def __init__(self, model: nn.Module, config: QuantConfig, folded: tuple[tuple[str, str], ...] = ()):
        super().__init__()
        self.model = model
        self.config = config
        self.spec = getattr(model, "spec", None)
        self.folded = tuple(folded)
        self._mode = "full"
        self.set_mode("full")
        self.train(model.training)  # mirror the wrapped model (create_model returns eval-mode models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @property
    def mode(self) -> str:
        """The current mode: ``"fp"``, ``"weight"`` or ``"full"``."""
        return self._mode

    def set_mode(self, mode: str) -> "QuantModel":
        """Switch every quantizer on or off for ``mode`` and return ``self``."""
        if mode not in MODES:
            raise ConfigError(f"unknown quantization mode {mode!r}; use 'fp', 'weight' or 'full'")
        for q in self.weight_quantizers().values():
            q.enabled = mode in ("weight", "full")
        for q in self.act_quantizers().values():
            q.enabled = mode == "full"
        self._mode = mode
        return self

    @contextlib.contextmanager
    def using_mode(self, mode: str) -> Iterator["QuantModel"]:
        """Context manager: run in ``mode`` and restore the previous mode on exit (even on error)."""
        prev = self._mode
        self.set_mode(mode)
        try:
            yield self
        finally:
            self.set_mode(prev)

    def weight_quantizers(self) -> dict[str, WeightQuantizer]:
        """Return ``{layer_name: WeightQuantizer}`` in registration order."""
        return {n: m.weight_quantizer for n, m in self.model.named_modules()
                if isinstance(m, (QuantConv2d, QuantLinear))}

    def act_quantizers(self) -> dict[str, ActQuantizer]:
        """Return ``{activation_module_name: ActQuantizer}`` in registration order (shared modules once)."""
        return {n: m.quantizer for n, m in self.model.named_modules() if isinstance(m, QuantAct)}

    def act_ranges(self) -> dict[str, tuple[float, float] | None]:
        """Return ``{name: (x_min, x_max)}`` of each activation quantizer (``None`` if uncalibrated)."""
        return {n: ((q.x_min.item(), q.x_max.item()) if bool(q.calibrated) else None)
                for n, q in self.act_quantizers().items()}

    @property
    def is_calibrated(self) -> bool:
        """Whether every activation quantizer has a range."""
        return all(bool(q.calibrated) for q in self.act_quantizers().values())

    def describe(self) -> str:
        """Return the config's one-line convention statement."""
        return self.config.describe()

    def extra_repr(self) -> str:
        return f"mode={self._mode!r}, config={self.config.bits} {self.config.convention}"


def _swap_children(module: nn.Module, fn, memo: dict[int, nn.Module], prefix: str = "") -> None:
    """Replace, recursively, each child ``c`` named ``n`` for which ``fn(n, c)`` returns a module.

    A module registered under several names is replaced by the same new module everywhere (``memo``).
    """
    for cname, child in list(module.named_children()):
        full = prefix + cname
        if id(child) in memo:
            setattr(module, cname, memo[id(child)])
            continue
        new = fn(full, child)
        if new is not None:
            memo[id(child)] = new
            setattr(module, cname, new)
        else:
            _swap_children(child, fn, memo, full + ".")


@torch.no_grad()
def _fold_bn(model: nn.Module) -> list[tuple[str, str]]:
    """Fold each BN that directly follows a conv into that conv, in place; return the ``(conv, bn)`` names.

    Pairs are found structurally: a ``Conv2d`` immediately followed by a ``BatchNorm2d`` inside an
    ``nn.Sequential`` (torchvision downsample / Conv-BN-ReLU blocks), and sibling children named ``conv<k>`` /
    ``bn<k>`` (CIFAR and torchvision ResNets, stem included). The BN becomes ``nn.Identity``. Uses the BN running
    statistics: ``w' = w * g / sqrt(v + eps)``, ``b' = (b - m) * g / sqrt(v + eps) + beta`` per output channel.
    """
    pairs: list[tuple[nn.Module, str, nn.Conv2d, nn.BatchNorm2d, str, str]] = []
    for pname, parent in model.named_modules():
        prefix = pname + "." if pname else ""
        children = list(parent.named_children())
        if isinstance(parent, nn.Sequential):
            cand = [(a, b) for a, b in zip(children, children[1:])]
        else:
            named = dict(children)
            cand = [((("conv" + n[2:]), named["conv" + n[2:]]), (n, c)) for n, c in children
                    if n.startswith("bn") and ("conv" + n[2:]) in named]
        for (cn, conv), (bn_name, bn) in cand:
            if (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.running_mean is not None
                    and bn.num_features == conv.out_channels):
                pairs.append((parent, bn_name, conv, bn, prefix + cn, prefix + bn_name))
    done = []
    for parent, bn_attr, conv, bn, cname, bname in pairs:
        w = conv.weight.double()
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)  # [C_out]
        b = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
        new_b = (b - bn.running_mean.double()) * scale + bn.bias.double()
        conv.weight.copy_((w * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype))
        conv.bias = nn.Parameter(new_b.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
        setattr(parent, bn_attr, nn.Identity())
        done.append((cname, bname))
    return done


def quantize(model: nn.Module, config: QuantConfig | str | None = None) -> QuantModel:
    """Return a :class:`QuantModel` wrapping a fake-quantized deep copy of ``model`` (which is left untouched).

    Every ``nn.Conv2d`` / ``nn.Linear`` becomes a :class:`QuantConv2d` / :class:`QuantLinear` whose weight range
    is computed now from the (copied, possibly BN-folded) weights; every ``nn.ReLU`` / ``nn.ReLU6`` module becomes
    a :class:`QuantAct` (activation then an uncalibrated :class:`ActQuantizer`). An activation module called at
    several places shares one quantizer. "First conv" and "last linear" (``brecq`` convention) are the first and
    last conv/linear layers in module-registration order; "the activation feeding the last linear" is the last
    ReLU/ReLU6 registered before it.

    Args:
        model: a full-precision network (e.g. from ``create_model``); its ``spec`` is carried over.
        config: a :class:`QuantConfig`, a ``"W4A4"``-style string, or ``None`` (W8A8 ZeroQ defaults).
    """
    if config is None:
        config = QuantConfig()
    elif isinstance(config, str):
        config = QuantConfig.from_bits(config)
    elif not isinstance(config, QuantConfig):
        raise ConfigError(f"config must be a QuantConfig or a 'W4A4'-style string (got {type(config).__name__})")
    if isinstance(model, QuantModel) or any(isinstance(m, (QuantConv2d, QuantLinear, QuantAct))
                                            for m in model.modules()):
        raise ConfigError("model is already quantized; pass the full-precision model to quantize(), or use "
                          "qm.set_mode('fp') for full-precision outputs")
    qmodel = copy.deepcopy(model)
    folded = _fold_bn(qmodel) if config.fold_bn else []

    order = [(n, m) for n, m in qmodel.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear, *ACT_TYPES))]
    layers = [n for n, m in order if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not layers:
        raise ConfigError(f"model {type(model).__name__} has no nn.Conv2d or nn.Linear layer to quantize")
    eight_bit_layers: set[str] = set()
    eight_bit_acts: set[str] = set()
    if config.convention == "brecq":
        eight_bit_layers = {layers[0], layers[-1]}
        last_pos = max(i for i, (n, _) in enumerate(order) if n == layers[-1])
        before = [n for n, m in order[:last_pos] if isinstance(m, ACT_TYPES)]
        eight_bit_acts = set(before[-1:])
    device = next(iter(qmodel.parameters())).device

    def swap(name: str, m: nn.Module) -> nn.Module | None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            bits = 8 if name in eight_bit_layers else config.w_bits
            wq = WeightQuantizer(bits, config.w_granularity, config.w_symmetric, config.w_method, weight=m.weight)
            cls = QuantConv2d if isinstance(m, nn.Conv2d) else QuantLinear
            return cls.from_float(m, wq)
        if isinstance(m, ACT_TYPES):
            bits = 8 if name in eight_bit_acts else config.a_bits
            return QuantAct(m, ActQuantizer(bits, name=name).to(device))
        return None

    _swap_children(qmodel, swap, {})
    return QuantModel(qmodel, config, folded)

