"""The homogenization report: :func:`diagnose` collects features of several sample sets, scores them, draws
every figure of dsg-method.md §F and writes ``summary.json``, ``summary.md``, one PNG per figure and a
self-contained ``report.html``. Also the ``dsg-viz diagnose`` command.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .. import _io
from ..bn import bn_targets
from ..errors import ConfigError, DataError
from . import metrics as M
from . import plots as P

# name → (title, what to look for); the order is the report's order
FIGURES: dict[str, tuple[str, str]] = {
    "images": ("Samples",
               "The first images of each source, de-normalized. Homogenized samples look alike (similar textures "
               "and colours); diverse sets vary from image to image."),
    "loss_curves": ("Generation loss curves",
                    "Per-term weighted loss per optimization step (mean over batches). The BN/SDA term should "
                    "fall and flatten; a term that rises or oscillates points to a weight or learning-rate issue."),
    "bn_hist": ("BN-input distribution vs the BN Gaussian (§F.1)",
                "Pooled BN-input values of one channel with N(μ, σ²) from the running statistics. ZeroQ samples "
                "sit on the Gaussian (distribution-level homogenization); real data deviates; DSG should lie in "
                "between."),
    "distribution_layers": ("Distribution scores per layer (§F.1)",
                            "W1 to the BN Gaussian (σ units), batch offset |μ̂−μ|/σ and std ratio σ̂/σ per BN "
                            "layer. A source that fits the BN statistics too well has W1 and offset near 0 and "
                            "ratio near 1 in every layer, unlike real data."),
    "mean_std": ("Per-sample statistics (§F.2)",
                 "Each point is one sample's (mean, std) of the chosen channel; the star is the BN point. "
                 "Homogenized samples collapse onto the star; real samples spread widely."),
    "dispersion": ("Sample-level dispersion per layer (§F.2)",
                   "D^μ and D^σ: spread over samples of per-sample statistics relative to σ. Higher means more "
                   "diverse samples; compare each curve with real data."),
    "sda_matrix": ("Per-sample SDA loss matrix (§F.2, LSE view)",
                   "M[l, j] = SDA loss of sample j at BN layer l (each set's own margins; zero margins = ZeroQ "
                   "loss), log scale. With LSE, the enhanced entries (l = j mod L within a batch) should be "
                   "darker than the rest of their column."),
    "corr_pixel": ("Inter-sample cosine similarity, pixels (§F.3)",
                   "Cosine similarity between flattened images (leading block). Off-diagonal values near 0, as for "
                   "the N(0,1) reference, mean uncorrelated samples; visible structure means correlated samples."),
    "corr_feature": ("Inter-sample Pearson correlation, penultimate features (§F.3)",
                     "Pearson correlation between samples' penultimate features (leading block). A uniformly red "
                     "map means the network sees every sample alike; real data shows class blocks and weaker "
                     "correlations."),
    "spectra": ("Eigen-spectra of the cosine Gram matrices (§F.3)",
                "Normalized eigenvalues, pixels (left) and features (right), with the N(0,1) reference dashed. "
                "A fast-decaying spectrum (low effective rank) means samples span few directions."),
    "tsne_source": ("t-SNE of penultimate features, by source",
                    "One shared t-SNE map of all sources. Homogenized sources form compact clusters apart from "
                    "real data; diverse ones spread over, and overlap with, the real cloud."),
    "tsne_class": ("t-SNE of penultimate features, by class",
                   "The same map, one panel per source, coloured by label (the sampled target for synthetic sets). "
                   "Separated class clusters mean the samples carry class information."),
    "pca_source": ("PCA of penultimate features, by source",
                   "A linear 2-D projection (fast and deterministic): spread and overlap without t-SNE's "
                   "distortions. A tight anisotropic cloud is the TPAMI figure's 'vanilla' case."),
}


_ACC_FIX = "pass the results.json that 'dsg-viz compare --out DIR' wrote in DIR"


def load_accuracy(path: str | os.PathLike) -> dict:
    """Return the accuracy table of a ``dsg-viz compare`` results file (``DIR/results.json``), to show beside the
    homogenization scores (``diagnose(..., accuracy=...)``, ``dsg-viz diagnose --accuracy``).

    Returns ``{"file", "model", "checkpoint_sha256", "split", "n_eval", "fp_top1", "settings", "columns":
    ["calib/W4A4", ...], "values": {source: {column: {"mean", "std", "n"}}}}``: top-1 (%) per source and
    ``method/bits`` column, mean and std over the seeds of the finished cells (a partial run's cells count too).
    ``settings``: the run's ``num_samples``, ``steps``, ``seeds``, ``calibration``, ``convention``.

    Raises :class:`~dsg_viz.errors.DataError` naming the file and the fix when it is missing, not JSON, not a
    compare results file, or holds no finished cell.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"accuracy file {str(path)!r} does not exist; {_ACC_FIX}")
    try:
        res = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"accuracy file {str(path)!r} is not a readable JSON file ({type(e).__name__}); "
                        f"{_ACC_FIX}") from None
    cells = res.get("cells") if isinstance(res, dict) else None
    cfg = res.get("config", {}) if isinstance(res, dict) else None
    ok = isinstance(cells, dict) and isinstance(cfg, dict)
    parsed = []
    if ok:
        for key, c in cells.items():
            parts = key.split("|") if isinstance(key, str) else []
            top1 = c.get("top1") if isinstance(c, dict) else None
            if (len(parts) != 4 or not parts[3].startswith("seed") or isinstance(top1, bool)
                    or not isinstance(top1, (int, float)) or not math.isfinite(top1)):
                ok = False
                break
            parsed.append((parts[0], parts[1], parts[2], float(top1)))
    if not ok:
        raise DataError(f"accuracy file {str(path)!r} is not a dsg_viz compare results file (it needs 'config' and "
                        f"'cells' of 'method|source|bits|seedN': {{'top1': ...}}); {_ACC_FIX}")
    if not parsed:
        raise DataError(f"accuracy file {str(path)!r} holds no finished cell yet; let 'dsg-viz compare' finish at "
                        "least one (rerunning its command resumes it), then pass the file again")
    acc: dict = {}
    columns: dict = {}
    for method, src, bits, top1 in parsed:
        col = f"{method}/{bits}"
        columns.setdefault(col, None)
        acc.setdefault(src, {}).setdefault(col, []).append(top1)
    fp = res.get("fp") if isinstance(res.get("fp"), dict) else {}
    return {
        "file": str(path), "model": cfg.get("model"), "checkpoint_sha256": cfg.get("checkpoint_sha256"),
        "split": cfg.get("eval_split", "test"), "n_eval": fp.get("n"), "fp_top1": fp.get("top1"),
        "settings": {k: cfg.get(k) for k in ("num_samples", "steps", "seeds", "calibration", "convention")},
        "columns": list(columns),
        "values": {s: {c: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0,
                           "n": len(v)} for c, v in cc.items()} for s, cc in acc.items()},
    }


