"""The main job: ``dsg-viz compare`` — sample sources × bit widths × seeds, quantized, calibrated and evaluated.

For each source (``gaussian``, ``zeroq``, ``dsg``, ``real``, any preset) and seed a sample set is generated, or
loaded from the shared sample cache (:mod:`dsg_viz.cache`, ``runs/cache/`` by default: the one ``make demo``, the
notebooks and the widget panels use), and linked with a PNG grid into ``DIR/samples/``; for each bit width the
model is quantized (a copy), calibrated on that set with the chosen activation-range method and evaluated on the
full test split. Every finished cell is written to ``DIR/results.json`` at once, so an interrupted run restarted
with the same arguments reuses finished cells. Outputs: ``DIR/results.json``, ``DIR/results.md`` (rows = source,
columns = bit widths, mean ± std over seeds, plus FP) and ``DIR/accuracy.png``.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import _io
from .distributed import context
from .errors import ConfigError, DsgVizError, Interrupted

DEMO_SOURCES = ("gaussian", "zeroq", "dsg", "real")


@dataclass(frozen=True)
class CompareConfig:
    """Settings of one comparison. ``steps``/``batch_size`` ``None`` keep each preset's (paper) defaults.
    Deprecated source names (``zeroq-original``, ``zeroq+sda``, ...) are replaced by today's name with a warning."""

    model: str = "resnet20_cifar10"
    checkpoint: str | None = None
    sources: tuple[str, ...] = DEMO_SOURCES
    bits: tuple[str, ...] = ("W4A4", "W6A6", "W8A8")
    seeds: int = 3
    num_samples: int = 256
    steps: int | None = None
    batch_size: int | None = None
    calibration: str = "ema"
    weight_range: str = "minmax"
    convention: str = "zeroq"
    methods: tuple[str, ...] = ("calib",)
    margin_scale: float | None = None
    bf16: bool = False  # deprecated: precision="bf16"
    precision: str | None = None  # generation precision ("auto", "fp32", "bf16"); None = the presets' ("auto")
    data_root: str | None = None
    eval_limit: int | None = None  # evaluate on a fixed subset of the evaluation split (smoke runs only)
    eval_split: str = "test"  # "test" for reported numbers; "val" (last 500 train images per class) for tuning
    device: str = "cpu"  # where the model runs ("cpu", "cuda", "cuda:N"); not part of a cell's identity
    recon_iters: int | None = None  # adaround/brecq steps per unit; None = ReconstructionConfig's (200; papers 20,000)

    def __post_init__(self):
        from .generation import DEPRECATED_NAMES, resolve_method
        from .quant.quantize import normalize_bits

        if any(s in DEPRECATED_NAMES for s in self.sources):
            object.__setattr__(self, "sources", tuple(resolve_method(s) if s in DEPRECATED_NAMES else s
                                                      for s in self.sources))
        # one spelling per cell key: "w4a4" → "W4A4"; repeated entries once, in their first position
        object.__setattr__(self, "sources", tuple(dict.fromkeys(s.strip() for s in self.sources)))
        object.__setattr__(self, "methods", tuple(dict.fromkeys(m.strip().lower() for m in self.methods)))
        object.__setattr__(self, "bits", tuple(dict.fromkeys(normalize_bits(b) for b in self.bits)))

    def validate(self) -> None:
        from .generation import METHODS
        from .quant import parse_bits

        for name, example in (("bits", "--bits W4A4"), ("methods", "--method calib")):  # sources: run_compare
            if not getattr(self, name):
                raise ConfigError(f"{name} is empty; give at least one (e.g. {example})")
        for s in self.sources:
            if s not in METHODS:
                raise ConfigError(f"unknown source {s!r}; choose from {', '.join(METHODS)}")
        for b in self.bits:
            parse_bits(b)
        for name, lo in (("num_samples", 1), ("steps", 0), ("batch_size", 1), ("eval_limit", 1), ("recon_iters", 0)):
            v = getattr(self, name)
            if v is None and name != "num_samples":
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ConfigError(f"{name} must be an integer >= {lo} (got {v!r})"
                                  + ("; omit it to evaluate on the whole split" if name == "eval_limit" else ""))
        if self.margin_scale is not None and not (isinstance(self.margin_scale, (int, float))
                                                  and math.isfinite(self.margin_scale) and self.margin_scale >= 0):
            raise ConfigError(f"margin_scale must be a finite number >= 0 (got {self.margin_scale!r})")
        if self.eval_split not in ("test", "val"):
            raise ConfigError(f"unknown evaluation split {self.eval_split!r}; use 'test' (report) or 'val' (tuning)")
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be >= 1 (got {self.seeds})")
        if self.precision not in (None, "auto", "fp32", "bf16"):
            raise ConfigError(f"unknown precision {self.precision!r}; use auto, fp32 or bf16")
        if self.bf16 and self.precision not in (None, "bf16"):
            raise ConfigError(f"bf16 contradicts precision {self.precision!r}; use precision alone")
        known = ("calib", "adaround", "brecq", "qat")
        for m in self.methods:
            if m not in known:
                raise ConfigError(f"unknown quantization method {m!r}; choose from {', '.join(known)}")


