"""MkDocs hooks of the dsg_viz site (``mkdocs.yml`` → ``hooks:``); not a page (``exclude_docs``).

* **Tutorials.** Each ``notebooks/NN_*.ipynb`` is executed top to bottom with nbclient at the notebooks' quick
  settings (``DSG_VIZ_SMOKE=0`` unless set; ``DSG_VIZ_SMOKE=1`` gives a fast smoke build; one intra-op thread unless
  ``OMP_NUM_THREADS`` is set; the notebooks' own shared sample cache, ``runs/cache`` unless
  ``DSG_VIZ_SAMPLE_CACHE`` is set) from ``notebooks/``, like ``tests/test_notebooks.py`` does, and the executed copy
  becomes the page ``tutorials/NN_*.ipynb`` that mkdocs-jupyter renders. A cell error stops the build; output on
  stderr is a warning (an error under ``--strict``). ipywidgets panels are replaced by a static copy (title, the form's
  settings, status and the panel's output area, from the saved widget state), so the pages need no widget JavaScript
  from a CDN and read the same offline. Executed notebooks are reused while the notebook, the ``dsg_viz`` sources,
  this file and the settings are unchanged (``.cache/docs/tutorials``; ``DSG_VIZ_DOCS_REEXECUTE=1`` forces a run).
* **API reference.** ``<!-- dsg_viz-api -->`` in ``api.md`` becomes one mkdocstrings block per name of
  ``dsg_viz.__all__``, grouped by defining module, so the page always covers the whole public API; a public
  function or class (or a public method of one) without a docstring is a warning.
* **Optional pages.** A nav entry whose file is absent (``reliability.md`` before the trust suite has written it) is
  dropped with a note instead of failing the build.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import importlib
import importlib.util
import inspect
import logging
import os
import re
import time
from pathlib import Path

# mkdocs is imported where it is needed, so tests/test_docs.py can test the functions below without the docs extra.
# A child of the "mkdocs" logger: its warnings count for `mkdocs build --strict`.
log = logging.getLogger("mkdocs.plugins.dsg_viz")

REPO = Path(__file__).resolve().parents[1]
NB_DIR = REPO / "notebooks"
CACHE = REPO / ".cache" / "docs"
OPTIONAL_PAGES = ("reliability.md",)
API_MARKER = "<!-- dsg_viz-api -->"
CELL_TIMEOUT = 600
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


# ------------------------------------------------------------------------------------------------ nav

def _drop_missing(nav, docs_dir: Path):
    out = []
    for item in nav:
        if isinstance(item, dict):
            (title, value), = item.items()
            if isinstance(value, list):
                out.append({title: _drop_missing(value, docs_dir)})
                continue
            if value in OPTIONAL_PAGES and not (docs_dir / value).is_file():
                log.info("%s is not there yet (written by the trust suite): left out of the nav", value)
                continue
        out.append(item)
    return out


def on_config(config):
    config.nav = _drop_missing(config.nav or [], Path(config.docs_dir))
    return config


# ------------------------------------------------------------------------------------------ tutorials

def _kernel_env() -> dict:
    env = dict(os.environ)
    env.setdefault("DSG_VIZ_SMOKE", "0")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _key(nb_path: Path, env: dict) -> str:
    h = hashlib.sha256()
    for p in [nb_path, Path(__file__)] + sorted((REPO / "dsg_viz").rglob("*.py")):
        h.update(str(p.relative_to(REPO)).encode())
        h.update(p.read_bytes())
    # the notebooks' switches (not the force switch itself, so a forced run leaves a reusable key)
    for k in sorted(k for k in env if (k.startswith("DSG_VIZ_") or k == "SETTINGS") and k != "DSG_VIZ_DOCS_REEXECUTE"):
        h.update(f"{k}={env[k]}".encode())
    return h.hexdigest()


def _setting(model: dict):
    """Return ``(label, shown value)`` of an input widget's state, or ``None`` for anything else."""
    s = model.get("state", {})
    label = s.get("description") or ""
    if not label or model.get("model_name") in ("ButtonModel",):
        return None
    if "_options_labels" in s:
        idx = s.get("index")
        labels = s["_options_labels"]
        if isinstance(idx, (list, tuple)):
            return label, ", ".join(labels[i] for i in idx)
        return label, labels[idx] if isinstance(idx, int) and 0 <= idx < len(labels) else ""
    if "value" in s and model.get("model_name") not in ("HTMLModel", "LabelModel", "HTMLMathModel"):
        return label, s["value"]
    return None


