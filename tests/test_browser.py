"""All six tutorial notebooks in a real browser (``make test-browser``; deselected from ``make test``).

Starts one JupyterLab server on a free localhost port with a token, serving a scratch copy of ``notebooks/`` (so
autosave never touches the committed notebooks), and opens the notebooks in reading order (00 → 05) in headless
Chromium through Playwright (the system ``/usr/bin/chromium``; a browser is never downloaded). For each notebook it
runs all cells, then clicks the **Run** button of every panel (the generation panel with a new seed, so that it
really generates and streams its live loss curve), waits for each panel's status to say "done", reloads the page
(outputs are drawn again from the saved widget state, which is where a closed widget shows "Error displaying
widget: model not found") and fails on

* any error or stderr output, and any "Error displaying widget" text, before or after the reload;
* any cell that draws a figure (a ``plot_…(`` call, a cell ending with ``fig``, a panel) without a rendered image;
* a panel error line.

It saves one screenshot per notebook, ``docs/img/notebook_NN.png`` (the cell that shows the notebook's main result),
and ``docs/img/notebook_panel.png`` (the generation panel of 02, shown in the README).

Settings: ``quick`` (the notebooks' default) unless ``DSG_VIZ_BROWSER_SETTINGS=smoke`` (then ``DSG_VIZ_SMOKE=1``: a
few steps: what CI runs, for time; screenshots then go to the test's tmp folder, not docs/img). The kernels inherit ``OMP_NUM_THREADS`` (on a machine shared with other jobs, 1
thread is several times faster than torch's default of one thread per core). The six notebooks share one empty sample cache, as a reader's ``runs/cache``
would be when reading in order: 03 loads the sets 00 made, 04 and 05 reuse the ZeroQ and DSG sets of 02; every other
set is generated in the browser run (notebook times from a cold cache: ``benchmarks/bench_notebooks.py``).
"""

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("DSG_VIZ_CHROMIUM", "/usr/bin/chromium"))
IMG = REPO / "docs" / "img"
SETTINGS = os.environ.get("DSG_VIZ_BROWSER_SETTINGS", "quick")
NOTEBOOKS = ["00_quickstart", "01_bn_statistics", "02_zeroq_vs_dsg", "03_homogenization", "04_quantize",
             "05_ablation_and_beyond"]
# the cell (a substring of its source) whose output is the notebook's screenshot
SHOT = {"00_quickstart": "nu.plot_results(results, qcfg)", "01_bn_statistics": "LayerChannelPanel(",
        "02_zeroq_vs_dsg": "GenerationPanel(", "03_homogenization": "DiagnosticsPanel(",
        "04_quantize": "QuantPanel(", "05_ablation_and_beyond": "table.round(3)"}
RUN_ALL_LIMIT = 300 if SETTINGS == "smoke" else 1500  # seconds per notebook (quick: generous for a loaded machine)
PANEL_LIMIT = 120 if SETTINGS == "smoke" else 600
FIGURE = re.compile(r"\bplot_\w+\(|^fig$|\b\w+Panel\(", re.M)

