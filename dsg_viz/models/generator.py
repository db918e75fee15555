"""Conditional generators for generative data-free quantization (GDFQ; DSG's QAT variant, dsg-method.md §A.2, §C.2).

A small name → builder registry, in the style of the model registry:

* ``"gdfq_cifar"`` (:class:`CifarGenerator`): GDFQ's CIFAR design. ``z`` [B, latent] times a label embedding →
  linear to 128 × (H/4) × (W/4) → BN → upsample ×2 → conv 128→128, BN, LeakyReLU(0.2) → upsample ×2 →
  conv 128→64, BN, LeakyReLU(0.2) → conv 64→3 → tanh → output stage.
* ``"gdfq_imagenet"`` (:class:`ImageNetGenerator`): GDFQ's ImageNet design (224×224). The label enters only through
  categorical conditional BNs (per-class γ/β on top of an affine-free BN); ``z`` goes straight into the linear layer.

Both take the image size and number of classes from a :class:`~dsg_viz.models.ModelSpec` (H and W must be multiples
of 4: a 299-input InceptionV3 is not supported, as in the released code, §B.4 item 8). The BNs after the two
upsampling convs use ``eps = 0.8`` (GDFQ passes 0.8 as the positional ``eps``; §G item 14), configurable.

Output stage (``output``):

* ``"pixel"`` (default): ``tanh`` mapped to RGB [0, 1] and normalized with the model's ``mean``/``std``, so every
  image is a valid picture in the model's input space, in ``[(0 - mean) / std, (1 - mean) / std]`` per channel.
* ``"bn"``: GDFQ's released head, an affine-free ``BatchNorm2d(3)`` after ``tanh`` (each batch standardized per
  channel; no fixed range).

Generators are used in train mode (BN on batch statistics), as GDFQ does throughout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError, ModelError
from .registry import ModelSpec

OUTPUTS = ("pixel", "bn")
GDFQ_BN_EPS = 0.8


class PixelOutput(nn.Module):
    """Map ``tanh`` output in [-1, 1] to RGB [0, 1] and normalize: ``((t + 1) / 2 - mean) / std``, same shape."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return ((t + 1.0) * 0.5 - self.mean) / self.std


def _output_stage(output: str, spec: ModelSpec) -> nn.Module:
    if output == "pixel":
        return PixelOutput(spec.mean, spec.std)
    if output == "bn":
        return nn.BatchNorm2d(spec.input_size[0], affine=False)
    raise ConfigError(f"unknown generator output {output!r}; use one of {OUTPUTS}")


def _check_spec(spec: ModelSpec) -> tuple[int, int, int]:
    c, h, w = spec.input_size
    if h % 4 or w % 4:
        raise ModelError(f"model {spec.name!r} has input {h}×{w}; the GDFQ generators need H and W divisible by 4 "
                         "(two ×2 upsamplings from H/4 × W/4)")
    return c, h, w


