"""Several processes with ``torch.distributed`` (gloo on CPU, NCCL on CUDA), launched by ``torchrun``.

``torchrun --nproc_per_node N -m dsg_viz generate|compare|qat ...`` runs N copies of a command; each copy calls
:func:`init` (the CLI does) and the library then shares the work:

* **generation** (:func:`dsg_viz.generation.generate`): batch ``b`` of a set is optimized by rank ``b mod N``
  with the seed ``seed · 1,000,003 + b`` it always has, so the images do not depend on the number of processes
  (1 and N ranks give bitwise-identical sets on CPU at the same thread count); every rank receives the whole set.
* **evaluation** (:func:`dsg_viz.evaluate.evaluate`): each rank scores a contiguous slice; the correct counts are
  summed with ``all_reduce``, so top-1/top-5 equal one process's exactly.
* **QAT** (:func:`dsg_viz.qat.train_qat`): the student is wrapped in ``DistributedDataParallel``; each rank
  trains on its slice of the global batch (see :mod:`dsg_viz.qat.loop`).

Only rank 0 writes files (atomically, after the whole result exists). A rank that raises sends its error to the
others at the next exchange (:func:`all_ok`), and every rank stops with :class:`DistributedError` naming it; a
rank that dies outright makes ``torchrun`` stop the group. Outside ``torchrun`` (no ``WORLD_SIZE``) everything is
a single process and nothing here does any communication.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from .errors import DsgVizError


class DistributedError(DsgVizError):
    """A rank failed; the message names the rank and its error."""


@dataclass(frozen=True)
class DistContext:
    """The process group as this process sees it: ``rank`` of ``world`` ranks, computing on ``device``."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """True when several ranks share the work."""
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the one that writes files and prints results."""
        return self.rank == 0


_CTX: DistContext | None = None


def context() -> DistContext:
    """Return the current :class:`DistContext` (a single CPU process unless :func:`init` set up a group)."""
    if _CTX is not None:
        return _CTX
    if torch.distributed.is_available() and torch.distributed.is_initialized():  # a group made by the caller
        return DistContext(torch.distributed.get_rank(), torch.distributed.get_world_size(),
                           torch.device("cpu"), torch.distributed.get_backend())
    return DistContext()


def launched() -> bool:
    """True when this process was started by ``torchrun`` with more than one rank (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device | str = "cpu", timeout_s: float = 1800.0) -> DistContext:
    """Join the ``torchrun`` process group (if launched with several ranks) and return the context.

    ``device`` is the resolved device of the command: on ``cuda`` rank ``r`` uses ``cuda:LOCAL_RANK`` and the NCCL
    backend; on ``cpu`` the gloo backend. Idempotent. ``timeout_s`` bounds every collective, so a rank that hangs
    fails the run instead of blocking it forever.
    """
    global _CTX
    device = torch.device(device)
    if not launched():
        _CTX = DistContext(device=device)
        return _CTX
    if _CTX is not None and _CTX.enabled:
        return _CTX
    import torch.distributed as dist

    if not dist.is_available():
        raise DistributedError("this PyTorch build has no torch.distributed; run without torchrun")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA device(s); "
                                   "use --nproc_per_node <= the number of GPUs")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    _CTX = DistContext(dist.get_rank(), dist.get_world_size(), device, backend)
    return _CTX


def shutdown() -> None:
    """Leave the process group (if any); the context returns to a single process."""
    global _CTX
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    _CTX = None


def _comm_device(ctx: DistContext) -> torch.device:
    return ctx.device if ctx.backend == "nccl" else torch.device("cpu")


def all_gather(obj, ctx: DistContext | None = None) -> list:
    """Return ``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in a single process)."""
    ctx = ctx or context()
    if not ctx.enabled:
        return [obj]
    out: list = [None] * ctx.world
    torch.distributed.all_gather_object(out, obj)
    return out


def all_ok(error: BaseException | None, ctx: DistContext | None = None) -> None:
    """Exchange success/failure: if any rank passes an error, raise :class:`DistributedError` on every rank."""
    ctx = ctx or context()
    if not ctx.enabled:
        if error is not None:
            raise error
        return
    msgs = all_gather(None if error is None else f"{type(error).__name__}: {error}", ctx)
    bad = [(r, m) for r, m in enumerate(msgs) if m is not None]
    if bad:
        detail = "; ".join(f"rank {r} failed: {m}" for r, m in bad)
        raise DistributedError(f"{detail} (nothing was written)") from error


def run_everywhere(fn, ctx: DistContext | None = None):
    """Call ``fn()`` on this rank, then :func:`all_ok`: a failure on any rank fails every rank, by name."""
    ctx = ctx or context()
    if not ctx.enabled:
        return fn()
    try:
        value = fn()
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - sent to the other ranks, then raised here as DistributedError
        all_ok(e, ctx)
        raise
    all_ok(None, ctx)
    return value


def sum_counts(counts: list[int], ctx: DistContext | None = None) -> list[int]:
    """All-reduce (sum) a list of integer counts; exact (int64)."""
    ctx = ctx or context()
    if not ctx.enabled:
        return list(counts)
    t = torch.tensor(counts, dtype=torch.int64, device=_comm_device(ctx))
    torch.distributed.all_reduce(t)
    return [int(v) for v in t.cpu().tolist()]


def shard_range(n: int, ctx: DistContext | None = None) -> range:
    """Contiguous slice ``[start, stop)`` of ``n`` items for this rank (balanced to within one item)."""
    ctx = ctx or context()
    start = n * ctx.rank // ctx.world
    stop = n * (ctx.rank + 1) // ctx.world
    return range(start, stop)


def strided(n: int, ctx: DistContext | None = None) -> list[int]:
    """Items ``rank, rank + world, ...`` of ``n`` (how generation assigns batches)."""
    ctx = ctx or context()
    return list(range(ctx.rank, n, ctx.world))


def generate_sharded(model, cfg, seed: int = 0, ctx: DistContext | None = None, **kwargs):
    """Generate ``cfg.num_samples`` images with the batches spread over the ranks; return the whole
    :class:`~dsg_viz.generation.SampleSet` on every rank (identical to a single process's at the same thread
    count: batch ``b`` always uses seed ``seed · 1,000,003 + b``)."""
    import math

    from dataclasses import replace

    from .generation import generate

    ctx = ctx or context()
    nb = math.ceil(cfg.num_samples / cfg.batch_size)
    mine = strided(nb, ctx)
    part = run_everywhere(lambda: generate(model, cfg, seed=seed, batches=mine, **kwargs), ctx)
    parts = all_gather(part, ctx)
    sizes = [min(cfg.batch_size, cfg.num_samples - b * cfg.batch_size) for b in range(nb)]
    imgs, labels = [], []
    history = {k: [] for k in parts[0].history}
    offsets = [0] * ctx.world
    for b in range(nb):
        r, j = b % ctx.world, b // ctx.world
        p = parts[r]
        imgs.append(p.images[offsets[r]:offsets[r] + sizes[b]])
        labels.append(p.labels[offsets[r]:offsets[r] + sizes[b]])
        offsets[r] += sizes[b]
        for k in history:
            history[k].append(p.history[k][j] if j < len(p.history.get(k, [])) else [])
    snaps = sorted((s for p in parts for s in p.snapshots), key=lambda s: (s[0], s[1]))
    return replace(parts[0], images=torch.cat(imgs), labels=torch.cat(labels), history=history,
                   interrupted=any(p.interrupted for p in parts), seconds=max(p.seconds for p in parts),
                   snapshots=snaps)