NB = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"  # the notebook in the visible tab
PROMPTS_JS = f"() => [...document.querySelectorAll('{NB} .jp-CodeCell .jp-InputPrompt')].map(e => e.textContent)"
CELLS_JS = """() => [...document.querySelectorAll('@NB .jp-CodeCell')].map(c => ({
    images: [...c.querySelectorAll('.jp-OutputArea img')].filter(i => i.complete && i.naturalWidth > 0).length,
    stderr: [...c.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
              .map(e => e.textContent.slice(0, 300)),
    text: c.querySelector('.jp-OutputArea') ? c.querySelector('.jp-OutputArea').textContent : ''}))""".replace("@NB", NB)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, token: str, path: str, method: str = "GET"):
    req = urllib.request.Request(f"{base}{path}?token={token}", method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
    return json.loads(body) if body else None


def _session(base: str, token: str, name: str):
    try:
        return next((s for s in _api(base, token, "/api/sessions") if s.get("path", "").endswith(name)), None)
    except OSError:
        return None


@pytest.fixture(scope="module")
def lab(data_root, tmp_path_factory):
    """Yield ``(base_url, token, notebook_dir)`` of a JupyterLab server started for this module."""
    pytest.importorskip("jupyterlab", reason="JupyterLab is not installed (pip install -e '.[notebooks]')")
    tmp = tmp_path_factory.mktemp("lab")
    nb_dir = tmp / "notebooks"
    shutil.copytree(REPO / "notebooks", nb_dir, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "*.py"))
    # the committed JSON the notebooks read from ../docs (recorded times, the diversity study), as in a checkout
    for f in [*(REPO / "docs").glob("*.json"), *(REPO / "docs" / "results").glob("*.json")]:
        dst = tmp / f.relative_to(REPO)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dst)
    settings = tmp / "lab-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # render every cell (no virtualized notebook), so the test can see all outputs
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    # no "get notified about Jupyter news?" toast over the screenshots (and no request to a website)
    apputils = tmp / "lab-settings" / "@jupyterlab" / "apputils-extension"
    apputils.mkdir(parents=True)
    (apputils / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                           "checkForUpdates": False}))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, DSG_VIZ_DATA_ROOT=str(data_root), DSG_VIZ_SAMPLE_CACHE=str(tmp / "cache"),
               MPLBACKEND="Agg", JUPYTERLAB_SETTINGS_DIR=str(tmp / "lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "lab-workspaces"), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"))
    env.pop("DSG_VIZ_SMOKE", None)
    env.pop("DSG_VIZ_SETTINGS", None)
    if SETTINGS == "smoke":
        env.update(DSG_VIZ_SMOKE="1", OMP_NUM_THREADS="1")
    log = open(tmp / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={nb_dir}", "--ServerApp.port_retries=0",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly"]
        + (["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=nb_dir)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                _api(base, token, "/api/status")
                break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.flush()
                pytest.fail("JupyterLab did not start:\n" + (tmp / "jupyterlab.log").read_text()[-3000:])
            time.sleep(0.5)
        yield base, token, nb_dir
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install -e '.[browser]')")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium); "
                    "this test never downloads a browser")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                               args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()


def _open(page, base: str, token: str, name: str) -> None:
    # a workspace of its own, reset: JupyterLab would otherwise reopen the previous notebook beside this one
    page.goto(f"{base}/lab/workspaces/nb{name[:2]}/tree/{name}.ipynb?token={token}&reset",
              wait_until="domcontentloaded")
    page.wait_for_selector(f"{NB} .jp-Cell", timeout=90_000)


def _wait_kernel(base: str, token: str, name: str) -> None:
    deadline = time.time() + 120
    while True:
        s = _session(base, token, f"{name}.ipynb")
        if s and s.get("kernel", {}).get("execution_state") == "idle":
            return
        assert time.time() < deadline, f"{name}: its kernel did not start within 120 s"
        time.sleep(1)


def _run_all(page, name: str, n_code: int, shots: Path) -> float:
    """Run ▸ Run All Cells; wait until every code cell has an execution count; return the seconds it took."""
    t0 = time.time()
    started = False
    for _attempt in range(4):  # retried if the kernel connection was not ready yet
        dialog = page.locator(".jp-Dialog")
        if dialog.count():  # e.g. "Select Kernel" when the session was not ready: accept the default
            dialog.first.locator(".jp-mod-accept").click()
            time.sleep(2)
        page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
        for _ in range(20):
            if any(p.strip() != "[ ]:" for p in page.evaluate(PROMPTS_JS)):
                started = True
                break
            time.sleep(1)
        if started:
            break
    if not started:
        page.screenshot(path=str(shots / f"{name}-not-started.png"), full_page=True)
    assert started, f"{name}: Run All Cells did not start any cell"
    deadline = t0 + RUN_ALL_LIMIT
    while True:
        prompts = [p.strip() for p in page.evaluate(PROMPTS_JS)]
        if len(prompts) == n_code and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts):
            return time.time() - t0
        if time.time() > deadline:
            page.screenshot(path=str(shots / f"{name}-timeout.png"), full_page=True)
        assert time.time() < deadline, f"{name}: cells did not finish within {RUN_ALL_LIMIT} s: prompts {prompts}"
        time.sleep(1)


def _check_outputs(page, name: str, sources: list[str], when: str) -> None:
    cells = page.evaluate(CELLS_JS)
    assert len(cells) == len(sources), f"{name}: {len(cells)} code cells on the page, {len(sources)} in the file"
    body = page.locator("body").inner_text()
    assert "Error displaying widget" not in body, f"{name} ({when}): 'Error displaying widget' on the page"
    for i, (c, src) in enumerate(zip(cells, sources)):
        assert not c["stderr"], f"{name} ({when}), code cell {i}: error or stderr output {c['stderr']}"
        if FIGURE.search(src):
            assert c["images"] >= 1, f"{name} ({when}), code cell {i} drew no visible image:\n{src[:200]}"
    assert page.locator(".dsg-viz-error").count() == 0, page.locator(".dsg-viz-error").first.inner_text()


