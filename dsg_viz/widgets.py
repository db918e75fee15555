"""Thin ipywidgets panels for the tutorial notebooks.

Each panel is a form built from a frozen config dataclass (:class:`ConfigForm`), a **Run** button, a progress bar
with a status line (it ends on "done in … s"), an ``ipywidgets.Output`` and a ``result`` attribute holding the last
result. Progress is streamed by the panel's own widgets (the generation panel also draws a live loss curve), never by
``tqdm.auto`` bars. ``panel.run()`` does exactly what
clicking Run does — read the form into a config and call the same library function the CLI calls — so tests and
later notebook cells can call it. User errors (:class:`~dsg_viz.errors.DsgVizError`, a diverging generation) are
shown in the output area as one clear line, kept in ``panel.error``, and ``run()`` returns ``None``.

Panels (display one by leaving it as the last expression of a cell, or ``display(panel)``):

* :class:`LayerChannelPanel` — pick a BN layer and channel → pooled BN-input histograms per source with the BN
  Gaussian and W1 (cheap, updates live).
* :class:`GenerationPanel` — a :class:`~dsg_viz.generation.GenerationConfig` (preset, ε, margin scale, LSE and SCI
  weights, steps, samples) and a seed → :func:`~dsg_viz.generation.generate` (a live loss curve and step counter
  while it runs) → image grid and per-term loss curves.
* :class:`QuantPanel` — a :class:`~dsg_viz.compare.CompareConfig` (bit widths, calibration, weight range,
  convention, sources) → :func:`dsg_viz.compare.quantize_calibrate_eval` per cell → accuracy table and plot; on a
  large test split a first table on a fixed 2,000-image subset, then the full split, each labelled.
* :class:`DiagnosticsPanel` — a :class:`DiagnosticsConfig` → :func:`dsg_viz.diagnostics.diagnose` → summary
  table, the key figures and a link to the report.
"""

from __future__ import annotations

import html
import io
import math
import os
import time
import types
import typing
from dataclasses import dataclass, is_dataclass, replace
from pathlib import Path

import ipywidgets as W
import torch
import torch.nn as nn
from IPython.display import HTML, Image, Markdown

from .errors import ConfigError, DsgVizError

__all__ = ["ConfigForm", "Panel", "LayerChannelConfig", "LayerChannelPanel", "GenerationPanel", "QuantPanel",
           "DiagnosticsConfig", "DiagnosticsPanel", "figure_png", "report_link"]

_STYLE = {"description_width": "initial"}


# ------------------------------------------------------------------------------------------------- forms