class CifarGenerator(nn.Module):
    """GDFQ's CIFAR generator: ``G(z, y)`` → images [B, C, H, W] in the model's input space.

    Args:
        spec: the target model's spec (input size, classes, normalization).
        latent_dim: size of ``z`` (GDFQ: 100).
        output: ``"pixel"`` or ``"bn"`` (see the module docstring).
        bn_eps: eps of the BNs after the upsampling convs (GDFQ: 0.8).
    """

    def __init__(self, spec: ModelSpec, latent_dim: int = 100, output: str = "pixel", bn_eps: float = GDFQ_BN_EPS):
        super().__init__()
        c, h, w = _check_spec(spec)
        self.latent_dim, self.num_classes, self.output = latent_dim, spec.num_classes, output
        self.init_size = (h // 4, w // 4)
        self.label_emb = nn.Embedding(spec.num_classes, latent_dim)
        self.l1 = nn.Linear(latent_dim, 128 * self.init_size[0] * self.init_size[1])
        self.bn0 = nn.BatchNorm2d(128)
        self.conv1 = nn.Conv2d(128, 128, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(128, eps=bn_eps)
        self.conv2 = nn.Conv2d(128, 64, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(64, eps=bn_eps)
        self.conv3 = nn.Conv2d(64, c, 3, 1, 1)
        self.out = _output_stage(output, spec)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``z`` [B, latent_dim], ``labels`` int64 [B] → images [B, C, H, W]."""
        x = self.l1(self.label_emb(labels) * z).view(z.shape[0], 128, *self.init_size)
        x = F.interpolate(self.bn0(x), scale_factor=2)
        x = F.leaky_relu(self.bn1(self.conv1(x)), 0.2)
        x = F.interpolate(x, scale_factor=2)
        x = F.leaky_relu(self.bn2(self.conv2(x)), 0.2)
        return self.out(torch.tanh(self.conv3(x)))


class CategoricalConditionalBatchNorm2d(nn.Module):
    """Affine-free BN followed by a per-class scale and shift (embeddings initialized to 1 and 0).

    Input [B, C, H, W] and labels [B] → [B, C, H, W].
    """

    def __init__(self, num_classes: int, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, eps=eps, affine=False)
        self.weight = nn.Embedding(num_classes, num_features)
        self.bias = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.weight.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * self.weight(labels)[:, :, None, None] + self.bias(labels)[:, :, None, None]


class ImageNetGenerator(nn.Module):
    """GDFQ's ImageNet generator (``Generator_imagenet``): the label enters only through conditional BNs.

    ``z`` [B, latent_dim] → linear to 128 × (H/4) × (W/4) → CCBN → ×2 → conv 128→128, CCBN (eps 0.8),
    LeakyReLU → ×2 → conv 128→64, CCBN (eps 0.8), LeakyReLU → conv 64→3 → tanh → output stage. Arguments as
    :class:`CifarGenerator`.
    """

    def __init__(self, spec: ModelSpec, latent_dim: int = 100, output: str = "pixel", bn_eps: float = GDFQ_BN_EPS):
        super().__init__()
        c, h, w = _check_spec(spec)
        k = spec.num_classes
        self.latent_dim, self.num_classes, self.output = latent_dim, k, output
        self.init_size = (h // 4, w // 4)
        self.l1 = nn.Linear(latent_dim, 128 * self.init_size[0] * self.init_size[1])
        self.bn0 = CategoricalConditionalBatchNorm2d(k, 128)
        self.conv1 = nn.Conv2d(128, 128, 3, 1, 1)
        self.bn1 = CategoricalConditionalBatchNorm2d(k, 128, eps=bn_eps)
        self.conv2 = nn.Conv2d(128, 64, 3, 1, 1)
        self.bn2 = CategoricalConditionalBatchNorm2d(k, 64, eps=bn_eps)
        self.conv3 = nn.Conv2d(64, c, 3, 1, 1)
        self.out = _output_stage(output, spec)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``z`` [B, latent_dim], ``labels`` int64 [B] → images [B, C, H, W]."""
        x = self.l1(z).view(z.shape[0], 128, *self.init_size)
        x = F.interpolate(self.bn0(x, labels), scale_factor=2)
        x = F.leaky_relu(self.bn1(self.conv1(x), labels), 0.2)
        x = F.interpolate(x, scale_factor=2)
        x = F.leaky_relu(self.bn2(self.conv2(x), labels), 0.2)
        return self.out(torch.tanh(self.conv3(x)))


@dataclass(frozen=True)
class GeneratorSpec:
    """Metadata of a registered generator: ``name``, a one-line ``description``, the largest input side it is
    the default for (``max_side``)."""

    name: str
    description: str
    max_side: int


_GENERATORS: dict[str, tuple[GeneratorSpec, Callable[..., nn.Module]]] = {}


def register_generator(spec: GeneratorSpec, builder: Callable[..., nn.Module]) -> None:
    """Register ``builder(model_spec, latent_dim=, output=, bn_eps=)`` under ``spec.name``; duplicates are an error."""
    if spec.name in _GENERATORS:
        raise ModelError(f"generator name {spec.name!r} is already registered; pick another name")
    _GENERATORS[spec.name] = (spec, builder)


def list_generators() -> list[str]:
    """Return the sorted names of the registered generators."""
    return sorted(_GENERATORS)


def default_generator(model_spec: ModelSpec) -> str:
    """Return the name of the default generator for a model: the smallest ``max_side`` covering its input."""
    side = max(model_spec.input_size[1:])
    fits = sorted((s.max_side, s.name) for s, _ in _GENERATORS.values() if s.max_side >= side)
    if not fits:
        raise ModelError(f"no registered generator handles {side}-pixel inputs; register one")
    return fits[0][1]


def create_generator(model_spec: ModelSpec, name: str | None = None, latent_dim: int = 100, output: str = "pixel",
                     bn_eps: float = GDFQ_BN_EPS) -> nn.Module:
    """Return a freshly initialized generator ``name`` (default: :func:`default_generator`) for ``model_spec``,
    in train mode, carrying ``.gen_spec`` and ``.model_spec``."""
    if output not in OUTPUTS:
        raise ConfigError(f"unknown generator output {output!r}; use one of {OUTPUTS}")
    if latent_dim < 1:
        raise ConfigError(f"latent_dim must be >= 1 (got {latent_dim})")
    name = name or default_generator(model_spec)
    if name not in _GENERATORS:
        raise ModelError(f"unknown generator {name!r}; choose one of: {', '.join(list_generators())}")
    gspec, builder = _GENERATORS[name]
    g = builder(model_spec, latent_dim=latent_dim, output=output, bn_eps=bn_eps)
    g.gen_spec, g.model_spec = gspec, model_spec
    return g.train()


register_generator(GeneratorSpec("gdfq_cifar", "GDFQ CIFAR generator: label embedding × noise, BN, LeakyReLU, tanh",
                                 max_side=64), CifarGenerator)
register_generator(GeneratorSpec("gdfq_imagenet", "GDFQ ImageNet generator: conditional BNs, LeakyReLU, tanh",
                                 max_side=1024), ImageNetGenerator)