def _sample_path(out: Path, cfg: CompareConfig, source: str, seed: int) -> Path:
    """Return ``out/samples/<tag>.pt``: the readable name under which a run links its sample sets (beside a PNG
    grid). The shared cache (:mod:`dsg_viz.cache`) keys the sets themselves."""
    from .generation import preset

    tag = f"{source}-n{cfg.num_samples}-seed{seed}"
    if source != "real" and preset(source).steps:  # real and gaussian samples do not depend on these settings
        tag += f"-steps{cfg.steps if cfg.steps is not None else 'def'}-bs{cfg.batch_size or 'def'}"
        if cfg.margin_scale is not None and preset(source).sda:
            tag += f"-ms{cfg.margin_scale:g}"
        if cfg.bf16 or cfg.precision not in (None, "auto"):
            tag += f"-{cfg.precision or 'bf16'}"
    return out / "samples" / f"{tag}.pt"


def sample_overrides(cfg: CompareConfig, source: str) -> dict:
    """Return the :class:`~dsg_viz.generation.GenerationConfig` overrides a comparison applies to preset ``source``
    (``{}`` for ``real``): its steps, batch size, bf16 and margin scale, :data:`~dsg_viz.generation.NOT_GIVEN` where
    the comparison keeps the preset's value. A preset without optimization (``gaussian``: 0 steps) keeps its 0
    steps whatever ``cfg.steps`` says."""
    from dataclasses import replace

    from .generation import NOT_GIVEN, preset

    if source == "real":
        return {}
    p = preset(source)
    overrides = {"steps": cfg.steps if p.steps and cfg.steps is not None else NOT_GIVEN,
                 "batch_size": cfg.batch_size if cfg.batch_size is not None else NOT_GIVEN}
    if cfg.bf16 or cfg.precision is not None:
        overrides["precision"] = cfg.precision or "bf16"
    if cfg.margin_scale is not None and p.sda:
        overrides["margins"] = replace(p.margins, scale=cfg.margin_scale)
    return overrides


def get_samples(model, cfg: CompareConfig, source: str, seed: int, out: Path | None, sha: str | None = None,
                progress: bool = True, cache_dir: str | os.PathLike | None = None):
    """Return the sample set of ``source``/``seed`` from the shared sample cache (:mod:`dsg_viz.cache`; generated
    and cached when missing) and, if ``out`` is given, link it with a PNG grid into ``out/samples/``. An interrupted
    generation returns its partial set (``interrupted=True``), neither cached nor linked: never calibrate on it."""
    from .cache import get_or_generate
    from .generation import save_grid

    hit = get_or_generate(model, source, cfg.num_samples, seed, cache_dir=cache_dir, data_root=cfg.data_root,
                          checkpoint_sha256=sha, progress=progress, **sample_overrides(cfg, source))
    s = hit.samples
    if not s.interrupted:
        s.check_fit(model)
    if out is not None and not s.interrupted and hit.path.is_file() and context().is_main:
        path = _sample_path(Path(out), cfg, s.method, seed)
        _io.link(hit.path, path)
        if not path.with_suffix(".png").is_file() or not hit.loaded:
            save_grid(s.images, path.with_suffix(".png"), model.spec.mean, model.spec.std)
    return s