def _optional(hint) -> tuple[bool, typing.Any]:
    """Return ``(is_optional, inner type)`` of a type hint such as ``int | None``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) < len(typing.get_args(hint)) and len(args) == 1:
            return True, args[0]
    return False, hint


def _is_tuple(hint) -> bool:
    return hint is tuple or typing.get_origin(hint) is tuple


def _hint_and_value(config, dotted: str):
    """Return ``(type hint, current value)`` of the (possibly nested, ``a.b``) field ``dotted`` of ``config``."""
    obj, hint = config, None
    for part in dotted.split("."):
        if not is_dataclass(obj):
            raise ConfigError(f"{dotted!r}: {type(obj).__name__} is not a config dataclass")
        hints = typing.get_type_hints(type(obj))
        if part not in hints:
            raise ConfigError(f"{type(obj).__name__} has no field {part!r}")
        hint, obj = hints[part], getattr(obj, part)
    return hint, obj


def _parse_number(text: str, kind, label: str):
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{label}: cannot read {text!r} as {'an integer' if kind is int else 'a number'}; "
                          "leave the box empty for the default") from None


class ConfigForm:
    """A form for some fields of a frozen config dataclass; :meth:`to_config` returns the edited copy.

    Widgets follow the field types: ``bool`` → checkbox, ``int`` / ``float`` → number box, a field with
    ``choices`` → dropdown (a tuple field → multi-select), ``X | None`` → text box where empty means ``None``,
    other tuples → comma-separated text. Nested config fields are named with a dot (``"margins.quantile"``).

    Args:
        config: the starting config (defaults of the form).
        names: the fields to show, in order.
        choices: ``{field: options}`` for dropdowns / multi-selects.
        labels: ``{field: description}`` shown beside each widget (default: the field name).
        widgets: ``{field: widget}`` to use instead of the automatic one (its ``value`` is read as is).
    """

    def __init__(self, config, names, choices: dict | None = None, labels: dict | None = None,
                 widgets: dict | None = None):
        self.config = config
        self.names = list(names)
        self.choices = dict(choices or {})
        self.labels = {n: (labels or {}).get(n, n) for n in self.names}
        self.hints = {n: _hint_and_value(config, n)[0] for n in self.names}
        self.widgets: dict[str, W.Widget] = {}
        for n in self.names:
            self.widgets[n] = (widgets or {}).get(n) or self._make(n)
        self.set_config(config)
        self.box = W.GridBox(list(self.widgets.values()),
                             layout=W.Layout(grid_template_columns="repeat(3, minmax(210px, 1fr))",
                                             grid_gap="4px 12px"))

    def _make(self, name: str) -> W.Widget:
        hint, _ = _hint_and_value(self.config, name)
        opt, inner = _optional(hint)
        kw = dict(description=self.labels[name], style=_STYLE, layout=W.Layout(width="auto"))
        if name in self.choices:
            if _is_tuple(inner):
                return W.SelectMultiple(options=list(self.choices[name]), rows=min(6, len(self.choices[name])), **kw)
            return W.Dropdown(options=list(self.choices[name]), **kw)
        if inner is bool:
            return W.Checkbox(indent=False, **kw)
        if opt or _is_tuple(inner) or inner is str:
            return W.Text(placeholder="default" if opt else "", continuous_update=False, **kw)
        if inner is int:
            return W.IntText(**kw)
        if inner is float:
            return W.FloatText(**kw)
        return W.Text(continuous_update=False, **kw)

    def set_config(self, config) -> None:
        """Show the values of ``config`` in the widgets."""
        self.config = config
        for n, w in self.widgets.items():
            hint, v = _hint_and_value(config, n)
            opt, inner = _optional(hint)
            if isinstance(w, W.SelectMultiple):
                w.value = tuple(x for x in v if x in w.options)
            elif isinstance(w, W.Dropdown):
                if v not in w.options:
                    w.options = list(w.options) + [v]
                w.value = v
            elif isinstance(w, W.Text) and not isinstance(v, str):
                w.value = "" if v is None else (", ".join(map(str, v)) if isinstance(v, tuple) else f"{v}")
            else:
                w.value = v

    def values(self) -> dict:
        """Return ``{field: value}`` read from the widgets (text parsed; :class:`ConfigError` if unreadable)."""
        out = {}
        for n, w in self.widgets.items():
            opt, inner = _optional(self.hints[n])
            v = w.value
            if isinstance(w, W.SelectMultiple):
                v = tuple(v)
            elif isinstance(w, W.Text) and inner is not str:
                text = v.strip()
                if _is_tuple(inner):
                    v = tuple(x.strip() for x in text.split(",") if x.strip())
                elif opt and text.lower() in ("", "none", "default", "auto"):
                    v = None
                elif inner in (int, float):
                    v = _parse_number(text, inner, self.labels[n])
                else:
                    v = text
            elif isinstance(w, W.Text) and opt and not v.strip():
                v = None
            out[n] = v
        return out

    def to_config(self):
        """Return the config with the form's values (``dataclasses.replace``, nested fields included), validated
        with its ``validate()`` when it has one. Raises :class:`ConfigError` on a bad value."""
        return self.apply(self.config, self.values())

    @staticmethod
    def apply(config, values: dict):
        """Return ``config`` with ``values`` (``{dotted field: value}``) replaced, validated."""
        top, nested = {}, {}
        for k, v in values.items():
            head, _, rest = k.partition(".")
            if rest:
                nested.setdefault(head, {})[rest] = v
            else:
                top[k] = v
        for head, sub in nested.items():
            top[head] = ConfigForm.apply(getattr(config, head), sub)
        try:
            cfg = replace(config, **top)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"invalid settings: {e}") from None
        if hasattr(cfg, "validate"):
            cfg.validate()
        return cfg


# ------------------------------------------------------------------------------------------------ panels

def report_link(path) -> str:
    """Return HTML for a link to the file ``path``: relative to the current directory (a notebook's folder, which
    JupyterLab resolves against the notebook and opens in a new tab) and, beside it, the absolute path."""
    path = Path(path).resolve()
    try:
        href = os.path.relpath(path, Path.cwd())
    except ValueError:  # another drive (Windows)
        href = path.as_uri()
    href = "/".join(href.split(os.sep))
    return (f"<div class='dsg-viz-report-link'>full report: <a href=\"{html.escape(href)}\" target=\"_blank\" "
            f"rel=\"noopener\">{html.escape(path.name)}</a> <code>{html.escape(str(path))}</code></div>")


def figure_png(fig, dpi: int = 100) -> bytes:
    """Return a matplotlib figure as PNG bytes, and close it if pyplot holds it (so a notebook shows it once)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    try:
        import matplotlib.pyplot as plt

        plt.close(fig)
    except Exception:  # noqa: BLE001 - closing is best effort
        pass
    return buf.getvalue()