def check_accuracy(acc: dict, model: nn.Module, names, allow_mismatch: bool) -> dict:
    """Return the :func:`load_accuracy` table restricted to ``names``; raise DataError when it was made for another
    model/checkpoint (a warning with ``allow_mismatch``) or shares no source with ``names``."""
    if not isinstance(acc, dict) or not {"file", "columns", "values"} <= set(acc):
        raise ConfigError("accuracy must be a path to a 'dsg-viz compare' results.json or load_accuracy(path)'s dict")
    f = acc["file"]
    spec = getattr(model, "spec", None)
    problems = []
    if spec is not None and acc.get("model") and acc["model"] != spec.name:
        problems.append(f"it holds accuracy of {acc['model']} and this model is {spec.name}")
    sha = getattr(model, "checkpoint_sha256", None)
    if not problems and sha and acc.get("checkpoint_sha256") and acc["checkpoint_sha256"] != sha:
        problems.append(f"it was measured with checkpoint sha256 {acc['checkpoint_sha256'][:12]}… and this model's "
                        f"is {sha[:12]}…")
    if problems:
        msg = f"accuracy file {f!r}: {'; '.join(problems)}"
        if not allow_mismatch:
            raise DataError(msg + "; pass the results of a 'dsg-viz compare' run of this model and checkpoint, or "
                            "--allow-mismatch (allow_mismatch=True) for a deliberate cross-model study")
        from ..generation import SampleMismatchWarning

        warnings.warn(msg + " (allowed: --allow-mismatch)", SampleMismatchWarning, stacklevel=3)
    common = [n for n in names if n in acc["values"]]
    if not common:
        raise DataError(f"accuracy file {f!r} has accuracy of {', '.join(sorted(acc['values']))} but none of the "
                        f"diagnosed sources ({', '.join(names)}); pass a compare run of the same sources")
    return {**acc, "values": {n: acc["values"].get(n) for n in names}}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _resolve_layer(layer, names: tuple[str, ...]) -> int:
    L = len(names)
    if layer is None:
        return L // 2
    if isinstance(layer, str):
        if layer not in names:
            raise ConfigError(f"unknown BN layer {layer!r}; choose one of: {', '.join(names)}")
        return names.index(layer)
    if not -L <= int(layer) < L:
        raise ConfigError(f"layer index {layer} out of range for {L} BN layers")
    return int(layer) % L


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, (torch.Tensor, np.ndarray)):
        return np.asarray(o).tolist()
    return str(o)


