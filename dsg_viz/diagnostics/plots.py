"""Homogenization plots (dsg-method.md §F): arrays (metric outputs) in, a matplotlib ``Figure`` out.

Every function takes an optional ``ax`` — one ``Axes`` for single-panel plots, or a sequence with one ``Axes``
per panel for side-by-side plots — and returns the ``Figure``. Figures are created with
``matplotlib.figure.Figure`` (not ``pyplot``), so nothing is shown or kept alive globally; in a notebook a
returned figure displays itself, and ``fig.savefig(...)`` writes it. Seaborn's ``whitegrid`` style is applied
inside each call only. Sources keep the same colour in every plot (:func:`source_colors`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.colors import Normalize, to_rgba
from matplotlib.figure import Figure

from .metrics import SCORES

_FIXED_COLORS = {"real": "#2ca02c", "gaussian": "#7f7f7f", "zeroq": "#1f77b4", "zeroq+ce": "#17becf",
                 "dsg": "#d62728", "dsg-tuned": "#e377c2", "dsg-official": "#ff7f0e", "zeroq+ce+sda": "#9467bd",
                 "zeroq+ce+lse": "#8c564b", "zeroq+ce+sci": "#bcbd22"}
_SPARE = ["#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#1f77b4", "#d62728", "#2ca02c"]
NOISE_COLOR = "#444444"


def source_colors(names: Sequence[str]) -> dict[str, str]:
    """Return a stable colour per source name (real green, gaussian grey, zeroq blue, zeroq+ce cyan, dsg red,
    dsg-tuned pink, dsg-official orange; others cycle)."""
    out = {n: _FIXED_COLORS[n] for n in names if n in _FIXED_COLORS}
    spare = [c for c in _SPARE if c not in out.values()] or _SPARE
    rest = [n for n in names if n not in out]
    out.update({n: spare[i % len(spare)] for i, n in enumerate(rest)})
    return out


def _styled(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import seaborn as sns

        with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.8):
            return fn(*args, **kwargs)

    return wrapper


def _root(ax):
    try:
        return ax.get_figure(root=True)
    except TypeError:  # matplotlib < 3.10
        return ax.figure


def _panels(n: int, ax=None, panel=(3.6, 3.0), ncols: int | None = None, **subplot_kw):
    """Return ``(fig, [n axes])``: the caller's axes, or a new constrained-layout figure with n panels."""
    if ax is not None:
        axes = list(np.atleast_1d(np.asarray(ax, dtype=object)).ravel())
        if len(axes) != n:
            raise ValueError(f"this plot needs {n} axes, got {len(axes)}")
        return _root(axes[0]), axes
    ncols = max(1, min(n, ncols or n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    axs = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw).ravel()
    for a in axs[n:]:
        fig.delaxes(a)
    return fig, list(axs[:n])


@_styled
def new_figure(n: int, panel=(3.6, 3.0), ncols: int | None = None) -> tuple[Figure, list]:
    """Return ``(fig, axes)``: a new seaborn-styled, constrained-layout figure with ``n`` panels, to compose
    several plots (pass ``ax=axes[i]`` to each ``plot_*`` function)."""
    return _panels(n, None, panel, ncols)


def _log_y(a) -> None:
    """Log y axis with plain-number tick labels (0.5, 2, 100) instead of 5×10^-1."""
    from matplotlib import ticker

    class _Plain(ticker.LogFormatter):
        def __call__(self, x, pos=None):
            return f"{x:g}" if super().__call__(x, pos) else ""

    a.set_yscale("log")
    a.yaxis.set_major_formatter(_Plain(labelOnlyBase=True))
    a.yaxis.set_minor_formatter(_Plain(labelOnlyBase=False, minor_thresholds=(1.2, 0.5)))


def _int_x(a) -> None:
    from matplotlib import ticker

    a.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))