class Panel:
    """Base of the panels: title, form, Run button, progress bar, status line, output area, ``result``.

    Subclasses implement ``_compute(config)`` (the work; returns the result) and ``_show(result)`` (appends
    displays with :meth:`show`). Attributes: ``config`` (last config run, or the starting one), ``result``
    (last result or ``None``), ``error`` (the last error message or ``None``), ``form``, ``run_button``,
    ``progress``, ``status``, ``output``, ``widget`` (the whole panel as one ``VBox``).
    """

    title = "panel"

    def __init__(self, config, names, choices=None, labels=None, widgets=None, extra: list | None = None,
                 help_text: str = ""):
        self.config = config
        self.result = None
        self.error: str | None = None
        self.form = ConfigForm(config, names, choices, labels, widgets)
        self.run_button = W.Button(description="Run", button_style="primary", icon="play",
                                   tooltip="run with these settings", layout=W.Layout(width="120px"))
        self.progress = W.IntProgress(value=0, min=0, max=1, layout=W.Layout(width="260px"))
        self.status = W.HTML("")
        self.output = W.Output(layout=W.Layout(min_height="40px"))
        self.run_button.on_click(self._on_click)
        head = [W.HTML(f"<b>{self.title}</b>" + (f" — {help_text}" if help_text else ""))]
        self.widget = W.VBox(head + [self.form.box] + list(extra or []) +
                             [W.HBox([self.run_button, self.progress, self.status]), self.output],
                             layout=W.Layout(border="1px solid #ccc", padding="6px"))
        self.widget.add_class("dsg-viz-panel")

    # display the panel itself
    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def read_config(self):
        """Return the config the form describes (raises :class:`ConfigError` on a bad value)."""
        return self.form.to_config()

    def show(self, obj) -> None:
        """Append ``obj`` (a Figure, Markdown, HTML or text) to the output area."""
        if hasattr(obj, "savefig"):
            obj = Image(data=figure_png(obj), format="png")
        elif isinstance(obj, str):
            obj = Markdown(obj)
        self.output.append_display_data(obj)

    def set_progress(self, done: int, total: int, text: str = "") -> None:
        """Update the progress bar (and the status text)."""
        self.progress.max = max(1, int(total))
        self.progress.value = min(int(done), self.progress.max)
        if text:
            self.status.value = text

    def _show_error(self, message: str) -> None:
        self.error = message
        self.progress.bar_style = "danger"
        self.status.value = "<span style='color:#b00'>error</span>"
        self.output.append_display_data(HTML(
            "<div class='dsg-viz-error' style='color:#b00;font-weight:bold'>error: "
            + message.replace("&", "&amp;").replace("<", "&lt;") + "</div>"))

    def run(self):
        """Read the form, run the panel's library call, show and keep the result; return it (``None`` on a user
        error, which is shown in the output area and kept in ``error``). The status line ends on "done in … s"."""
        from .generation import GenerationError

        self.error = None
        self.output.outputs = ()
        self.progress.bar_style = "info"
        self.progress.value = 0
        self.status.value = "running…"
        self.run_button.disabled = True
        t0 = time.perf_counter()
        try:
            cfg = self.read_config()
            result = self._compute(cfg)
        except (DsgVizError, GenerationError) as e:
            self._show_error(str(e))
            return None
        finally:
            self.run_button.disabled = False
            self._end_live()
        self.config, self.result = cfg, result
        self.progress.bar_style = "success"
        self.progress.value = self.progress.max
        self._show(result)
        done = self._done_text(result)
        self.status.value = (f"done in {time.perf_counter() - t0:.1f} s (at {time.strftime('%H:%M:%S')})"
                             + (f": {done}" if done else ""))
        return result

    def _done_text(self, result) -> str:
        """A few words on what the finished run made (shown after "done in … s")."""
        return ""

    def _end_live(self) -> None:
        """Hide whatever streamed progress the panel showed while running."""

    def _on_click(self, _button) -> None:
        with self.output:  # unexpected exceptions (bugs) show their traceback here instead of vanishing
            self.run()

    def _compute(self, config):  # pragma: no cover - abstract
        raise NotImplementedError

    def _show(self, result) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