def quantize_calibrate_eval(model, images: torch.Tensor, bits: str, cfg: CompareConfig, test_split,
                            method: str = "calib", seed: int = 0, progress: bool = True, callback=None) -> dict:
    """Quantize a copy of ``model`` at ``bits``, calibrate on ``images``, evaluate; return the result cell.
    ``progress`` and ``callback`` go to :func:`~dsg_viz.quant.reconstruct.reconstruct` (adaround/brecq)."""
    from .evaluate import evaluate
    from .quant import QuantConfig, calibrate, parse_bits, quantize

    w, a = parse_bits(bits)
    qcfg = QuantConfig(w_bits=w, a_bits=a, act_method=cfg.calibration, w_method=cfg.weight_range,
                       convention=cfg.convention)
    from .data import forward_batch_size

    fb = forward_batch_size(model.spec, cfg.batch_size, 256)  # images per forward pass (224 px: --batch-size)
    t0 = time.perf_counter()
    qm = quantize(model, qcfg)
    calibrate(qm, images, batch_size=fb)
    if method in ("adaround", "brecq"):
        from .quant.reconstruct import ReconstructionConfig, reconstruct

        rc = {} if cfg.recon_iters is None else {"iters": cfg.recon_iters}
        rr = reconstruct(qm, model, images, ReconstructionConfig(kind=method, seed=seed, **rc), forward_batch_size=fb,
                         progress=progress, callback=callback)
        if rr.interrupted:  # Ctrl-C inside reconstruct keeps its finished units: never evaluate or record that
            raise KeyboardInterrupt(f"{method} stopped after {len(rr.done)} of {len(rr.done) + len(rr.pending)} units")
    t1 = time.perf_counter()
    r = evaluate(qm, test_split, batch_size=forward_batch_size(model.spec, cfg.batch_size, 100))
    return {"top1": r["top1"], "top5": r["top5"], "n": r["n"], "quant_seconds": round(t1 - t0, 2),
            "eval_seconds": round(time.perf_counter() - t1, 2), "convention": qcfg.describe(),
            "threads": torch.get_num_threads()}


# settings that change a result cell: a resumed run must match them (sources, bits, seeds, methods may grow)
_RESULT_KEYS = ("model", "num_samples", "steps", "batch_size", "calibration", "weight_range", "convention",
                "margin_scale", "bf16", "precision", "eval_limit", "eval_split", "recon_iters")


# `--method qat`: the row's source names the generator objective trained during QAT (dsg_viz.qat): zeroq+ce (BN
# alignment + CE) → GDFQ's generator loss (BN batch statistics + CE); dsg / dsg-tuned → the DSG generator at the
# preset's margin scale (1 / 0.3); dsg-official → the released QAT code's loss. Sources without a generator
# counterpart (gaussian, real, zeroq without CE, ablations) get no qat cell
QAT_GENERATORS = {"zeroq+ce": "gdfq", "gdfq": "gdfq", "dsg": "dsg", "dsg-tuned": "dsg",
                  "dsg-official": "dsg-official"}


def _qat_cell(model, src: str, bits: str, seed: int, cfg: CompareConfig, out: Path, sha: str | None) -> dict:
    """Return the QAT cell of ``src`` (its generator objective, CPU schedule ``qat_preset('cpu')``)."""
    from .generation import PRESETS
    from .qat import qat_cell, qat_preset

    scale = cfg.margin_scale
    if scale is None and src in PRESETS and PRESETS[src].sda:
        scale = PRESETS[src].margins.scale
    qcfg = qat_preset("cpu", generator=QAT_GENERATORS[src], seed=seed, margin_scale=scale)
    return qat_cell(model, bits, qcfg, out=out / "qat" / f"{src}-{bits}-seed{seed}", data_root=cfg.data_root,
                    checkpoint_sha256=sha)


def _cell_key(source: str, bits: str, seed: int, method: str) -> str:
    return f"{method}|{source}|{bits}|seed{seed}"