def _summary_html(summary: dict) -> str:
    names = summary["sources"]
    ref = summary.get("reference")
    noise = summary.get("noise_reference", {})
    head = "".join(f"<th>{html.escape(n)}{' (ref)' if n == ref else ''}</th>" for n in names)
    rows = []
    for key, label in M.SCORES.items():
        vals = [summary["scores"][n].get(key) for n in names] + [noise.get(key)]
        cells = "".join(f"<td>{'–' if v is None else f'{v:.4g}'}</td>" for v in vals)
        rows.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
    acc = summary.get("accuracy")
    for col in (acc or {}).get("columns", []):
        cells = "".join(f"<td>{html.escape(M.accuracy_cell((acc['values'].get(n) or {}).get(col)))}</td>"
                        for n in names)
        rows.append(f"<tr class='acc'><th>{html.escape(M.accuracy_label(col, acc))}</th>{cells}<td>–</td></tr>")
    note = ""
    if acc:
        st = acc.get("settings", {})
        note = (f"<p>Accuracy rows: mean ± std over seeds from <code>{html.escape(acc['file'])}</code> "
                f"({html.escape(str(acc.get('model')))}, {acc.get('n_eval')} {html.escape(str(acc['split']))} "
                f"images, FP {acc.get('fp_top1')}; its own sets: {st.get('num_samples')} samples, "
                f"{st.get('steps') or 'preset'} steps, {st.get('seeds')} seed(s)), not the sets diagnosed here.</p>")
    return (f"<table><tr><th>score</th>{head}<th>N(0,1) noise</th></tr>{''.join(rows)}</table>{note}")


