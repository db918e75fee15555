"""Thin ipywidgets panels for the tutorial notebooks.

Each panel is a form built from a frozen config dataclass (:class:`ConfigForm`), a **Run** button, a progress bar,
an ``ipywidgets.Output`` and a ``result`` attribute holding the last result. ``panel.run()`` does exactly what
clicking Run does — read the form into a config and call the same library function the CLI calls — so tests and
later notebook cells can call it. User errors (:class:`~dsg_viz.errors.DsgVizError`, a diverging generation) are
shown in the output area as one clear line, kept in ``panel.error``, and ``run()`` returns ``None``.

Panels (display one by leaving it as the last expression of a cell, or ``display(panel)``):

* :class:`LayerChannelPanel` — pick a BN layer and channel → pooled BN-input histograms per source with the BN
  Gaussian and W1 (cheap, updates live).
* :class:`GenerationPanel` — a :class:`~dsg_viz.generation.GenerationConfig` (preset, ε, margin scale, LSE and SCI
  weights, steps, samples) and a seed → :func:`~dsg_viz.generation.generate` → image grid and per-term loss curves.
* :class:`QuantPanel` — a :class:`~dsg_viz.compare.CompareConfig` (bit widths, calibration, weight range,
  convention, sources) → :func:`dsg_viz.compare.quantize_calibrate_eval` per cell → accuracy table and plot.
* :class:`DiagnosticsPanel` — a :class:`DiagnosticsConfig` → :func:`dsg_viz.diagnostics.diagnose` → summary
  table and the key figures.
"""

from __future__ import annotations

import io
import math
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
           "DiagnosticsConfig", "DiagnosticsPanel", "figure_png"]

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
        error, which is shown in the output area and kept in ``error``)."""
        from .generation import GenerationError

        self.error = None
        self.output.outputs = ()
        self.progress.bar_style = "info"
        self.progress.value = 0
        self.status.value = "running…"
        self.run_button.disabled = True
        try:
            cfg = self.read_config()
            result = self._compute(cfg)
        except (DsgVizError, GenerationError) as e:
            self._show_error(str(e))
            return None
        finally:
            self.run_button.disabled = False
        self.config, self.result = cfg, result
        self.progress.bar_style = "success"
        self.progress.value = self.progress.max
        self._show(result)
        return result

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
    :func:`dsg_viz.generation.generate` (what ``dsg-viz generate`` runs), then shows an image grid (next to the
    ``compare_to`` sets) and per-term loss curves. Choosing another preset loads its settings into the form (the
    sample count, batch size and steps stay; ``gaussian`` keeps its 0 steps).

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
        **overrides: :class:`GenerationConfig` fields applied to the preset (e.g. ``steps=5, num_samples=16``).

    ``result``: the :class:`~dsg_viz.generation.SampleSet`; ``from_cache``: whether it was loaded.
    """

    title = "Generate samples"

    def __init__(self, model: nn.Module, preset: str = "dsg", seed: int = 0, compare_to: dict | None = None,
                 cache_dir: str | Path | None | bool = None, fields=GENERATION_FIELDS, **overrides):
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
        config = make_preset(preset, **overrides)
        self._steps = config.steps or PRESETS["dsg"].steps  # restored when leaving the gaussian preset
        self.seed = W.IntText(value=seed, description="seed", style=_STYLE, layout=W.Layout(width="160px"))
        self.recompute = W.Checkbox(value=False, description="recompute (ignore cache)", indent=False,
                                    layout=W.Layout(width="220px", display="" if self.cache_dir else "none"))
        super().__init__(config, fields, choices={"method": list(PRESETS), "sci": list(SCI_MODES)},
                         labels=GENERATION_LABELS, extra=[W.HBox([self.seed, self.recompute])],
                         help_text="each Run optimizes pixels; seconds to minutes depending on steps × samples")
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

        def callback(b, step, _values):
            done = b * cfg.steps + step + 1
            if done == total or done % max(1, total // 100) == 0:
                self.set_progress(done, total, f"batch {b + 1}/{nb}, step {step + 1}/{cfg.steps}")

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

    Args:
        model: the full-precision model (never modified; each cell quantizes a copy).
        sample_sets: ``{name: SampleSet}`` offered as sources.
        test: the evaluation split (e.g. :func:`dsg_viz.notebook_utils.test_split`).
        config: the starting config; by default W4A4 on every given source.

    ``result``: the results dict of :func:`dsg_viz.notebook_utils.quantize_sources` (``fp``, ``cells``,
    ``table``, ``config``).
    """

    title = "Quantize, calibrate, evaluate"

    def __init__(self, model: nn.Module, sample_sets: dict, test, config=None):
        from .compare import CompareConfig
        from .quant.quantize import ACT_METHODS, CONVENTIONS, WEIGHT_METHODS

        self.model, self.sample_sets, self.test = model, dict(sample_sets), test
        self._fp = None
        config = config or CompareConfig(sources=tuple(self.sample_sets), bits=("W4A4",), seeds=1)
        super().__init__(config, ["bits", "calibration", "weight_range", "convention", "sources"],
                         choices={"calibration": list(ACT_METHODS), "weight_range": list(WEIGHT_METHODS),
                                  "convention": list(CONVENTIONS), "sources": list(self.sample_sets)},
                         labels={"bits": "bit widths (e.g. W4A4, W6A6)", "calibration": "activation calibration",
                                 "weight_range": "weight range", "convention": "layer convention"},
                         help_text=f"each cell quantizes a copy and evaluates on {len(test)} test images")

    def _compute(self, cfg) -> dict:
        from .notebook_utils import quantize_sources
        from .quant import parse_bits

        cfg = replace(cfg, bits=tuple(f"W{w}A{a}" for w, a in map(parse_bits, cfg.bits)))
        if self._fp is None:
            from .evaluate import evaluate

            self.status.value = "full-precision accuracy…"
            self._fp = evaluate(self.model, self.test)
        return quantize_sources(self.model, self.sample_sets, cfg, self.test, fp=self._fp,
                                callback=lambda i, n, key: self.set_progress(i, n, key.replace("|", " ")))

    def _show(self, r: dict) -> None:
        from .compare import results_markdown
        from .notebook_utils import plot_results

        self.show(results_markdown(r, self.config))
        self.show(plot_results(r, self.config))


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
    table with the BN histogram, the feature-correlation matrices and the t-SNE map.

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

        self.set_progress(0, 1, f"diagnosing {len(self.sample_sets)} sources…")
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
        self.show(f"full report: `{summary['files']['report.html']}`")