def _click_panels(page, name: str) -> int:
    """Click every panel's Run button (the generation panel with seed 1); wait for each to say done."""
    panels = page.locator(f"{NB} .dsg-viz-panel")
    for k in range(panels.count()):
        panel = panels.nth(k)
        panel.scroll_into_view_if_needed()
        generation = panel.get_by_text("Generate samples").count() > 0
        if generation:  # a new seed: the panel really generates (and streams its live loss curve)
            seed = panel.locator(".widget-inline-hbox", has=page.locator("label", has_text=re.compile(r"^seed$")))
            seed.locator("input").fill("1")
            seed.locator("input").press("Enter")
        status = panel.locator(".widget-html").last
        before = status.inner_text()
        time.sleep(1.1)  # the status names the second it finished: a new run never repeats the old text
        panel.get_by_role("button", name=re.compile("Run")).click()
        deadline = time.time() + PANEL_LIMIT
        while status.inner_text() == before or "done in" not in status.inner_text():
            assert panel.locator(".dsg-viz-error").count() == 0, panel.locator(".dsg-viz-error").inner_text()
            assert time.time() < deadline, f"{name}: panel {k} did not finish within {PANEL_LIMIT} s"
            time.sleep(1)
        if generation:
            panel.get_by_text(re.compile(r"seed 1, generated")).wait_for(timeout=60_000)
        assert panel.locator("img").count() >= 1, f"{name}: panel {k} shows no image after Run"
    return panels.count()


@pytest.mark.timeout(RUN_ALL_LIMIT + 4 * PANEL_LIMIT + 300)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_in_chromium(name, lab, browser, tmp_path):
    import nbformat

    base, token, nb_dir = lab
    sources = [c.source for c in nbformat.read(nb_dir / f"{name}.ipynb", as_version=4).cells if c.cell_type == "code"]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        _open(page, base, token, name)
        _wait_kernel(base, token, name)
        time.sleep(2)
        took = _run_all(page, name, len(sources), tmp_path)
        _check_outputs(page, name, sources, "after Run All")
        n_panels = _click_panels(page, name)
        _check_outputs(page, name, sources, "after clicking Run")

        # the screenshot: the cell with the notebook's main result, in a window tall enough for the whole cell
        page.set_viewport_size({"width": 1400, "height": 3200})
        time.sleep(2)
        cell = page.locator(f"{NB} .jp-CodeCell").nth(next(i for i, s in enumerate(sources) if SHOT[name] in s))
        cell.scroll_into_view_if_needed()
        out = IMG if SETTINGS != "smoke" else tmp_path  # smoke runs never replace the committed quick screenshots
        out.mkdir(parents=True, exist_ok=True)
        cell.screenshot(path=str(out / f"notebook_{name[:2]}.png"))
        if name == "02_zeroq_vs_dsg":
            page.locator(f"{NB} .dsg-viz-panel").first.screenshot(path=str(out / "notebook_panel.png"))
        page.set_viewport_size({"width": 1400, "height": 1000})

        # save, reload: every output is drawn again (widgets from the kernel's live models)
        before = (nb_dir / f"{name}.ipynb").stat().st_mtime
        page.locator(NB).first.click(position={"x": 5, "y": 5})
        page.keyboard.press("Control+s")
        deadline = time.time() + 30
        while (nb_dir / f"{name}.ipynb").stat().st_mtime == before and time.time() < deadline:
            time.sleep(0.5)
        page.reload(wait_until="domcontentloaded")
        page.wait_for_selector(f"{NB} .jp-Cell", timeout=90_000)
        time.sleep(5)
        _check_outputs(page, name, sources, "after reloading the page")
    finally:
        page.close()
        s = _session(base, token, f"{name}.ipynb")
        if s:  # free the kernel's memory before the next notebook
            _api(base, token, f"/api/sessions/{s['id']}", method="DELETE")
    nb = nbformat.read(nb_dir / f"{name}.ipynb", as_version=4)
    errors = [(i, o.get("ename"), o.get("evalue")) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    assert any(c.get("execution_count") for c in nb.cells if c.cell_type == "code"), f"{name} was not saved"
    assert (IMG / f"notebook_{name[:2]}.png").stat().st_size > 5_000
    print(f"{name} ({SETTINGS}): Run All {took:.0f} s, {n_panels} panel(s) clicked")
