"""Helpers shared by the tutorial notebooks and the widget panels: the demo model, a (limited) test split, cached
sample sets, accuracy tables across sources, preset diffs, one-line conclusions under each diagnostic plot, the
notebooks' ``SETTINGS`` switch and a progress line for long cells.

Notebooks define no functions of their own; everything they need beyond the library lives here. Nothing in this
module needs ipywidgets (the panels are in :mod:`dsg_viz.widgets`). Progress in a notebook is a text line updated in
place through an IPython display handle (:class:`CellProgress`), never a ``tqdm.auto`` widget: a widget bar that is
closed while the output still refers to it shows "Error displaying widget: model not found" in JupyterLab.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import time
from dataclasses import asdict, fields, is_dataclass, replace
from types import ModuleType

import torch
import torch.nn as nn

from .errors import ConfigError

SMOKE_ENV = "DSG_VIZ_SMOKE"
SETTINGS_ENV = "DSG_VIZ_SETTINGS"
SETTINGS = ("quick", "paper")

# Measured wall time of each notebook from a cold and a warm sample cache, per settings, on 2 CPU cores
# (benchmarks/bench_notebooks.py; docs/benchmarks.md "Notebooks" says the machine, its load and the command).
# quick: the median of 3 runs; paper: estimated from the measured cost of its parts (see docs/benchmarks.md).
EXPECTED_TIMES = {
    "00_quickstart": {"quick": (None, None), "paper": (None, None)},
    "01_bn_statistics": {"quick": (None, None), "paper": (None, None)},
    "02_zeroq_vs_dsg": {"quick": (None, None), "paper": (None, None)},
    "03_homogenization": {"quick": (None, None), "paper": (None, None)},
    "04_quantize": {"quick": (None, None), "paper": (None, None)},
    "05_ablation_and_beyond": {"quick": (None, None), "paper": (None, None)},
}


def smoke_mode() -> bool:
    """Return True when ``$DSG_VIZ_SMOKE`` is ``"1"`` (notebooks shrink steps, samples and evaluation)."""
    return os.environ.get(SMOKE_ENV) == "1"


def settings_mode(settings: str) -> str:
    """Return the mode a notebook runs in: ``"smoke"`` when ``$DSG_VIZ_SMOKE`` is ``"1"`` (tests, the docs build: a
    few steps), else ``settings`` (``"quick"`` or ``"paper"``; :class:`ConfigError` for anything else)."""
    if smoke_mode():
        return "smoke"
    if settings not in SETTINGS:
        raise ConfigError(f"SETTINGS must be 'quick' or 'paper' (got {settings!r})")
    return settings


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "not measured yet"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds >= 600 else \
        f"{seconds / 60:.1f} min"


def announce(notebook: str, mode: str, what: str = "", log=print) -> None:
    """Print (to ``log``) one line saying which settings a notebook runs with and how long that is expected to take
    on 2 CPU cores from a cold and from a warm sample cache (:data:`EXPECTED_TIMES`, measured by
    ``benchmarks/bench_notebooks.py``). ``what`` describes the sizes (e.g. ``"128 samples × 200 steps"``)."""
    if mode == "smoke":
        line = "smoke mode (DSG_VIZ_SMOKE=1): a few steps and images only, so that tests and the docs build run fast"
    else:
        cold, warm = recorded_times(notebook, mode) or EXPECTED_TIMES.get(notebook, {}).get(mode, (None, None))
        name = {"quick": "quick settings", "paper": "the paper's settings"}[mode]
        line = (f"SETTINGS = {mode!r}: {name}" + (f" ({what})" if what else "")
                + f". Expected on 2 CPU cores: {_minutes(cold)} from a cold sample cache, {_minutes(warm)} when the "
                  "sets are already cached (docs/benchmarks.md, \"Notebooks\").")
        if mode == "quick":
            line += " SETTINGS = \"paper\" runs the paper's settings."
    log(line)


def _in_kernel() -> bool:
    """Return True inside a Jupyter kernel (an IPython shell with a kernel attached)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with the notebooks extra
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