def _per_layer_html(summary: dict, keys=("w1", "offset", "std_ratio", "d_mu", "d_sigma")) -> str:
    names = summary["sources"]
    head = "".join(f"<th>{html.escape(n)}<br>{html.escape(M.SCORES[k])}</th>" for n in names for k in keys)
    rows = []
    for li, lname in enumerate(summary["layers"]):
        cells = ""
        for n in names:
            for k in keys:
                v = summary["per_layer"][n][k][li]
                cells += f"<td>{'–' if v is None else f'{v:.3g}'}</td>"
        rows.append(f"<tr><th>{li}: {html.escape(lname)}</th>{cells}</tr>")
    return f"<table class='small'><tr><th>layer</th>{head}</tr>{''.join(rows)}</table>"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f4f4f4}table.small{font-size:80%}img{max-width:100%;border:1px solid #eee}
figure{margin:2em 0}figcaption{color:#444;margin-top:.4em}code{background:#f4f4f4;padding:0 3px}"""


def _html(summary: dict, meta: dict, pngs: dict[str, bytes]) -> str:
    figs = []
    for name, data in pngs.items():
        title, caption = FIGURES[name]
        b64 = base64.b64encode(data).decode("ascii")
        figs.append(f"<figure id='{name}'><h3>{html.escape(title)}</h3><img alt='{name}' "
                    f"src='data:image/png;base64,{b64}'><figcaption>{html.escape(caption)}</figcaption></figure>")
    src_rows = "".join(
        f"<tr><th>{html.escape(n)}</th><td>{html.escape(str(s['method']))}</td><td>{s['n_original']}</td>"
        f"<td>{html.escape(str(s.get('steps', '–')))}</td></tr>" for n, s in meta["sources"].items())
    ref = summary.get("reference")
    ref_text = (f"the reference column is <code>{html.escape(ref)}</code>." if ref else
                "no real-data reference in this run, so relative dispersion is undefined.")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>dsg_viz homogenization report</title><style>{_CSS}</style></head>
<body><h1>Homogenization diagnostics</h1>
<p>Model <code>{html.escape(str(meta['model']))}</code>, {summary['n']} samples per source (truncated to the smallest
set), {len(summary['layers'])} BN layers. Histogram and scatter: layer {meta['layer']}
(<code>{html.escape(meta['layer_name'])}</code>), channel {meta['channel']}. t-SNE: {meta['tsne_points']} points,
perplexity {meta['perplexity']}, seed {meta['seed']} ({meta['seconds']['tsne']:.1f} s). Definitions:
dsg-method.md §F.</p>
<table><tr><th>source</th><th>method</th><th>samples in set</th><th>steps</th></tr>{src_rows}</table>
<h2>Summary</h2>
<p>Layer-averaged scores; {ref_text} Distribution-level homogenization: W1, KL and offset
near 0 and std ratio near 1 (closer to the BN Gaussian than real data). Sample-level: dispersion well below real
(relative dispersion ≪ 1). Inter-sample: high mean |off-diagonal| and low effective rank compared with the
N(0,1) reference.</p>
{_summary_html(summary)}
<details><summary>Per-layer scores</summary>{_per_layer_html(summary)}</details>
<h2>Figures</h2>
{''.join(figs)}
<p style="color:#888">Generated by dsg_viz {html.escape(str(meta['version']))}.</p>
</body></html>
"""


def diagnose(model: nn.Module, sample_sets: dict, out_dir, layer=None, channel: int = 0, tsne_points: int = 2000,
             perplexity: float = 30.0, seed: int = 0, progress: bool = True, batch_size: int = 256,
             max_values: int = 20_000, allow_mismatch: bool = False, accuracy=None) -> dict:
    """Diagnose homogenization of several sample sets under ``model``; write the report; return the summary.

    Args:
        model: the BN network the sets were made for (not modified; hooks are removed).
        sample_sets: ``{name: SampleSet}`` (e.g. ``real``, ``gaussian``, ``zeroq``, ``dsg``); ``real`` is the
            reference when present. All sets are truncated to the smallest one's size (matched counts).
        out_dir: created if needed. Written: ``summary.json``, ``summary.md``, ``<figure>.png`` for each of
            :data:`FIGURES` that applies (``loss_curves`` only if a set has a history), ``report.html``
            (self-contained). Each file is written to a temporary name and renamed.
        layer: BN layer (index or dotted name) of the histogram and scatter; ``None`` = the middle layer.
        channel: channel of that layer.
        tsne_points: total points of the shared t-SNE/PCA map (split evenly over sources).
        perplexity, seed: t-SNE settings; ``seed`` also seeds every subsample and the noise reference.
        batch_size, max_values: see :func:`dsg_viz.diagnostics.metrics.collect_features`.
        allow_mismatch: use sets made for another model or checkpoint, with a warning (a deliberate cross-model
            study); by default a mismatch raises :class:`~dsg_viz.errors.DataError`
            (:meth:`~dsg_viz.generation.SampleSet.check_fit`). A wrong input shape always raises. Also applies to
            ``accuracy``.
        accuracy: ``None``, a ``dsg-viz compare`` ``results.json`` path or :func:`load_accuracy`'s dict: its top-1
            per source (mean ± std over seeds, one row per ``method/bits``) is added to the summary
            (``summary["accuracy"]``, rows of ``summary.md`` and ``report.html``). Checked before any work: a bad
            file, another model or checkpoint, or no source in common raises :class:`~dsg_viz.errors.DataError`.

    Returns the :func:`~dsg_viz.diagnostics.metrics.summarize` dict plus ``meta`` (settings, timings) and
    ``files`` (``{name: path}``).
    """
    from .. import __version__

    if not sample_sets:
        raise ConfigError("diagnose needs at least one sample set")
    if not (isinstance(perplexity, (int, float)) and np.isfinite(perplexity) and perplexity > 0):
        raise ConfigError(f"perplexity must be a finite number > 0 (got {perplexity!r}); t-SNE's usual range is 5-50")
    if isinstance(tsne_points, bool) or not isinstance(tsne_points, int) or tsne_points < 2:
        raise ConfigError(f"tsne_points must be an integer >= 2 (got {tsne_points!r})")
    for name, s in sample_sets.items():
        if hasattr(s, "check_fit"):
            s.check_fit(model, allow_mismatch=allow_mismatch, name=name)
    names = list(sample_sets)
    if accuracy is not None:
        if isinstance(accuracy, (str, os.PathLike)):
            accuracy = load_accuracy(accuracy)
        accuracy = check_accuracy(accuracy, model, names, allow_mismatch)
    n = min(len(s) for s in sample_sets.values())
    if n < 2:
        raise ConfigError(f"diagnose needs at least 2 samples per source (smallest set has {n})")
    targets = bn_targets(model)
    li = _resolve_layer(layer, targets.names)
    c_l = targets.mean[li].numel()
    if not 0 <= channel < c_l:
        raise ConfigError(f"channel {channel} out of range: layer {targets.names[li]} has {c_l} channels")
    spec = getattr(model, "spec", None)
    out = _io.check_output_dir(out_dir, "out_dir")
    stages = [f"features {s}" for s in names] + ["scores", "t-SNE", "figures", "write"]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(stages), desc="diagnose", leave=False)

    def stage(i):
        if bar is not None:
            bar.set_postfix_str(stages[i])
            if i:
                bar.update(1)

    secs: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        feats = {}
        for i, s in enumerate(names):
            stage(i)
            ss = sample_sets[s]
            feats[s] = M.collect_features(model, ss.images[:n], batch_size=batch_size, max_values=max_values,
                                          labels=ss.labels[:n], seed=seed, progress=progress)
        secs["features"] = time.perf_counter() - t0
        stage(len(names))
        t0 = time.perf_counter()
        summary = M.summarize(feats, targets, reference="real", seed=seed)
        order = summary["sources"]  # reference first
        if accuracy is not None:
            summary["accuracy"] = {**accuracy, "values": {s: accuracy["values"].get(s) for s in order}}
        sda = {s: M.sda_matrix(feats[s].mean, feats[s].std, targets, getattr(sample_sets[s], "margins", None))
               for s in order}
        k_px = {s: M.cosine_matrix(feats[s].images) for s in order}
        k_ft = {s: M.cosine_matrix(feats[s].penultimate) for s in order}
        noise_px = M.gaussian_reference(feats[order[0]].images.shape, seed)
        noise_ft = M.gaussian_reference(feats[order[0]].penultimate.shape, seed + 1)
        secs["scores"] = time.perf_counter() - t0
        stage(len(names) + 1)
        t0 = time.perf_counter()
        X, groups, idx, gnames = M.stack_sources({s: feats[s].penultimate for s in order}, tsne_points, seed)
        emb = M.embed(X, "tsne", perplexity=perplexity, seed=seed)
        secs["tsne"] = time.perf_counter() - t0
        pca = M.embed(X, "pca", seed=seed)
        classes = np.concatenate([feats[s].labels.numpy()[idx[groups == gi]] for gi, s in enumerate(gnames)])
        stage(len(names) + 2)
        t0 = time.perf_counter()
        pngs: dict[str, bytes] = {}

        def add(name, fig):
            pngs[name] = _png(fig)

        add("images", P.plot_image_grid({s: feats[s].images for s in order},
                                        spec.mean if spec else None, spec.std if spec else None, n=32, nrow=8))
        hist = {s: getattr(sample_sets[s], "history", None) for s in order}
        hist = {s: h for s, h in hist.items() if h and any(len(b) for v in h.values() for b in v)}
        if hist:
            add("loss_curves", P.plot_loss_curves_by_source(hist))
        mu, sg = float(targets.mean[li][channel]), float(targets.std[li][channel])
        lname = targets.names[li]
        vals = {s: feats[s].values[li][channel] for s in order}
        notes = {s: f"W1 = {M.wasserstein_to_gaussian(v, mu, sg):.3f}σ" for s, v in vals.items()}
        add("bn_hist", P.plot_bn_histograms(vals, mu, sg, notes=notes,
                                            title=f"BN input of {lname} (layer {li}), channel {channel}"))
        add("distribution_layers", P.plot_layer_scores(summary["per_layer"], ("w1", "offset", "std_ratio"),
                                                       logy=("w1", "offset")))
        add("mean_std", P.plot_mean_std_scatter(
            {s: (feats[s].mean[li][:, channel], feats[s].std[li][:, channel]) for s in order}, (mu, sg),
            title=f"{lname} (layer {li}), channel {channel}"))
        add("dispersion", P.plot_dispersion_curves(summary["per_layer"]))
        add("sda_matrix", P.plot_sda_matrix(sda, max_samples=64))
        show = min(n, 64)
        add("corr_pixel", P.plot_correlation_matrices({**k_px, "N(0,1) noise": M.cosine_matrix(noise_px)},
                                                      max_samples=show))
        add("corr_feature", P.plot_correlation_matrices(
            {**{s: M.pearson_matrix(feats[s].penultimate) for s in order},
             "N(0,1) noise": M.pearson_matrix(noise_ft)}, max_samples=show))
        fig, axes = P.new_figure(2, panel=(4.6, 3.4))
        P.plot_eigenspectra({**{s: M.eigenspectrum(k) for s, k in k_px.items()},
                             "N(0,1) noise": M.eigenspectrum(M.cosine_matrix(noise_px))}, ax=axes[0],
                            title="pixels")
        P.plot_eigenspectra({**{s: M.eigenspectrum(k) for s, k in k_ft.items()},
                             "N(0,1) noise": M.eigenspectrum(M.cosine_matrix(noise_ft))}, ax=axes[1],
                            title="penultimate features")
        add("spectra", fig)
        add("tsne_source", P.plot_embedding(emb, groups, gnames, title=f"t-SNE (perplexity {perplexity})"))
        class_names = None
        if spec is not None and spec.dataset == "cifar10":
            from ..data import CIFAR10_CLASSES

            class_names = CIFAR10_CLASSES
        add("tsne_class", P.plot_embedding_by_class(emb, groups, classes, gnames, class_names))
        add("pca_source", P.plot_embedding(pca, groups, gnames, title="PCA"))
        secs["figures"] = time.perf_counter() - t0
        stage(len(names) + 3)
        meta = {
            "model": spec.name if spec else type(model).__name__, "version": __version__, "n": n,
            "threads": torch.get_num_threads(),
            "layer": li, "layer_name": lname, "channel": channel, "tsne_points": int(len(X)),
            "perplexity": perplexity, "seed": seed, "max_values": max_values,
            "sources": {s: {"method": getattr(sample_sets[s], "method", s), "n_original": len(sample_sets[s]),
                            "steps": (getattr(sample_sets[s], "config", {}) or {}).get("steps"),
                            "seed": getattr(sample_sets[s], "seed", None)} for s in order},
            "seconds": {k: round(v, 2) for k, v in secs.items()},
        }
        summary["meta"] = meta
        files = {}
        for name, data in pngs.items():
            files[name] = out / f"{name}.png"
            _io.write_bytes(files[name], data)
        files["summary.json"] = out / "summary.json"
        _io.write_text(files["summary.json"], json.dumps(summary, indent=1, default=_json_default))
        files["summary.md"] = out / "summary.md"
        _io.write_text(files["summary.md"], M.summary_markdown(summary))
        files["report.html"] = out / "report.html"
        _io.write_text(files["report.html"], _html(summary, meta, pngs))
        stage(len(stages) - 1)
    finally:
        if bar is not None:
            bar.close()
    summary["files"] = {k: str(v) for k, v in files.items()}
    return summary