def _arr(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


# ------------------------------------------------------------------------------------------ distribution

@_styled
def plot_bn_histograms(values_by_source: dict, mu: float, sigma: float, bins: int = 80, ax=None,
                       title: str | None = None, notes: dict[str, str] | None = None) -> Figure:
    """Return density histograms of pooled BN-input values of one (layer, channel), one panel per source, over
    a shared range, each with the BN Gaussian N(mu, sigma^2) overlaid (§F.1, CVPR Fig. 1a).

    ``values_by_source``: ``{name: values [K]}``; ``notes``: optional text per source (e.g. its W1).
    Panels: ``len(values_by_source)``.
    """
    names = list(values_by_source)
    vals = {n: _arr(values_by_source[n]).ravel() for n in names}
    mu, sigma = float(mu), float(sigma)
    lo = min([mu - 4 * sigma] + [np.quantile(v, 0.002) for v in vals.values() if v.size])
    hi = max([mu + 4 * sigma] + [np.quantile(v, 0.998) for v in vals.values() if v.size])
    edges = np.linspace(lo, hi, bins + 1)
    grid = np.linspace(lo, hi, 400)
    pdf = np.exp(-0.5 * ((grid - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    colors = source_colors(names)
    fig, axes = _panels(len(names), ax, sharex=True)
    for a, n in zip(axes, names):
        v = np.clip(vals[n], lo, hi)
        a.hist(v, bins=edges, density=True, color=colors[n], alpha=0.6, label=n)
        a.plot(grid, pdf, color="k", lw=1.5, label="BN N(μ, σ²)")
        a.set_title(n)
        a.set_xlabel("BN input value")
        if notes and n in notes:
            a.text(0.97, 0.95, notes[n], transform=a.transAxes, ha="right", va="top", fontsize="small")
    axes[0].set_ylabel("density")
    axes[0].legend(loc="upper left", fontsize="x-small")
    if title:
        fig.suptitle(title)
    return fig


@_styled
def plot_mean_std_scatter(points_by_source: dict, bn_point: tuple[float, float], ax=None,
                          title: str | None = None) -> Figure:
    """Return a scatter of per-sample ``(mean, std)`` of one BN channel, one colour per source, with the BN
    point ``(mu, sigma)`` marked by a star (§F.2, CVPR Fig. 1b / 3). ``points_by_source``: ``{name: (mean [N],
    std [N])}``. One panel."""
    fig, (a,) = _panels(1, ax, panel=(5.0, 4.0))
    colors = source_colors(list(points_by_source))
    for n, (m, s) in points_by_source.items():
        a.scatter(_arr(m), _arr(s), s=10, alpha=0.6, color=colors[n], label=n, edgecolors="none")
    a.scatter([bn_point[0]], [bn_point[1]], marker="*", s=260, color="k", edgecolors="w", zorder=5,
              label="BN (μ, σ)")
    a.set_xlabel("per-sample mean μ̃")
    a.set_ylabel("per-sample std σ̃")
    a.legend(fontsize="x-small", markerscale=1.5)
    if title:
        a.set_title(title)
    return fig


# ------------------------------------------------------------------------------------------ sample level

@_styled
def plot_layer_scores(per_layer_by_source: dict, scores: Sequence[str] = ("d_mu", "d_sigma"),
                      layer_names: Sequence[str] | None = None, ax=None, logy=True,
                      title: str | None = None) -> Figure:
    """Return per-layer curves of ``scores`` (one panel each), one line per source.

    ``logy``: ``True``/``False`` for every panel, or the collection of score names drawn on a log axis.

    ``per_layer_by_source``: ``{name: {score: [L]}}`` (``summary["per_layer"]``). Panels: ``len(scores)``.
    """
    names = list(per_layer_by_source)
    colors = source_colors(names)
    fig, axes = _panels(len(scores), ax, panel=(4.6, 3.2))
    for a, key in zip(axes, scores):
        for n in names:
            y = np.asarray([np.nan if v is None else v for v in per_layer_by_source[n].get(key, [])], dtype=float)
            if y.size == 0:
                continue
            a.plot(np.arange(y.size), y, marker="o", ms=3, color=colors[n], label=n)
        a.set_title(SCORES.get(key, key))
        a.set_xlabel("BN layer")
        _int_x(a)
        if logy is True or (not isinstance(logy, bool) and key in logy):
            _log_y(a)
        if layer_names is not None:
            a.set_xticks(np.arange(len(layer_names)))
            a.set_xticklabels(layer_names, rotation=90, fontsize="xx-small")
    axes[0].legend(fontsize="x-small")
    if title:
        fig.suptitle(title)
    return fig


def plot_dispersion_curves(per_layer_by_source: dict, layer_names: Sequence[str] | None = None, ax=None,
                           title: str | None = None) -> Figure:
    """Return per-layer dispersion curves D^mu_l and D^sigma_l (§F.2), one line per source; 2 panels."""
    return plot_layer_scores(per_layer_by_source, ("d_mu", "d_sigma"), layer_names, ax, logy=True, title=title)


@_styled
def plot_sda_matrix(mats: dict, ax=None, max_samples: int | None = 64, title: str | None = None) -> Figure:
    """Return heat maps of the L × N per-sample SDA-loss matrices (§F.2 "LSE-specific view") on a shared
    log10 colour scale (zeros — inside the slack margins — in white), one panel per source; with LSE the
    entries (l = j mod L) should be darker.
    ``mats``: ``{name: M [L, N]}``. Axes: ``len(mats)`` panels + 1 colour bar."""
    import matplotlib

    names = list(mats)
    ms = {}
    for n in names:
        m = _arr(mats[n]).astype(float)[:, :max_samples]
        with np.errstate(divide="ignore"):
            ms[n] = np.ma.masked_where(~(m > 0), np.log10(np.where(m > 0, m, 1.0)))
    pos = np.concatenate([m.compressed() for m in ms.values()])
    vmin, vmax = (np.quantile(pos, 0.01), np.quantile(pos, 0.99)) if pos.size else (0.0, 1.0)
    cmap = matplotlib.colormaps["magma"].with_extremes(bad="#ffffff")
    fig, axes = _panels(len(names), ax, panel=(3.8, 3.0))
    im = None
    for a, n in zip(axes, names):
        im = a.imshow(ms[n], aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        a.set_title(n)
        a.set_xlabel("sample j")
        a.grid(False)
        _int_x(a)
        from matplotlib import ticker

        a.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    axes[0].set_ylabel("BN layer l")
    fig.colorbar(im, ax=axes, shrink=0.85, label="log10 SDA loss (white: 0)")
    if title:
        fig.suptitle(title)
    return fig


# ------------------------------------------------------------------------------------------ inter-sample

@_styled
def plot_correlation_matrices(mats: dict, vmin: float = -1.0, vmax: float = 1.0, cmap: str = "RdBu_r", ax=None,
                              max_samples: int | None = None, title: str | None = None) -> Figure:
    """Return side-by-side heat maps of sample-by-sample correlation matrices on one shared colour scale
    (§F.3). ``mats``: ``{name: K [N, N]}``; ``max_samples`` shows the leading block only.
    Axes: ``len(mats)`` panels + 1 colour bar."""
    names = list(mats)
    fig, axes = _panels(len(names), ax, panel=(3.4, 3.2))
    norm = Normalize(vmin, vmax)
    im = None
    for a, n in zip(axes, names):
        k = _arr(mats[n])[:max_samples, :max_samples]
        im = a.imshow(k, cmap=cmap, norm=norm, interpolation="nearest")
        a.set_title(n)
        a.set_xticks([])
        a.set_yticks([])
        a.grid(False)
    fig.colorbar(im, ax=axes, shrink=0.85)
    if title:
        fig.suptitle(title)
    return fig


@_styled
def plot_eigenspectra(spectra: dict, ax=None, normalize: bool = True, logy: bool = True,
                      title: str | None = None) -> Figure:
    """Return eigenvalue spectra (descending, ``λ / Σλ`` if ``normalize``) of Gram matrices, one line per
    source; names starting with ``"N(0,1)"`` or ``"noise"`` are drawn as a dashed reference. One panel."""
    fig, (a,) = _panels(1, ax, panel=(4.6, 3.4))
    colors = source_colors([n for n in spectra if not _is_noise(n)])
    for n, lam in spectra.items():
        lam = np.sort(_arr(lam).ravel())[::-1].astype(float)
        if normalize and lam.sum() > 0:
            lam = lam / lam.sum()
        if logy:  # numerically-zero eigenvalues (beyond the rank) are not drawn
            lam = np.where(lam > 1e-10 * max(lam.max(initial=0.0), 1e-300), lam, np.nan)
        noise = _is_noise(n)
        a.plot(np.arange(1, lam.size + 1), lam, ls="--" if noise else "-", color=NOISE_COLOR if noise else colors[n],
               label=n)
    if logy:
        _log_y(a)
    a.set_xlabel("eigenvalue rank")
    a.set_ylabel("λ / Σλ" if normalize else "λ")
    a.legend(fontsize="x-small")
    if title:
        a.set_title(title)
    return fig


def _is_noise(name: str) -> bool:
    return name.startswith("N(0,1)") or name.startswith("noise")


# ---------------------------------------------------------------------------------------------- embedding

def _group_names(groups, names):
    g = np.asarray(groups)
    if names is None:
        names = list(dict.fromkeys(g.tolist()))
        g = np.asarray([names.index(v) for v in g.tolist()])
    return g, [str(n) for n in names]


@_styled
def plot_embedding(emb, groups, names: Sequence[str] | None = None, ax=None, title: str | None = None,
                   s: float = 6.0, palette: dict | None = None) -> Figure:
    """Return a 2-D scatter of an embedding ``emb`` [M, 2] coloured by ``groups`` [M] (indices into ``names``,
    or labels themselves): e.g. t-SNE/PCA of penultimate features coloured by source. One panel."""
    e = _arr(emb)
    g, names = _group_names(groups, names)
    colors = palette or source_colors(names)
    fig, (a,) = _panels(1, ax, panel=(5.0, 4.4))
    for gi, n in enumerate(names):
        sel = g == gi
        a.scatter(e[sel, 0], e[sel, 1], s=s, alpha=0.7, color=colors.get(n), label=n, edgecolors="none")
    a.set_xticks([])
    a.set_yticks([])
    a.legend(fontsize="x-small", markerscale=2)
    if title:
        a.set_title(title)
    return fig


@_styled
def plot_embedding_by_class(emb, groups, classes, names: Sequence[str] | None = None,
                            class_names: Sequence[str] | None = None, ax=None, title: str | None = None,
                            s: float = 8.0) -> Figure:
    """Return one panel per source of a shared embedding ``emb`` [M, 2]: that source's points coloured by class
    (``classes`` [M] ints), every other point in light grey. Panels: number of sources."""
    import seaborn as sns

    e = _arr(emb)
    g, names = _group_names(groups, names)
    c = np.asarray(_arr(classes)).astype(int)
    k = int(c.max()) + 1 if c.size else 1
    pal = sns.color_palette("tab10" if k <= 10 else "husl", k)
    fig, axes = _panels(len(names), ax, panel=(3.4, 3.2))
    for gi, (a, n) in enumerate(zip(axes, names)):
        sel = g == gi
        a.scatter(e[~sel, 0], e[~sel, 1], s=s * 0.5, color="#dddddd", edgecolors="none")
        for ci in range(k):
            m = sel & (c == ci)
            if m.any():
                lab = class_names[ci] if class_names is not None and ci < len(class_names) else str(ci)
                a.scatter(e[m, 0], e[m, 1], s=s, color=pal[ci], label=lab, edgecolors="none")
        a.set_title(n)
        a.set_xticks([])
        a.set_yticks([])
    handles, labels = [], []
    for a in axes:
        for h, lab in zip(*a.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        axes[-1].legend(handles, labels, fontsize="xx-small", loc="best", markerscale=1.5)
    if title:
        fig.suptitle(title)
    return fig


# ------------------------------------------------------------------------------------------------- images

@_styled
def plot_image_grid(images_by_source, mean=None, std=None, n: int = 32, nrow: int = 8, ax=None,
                    title: str | None = None) -> Figure:
    """Return image grids, one panel per source, of the first ``n`` images [N, 3, H, W] (model input space),
    de-normalized with ``mean``/``std`` (the model spec's) — or min-max scaled per grid when ``mean`` is
    ``None``. ``images_by_source``: ``{name: images}`` or one tensor. Panels: number of sources."""
    from torchvision.utils import make_grid

    from ..data import denormalize

    if not isinstance(images_by_source, dict):
        images_by_source = {"": images_by_source}
    names = list(images_by_source)
    fig, axes = _panels(len(names), ax, panel=(3.6, 3.6 * math.ceil(n / nrow) / nrow + 0.4))
    for a, name in zip(axes, names):
        x = torch.as_tensor(images_by_source[name])[:n].detach().float().cpu()
        if mean is not None:
            x = denormalize(x, mean, std)
        else:
            x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)
        grid = make_grid(x, nrow=nrow, padding=1, pad_value=1.0).permute(1, 2, 0).numpy()
        a.imshow(grid, interpolation="nearest")
        a.set_title(name)
        a.axis("off")
    if title:
        fig.suptitle(title)
    return fig


@_styled
def plot_loss_curves(history: dict, ax=None, title: str | None = None) -> Figure:
    """Return per-term loss curves from a ``SampleSet.history`` (``{term: [[value per step] per batch]}``):
    the mean over batches at each step, one line per term (``total`` in black). Symmetric-log y axis when a
    term goes negative (SCI), else log. One panel."""
    import seaborn as sns

    fig, (a,) = _panels(1, ax, panel=(5.0, 3.4))
    terms = [t for t in history if any(len(b) for b in history[t])]
    pal = dict(zip([t for t in terms if t != "total"], sns.color_palette("tab10", max(1, len(terms)))))
    any_neg = False
    for t in terms:
        runs = [np.asarray(b, dtype=float) for b in history[t] if len(b)]
        steps = max(len(r) for r in runs)
        mat = np.full((len(runs), steps), np.nan)
        for i, r in enumerate(runs):
            mat[i, :len(r)] = r
        with np.errstate(all="ignore"):
            y = np.nanmean(mat, 0)
        any_neg |= bool(np.nanmin(y) <= 0)
        a.plot(np.arange(steps), y, color="k" if t == "total" else pal[t], lw=2 if t == "total" else 1.2, label=t)
    if terms:
        if any_neg:
            a.set_yscale("symlog", linthresh=1e-3)
        else:
            _log_y(a)
        a.legend(fontsize="x-small", ncol=2)
    a.set_xlabel("step")
    _int_x(a)
    a.set_ylabel("weighted term value")
    if title:
        a.set_title(title)
    return fig


def plot_loss_curves_by_source(histories: dict, ax=None, title: str | None = None) -> Figure:
    """Return one :func:`plot_loss_curves` panel per source. ``histories``: ``{name: SampleSet.history}``.
    Panels: ``len(histories)``."""
    names = list(histories)
    fig, axes = (new_figure(len(names), panel=(4.6, 3.4)) if ax is None else _panels(len(names), ax))
    for a, n in zip(axes, names):
        plot_loss_curves(histories[n], ax=a, title=n)
    if title:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------- diversity study

def _rho_text(res) -> str:
    from .study import format_rho

    return format_rho(res) if res else "–"


@_styled
def plot_diversity_vs_accuracy(rows: Sequence[dict], acc_key: str, score_keys: Sequence[str],
                               table: dict | None = None, ax=None, ncols: int | None = None,
                               title: str | None = None, legend: bool = True, n_boot: int = 2000,
                               seed: int = 0) -> Figure:
    """Return one scatter panel per diversity score: each sample set's score (x) against its top-1 at ``acc_key``
    (y), coloured by source (:func:`source_colors`); marker size and opacity grow with the optimization steps
    (sets with 0 steps — real images, Gaussian noise — are diamonds). Each panel's title gives Spearman's ρ
    [CI] pooled over sources and within sources (:mod:`dsg_viz.diagnostics.study`).

    Args:
        rows: :func:`~dsg_viz.diagnostics.study.study_rows` output, ``[{"source", "seed", "steps", <score>,
            <accuracy key>, ...}]``; rows missing the score or ``acc_key`` are left out of that panel.
        acc_key: e.g. ``"calib/W3A3"``.
        score_keys: the scores to plot, one panel each (labels from :data:`~.metrics.SCORES`).
        table: a :func:`~dsg_viz.diagnostics.study.correlation_table` holding ``acc_key`` (its numbers are shown);
            ``None`` computes ρ here with ``n_boot`` resamples and ``seed``.
        ax: ``len(score_keys)`` axes to draw into; ncols: panels per row of a new figure (default up to 4).
        legend: add the source legend (outside on the right of a constrained-layout figure); ``False`` when
            composing several calls into one figure, for all but one of them.
    Panels: ``len(score_keys)``.
    """
    from matplotlib.layout_engine import ConstrainedLayoutEngine
    from matplotlib.lines import Line2D

    from .study import correlation_table

    keys = list(score_keys)
    if not keys:
        raise ValueError("score_keys is empty; name at least one score")
    if table is None or acc_key not in table.get("pooled", {}) or any(s not in table["pooled"][acc_key] for s in keys):
        table = correlation_table(rows, keys, [acc_key], n_boot=n_boot, seed=seed)
    sources = list(dict.fromkeys(r["source"] for r in rows))
    colors = source_colors(sources)
    pos = [r["steps"] for r in rows if r.get("steps")]
    lo_k, hi_k = (min(pos), max(pos)) if pos else (1, 1)
    ncols = ncols or min(len(keys), 4)
    fig, axes = _panels(len(keys), ax, panel=(3.4, 3.0), ncols=ncols)
    for a, s in zip(axes, keys):
        for src in sources:
            sel = [r for r in rows if r["source"] == src and r.get(s) is not None and r.get(acc_key) is not None]
            if not sel:
                continue
            k = np.array([r.get("steps") or 0 for r in sel], dtype=float)
            with np.errstate(divide="ignore"):
                frac = np.clip((np.log(k) - np.log(lo_k)) / max(np.log(hi_k / lo_k), 1e-12), 0, 1) if hi_k > lo_k \
                    else np.ones_like(k)
            x = np.array([r[s] for r in sel], dtype=float)
            y = np.array([r[acc_key] for r in sel], dtype=float)
            zero = k == 0
            if (~zero).any():
                rgba = np.tile(np.array(to_rgba(colors[src])), (int((~zero).sum()), 1))
                rgba[:, 3] = 0.3 + 0.65 * frac[~zero]
                a.scatter(x[~zero], y[~zero], s=8 + 52 * frac[~zero], c=rgba, edgecolors="none")
            if zero.any():
                a.scatter(x[zero], y[zero], s=34, marker="D", color=colors[src], edgecolors="k", linewidths=0.4)
        pooled = table["pooled"][acc_key][s]
        within = table["within"][acc_key][s]
        a.set_title(f"{SCORES.get(s, s)}\npooled ρ {_rho_text(pooled)}\nwithin sources {_rho_text(within)}",
                    fontsize="small")
        a.set_xlabel(s)
    for a in (axes[::ncols] if ax is None else axes[:1]):
        a.set_ylabel(f"top-1 (%), {acc_key}")
    shown = list(dict.fromkeys(r["source"] for r in rows if r.get(acc_key) is not None
                               and any(r.get(s) is not None for s in keys)))
    handles = [Line2D([], [], ls="none", color=colors[src], markeredgecolor="k" if zero_only else colors[src],
                      marker="D" if zero_only else "o", markersize=6, label=src)
               for src in shown for zero_only in [all(not r.get("steps") for r in rows if r["source"] == src)]]
    if handles and legend:
        legend_title = f"source\n(size: steps {lo_k}–{hi_k};\n◆: 0 steps)" if pos else "source"
        if isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine):
            fig.legend(handles=handles, loc="outside right upper", fontsize="x-small", title=legend_title,
                       title_fontsize="x-small")
        else:
            axes[-1].legend(handles=handles, fontsize="x-small", title=legend_title, title_fontsize="x-small")
    if title:
        fig.suptitle(title)
    return fig
