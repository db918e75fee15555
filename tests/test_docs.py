"""The documentation site (``make docs`` → ``site/``; docs/hooks.py, mkdocs.yml).

Fast tests (in ``make test``): every public name of ``dsg_viz.__all__`` has a docstring and an entry in the API
page, the nav lists every tutorial notebook, panels become static HTML, a missing optional page leaves the nav.

Browser test (``make test-docs``, after ``make docs``; marked ``browser`` like tests/test_browser.py, so ``make
test`` deselects it): serves ``site/`` on localhost, opens the home page, a tutorial page and the API page in headless
Chromium (the system ``/usr/bin/chromium``; never downloaded), with every request off localhost aborted, and checks
that every image rendered, that no error output, Python traceback or dsg_viz panel error is shown, that no script
raised and no local file is missing.
"""

import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SITE = REPO / "site"
CHROMIUM = Path(os.environ.get("DSG_VIZ_CHROMIUM", "/usr/bin/chromium"))
TUTORIAL = "tutorials/02_zeroq_vs_dsg/"


@pytest.fixture(scope="module")
def hooks():
    spec = importlib.util.spec_from_file_location("dsg_viz_docs_hooks", REPO / "docs" / "hooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------------------------------------ fast

def test_every_public_name_has_a_docstring(hooks):
    assert hooks.undocumented() == []


def test_api_page_covers_dsg_viz_all(hooks):
    import dsg_viz

    md = hooks.api_markdown()
    for name in dsg_viz.__all__:
        assert re.search(rf"^::: dsg_viz\.(\w+\.)*{name}\n", md, re.M) or f"### `dsg_viz.{name}`" in md, name
    assert hooks.API_MARKER in (REPO / "docs" / "api.md").read_text()


def test_nav_lists_every_tutorial():
    yaml = pytest.importorskip("yaml")
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]

    def leaves(items):
        for it in items:
            if isinstance(it, dict):
                (v,) = it.values()
                yield from leaves(v) if isinstance(v, list) else [v]
            else:
                yield it

    pages = list(leaves(nav))
    notebooks = sorted(p.name for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [p.removeprefix("tutorials/") for p in pages if p.endswith(".ipynb")] == notebooks
    for page in pages:
        assert (REPO / "docs" / page).is_file() or page.endswith(".ipynb") or page == "reliability.md", page


def test_optional_page_leaves_the_nav_while_absent(hooks, tmp_path):
    nav = [{"Home": "index.md"}, {"Results": [{"R": "results.md"}, {"Reliability": "reliability.md"}]}]
    assert hooks._drop_missing(nav, tmp_path) == [{"Home": "index.md"}, {"Results": [{"R": "results.md"}]}]
    (tmp_path / "reliability.md").write_text("# Reliability\n")
    assert hooks._drop_missing(nav, tmp_path) == nav


def _state():
    png = {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBORw0KGgo=", "text/plain": "<Image>"}}
    m = lambda name, **state: {"model_name": name, "model_module": "@jupyter-widgets/controls", "state": state}  # noqa: E731
    return {
        "panel": m("VBoxModel", _dom_classes=["dsg-viz-panel"],
                   children=["IPY_MODEL_title", "IPY_MODEL_form", "IPY_MODEL_row", "IPY_MODEL_out"]),
        "title": m("HTMLModel", value="<b>Generate samples</b>"),
        "form": m("GridBoxModel", children=["IPY_MODEL_preset", "IPY_MODEL_steps"]),
        "preset": m("DropdownModel", description="preset", _options_labels=["zeroq", "dsg"], index=1),
        "steps": m("IntTextModel", description="steps", value=4),
        "row": m("HBoxModel", children=["IPY_MODEL_run", "IPY_MODEL_status"]),
        "run": m("ButtonModel", description="Run"),
        "status": m("HTMLModel", value="seed 0, generated in 1 s"),
        "out": {"model_name": "OutputModel", "state": {"outputs": [png]}},
        "bar": m("HBoxModel", children=["IPY_MODEL_left", "IPY_MODEL_right"]),
        "left": m("HTMLModel", value="generate dsg: 100%"),
        "right": m("HTMLModel", value="4/4 [00:01&lt;00:00]"),
    }


def test_static_panel_shows_settings_status_and_outputs(hooks):
    outs = hooks.static_panel(_state(), "panel")
    html = outs[0]["data"]["text/html"]
    assert "dsg-viz-static-panel" in html and "<b>Generate samples</b>" in html
    assert "<td>preset</td><td><code>dsg</code></td>" in html and "<td>steps</td><td><code>4</code></td>" in html
    assert "Run</code>" not in html and "seed 0, generated in 1 s" in html
    assert outs[1]["data"]["image/png"] == "iVBORw0KGgo="
    # any other widget (a tqdm.auto bar) is shown as its text
    (bar,) = hooks.static_panel(_state(), "bar")
    assert bar == {"output_type": "stream", "name": "stdout", "text": "generate dsg: 100% 4/4 [00:01<00:00]\n"}


def test_widget_views_are_replaced_and_state_dropped(hooks):
    import nbformat

    nb = nbformat.v4.new_notebook()
    view = {"model_id": "panel", "version_major": 2, "version_minor": 0}
    nb.cells.append(nbformat.v4.new_code_cell("panel", outputs=[nbformat.v4.new_output(
        "execute_result", data={hooks.WIDGET_VIEW: view, "text/plain": "VBox(...)"}, execution_count=1)]))
    nb.metadata["widgets"] = {hooks.WIDGET_STATE: {"state": _state(), "version_major": 2, "version_minor": 0}}
    assert hooks._staticize_widgets(nb) == 1
    assert "widgets" not in nb.metadata
    kinds = [list(o.get("data", {})) for o in nb.cells[0].outputs]
    assert kinds == [["text/html"], ["image/png", "text/plain"]]
    nbformat.validate(nb)


# --------------------------------------------------------------------------------------------- browser

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def site_url():
    """Serve ``site/`` on a free localhost port; yield its base URL."""
    if not (SITE / "index.html").is_file() or not (SITE / TUTORIAL / "index.html").is_file():
        pytest.fail(f"{SITE} has no built site: run `make docs` first (make test-docs does both)")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(SITE)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(base, timeout=2):
                    break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, "http.server did not start"
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install -e '.[browser]')")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium); "
                    "this test never downloads a browser")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                               args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                     "--disable-background-networking", "--disable-component-update"])
        try:
            yield b
        finally:
            b.close()