def _walk(state: dict, model_id: str, texts: list, settings: list, outputs: list) -> None:
    model = state.get(model_id)
    if model is None:
        return
    s = model.get("state", {})
    name = model.get("model_name", "")
    if name == "OutputModel":
        outputs.extend(s.get("outputs", []))
    elif name in ("HTMLModel", "HTMLMathModel", "LabelModel") and s.get("value"):
        texts.append(s["value"] if name != "LabelModel" else html.escape(s["value"]))
    elif (kv := _setting(model)) is not None:
        settings.append(kv)
    for child in s.get("children", []):
        _walk(state, child.removeprefix("IPY_MODEL_"), texts, settings, outputs)


def static_panel(state: dict, model_id: str) -> list[dict]:
    """Return nbformat outputs that show the widget ``model_id`` without JavaScript.

    A dsg_viz panel (a box with the ``dsg-viz-panel`` class) becomes one HTML output — its HTML texts, the settings
    of its form, a note — followed by the outputs of its ``Output`` widgets. Any other widget (a ``tqdm.auto``
    progress bar, say) becomes its text, as a terminal would show it."""
    texts, settings, outputs = [], [], []
    _walk(state, model_id, texts, settings, outputs)
    root = state.get(model_id, {}).get("state", {})
    if "dsg-viz-panel" not in root.get("_dom_classes", []):
        text = " ".join(re.sub(r"<[^>]+>", "", html.unescape(t)).strip() for t in texts).strip()
        plain = [{"output_type": "stream", "name": "stdout", "text": text + "\n"}] if text else []
        return plain + list(outputs)
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td><code>{html.escape(str(v))}</code></td></tr>"
                   for k, v in settings)
    head = texts[0] if texts else "<b>interactive panel</b>"
    rest = "".join(f"<p>{t}</p>" for t in texts[1:])
    body = (f"<div class='dsg-viz-static-panel'><p>{head}</p>"
            "<p><em>A static copy of an interactive panel: in JupyterLab (<code>make lab</code>) its form and "
            "<b>Run</b> button work. Below, its settings and what it showed when this page was built.</em></p>"
            + (f"<details><summary>settings</summary><table>{rows}</table></details>" if rows else "")
            + rest + "</div>")
    return [{"output_type": "display_data", "metadata": {}, "data": {"text/html": body}}] + list(outputs)


def _staticize_widgets(nb) -> int:
    """Replace every widget view output by :func:`static_panel`; drop the widget state. Returns the count of
    dsg_viz panels."""
    import nbformat

    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    n = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        new = []
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(WIDGET_VIEW)
            if view is None:
                new.append(out)
                continue
            root = state.get(view["model_id"], {}).get("state", {})
            n += "dsg-viz-panel" in root.get("_dom_classes", [])
            new.extend(nbformat.from_dict(o) for o in static_panel(state, view["model_id"]))
        cell.outputs = new
    nb.metadata.pop("widgets", None)
    return n


def execute_notebook(src: Path, dest: Path, env: dict) -> None:
    """Execute ``src`` from ``notebooks/`` with ``env``, make its panels static, write it to ``dest``."""
    import nbformat
    from mkdocs.exceptions import PluginError
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    nb = nbformat.read(src, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(NB_DIR)}})
    t0 = time.perf_counter()
    try:
        client.execute(env=env)
    except (CellExecutionError, CellTimeoutError) as e:
        raise PluginError(f"tutorial {src.name} failed while building the docs:\n{e}") from None
    panels = _staticize_widgets(nb)
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                log.warning("%s, cell %d wrote to stderr (shown on the page): %s", src.name, i,
                            out.get("text", "")[:300])
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, dest)
    log.info("executed %s in %.1f s (%d panel(s) made static)", src.name, time.perf_counter() - t0, panels)


