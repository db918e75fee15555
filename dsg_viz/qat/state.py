"""Run-directory state of QAT: the resume check, the generator loader (checkpoints are written with
:func:`dsg_viz._io.save` and read with :func:`dsg_viz._io.load`, ``weights_only=True``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch.nn as nn

from .. import _io
from ..errors import DataError

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
RESULT = "result.json"


def _state_copy(module: nn.Module) -> dict:
    return {k: v.detach().clone().cpu() for k, v in module.state_dict().items()}


# settings a resumed run may change: only how far it goes
_RESUMABLE = ("epochs",)


def _jsonable(v):
    return json.loads(json.dumps(v)) if v is not None else None


def load_generator(path: str | os.PathLike, model_spec=None) -> nn.Module:
    """Return the generator stored in a QAT ``checkpoint.pt`` (or run directory), rebuilt for ``model_spec``
    (default: the checkpoint's model)."""
    from ..models import get_spec
    from ..models.generator import create_generator

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise DataError(f"QAT checkpoint {path} does not exist; run 'dsg-viz qat' first")
    ck = _io.load(path, "QAT checkpoint", "rerun 'dsg-viz qat'")
    try:
        cfg = ck["config"]
        gen = create_generator(model_spec or get_spec(ck["model"]), latent_dim=cfg["latent_dim"],
                               output=cfg["gen_output"], bn_eps=cfg["gen_bn_eps"])
        gen.load_state_dict(ck["generator"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise DataError(f"QAT checkpoint {path} is not a dsg_viz QAT checkpoint ({type(e).__name__}: {e}); "
                        "rerun 'dsg-viz qat'") from None
    return gen
