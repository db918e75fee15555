"""Model registry: a name → builder map with a frozen :class:`ModelSpec` per model (timm/torchvision style)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from ..errors import ModelError

CIFAR_MEAN = (0.485, 0.456, 0.406)  # the akamaster checkpoints were trained with the ImageNet normalization
CIFAR_STD = (0.229, 0.224, 0.225)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """Metadata of a registered model.

    Attributes:
        name: registry name.
        input_size: (C, H, W) of one input image.
        mean, std: per-channel normalization that maps [0, 1] RGB to the model's input space.
        num_classes: number of output logits.
        num_bn: number of BatchNorm layers (``nn.BatchNorm2d``) in the network.
        dataset: dataset the model is meant for (``"cifar10"``, ``"imagenet"``, ``"synthetic"``).
        default_checkpoint: file name under ``<data-root>/models/<dataset>/`` if one is customary, else ``None``.
        checkpoint_url: published URL of that checkpoint, used by ``dsg-viz fetch``.
    """

    name: str
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    num_bn: int
    dataset: str
    default_checkpoint: str | None = None
    checkpoint_url: str | None = None


_REGISTRY: dict[str, tuple[ModelSpec, Callable[[], nn.Module]]] = {}


def register_model(spec: ModelSpec, builder: Callable[[], nn.Module]) -> None:
    """Register ``builder`` under ``spec.name``. Registering a name twice is an error."""
    if spec.name in _REGISTRY:
        raise ModelError(f"model name {spec.name!r} is already registered; pick another name")
    _REGISTRY[spec.name] = (spec, builder)


def list_models() -> list[str]:
    """Return the sorted names of all registered models."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """Return the :class:`ModelSpec` of ``name``."""
    try:
        return _REGISTRY[name][0]
    except KeyError:
        raise ModelError(
            f"unknown model {name!r}; choose one of: {', '.join(list_models())}"
        ) from None


def create_model(name: str, checkpoint: str | None = None) -> nn.Module:
    """Return a freshly built model ``name`` in eval mode, optionally loaded from ``checkpoint``.

    The returned module carries its spec as ``model.spec`` and the SHA-256 of ``checkpoint`` (``None`` without one)
    as ``model.checkpoint_sha256`` (the sample cache's key, :mod:`dsg_viz.cache`).
    """
    spec = get_spec(name)
    model = _REGISTRY[name][1]()
    model.spec = spec  # type: ignore[attr-defined]
    model.checkpoint_sha256 = None  # type: ignore[attr-defined]
    if checkpoint is not None:
        from .checkpoint import load_checkpoint, sha256_file

        load_checkpoint(model, checkpoint)
        model.checkpoint_sha256 = sha256_file(checkpoint)  # type: ignore[attr-defined]
    return model.eval()
