"""Evaluation: top-1 / top-5 accuracy of a model on a decoded split, batched, under ``torch.inference_mode``."""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from . import _faults
from ._modes import eval_mode
from .data import Split, normalize


@torch.inference_mode()
def evaluate(model: nn.Module, split: Split, mean=None, std=None, batch_size: int = 100,
             progress: bool = False, channels_last: bool = False) -> dict:
    """Return ``{"top1", "top5", "n"}`` (percent) of ``model`` on ``split``.

    ``mean``/``std`` default to ``model.spec``'s. The model is run in eval mode on its own device; its
    training flag is restored afterwards. ``channels_last`` feeds NHWC batches (the model is not converted);
    faster on CPU, see docs/benchmarks.md "Speed". Under ``torchrun`` with several ranks
    (:mod:`dsg_viz.distributed`) each rank scores a contiguous slice and the correct counts are summed, so every
    rank returns the same numbers as one process.
    """
    spec = getattr(model, "spec", None)
    mean = mean if mean is not None else spec.mean
    std = std if std is not None else spec.std
    from .distributed import context, shard_range, sum_counts

    device = next(model.parameters()).device
    modes = contextlib.ExitStack()
    modes.enter_context(eval_mode(model))  # each module's training flag restored in `finally`
    correct1 = correct5 = 0
    n = len(split)
    ctx = context()
    mine = shard_range(n, ctx)  # all of it in one process; a contiguous slice per rank under torchrun
    starts = range(mine.start, mine.stop, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="evaluate", leave=False)
    try:
        for s in starts:
            _faults.hit("evaluate")
            e = min(s + batch_size, mine.stop)
            x = normalize(split.images[s:e], mean, std).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = split.labels[s:e].to(device)
            logits = model(x)
            k = min(5, logits.shape[1])
            topk = logits.topk(k, dim=1).indices
            hit = topk == y[:, None]
            correct1 += hit[:, 0].sum().item()
            correct5 += hit.any(1).sum().item()
    finally:
        modes.close()
    correct1, correct5 = sum_counts([correct1, correct5], ctx)  # exact: integer counts summed over ranks
    return {"top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n, "n": n}