def run_compare(cfg: CompareConfig, out: str | os.PathLike, progress: bool = True, log=print,
                cache_dir: str | os.PathLike | None = None) -> dict:
    """Run (or resume) a comparison into ``out`` and return the results dict (also written to disk). Sample sets
    come from the shared sample cache ``cache_dir`` (default :func:`dsg_viz.cache.default_cache_dir`).

    A cell is recorded only when it is complete. Ctrl-C (SIGINT) anywhere — generation, calibration,
    reconstruction, evaluation — raises :class:`~dsg_viz.errors.Interrupted` saying which finished cells were kept;
    nothing is computed from a partial sample set, and rerunning the same call resumes. Each cell records the
    thread count it ran with (``threads``)."""
    from .data import forward_batch_size, load_eval_split, resolve_model_checkpoint
    from .evaluate import evaluate
    from .models import create_model, get_spec, sha256_file

    cfg.validate()
    if not cfg.sources:
        raise ConfigError("sources is empty; give at least one (e.g. --sources zeroq,dsg)")
    out = _io.check_output_dir(out, "--out")
    rpath = out / "results.json"
    results = _read_results(rpath)  # before any work: a damaged file is an error, never silently replaced
    spec = get_spec(cfg.model)
    if "qat" in cfg.methods and spec.dataset != "cifar10":
        raise ConfigError(f"--method qat in compare runs the CIFAR-10 CPU schedule; for {spec.name} run "
                          "'dsg-viz qat' (docs/imagenet.md)")
    ckpt = resolve_model_checkpoint(spec, cfg.checkpoint, cfg.data_root)  # "random": a random init, with a warning
    model = create_model(cfg.model, ckpt).to(cfg.device)
    sha = sha256_file(ckpt) if ckpt else None
    # CIFAR-10: the test split or the 5,000 held-out train images; ImageNet: val/ or held-out train/ images, lazily
    test = load_eval_split(spec, cfg.eval_split, cfg.data_root)
    if cfg.eval_limit:
        test = test.subset(torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:cfg.eval_limit])
    old_cfg = results.get("config", {})
    mismatch = [k for k in _RESULT_KEYS if k in old_cfg and old_cfg[k] != getattr(cfg, k)]
    if old_cfg.get("checkpoint_sha256") not in (None, sha):
        mismatch.append("checkpoint")
    if mismatch:
        raise ConfigError(f"{rpath} holds results of a different configuration ({', '.join(mismatch)} differ); "
                          "use another --out directory or the same settings to resume")
    cells: dict = results.get("cells", {})
    if "fp" not in results:
        results["fp"] = evaluate(model, test, batch_size=forward_batch_size(spec, cfg.batch_size, 100))
    results["config"] = asdict(cfg) | {"checkpoint": ckpt, "checkpoint_sha256": sha, "threads": torch.get_num_threads()}

    main = context().is_main  # under torchrun only rank 0 writes; every rank computes the same cells

    def save():
        if main:
            _io.write_text(rpath, json.dumps(results | {"cells": cells}, indent=1))

    save()
    log(f"FP top-1 {results['fp']['top1']:.2f} ({spec.name}, {results['fp']['n']} test images)")
    todo = [(src, seed) for src in cfg.sources for seed in range(cfg.seeds)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo) * len(cfg.bits) * len(cfg.methods), desc="compare", leave=True)
    stage = "starting"
    try:
        for src, seed in todo:
            applicable = [(b, m) for b in cfg.bits for m in cfg.methods if m != "qat" or src in QAT_GENERATORS]
            needed = [(b, m) for b, m in applicable if _cell_key(src, b, seed, m) not in cells]
            if bar is not None:
                bar.update(len(cfg.bits) * len(cfg.methods) - len(needed))
            if not needed:
                continue
            samples = None
            for bits, method in needed:
                key = _cell_key(src, bits, seed, method)
                if method == "qat":
                    stage = f"computing cell {key}"
                    cell = _qat_cell(model, src, bits, seed, cfg, out, sha)
                else:
                    if samples is None:
                        stage = f"generating the {src} samples of seed {seed}"
                        samples = get_samples(model, cfg, src, seed, out, sha, progress, cache_dir)
                        if samples.interrupted:  # a partial set: never calibrate on it
                            raise KeyboardInterrupt
                    stage = f"computing cell {key}"
                    cell = quantize_calibrate_eval(model, samples.images, bits, cfg, test, method, seed)
                    cell["gen_seconds"] = round(samples.seconds, 2)
                cells[key] = cell
                save()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"{src} {bits} {method}: {cell['top1']:.2f}")
    except KeyboardInterrupt:
        raise Interrupted(f"stopped while {stage}; {_kept(cells, rpath)}, none computed from an interrupted step; "
                          "rerun the same command to resume") from None
    except DsgVizError as e:
        raise type(e)(f"{e} (while {stage}; {_kept(cells, rpath)})") from None
    finally:
        if bar is not None:
            bar.close()
        save()
    results["cells"] = cells
    results["table"] = aggregate(results, cfg)
    save()
    if not main:
        return results
    _io.write_text(out / "results.md", results_markdown(results, cfg))
    fig = plot_accuracy(results, cfg)
    _io.save_figure(fig, out / "accuracy.png", dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return results


def _read_results(rpath: Path) -> dict:
    """Return the results dict of an earlier run in ``rpath`` (``{}`` if none); a file that is not a dsg_viz results
    file raises :class:`~dsg_viz.errors.DataError` and is left as it is."""
    from .errors import DataError

    if not rpath.is_file():
        return {}
    fix = "it was left untouched: move it away or use another --out to start afresh"
    try:
        results = json.loads(rpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{rpath} is not a readable JSON file ({type(e).__name__}); {fix}") from None
    cells = results.get("cells", {}) if isinstance(results, dict) else None
    if (not isinstance(results, dict) or not isinstance(cells, dict) or not isinstance(results.get("config", {}), dict)
            or not all(isinstance(c, dict) and "top1" in c for c in cells.values())):
        raise DataError(f"{rpath} is not a dsg_viz compare results file; {fix}")
    return results


def _kept(cells: dict, rpath: Path) -> str:
    n = len(cells)
    return f"{n} finished cell{'s' if n != 1 else ''} kept in {rpath}"


def aggregate(results: dict, cfg: CompareConfig) -> dict:
    """Return ``{method: {source: {bits: {"mean", "std", "n", "values"}}}}`` over seeds."""
    table: dict = {}
    for key, cell in results["cells"].items():
        method, src, bits, _ = key.split("|")
        table.setdefault(method, {}).setdefault(src, {}).setdefault(bits, []).append(cell["top1"])
    return {m: {s: {b: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0,
                        "n": len(v), "values": v} for b, v in bb.items()} for s, bb in ss.items()}
            for m, ss in table.items()}


def results_markdown(results: dict, cfg: CompareConfig) -> str:
    """Return the results table as Markdown: rows = source, columns = bit widths (mean ± std over seeds)."""
    table = results["table"]
    conv = next(iter(results["cells"].values()), {}).get("convention", cfg.convention)
    lines = [f"# {cfg.model}: top-1 (%) on {results['fp']['n']} {cfg.eval_split} images, FP {results['fp']['top1']:.2f}", "",
             f"{cfg.num_samples} samples per source, {cfg.seeds} seed(s), activation calibration `{cfg.calibration}`, "
             f"weight range `{cfg.weight_range}`; convention: {conv}.", ""]
    for method in cfg.methods:
        if method not in table:
            continue
        lines += [f"## {method}", "", "| source | " + " | ".join(cfg.bits) + " |",
                  "|---|" + "---|" * len(cfg.bits)]
        for src in cfg.sources:
            row = table[method].get(src, {})
            cells = []
            for b in cfg.bits:
                c = row.get(b)
                cells.append("–" if c is None else (f"{c['mean']:.2f} ± {c['std']:.2f}" if c["n"] > 1
                                                      else f"{c['mean']:.2f}"))
            lines.append(f"| {src} | " + " | ".join(cells) + " |")
        lines.append(f"| FP | " + " | ".join(f"{results['fp']['top1']:.2f}" for _ in cfg.bits) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_accuracy(results: dict, cfg: CompareConfig, ax=None):
    """Return a Figure: grouped bars of mean top-1 (± std) per bit width and source, FP as a dashed line."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.6 + 1.8 * len(cfg.bits), 3.6))
    else:
        fig = ax.figure
    method = cfg.methods[0]
    table = results["table"].get(method, {})
    srcs = [s for s in cfg.sources if s in table]
    w = 0.8 / max(len(srcs), 1)
    xs = np.arange(len(cfg.bits))
    colors = sns.color_palette("deep", len(srcs))
    for i, s in enumerate(srcs):
        m = [table[s].get(b, {}).get("mean", np.nan) for b in cfg.bits]
        e = [table[s].get(b, {}).get("std", 0.0) for b in cfg.bits]
        ax.bar(xs + (i - (len(srcs) - 1) / 2) * w, m, w, yerr=e, label=s, color=colors[i], capsize=3)
    ax.axhline(results["fp"]["top1"], ls="--", c="k", lw=1, label=f"FP {results['fp']['top1']:.2f}")
    ax.set_xticks(xs, cfg.bits)
    ax.set_ylabel("top-1 (%)")
    lo = min([table[s][b]["mean"] for s in srcs for b in cfg.bits if b in table[s]] + [results["fp"]["top1"]])
    ax.set_ylim(max(0, lo - 10), 100)
    ax.set_title(f"{cfg.model} ({method}, {cfg.calibration} calibration)")
    ax.legend(fontsize=8, ncol=2, loc="lower right")
    fig.tight_layout()
    return fig


def _parse_list(s: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in s.split(",") if x.strip())


# settings of `dsg-viz demo`: the embedded default, sized to finish within ~5 minutes on 2 cores
DEMO = dict(model="resnet20_cifar10", checkpoint_file="resnet20_cifar10_jpeg.pt", sources=DEMO_SOURCES,
            bits=("W4A4", "W6A6"), seeds=1, num_samples=128, steps=50, batch_size=128)
