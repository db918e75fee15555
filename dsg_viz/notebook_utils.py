"""Helpers shared by the tutorial notebooks and the widget panels: the demo model, a (limited) test split, cached
sample sets, accuracy tables across sources, preset diffs and one-line conclusions under each diagnostic plot.

Notebooks define no functions of their own; everything they need beyond the library lives here. Nothing in this
module needs ipywidgets (the panels are in :mod:`dsg_viz.widgets`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import time
from dataclasses import asdict, fields, is_dataclass, replace
from types import ModuleType

import torch
import torch.nn as nn

from .errors import ConfigError

SMOKE_ENV = "DSG_VIZ_SMOKE"


def smoke_mode() -> bool:
    """Return True when ``$DSG_VIZ_SMOKE`` is ``"1"`` (notebooks shrink steps, samples and evaluation)."""
    return os.environ.get(SMOKE_ENV) == "1"


def load_demo_model(data_root: str | None = None, device: str | torch.device | None = None) -> nn.Module:
    """Return the JPEG-fine-tuned ResNet-20 of ``dsg-viz demo`` (``resnet20_cifar10`` +
    ``resnet20_cifar10_jpeg.pt`` under ``<data root>/models/cifar10``), in eval mode, on ``device`` (default CPU).

    Raises :class:`~dsg_viz.errors.DataError` / :class:`~dsg_viz.errors.CheckpointError` with a fix when the data
    root lacks the checkpoint.
    """
    from .compare import DEMO
    from .data import resolve_data_root
    from .errors import DataError
    from .models import create_model

    ckpt = resolve_data_root(data_root) / "models" / "cifar10" / DEMO["checkpoint_file"]
    if not ckpt.is_file():
        raise DataError(f"checkpoint {ckpt} not found; point DSG_VIZ_DATA_ROOT at the folder holding "
                        "models/cifar10/ (e.g. ../shared) before starting JupyterLab")
    model = create_model(DEMO["model"], str(ckpt))
    return model.to(device) if device is not None else model


def test_split(limit: int | None = None, data_root: str | None = None, seed: int = 0):
    """Return the CIFAR-10 test split, or a fixed random subset of ``limit`` images (the subset ``dsg-viz compare
    --eval-limit`` uses) for quick runs."""
    from .data import load_split

    split = load_split("test", data_root)
    if limit:
        idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:limit]
        split = split.subset(idx)
    return split


def sample_config(num_samples: int, steps: int | None, batch_size: int | None = None,
                  data_root: str | None = None, **overrides):
    """Return the :class:`~dsg_viz.compare.CompareConfig` that names the cached sample sets of a notebook."""
    from .compare import CompareConfig

    return CompareConfig(num_samples=num_samples, steps=steps, batch_size=batch_size, data_root=data_root,
                         seeds=1, **overrides)


def cached_samples(model: nn.Module, source: str, cfg, seed: int = 0, cache_dir: str | os.PathLike | None = None,
                   recompute: bool = False, progress: bool = True, log=print):
    """Return the sample set ``source`` (a preset or ``"real"``) for ``cfg`` (:func:`sample_config`) from the shared
    sample cache (:mod:`dsg_viz.cache`; ``cache_dir`` ``None`` = ``$DSG_VIZ_SAMPLE_CACHE``, else ``runs/cache/`` of
    this checkout), generating and caching it when missing. ``make demo``, ``dsg-viz compare`` and the widget panels
    use the same cache and key (model, checkpoint, the preset's full config, seed, version), so a set made by any of
    them with the same settings loads at once.

    Prints one line saying whether the set was loaded (and from where) or generated (and how long it took).
    ``recompute=True`` deletes the cached file first.
    """
    from .cache import get_or_generate
    from .compare import sample_overrides

    t0 = time.perf_counter()
    sha = getattr(model, "checkpoint_sha256", None)
    hit = get_or_generate(model, source, cfg.num_samples, seed, cache_dir=cache_dir, recompute=recompute,
                          data_root=cfg.data_root, checkpoint_sha256=sha, progress=progress,
                          **sample_overrides(cfg, source))
    s = hit.samples
    if hit.loaded:
        log(f"{source}: loaded {len(s)} samples from cache {hit.path} (made in {s.seconds:.0f} s; pass "
            "recompute=True or delete the file to regenerate)")
    else:
        log(f"{source}: generated {len(s)} samples in {time.perf_counter() - t0:.1f} s"
            + (f", cached in {hit.path}" if hit.path.is_file() else " (interrupted, not cached)"))
    return s


def quantize_sources(model: nn.Module, sample_sets: dict, cfg, test, fp: dict | None = None,
                     callback=None) -> dict:
    """Quantize, calibrate and evaluate ``model`` once per (source, bit width, method) of ``cfg``; return a results
    dict shaped like ``dsg-viz compare``'s (``fp``, ``cells``, ``table``, ``config``), so that
    :func:`dsg_viz.compare.results_markdown` and :func:`dsg_viz.compare.plot_accuracy` accept it.

    Args:
        sample_sets: ``{name: SampleSet}``; ``cfg.sources`` picks (and orders) the ones used.
        cfg: a :class:`~dsg_viz.compare.CompareConfig` (bits, calibration, weight range, convention, methods).
        test: the evaluation split (e.g. :func:`test_split`).
        fp: the full-precision result of ``evaluate(model, test)`` if already known.
        callback: ``callback(done, total, key)`` after each cell (progress bars).

    Each cell calls :func:`dsg_viz.compare.quantize_calibrate_eval`, the function ``dsg-viz compare`` calls.
    """
    from .compare import _cell_key, aggregate, quantize_calibrate_eval
    from .evaluate import evaluate

    if not cfg.sources:
        raise ConfigError("pick at least one sample source")
    missing = [s for s in cfg.sources if s not in sample_sets]
    if missing:
        raise ConfigError(f"no sample set named {', '.join(map(repr, missing))}; available: "
                          f"{', '.join(map(repr, sample_sets))}")
    if not cfg.bits:
        raise ConfigError("give at least one bit width, e.g. 'W4A4'")
    replace(cfg, sources=()).validate()  # bits, methods (sources may be any names here)
    if fp is None:
        fp = evaluate(model, test)
    todo = [(s, b, m) for s in cfg.sources for b in cfg.bits for m in cfg.methods]
    cells: dict = {}
    for i, (src, bits, method) in enumerate(todo):
        ss = sample_sets[src]
        seed = int(getattr(ss, "seed", 0) or 0)
        cell = quantize_calibrate_eval(model, ss.images, bits, cfg, test, method, seed)
        key = _cell_key(src, bits, seed, method)
        cells[key] = cell
        if callback is not None:
            callback(i + 1, len(todo), key)
    results = {"fp": fp, "cells": cells, "config": asdict(cfg)}
    results["table"] = aggregate(results, cfg)
    return results


def accuracy_rows(results: dict, method: str = "calib") -> list[dict]:
    """Return ``[{"source", "<bits>": top-1, ...}, ...]`` from a :func:`quantize_sources` results dict."""
    table = results["table"].get(method, {})
    return [{"source": src, **{b: round(v["mean"], 2) for b, v in row.items()}} for src, row in table.items()]


def plot_results(results: dict, cfg):
    """Return :func:`dsg_viz.compare.plot_accuracy` drawn on a non-pyplot figure (nothing kept alive globally,
    so a notebook shows it once)."""
    from matplotlib.figure import Figure

    from .compare import plot_accuracy

    fig = Figure(figsize=(1.6 + 1.8 * len(cfg.bits), 3.6))
    return plot_accuracy(results, cfg, ax=fig.add_subplot())


def _flat(obj, prefix: str = "") -> dict:
    out = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if is_dataclass(v):
            out.update(_flat(v, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = v
    return out


def preset_diff(*names: str, show_all: bool = False) -> str:
    """Return a Markdown table of the :data:`~dsg_viz.generation.PRESETS` fields that differ among ``names``
    (all fields with ``show_all``): the diff between ``zeroq+ce`` and ``dsg`` *is* the method."""
    from .generation import preset

    flats = [_flat(preset(n)) for n in names]
    keys = [k for k in flats[0] if show_all or len({repr(f[k]) for f in flats}) > 1]
    lines = ["| field | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| `{k}` | " + " | ".join(f"{f[k]}" for f in flats) + " |" for k in keys]
    return "\n".join(lines)


def score_line(summary: dict, key: str, contrast: tuple[str, str] = ("zeroq", "dsg"), digits: int = 3) -> str:
    """Return one Markdown line for a score of a :func:`~dsg_viz.diagnostics.summarize` summary: its value per
    source (and for N(0, 1) noise when known), then a conclusion: which of the two ``contrast`` sources is closer
    to the reference (real data). Made from the numbers, so it stays true in a smoke run."""
    from .diagnostics.metrics import SCORES

    label = SCORES.get(key, key)
    vals = {s: summary["scores"][s].get(key) for s in summary["sources"]}
    noise = summary.get("noise_reference", {}).get(key)
    fmt = (lambda v: "–" if v is None else f"{v:.{digits}g}")  # noqa: E731
    parts = [f"{s} {fmt(v)}" for s, v in vals.items()] + ([f"N(0,1) noise {fmt(noise)}"] if noise is not None
                                                          else [])
    line = f"**{label}**: " + " · ".join(parts)
    ref = summary.get("reference")
    a, b = contrast
    if ref is not None and vals.get(ref) is not None and vals.get(a) is not None and vals.get(b) is not None:
        da, db = abs(vals[a] - vals[ref]), abs(vals[b] - vals[ref])
        if abs(da - db) <= 1e-12 * max(1.0, abs(vals[ref])):
            line += f" → {a} and {b} are equally far from {ref}."
        else:
            near, far = (b, a) if db < da else (a, b)
            line += (f" → **{near}** is closer to {ref} than {far} "
                     f"(|Δ| {min(da, db):.{digits}g} vs {max(da, db):.{digits}g}).")
    return line


def optional_module(name: str) -> ModuleType | None:
    """Return the module ``name`` if this version of dsg_viz has it, else ``None`` (for notebook cells about
    features still being added: reconstruction, the generator, QAT)."""
    try:
        if importlib.util.find_spec(name) is None:
            return None
    except ModuleNotFoundError:
        return None
    return importlib.import_module(name)


def module_summary(module: ModuleType) -> str:
    """Return the first paragraph of ``module``'s docstring and its public names (``__all__``, else the classes and
    functions it defines), as Markdown."""
    doc = (module.__doc__ or "").strip().split("\n\n")[0]
    names = getattr(module, "__all__", None) or [
        n for n, v in vars(module).items()
        if not n.startswith("_") and callable(v) and getattr(v, "__module__", None) == module.__name__]
    return f"`{module.__name__}`: {doc}\n\nPublic names: " + ", ".join(f"`{n}`" for n in names)