class CellProgress:
    """One progress line under a notebook cell: plain text updated in place through an IPython display handle
    (``display(..., display_id=True)`` then ``update``), at most every ``interval`` seconds, ending as a one-line
    summary (:meth:`close`). No widget is involved, so JupyterLab, nbclient and the static docs pages all show the
    same text and nothing can turn into "Error displaying widget". The line appears at the first :meth:`update`
    (a set loaded from the cache shows none). Outside a Jupyter kernel nothing is shown until :meth:`close`, which
    passes the summary to ``log``.

    Args:
        label: what is running (e.g. ``"dsg: generating 128 samples"``).
        total: the count :meth:`update` goes to.
        unit: the name of one count (``"steps"``, ``"cells"``).
        interval: seconds between two redraws.
        log: where :meth:`close` writes outside a kernel (and inside one when the line never appeared).
    """

    WIDTH = 24

    def __init__(self, label: str, total: int, unit: str = "steps", interval: float = 0.5, log=print):
        self.label, self.total, self.unit, self.interval, self.log = label, max(1, int(total)), unit, interval, log
        self.t0 = time.perf_counter()
        self.done = 0
        self.handle = None
        self._last = -1e9
        self._kernel = _in_kernel()

    @property
    def elapsed(self) -> float:
        """Seconds since the progress line was created."""
        return time.perf_counter() - self.t0

    def text(self, done: int, note: str = "") -> str:
        """Return the progress line for ``done`` of ``total`` (bar, count, elapsed and remaining time, note)."""
        frac = min(1.0, max(0.0, done / self.total))
        fill = int(round(frac * self.WIDTH))
        el = time.perf_counter() - self.t0
        left = f", ~{el / frac - el:.0f} s left" if 0 < frac < 1 and el > 2 else ""
        return (f"{self.label}  ▕{'█' * fill}{'░' * (self.WIDTH - fill)}▏ {done}/{self.total} {self.unit} · "
                f"{el:.0f} s{left}" + (f" · {note}" if note else ""))

    def update(self, done: int, note: str = "", force: bool = False) -> None:
        """Show ``done`` of ``total`` (with ``note``); redrawn at most every ``interval`` seconds unless ``force``."""
        self.done = done
        now = time.perf_counter()
        if not self._kernel or (not force and now - self._last < self.interval and done < self.total):
            return
        self._last = now
        bundle = {"text/plain": self.text(done, note)}
        if self.handle is None:
            from IPython.display import display

            self.handle = display(bundle, raw=True, display_id=True)
        else:
            self.handle.update(bundle, raw=True)

    def close(self, text: str) -> None:
        """Replace the line by ``text`` (the summary); ``log(text)`` if the line never appeared."""
        if self.handle is not None:
            self.handle.update({"text/plain": text}, raw=True)
        else:
            self.log(text)


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

    Writes one line saying whether the set was loaded (and from where) or generated (and how long it took). While a
    set is generated, ``progress=True`` shows a :class:`CellProgress` line (steps done, time left, current loss)
    that then becomes that summary line. ``recompute=True`` deletes the cached file first.
    """
    from . import cache
    from .compare import sample_overrides

    t0 = time.perf_counter()
    sha = getattr(model, "checkpoint_sha256", None)
    overrides = sample_overrides(cfg, source)
    bar, callback = None, None
    if progress and source != "real":
        from .generation import preset

        gcfg = preset(source, num_samples=cfg.num_samples, **overrides)
        if gcfg.steps:
            nb = -(-gcfg.num_samples // gcfg.batch_size)
            bar = CellProgress(f"{source}: generating {gcfg.num_samples} samples", nb * gcfg.steps, "steps", log=log)

            def on_step(b, step, values):
                done = b * gcfg.steps + step + 1
                if done == bar.total or time.perf_counter() - bar._last >= bar.interval:
                    loss = sum(float(v) for v in values.values())
                    bar.update(done, f"batch {b + 1}/{nb}, loss {loss:.4g}")

            callback = on_step

    hit = cache.get_or_generate(model, source, cfg.num_samples, seed, cache_dir=cache_dir, recompute=recompute,
                                data_root=cfg.data_root, checkpoint_sha256=sha, progress=False, callback=callback,
                                **overrides)
    s = hit.samples
    if hit.loaded:
        line = (f"{source}: loaded {len(s)} samples from cache {hit.path} (made in {s.seconds:.0f} s; pass "
                "recompute=True or delete the file to regenerate)")
    else:
        line = (f"{source}: generated {len(s)} samples in {time.perf_counter() - t0:.1f} s"
                + (f", cached in {hit.path}" if hit.path.is_file() else " (interrupted, not cached)"))
    if bar is not None and bar.handle is not None:
        bar.close(line)
    else:
        log(line)
    return s


def quantize_sources(model: nn.Module, sample_sets: dict, cfg, test, fp: dict | None = None,
                     callback=None, progress: bool = True, log=print) -> dict:
    """Quantize, calibrate and evaluate ``model`` once per (source, bit width, method) of ``cfg``; return a results
    dict shaped like ``dsg-viz compare``'s (``fp``, ``cells``, ``table``, ``config``), so that
    :func:`dsg_viz.compare.results_markdown` and :func:`dsg_viz.compare.plot_accuracy` accept it.

    Args:
        sample_sets: ``{name: SampleSet}``; ``cfg.sources`` picks (and orders) the ones used.
        cfg: a :class:`~dsg_viz.compare.CompareConfig` (bits, calibration, weight range, convention, methods).
        test: the evaluation split (e.g. :func:`test_split`).
        fp: the full-precision result of ``evaluate(model, test)`` if already known.
        callback: ``callback(done, total, key)`` after each cell (progress bars).
        progress: show a :class:`CellProgress` line (cells done, the last cell's top-1, reconstruction steps), which
            ends as a one-line summary; ``log`` gets that line outside a notebook.

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
    for src in cfg.sources:  # never calibrate on a partial set, nor on one made for another model/checkpoint
        ss = sample_sets[src]
        if getattr(ss, "interrupted", False):
            raise ConfigError(f"sample set {src!r} is partial (its generation was interrupted); generate it again")
        if hasattr(ss, "check_fit"):
            ss.check_fit(model, name=src)
    todo = [(s, b, m) for s in cfg.sources for b in cfg.bits for m in cfg.methods]
    n_test = len(test)
    bar = CellProgress(f"quantize, calibrate, evaluate on {n_test:,} test images", len(todo) + (fp is None),
                       "cells", log=log) if progress else None
    last, k = "", 0
    if fp is None:
        if bar is not None:
            bar.update(0, "full precision…", force=True)
        fp = evaluate(model, test)
        last, k = f"FP {fp['top1']:.2f} %", 1
    cells: dict = {}
    for i, (src, bits, method) in enumerate(todo):
        ss = sample_sets[src]
        seed = int(getattr(ss, "seed", 0) or 0)
        key = _cell_key(src, bits, seed, method)
        here = f"{method} {src} {bits}"
        k0 = i + k
        extra = {}
        if method in ("adaround", "brecq"):  # no tqdm bars; the progress line names the unit instead
            extra["progress"] = False
        if bar is not None:
            bar.update(k0, f"{here}…" + (f" (last: {last})" if last else ""), force=True)
            if method in ("adaround", "brecq"):
                extra["callback"] = (lambda unit, it, _loss, here=here, k0=k0:
                                     bar.update(k0, f"{here}: reconstructing {unit}, step {it + 1}"))
        cell = quantize_calibrate_eval(model, ss.images, bits, cfg, test, method, seed, **extra)
        cells[key] = cell
        last = f"{here} {cell['top1']:.2f} %"
        if callback is not None:
            callback(i + 1, len(todo), key)
    if bar is not None:
        bar.close(f"quantized, calibrated and evaluated {len(todo)} cell(s) on {n_test:,} test images in "
                  f"{time.perf_counter() - bar.t0:.0f} s")
    results = {"fp": fp, "cells": cells, "config": asdict(cfg)}
    results["table"] = aggregate(results, cfg)
    return results


def accuracy_rows(results: dict, method: str = "calib") -> list[dict]:
    """Return ``[{"source", "<bits>": top-1, ...}, ...]`` from a :func:`quantize_sources` results dict."""
    table = results["table"].get(method, {})
    return [{"source": src, **{b: round(v["mean"], 2) for b, v in row.items()}} for src, row in table.items()]


def results_table(results: dict, cfg) -> str:
    """Return :func:`dsg_viz.compare.results_markdown` with its headings turned into bold lines, so that a table
    under a notebook cell does not show a page-size title."""
    from .compare import results_markdown

    out = []
    for line in results_markdown(results, cfg).splitlines():
        if line.startswith("## "):
            line = f"*{line[3:].strip()}*"
        elif line.startswith("# "):
            line = f"**{line[2:].strip()}**"
        out.append(line)
    return "\n".join(out)


def plot_results(results: dict, cfg):
    """Return :func:`dsg_viz.compare.plot_accuracy` drawn on a non-pyplot figure (nothing kept alive globally,
    so a notebook shows it once), with the legend outside the axes (it never covers a bar), each source in its
    colour of the diagnostics plots (:func:`~dsg_viz.diagnostics.plots.source_colors`) and the number of test images
    on the y axis."""
    from matplotlib.figure import Figure

    from .compare import plot_accuracy

    from matplotlib.container import BarContainer

    from .diagnostics.plots import source_colors

    fig = Figure(figsize=(3.2 + 1.5 * len(cfg.bits), 3.4))
    ax = fig.add_subplot()
    plot_accuracy(results, cfg, ax=ax)
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    colors = source_colors([c.get_label() for c in bars])  # the colours of every diagnostics plot
    for c in bars:
        for patch in c.patches:
            patch.set_facecolor(colors[c.get_label()])
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_ylabel(f"top-1 (%) on {results['fp']['n']:,} test images")
    fig.tight_layout()
    return fig


def accuracy_se(n_images: int, top1: float = 85.0) -> float:
    """Return one standard error, in points, of a top-1 accuracy of ``top1`` % measured on ``n_images`` images
    (binomial): about 0.8 points on 2,000 images and 0.36 on 10,000 at 85 %."""
    p = min(max(top1 / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1.0 - p) / max(1, n_images))


def verdict(delta: float, n_images: int, top1: float = 85.0) -> str:
    """Return how to read a difference of ``delta`` points between two accuracies on the same ``n_images`` test
    images: within one standard error (:func:`accuracy_se`) it is noise, within two it is suggestive at most, beyond
    that it is a clear difference *in this run* (another seed of the sample sets can still move it)."""
    se = accuracy_se(n_images, top1)
    if abs(delta) < se:
        return f"within the noise (one standard error on {n_images:,} test images is ±{se:.2f} points)"
    if abs(delta) < 2 * se:
        return (f"small: between one and two standard errors (±{se:.2f} points on {n_images:,} test images), "
                "suggestive at most")
    return f"clear in this run: more than two standard errors (±{se:.2f} points on {n_images:,} test images)"


RECORDED = "../docs/bench_notebooks.json"  # from a notebook's folder: what benchmarks/bench_notebooks.py records


def recorded_runs(notebook: str, path: str | os.PathLike = RECORDED) -> dict:
    """Return ``{mode: {"summary": {...}, "date": ...}}`` recorded for ``notebook`` by
    ``benchmarks/bench_notebooks.py`` (its ``SUMMARY`` numbers at each settings), or ``{}`` when nothing is
    recorded (a missing or unreadable file)."""
    import json
    from pathlib import Path

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    for mode, rec in data.get("notebooks", {}).get(notebook, {}).items():
        if isinstance(rec, dict) and rec.get("summary"):
            out[mode] = {"summary": rec["summary"], "date": rec.get("date", "")}
    return out


def recorded_times(notebook: str, mode: str, path: str | os.PathLike | None = None) -> tuple | None:
    """Return ``(cold, warm)`` median wall seconds of ``notebook`` at ``mode`` recorded by
    ``benchmarks/bench_notebooks.py`` in ``path`` (``None`` for a side not measured), or ``None`` when nothing is
    recorded (a missing or unreadable file, e.g. an installed package away from the repository)."""
    import json
    import statistics
    from pathlib import Path

    try:
        rec = json.loads(Path(RECORDED if path is None else path).read_text())["notebooks"][notebook][mode]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    med = [statistics.median(rec[k]) if rec.get(k) else None for k in ("cold", "warm")]
    if med[0] is None and rec.get("cold_estimate"):
        med[0] = rec["cold_estimate"]
    return None if med == [None, None] else tuple(med)


def quick_vs_paper(summary: dict, notebook: str, mode: str, path: str | os.PathLike = RECORDED,
                   digits: int = 2) -> str:
    """Return Markdown: each number of this run's ``summary`` (``{label: value}``) beside the same number measured
    at ``quick`` and at ``paper`` settings by ``benchmarks/bench_notebooks.py`` (seed 0; :func:`recorded_runs`), and
    quick − paper: how far the quick settings' numbers are from the paper settings' in that measured pair."""
    rec = recorded_runs(notebook, path)
    q, pp = rec.get("quick", {}).get("summary", {}), rec.get("paper", {}).get("summary", {})
    if not pp:
        return (f"*No run at the paper's settings is recorded for {notebook} yet (`{path}`), so how far the quick "
                "numbers are from the paper's is not measured here.*")

    def fmt(v):
        return "–" if v is None else (f"{v:.{digits}f}" if isinstance(v, (int, float)) else str(v))

    lines = [f"| | this run ({mode}) | recorded quick | recorded paper | quick − paper |", "|---|---:|---:|---:|---:|"]
    for k, v in summary.items():
        a, b = q.get(k), pp.get(k)
        d = a - b if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None
        lines.append(f"| {k} | {fmt(v)} | {fmt(a)} | {fmt(b)} | {'–' if d is None else f'{d:+.{digits}f}'} |")
    dates = ", ".join(f"{m} {r['date']}" for m, r in rec.items() if r.get("date"))
    return "\n".join(lines) + (f"\n\nRecorded by `benchmarks/bench_notebooks.py` ({dates}; seed 0, this "
                                "repository's CPU machine; see docs/benchmarks.md)." if dates else "")


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


def module_summary(module: ModuleType, max_names: int = 12) -> str:
    """Return the first paragraph of ``module``'s docstring (Sphinx roles such as ``:class:`X``` shown as code) and
    its public names (``__all__``, else the classes and functions it defines; names starting with ``_`` left out;
    at most ``max_names``, then a count), as Markdown."""
    import re

    doc = (module.__doc__ or "").strip().split("\n\n")[0]
    doc = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", doc)
    names = getattr(module, "__all__", None) or [
        n for n, v in vars(module).items()
        if callable(v) and getattr(v, "__module__", None) == module.__name__]
    names = [n for n in names if not n.startswith("_")]
    more = f" and {len(names) - max_names} more" if len(names) > max_names else ""
    return (f"`{module.__name__}`: {doc}\n\nPublic names: " + ", ".join(f"`{n}`" for n in names[:max_names])
            + more)