# ------------------------------------------------------------------------------------ layer / channel

@dataclass(frozen=True)
class LayerChannelConfig:
    """Which BN input to histogram: ``layer`` (dotted BN name; ``""`` = the middle layer), ``channel``, ``bins``."""

    layer: str = ""
    channel: int = 0
    bins: int = 60


class LayerChannelPanel(Panel):
    """Pick a BN layer and channel → pooled BN-input histograms of each source against the BN Gaussian
    N(μ, σ²), with W1 (in σ units) beside each panel. Features are collected once at construction
    (:func:`dsg_viz.diagnostics.collect_features`); each update only redraws, so the panel updates live.

    Args:
        model: the BN network.
        sources: ``{name: SampleSet | images [N, 3, H, W] | Features}``.
        config: the starting :class:`LayerChannelConfig`.
        max_values: per layer and channel, BN-input values kept per source.
        live: redraw when the layer, channel or bins change (no Run click needed).

    ``result``: ``{"layer", "layer_index", "channel", "mu", "sigma", "w1": {source: W1}, "figure"}``.
    """

    title = "BN input of one layer and channel"

    def __init__(self, model: nn.Module, sources: dict, config: LayerChannelConfig | None = None,
                 max_values: int = 5000, live: bool = True):
        from .bn import bn_targets
        from .diagnostics.metrics import Features, collect_features

        self.targets = bn_targets(model)
        names = list(self.targets.names)
        config = config or LayerChannelConfig()
        if not config.layer:
            config = replace(config, layer=names[len(names) // 2])
        if not sources:
            raise ConfigError("LayerChannelPanel needs at least one source")
        self.features = {}
        for k, s in sources.items():
            if isinstance(s, Features):
                self.features[k] = s
            else:
                imgs = getattr(s, "images", s)
                self.features[k] = collect_features(model, imgs, max_values=max_values)
        channel = W.BoundedIntText(min=0, max=10_000, description="channel", style=_STYLE,
                                   layout=W.Layout(width="auto"))
        bins = W.IntSlider(min=10, max=200, step=10, description="bins", style=_STYLE, continuous_update=False)
        super().__init__(config, ["layer", "channel", "bins"], choices={"layer": names},
                         widgets={"channel": channel, "bins": bins},
                         help_text="cheap: redraws as you change the layer or channel" if live else "")
        self.form.widgets["layer"].observe(self._clamp_channel, names="value")
        self._clamp_channel()
        if live:
            for w in self.form.widgets.values():
                w.observe(lambda _change: self._on_click(None), names="value")

    def _clamp_channel(self, _change=None) -> None:
        """Limit the channel box to the chosen layer's channels."""
        layer = self.form.widgets["layer"].value
        if layer in self.targets.names:
            ch = self.form.widgets["channel"]
            ch.max = self.targets.mean[self.targets.names.index(layer)].numel() - 1

    def _compute(self, cfg: LayerChannelConfig) -> dict:
        from .diagnostics import plots as P
        from .diagnostics.metrics import wasserstein_to_gaussian

        if cfg.layer not in self.targets.names:
            raise ConfigError(f"unknown BN layer {cfg.layer!r}; choose one of {', '.join(self.targets.names)}")
        li = self.targets.names.index(cfg.layer)
        c_l = self.targets.mean[li].numel()
        if not 0 <= cfg.channel < c_l:
            raise ConfigError(f"channel {cfg.channel} out of range: layer {cfg.layer} has {c_l} channels "
                              f"(0..{c_l - 1})")
        if cfg.bins < 2:
            raise ConfigError(f"bins must be >= 2 (got {cfg.bins})")
        mu, sg = float(self.targets.mean[li][cfg.channel]), float(self.targets.std[li][cfg.channel])
        vals = {}
        for k, f in self.features.items():
            v = f.values[li]
            if v is None:
                raise ConfigError(f"source {k!r} kept no BN-input values for layer {cfg.layer}")
            vals[k] = v[cfg.channel]
        w1 = {k: float(wasserstein_to_gaussian(v[None], torch.tensor([mu]), torch.tensor([sg]))[0])
              for k, v in vals.items()}
        fig = P.plot_bn_histograms(vals, mu, sg, bins=cfg.bins, notes={k: f"W1 = {w:.3f}σ" for k, w in w1.items()},
                                   title=f"BN input of {cfg.layer} (layer {li}), channel {cfg.channel}")
        self.set_progress(1, 1, f"layer {li}, channel {cfg.channel}")
        return {"layer": cfg.layer, "layer_index": li, "channel": cfg.channel, "mu": mu, "sigma": sg, "w1": w1,
                "figure": fig}

    def _show(self, r: dict) -> None:
        self.show(r["figure"])
        self.show("W1 to the BN Gaussian (σ units, lower = closer to what BN expects): "
                  + ", ".join(f"{k} **{v:.3f}**" for k, v in r["w1"].items()))


# ------------------------------------------------------------------------------------------- generation

GENERATION_FIELDS = ("method", "margins.quantile", "margins.scale", "lse_weight", "sci", "sci_weight", "steps",
                     "num_samples", "batch_size", "lr")
GENERATION_LABELS = {"method": "preset", "margins.quantile": "margin quantile ε", "margins.scale": "margin scale",
                     "lse_weight": "LSE weight (1 = off)", "sci": "SCI mode", "sci_weight": "SCI weight (empty = 1/L)",
                     "steps": "steps", "num_samples": "samples", "batch_size": "batch size", "lr": "learning rate"}


class GenerationPanel(Panel):
    """Generate one sample set with a :class:`~dsg_viz.generation.GenerationConfig` built from a preset and the
    form (ε, margin scale, LSE and SCI weights, steps, samples...), and a seed. Run calls
    :func:`dsg_viz.generation.generate` (what ``dsg-viz generate`` runs) — while it runs, the status shows the
    batch and step and a live curve of the total loss is redrawn about every ``live_every`` seconds — then shows an
    image grid (next to the ``compare_to`` sets) and per-term loss curves. Choosing another preset loads its
    settings into the form (the sample count, batch size and steps stay; ``gaussian`` keeps its 0 steps).

    Args:
        model: the BN network.
        preset: starting preset name (see :data:`dsg_viz.generation.PRESETS`).
        seed: starting seed.
        compare_to: ``{name: SampleSet}`` shown beside the result (e.g. the notebook's ZeroQ set).
        cache_dir: the sample cache (:mod:`dsg_viz.cache`): each result is saved there under a hash of (model,
            checkpoint, the full config, seed, version) and a later run with the same settings — here, in
            ``dsg-viz compare`` or in a notebook — loads it instead of recomputing (tick "recompute" to regenerate).
            ``None`` = the shared default cache (``$DSG_VIZ_SAMPLE_CACHE``, else ``runs/cache/``); ``False`` = no
            caching.
        fields: the config fields shown in the form.
        live_every: seconds between two redraws of the live loss curve (``None``: no live curve).
        **overrides: :class:`GenerationConfig` fields applied to the preset (e.g. ``steps=5, num_samples=16``).

    ``result``: the :class:`~dsg_viz.generation.SampleSet`; ``from_cache``: whether it was loaded; ``live``: the
    ``ipywidgets.Image`` of the live loss curve (hidden when no run is in progress).
    """

    title = "Generate samples"

    def __init__(self, model: nn.Module, preset: str = "dsg", seed: int = 0, compare_to: dict | None = None,
                 cache_dir: str | Path | None | bool = None, fields=GENERATION_FIELDS, live_every: float | None = 1.0,
                 **overrides):
        from .generation import PRESETS, SCI_MODES
        from .generation import preset as make_preset

        self.model = model
        self.compare_to = dict(compare_to or {})
        if cache_dir is False:
            self.cache_dir = None
        else:
            from .cache import default_cache_dir

            self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.from_cache = False
        self.live_every = live_every
        self.live = W.Image(format="png", layout=W.Layout(display="none", max_width="560px"))
        self._losses: list[list[float]] = []
        config = make_preset(preset, **overrides)
        self._steps = config.steps or PRESETS["dsg"].steps  # restored when leaving the gaussian preset
        self.seed = W.IntText(value=seed, description="seed", style=_STYLE, layout=W.Layout(width="160px"))
        self.recompute = W.Checkbox(value=False, description="recompute (ignore cache)", indent=False,
                                    layout=W.Layout(width="220px", display="" if self.cache_dir else "none"))
        super().__init__(config, fields, choices={"method": list(PRESETS), "sci": list(SCI_MODES)},
                         labels=GENERATION_LABELS, extra=[W.HBox([self.seed, self.recompute])],
                         help_text="each Run optimizes pixels; seconds to minutes depending on steps × samples")
        self.widget.children = (*self.widget.children[:-1], self.live, self.widget.children[-1])
        if "method" in self.form.widgets:
            self.form.widgets["method"].observe(self._on_preset, names="value")

    def _on_preset(self, change) -> None:
        from .generation import PRESETS
        from .generation import preset as make_preset

        name = change["new"]
        if name not in PRESETS:
            return
        cur = self.form.values()
        keep = {k: cur[k] for k in ("num_samples", "batch_size", "steps") if k in cur}
        if keep.get("steps"):
            self._steps = keep["steps"]
        if PRESETS[name].steps == 0:  # noise: no optimization
            keep.pop("steps", None)
        elif keep.get("steps") == 0:  # back from noise: the last step count used
            keep["steps"] = self._steps
        try:
            self.form.set_config(make_preset(name, **keep))
        except DsgVizError as e:  # pragma: no cover - sizes come from a valid form
            self._show_error(str(e))

    def _compute(self, cfg):
        from .cache import get_or_generate
        from .generation import generate

        seed = int(self.seed.value)
        self.from_cache = False
        nb = math.ceil(cfg.num_samples / cfg.batch_size)
        total = nb * max(cfg.steps, 1)
        self._losses = []
        last = [time.perf_counter(), -1.0]  # last status update, last live redraw

        def callback(b, step, values):
            done = b * cfg.steps + step + 1
            if step == 0:
                self._losses.append([])
            self._losses[-1].append(sum(float(v) for v in values.values()))
            now = time.perf_counter()
            if done == total or now - last[0] >= 0.25:
                last[0] = now
                self.set_progress(done, total, f"generating: batch {b + 1}/{nb}, step {step + 1}/{cfg.steps}, "
                                               f"loss {self._losses[-1][-1]:.4g}")
            if self.live_every is not None and now - last[1] >= self.live_every:
                self._draw_live(cfg, nb)
                last[1] = time.perf_counter()

        if self.cache_dir is None:
            s = generate(self.model, cfg, seed=seed, progress=False, callback=callback)
        else:
            hit = get_or_generate(self.model, cfg, seed=seed, cache_dir=self.cache_dir,
                                  recompute=bool(self.recompute.value), progress=False, callback=callback)
            s, self.from_cache = hit.samples, hit.loaded
            if hit.loaded:
                self.set_progress(1, 1, f"loaded from cache {hit.path.name}")
                return s
        self.set_progress(total, total, f"{len(s)} samples in {s.seconds:.1f} s")
        return s

    def _draw_live(self, cfg, nb: int) -> None:
        """Redraw the live curve: total loss against the step, one line per batch so far (log scale)."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5.2, 2.1), layout="constrained")
        ax = fig.add_subplot()
        for i, ls in enumerate(self._losses):
            ax.plot(range(1, len(ls) + 1), ls, lw=1.2, alpha=1.0 if i == len(self._losses) - 1 else 0.35,
                    color="#d62728" if i == len(self._losses) - 1 else "#888888")
        if all(v > 0 for ls in self._losses for v in ls):
            ax.set_yscale("log")
        ax.set_xlim(0, max(cfg.steps, 1))
        ax.set_xlabel("step")
        ax.set_ylabel("total loss")
        ax.set_title(f"live: {cfg.method}, batch {len(self._losses)}/{nb}", fontsize=9)
        ax.tick_params(labelsize=8)
        self.live.value = figure_png(fig, dpi=80)
        self.live.layout.display = ""

    def _end_live(self) -> None:
        self.live.layout.display = "none"

    def _done_text(self, s) -> str:
        return "loaded from the cache" if self.from_cache else f"{len(s)} samples generated"

    def _label(self) -> str:
        name = self.result.method
        return name if name not in self.compare_to else f"{name} (panel)"

    def _show(self, s) -> None:
        from .diagnostics import plots as P

        spec = self.model.spec
        label = self._label()
        how = "loaded from the cache" if self.from_cache else f"generated in {s.seconds:.1f} s"
        self.show(f"**{label}**: {len(s)} samples, {s.config.get('steps')} steps, seed {s.seed}, {how}"
                  + (" — interrupted" if s.interrupted else ""))
        sets = {**{k: v.images for k, v in self.compare_to.items()}, label: s.images}
        self.show(P.plot_image_grid(sets, spec.mean, spec.std, n=min(32, len(s)), nrow=8))
        hist = {k: v.history for k, v in {**self.compare_to, label: s}.items()
                if v.history and any(len(b) for h in v.history.values() for b in h)}
        if hist:
            self.show(P.plot_loss_curves_by_source(hist))
            final = {k: v[-1][-1] for k, v in s.history.items() if v and v[-1]}
            self.show("final weighted terms: " + ", ".join(f"{k} {v:.4g}" for k, v in final.items()))


# ------------------------------------------------------------------------------------------ quantization

BIT_CHOICES = ("W2A2", "W3A3", "W4A4", "W4A8", "W5A5", "W6A6", "W8A8")


class QuantPanel(Panel):
    """Quantize the model, calibrate it on each chosen sample set and evaluate it: the ``dsg-viz compare`` cell
    (:func:`dsg_viz.compare.quantize_calibrate_eval`) for every (source, bit width). Form fields come from
    :class:`~dsg_viz.compare.CompareConfig`: bit widths (comma-separated ``W<w>A<a>``), activation calibration,
    weight range, layer convention and sources. Shows the accuracy table and the grouped-bar plot.

    When ``test`` holds more than ``first_look`` images, every cell is first evaluated on a fixed subset of
    ``first_look`` test images (the subset :func:`dsg_viz.notebook_utils.test_split` draws) and that table is shown
    at once, labelled as such; then the cells are evaluated on the whole split and the final table and plot follow.

    Args:
        model: the full-precision model (never modified; each cell quantizes a copy).
        sample_sets: ``{name: SampleSet}`` offered as sources.
        test: the evaluation split (e.g. :func:`dsg_viz.notebook_utils.test_split`).
        config: the starting config; by default W4A4 on every given source.
        fp: ``evaluate(model, test)`` if the notebook already has it (not computed again).
        first_look: size of the subset evaluated first (``None`` or 0: only the whole split).

    ``result``: the results dict of :func:`dsg_viz.notebook_utils.quantize_sources` (``fp``, ``cells``,
    ``table``, ``config``) on the whole ``test`` split, with ``result["first_look"]`` holding the subset's results
    when there was a first look.
    """

    title = "Quantize, calibrate, evaluate"

    def __init__(self, model: nn.Module, sample_sets: dict, test, config=None, fp: dict | None = None,
                 first_look: int | None = 2000):
        from .compare import CompareConfig
        from .quant.quantize import ACT_METHODS, CONVENTIONS, WEIGHT_METHODS

        self.model, self.sample_sets, self.test = model, dict(sample_sets), test
        self.first_look = first_look if first_look and len(test) > first_look else None
        self._fp = {len(test): fp} if fp is not None else {}
        config = config or CompareConfig(sources=tuple(self.sample_sets), bits=("W4A4",), seeds=1)
        bits = W.Text(placeholder="e.g. W4A4, W6A6", continuous_update=False, description="bit widths",
                      style=_STYLE, layout=W.Layout(width="auto", min_width="210px"))
        where = (f"a first look on {self.first_look:,} test images, then all {len(test):,}" if self.first_look
                 else f"{len(test):,} test images")
        super().__init__(config, ["bits", "calibration", "weight_range", "convention", "sources"],
                         choices={"calibration": list(ACT_METHODS), "weight_range": list(WEIGHT_METHODS),
                                  "convention": list(CONVENTIONS), "sources": list(self.sample_sets)},
                         labels={"bits": "bit widths", "calibration": "activation calibration",
                                 "weight_range": "weight range", "convention": "layer convention"},
                         widgets={"bits": bits},
                         help_text=f"each cell quantizes a copy and evaluates it on {where}")

    def _subset(self):
        idx = torch.randperm(len(self.test), generator=torch.Generator().manual_seed(0))[:self.first_look]
        return self.test.subset(idx)

    def _compute(self, cfg) -> dict:
        from .evaluate import evaluate
        from .notebook_utils import quantize_sources, results_table
        from .quant import parse_bits

        cfg = replace(cfg, bits=tuple(f"W{w}A{a}" for w, a in map(parse_bits, cfg.bits)))
        if not cfg.sources:
            raise ConfigError("pick at least one sample source")
        splits = ([("first look", self._subset())] if self.first_look else []) + [("all", self.test)]
        n_cells = len(cfg.sources) * len(cfg.bits) * len(cfg.methods)
        total = n_cells * len(splits)
        results = {}
        for k, (phase, split) in enumerate(splits):
            where = f"{len(split):,} test images" + (" (first look)" if phase == "first look" else "")
            if len(split) not in self._fp:
                self.set_progress(k * n_cells, total, f"full precision on {where}…")
                self._fp[len(split)] = evaluate(self.model, split)

            def callback(i, n, key, k=k, where=where):
                self.set_progress(k * n_cells + i, total, f"{key.replace('|', ' ')} done ({i}/{n} on {where})")

            results[phase] = quantize_sources(self.model, self.sample_sets, cfg, split, fp=self._fp[len(split)],
                                              callback=callback, progress=False)
            if phase == "first look":
                self.show(f"**First look: a fixed subset of {len(split):,} test images** (one standard error of an "
                          f"accuracy ≈ {100 * math.sqrt(0.85 * 0.15 / len(split)):.1f} points); all "
                          f"{len(self.test):,} follow.")
                self.show(results_table(results[phase], cfg))
        r = results["all"]
        if "first look" in results:
            r["first_look"] = results["first look"]
        return r

    def _show(self, r: dict) -> None:
        from .notebook_utils import plot_results, results_table

        if "first_look" in r:
            self.show(f"**All {r['fp']['n']:,} test images** (replaces the first look above).")
        self.show(results_table(r, self.config))
        self.show(plot_results(r, self.config))

    def _done_text(self, r: dict) -> str:
        return f"{len(r['cells'])} cell(s) on {r['fp']['n']:,} test images"


# ------------------------------------------------------------------------------------------- diagnostics

@dataclass(frozen=True)
class DiagnosticsConfig:
    """Settings of :func:`dsg_viz.diagnostics.diagnose` exposed in :class:`DiagnosticsPanel` (``layer`` ``""`` =
    the middle BN layer)."""

    layer: str = ""
    channel: int = 0
    tsne_points: int = 2000
    perplexity: float = 30.0
    seed: int = 0
    max_values: int = 20_000

    def validate(self) -> None:
        if self.tsne_points < 4:
            raise ConfigError(f"tsne_points must be >= 4 (got {self.tsne_points})")
        if self.perplexity <= 0:
            raise ConfigError(f"perplexity must be positive (got {self.perplexity})")
        if self.max_values < 1:
            raise ConfigError(f"max_values must be >= 1 (got {self.max_values})")


class DiagnosticsPanel(Panel):
    """The one-call homogenization report: Run calls :func:`dsg_viz.diagnostics.diagnose` (what
    ``dsg-viz diagnose`` runs) on the given sample sets, writes the report into ``out_dir`` and shows the summary
    table with the BN histogram, the feature-correlation matrices and the t-SNE map, then a link to ``report.html``
    (relative to the notebook's folder, so JupyterLab opens it when the server's root contains it — ``make lab``
    serves the repository).

    ``result``: the summary dict (``scores``, ``per_layer``, ``files`` ...).
    """

    title = "Homogenization report"
    FIGURES_SHOWN = ("bn_hist", "corr_feature", "tsne_source")

    def __init__(self, model: nn.Module, sample_sets: dict, out_dir, config: DiagnosticsConfig | None = None):
        from .bn import bn_targets

        self.model, self.sample_sets, self.out_dir = model, dict(sample_sets), Path(out_dir)
        names = list(bn_targets(model).names)
        config = config or DiagnosticsConfig()
        if not config.layer:
            config = replace(config, layer=names[len(names) // 2])
        super().__init__(config, ["layer", "channel", "tsne_points", "perplexity", "seed"],
                         choices={"layer": names}, labels={"tsne_points": "t-SNE points"},
                         help_text=f"writes report.html into {self.out_dir}")

    def _compute(self, cfg: DiagnosticsConfig) -> dict:
        from .diagnostics import diagnose

        self.set_progress(0, 1, f"diagnosing {len(self.sample_sets)} sources (features, scores, t-SNE, figures, "
                                "report)…")
        return diagnose(self.model, self.sample_sets, self.out_dir, layer=cfg.layer, channel=cfg.channel,
                        tsne_points=cfg.tsne_points, perplexity=cfg.perplexity, seed=cfg.seed, progress=False,
                        max_values=cfg.max_values)

    def _show(self, summary: dict) -> None:
        from .diagnostics.metrics import summary_markdown

        self.show(summary_markdown(summary))
        for name in self.FIGURES_SHOWN:
            path = summary["files"].get(name)
            if path:
                self.output.append_display_data(Image(filename=path))
        self.output.append_display_data(HTML(report_link(summary["files"]["report.html"])))

    def _done_text(self, summary: dict) -> str:
        return f"{len(summary.get('scores', {}))} sources, report written"