def _open(browser, url: str):
    """Open ``url`` with every request off localhost aborted; return ``(page, problems, external)``."""
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    problems, external = [], []

    def route(r):
        if r.request.url.startswith(("http://127.0.0.1", "data:")):
            r.continue_()
        else:
            external.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda e: problems.append(f"script error: {e}"))
    page.on("response", lambda r: r.status >= 400 and r.url.startswith("http://127.0.0.1")
            and problems.append(f"HTTP {r.status}: {r.url}"))
    page.on("requestfailed", lambda r: r.url.startswith("http://127.0.0.1")
            and problems.append(f"failed: {r.url} ({r.failure})"))
    page.goto(url, wait_until="load")
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.wait_for_load_state("networkidle")
    return page, problems, external


def _images_rendered(page) -> list:
    """Return ``[(src, rendered)]`` of every image of the page (once all have finished loading)."""
    page.wait_for_function("[...document.images].every(i => i.complete)", timeout=30_000)
    return page.evaluate("[...document.images].map(i => [i.src.slice(0, 80), i.naturalWidth > 0])")


def _no_error_output(page) -> None:
    assert page.locator('[data-mime-type="application/vnd.jupyter.stderr"]').count() == 0, "stderr/error output"
    assert page.locator(".dsg-viz-error").count() == 0, page.locator(".dsg-viz-error").first.inner_text()
    outputs = page.locator(".jp-OutputArea").all_inner_texts()
    for text in outputs:
        assert "Traceback (most recent call last)" not in text and not re.search(r"\b\w+Error: ", text), text[:500]


@pytest.mark.browser
def test_home_page_renders(browser, site_url):
    page, problems, external = _open(browser, site_url)
    try:
        assert "dsg_viz" in page.title()
        images = _images_rendered(page)
        assert images and all(ok for _, ok in images), images
        for link in ("tutorials/", "api/", "getting-started/", "results/"):
            assert page.locator(f'a[href$="{link}"]').count() >= 1, f"no link to {link}"
        _no_error_output(page)
        assert not problems, problems
        assert not external, f"the home page asks for third-party resources: {external}"
    finally:
        page.close()


@pytest.mark.browser
def test_tutorial_page_renders_with_outputs(browser, site_url, tmp_path):
    page, problems, external = _open(browser, site_url + TUTORIAL)
    try:
        page.screenshot(path=str(tmp_path / "tutorial.png"), full_page=True)  # kept by pytest for a failure
        assert "ZeroQ vs DSG" in page.title()
        assert page.locator(".jp-Cell.jp-CodeCell").count() >= 8, "the notebook's code cells are not on the page"
        images = _images_rendered(page)
        assert len(images) >= 3 and all(ok for _, ok in images), images
        assert sum(src.startswith("data:image/png") for src, _ in images) >= 3, "no plots from the notebook"
        panel = page.locator(".dsg-viz-static-panel")
        assert panel.count() == 1 and "Generate samples" in panel.inner_text()
        assert page.get_by_text(re.compile(r"final: ")).count() >= 1, "the printed loss summary is missing"
        _no_error_output(page)
        assert not problems, problems
        # only MathJax (typesetting TeX when online) may come from elsewhere
        assert all("mathjax" in u.lower() for u in external), external
        assert page.locator('a[href$=".ipynb"]').count() >= 1, "no download link for the executed notebook"
    finally:
        page.close()


@pytest.mark.browser
def test_api_page_has_every_public_name(browser, site_url):
    import inspect

    import dsg_viz

    page, problems, _ = _open(browser, site_url + "api/")
    try:
        for name in dsg_viz.__all__:
            obj = getattr(dsg_viz, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                ids = f'[id="dsg_viz.{name}"], [id="{obj.__module__}.{name}"]'  # dsg_viz.evaluate: also a module
                assert page.locator(ids).count() >= 1, f"no API entry for dsg_viz.{name}"
            else:
                assert page.get_by_text(f"dsg_viz.{name}").count() >= 1, name
        assert not re.search(r":(class|func|meth|data):", page.locator("article").inner_text())
        assert not problems, problems
    finally:
        page.close()
