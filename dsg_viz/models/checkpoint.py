"""One checkpoint loader for the published ``.th`` format, the project's ``.pt`` format and plain state dicts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import CheckpointError, DataError


def sha256_file(path: str | Path) -> str:
    """Return the hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_state_dict(path: str | Path, weights_only: bool = True) -> dict[str, torch.Tensor]:
    """Return the state dict stored in ``path`` on the CPU, with any ``module.`` prefix removed.

    Accepts ``{"state_dict": ...}`` (akamaster ``.th``, project ``.pt``), ``{"model": ...}`` and bare state dicts.
    Every file is read with PyTorch's safe loader (``torch.load(weights_only=True)``: tensors and plain containers
    only, :func:`dsg_viz._io.load`); the published checkpoints are such files. A file holding other Python objects
    (e.g. a whole pickled ``nn.Module``) is refused with :class:`CheckpointError`, since loading it could run
    code: save ``model.state_dict()`` instead. ``weights_only`` is kept for compatibility and must stay ``True``.
    """
    from .. import _io

    path = Path(path)
    if not weights_only:
        raise CheckpointError("checkpoints are read with weights_only=True only (a pickled object could run code)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; pass an existing file to --checkpoint "
                              "(run 'dsg-viz fetch' to download the published ones)")
    try:
        obj = _io.load(path, "checkpoint", "is it a PyTorch state dict? Save model.state_dict() with torch.save",
                       error=CheckpointError)
    except DataError as e:  # unreadable, or unsafe (holds other Python objects)
        raise CheckpointError(f"cannot read checkpoint: {e}") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {str(path)!r} holds no state dict of tensors")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_checkpoint(model: nn.Module, path: str | Path, weights_only: bool | None = None) -> nn.Module:
    """Load ``path`` into ``model`` in place and return it.

    Missing ``num_batches_tracked`` buffers are tolerated (the published ``.th`` files lack them); any other
    missing/unexpected key or shape mismatch raises :class:`CheckpointError` naming the keys. The file is read
    with ``torch.load(weights_only=True)`` (:func:`read_state_dict`); ``weights_only`` is kept for compatibility
    (``None`` or ``True``).
    """
    sd = read_state_dict(path, True if weights_only is None else weights_only)
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    shape = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in sd and sd[k].shape != v.shape]
    name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:4]}{'...' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}")
        if shape:
            parts.append(f"shape mismatch {shape[:3]}")
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not fit model {name!r} ({'; '.join(parts)}); "
            "pick the --model that matches the checkpoint's architecture")
    for k, v in own.items():
        if k not in sd:
            sd[k] = v
    model.load_state_dict({k: sd[k] for k in own})
    return model
