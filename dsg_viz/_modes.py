"""One context manager for "run these models in eval mode, then put everything back": :func:`eval_mode`."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch.nn as nn

__all__ = ["eval_mode"]


@contextlib.contextmanager
def eval_mode(*models: nn.Module, freeze: bool = False) -> Iterator[None]:
    """Put ``models`` (every submodule) in eval mode for the block and restore each submodule's own training flag
    afterwards, even when the block raises. ``freeze=True`` also sets ``requires_grad=False`` on their parameters
    for the block and restores each parameter's flag."""
    flags = [(m, m.training) for model in models for m in model.modules()]
    grads = [(p, p.requires_grad) for model in models for p in model.parameters()] if freeze else []
    try:
        for model in models:
            model.eval()
        for p, _ in grads:
            p.requires_grad_(False)
        yield
    finally:
        for m, t in flags:
            m.training = t
        for p, g in grads:
            p.requires_grad_(g)