def on_files(files, config):
    from mkdocs.structure.files import File

    env = _kernel_env()
    force = os.environ.get("DSG_VIZ_DOCS_REEXECUTE") == "1"
    t0 = time.perf_counter()
    for src in sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb")):
        dest = CACHE / "tutorials" / src.name
        stamp = dest.with_suffix(".key")
        key = _key(src, env)
        if force or not dest.is_file() or not stamp.is_file() or stamp.read_text() != key:
            execute_notebook(src, dest, env)
            stamp.write_text(key)
        else:
            log.info("%s unchanged since its last execution: reusing %s", src.name, dest)
        uri = f"tutorials/{src.name}"
        if files.get_file_from_path(uri) is not None:
            files.remove(files.get_file_from_path(uri))
        # a File whose source folder is the cache (mkdocs-jupyter reads it through abs_src_path)
        files.append(File(uri, src_dir=str(CACHE), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    log.info("tutorials ready in %.1f s (DSG_VIZ_SMOKE=%s)", time.perf_counter() - t0, env["DSG_VIZ_SMOKE"])
    return files


# mkdocs-jupyter turns .ipynb files into pages in its own on_files: the tutorials must be in the list before it runs
on_files.mkdocs_priority = 50


# ----------------------------------------------------------------------------------------- API reference

def _has_doc(obj) -> bool:
    doc = inspect.getdoc(obj) if not inspect.isclass(obj) else obj.__dict__.get("__doc__")
    if not doc:
        return False
    # a dataclass without a docstring gets its signature, "Name(field: type = ...)", as __doc__
    return not (dataclasses.is_dataclass(obj) and doc.startswith(f"{obj.__name__}("))


def undocumented(package: str = "dsg_viz") -> list[str]:
    """Return the public functions, classes and public methods of ``package.__all__`` without a docstring."""
    mod = importlib.import_module(package)
    missing = []
    for name in mod.__all__:
        obj = getattr(mod, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not _has_doc(obj):
            missing.append(f"{package}.{name}")
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                fn = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
                if inspect.isfunction(fn) and not inspect.getdoc(fn):
                    missing.append(f"{package}.{name}.{attr}")
    return missing


def api_markdown(package: str = "dsg_viz") -> str:
    """Return one ``::: package.name`` block per name of ``package.__all__``, under a heading per defining module
    (objects without a module of their own, such as ``__version__`` and ``PRESETS``, are listed by value)."""
    mod = importlib.import_module(package)
    groups: dict[str, list[str]] = {}
    values = []
    for name in mod.__all__:
        obj = getattr(mod, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            groups.setdefault(obj.__module__, []).append(name)
        else:
            values.append(name)
    parts = []
    for module, names in groups.items():
        parts.append(f"## `{module}`\n")
        for n in names:
            if importlib.util.find_spec(f"{package}.{n}") is None:
                parts.append(f"::: {package}.{n}\n")
            else:  # the name is also a submodule (dsg_viz.evaluate): document the object by its defining path
                parts.append(f"::: {module}.{n}\n    options:\n      heading: \"{package}.{n}\"\n"
                             f"      toc_label: \"{n}\"\n")
    if values:
        parts.append("## Values\n")
        for n in values:
            v = getattr(mod, n)
            shown = f"`{v!r}`" if isinstance(v, str) else (
                "a dict of " + ", ".join(f"`{k}`" for k in v) if isinstance(v, dict) else f"`{type(v).__name__}`")
            parts.append(f"### `{package}.{n}`\n\n{shown}\n")
    return "\n".join(parts)


def on_pre_build(config):
    for name in undocumented():
        log.warning("public name without a docstring: %s", name)


def on_page_markdown(markdown, page, config, files):
    if API_MARKER in markdown:
        return markdown.replace(API_MARKER, api_markdown())
    return markdown


_SPHINX_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|data|attr|mod|exc|obj|const):(?=<code>)")


def on_page_content(html_text, page, config, files):
    """The docstrings use Sphinx roles (:class:`X`); Markdown renders ``:class:<code>X</code>``: keep the code."""
    if page.file.src_uri == "api.md":
        return _SPHINX_ROLE.sub("", html_text)
    return html_text
