"""A real browser run of a tutorial notebook (``make test-browser``; deselected from ``make test``).

Starts JupyterLab on a free localhost port with a token, serving a scratch copy of ``notebooks/`` (so autosave never
touches the committed notebooks), opens ``02_zeroq_vs_dsg`` in headless Chromium through Playwright (the system
``/usr/bin/chromium``; a browser is never downloaded), runs all cells in smoke mode, sets the generation panel's
seed, clicks its Run button, and checks that the panel shows a rendered image and no error and that no cell
raised. Saves ``docs/img/notebook_panel.png``.
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
SCREENSHOT = REPO / "docs" / "img" / "notebook_panel.png"
NOTEBOOK = "02_zeroq_vs_dsg.ipynb"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kernel_idle(base: str, token: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/api/sessions?token={token}", timeout=5) as r:
            sessions = json.loads(r.read())
    except OSError:
        return False
    return any(s.get("kernel", {}).get("execution_state") == "idle" for s in sessions)


@pytest.fixture
def lab(data_root, tmp_path):
    """Yield ``(base_url, token, notebook_dir)`` of a JupyterLab server started for this test."""
    pytest.importorskip("jupyterlab", reason="JupyterLab is not installed (pip install -e '.[notebooks]')")
    nb_dir = tmp_path / "notebooks"
    shutil.copytree(REPO / "notebooks", nb_dir, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "*.py"))
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # render every cell (no virtualized notebook), so the test can see all outputs
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, DSG_VIZ_SMOKE="1", DSG_VIZ_DATA_ROOT=str(data_root),
               DSG_VIZ_SAMPLE_CACHE=str(tmp_path / "cache"), MPLBACKEND="Agg", OMP_NUM_THREADS="1",
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    log = open(tmp_path / "jupyterlab.log", "w")
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
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.flush()
                pytest.fail("JupyterLab did not start:\n" + (tmp_path / "jupyterlab.log").read_text()[-3000:])
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


def test_zeroq_vs_dsg_notebook_in_chromium(lab):
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install -e '.[browser]')")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium); "
                    "this test never downloads a browser")
    import nbformat

    base, token, nb_dir = lab
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}", wait_until="domcontentloaded")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
            # wait for the kernel, then Run ▸ Run All Cells
            deadline = time.time() + 120  # wait until the notebook's kernel is up (REST: its session is idle)
            while not _kernel_idle(base, token):
                assert time.time() < deadline, "the notebook's kernel did not start within 120 s"
                time.sleep(1)
            time.sleep(2)
            n_code = sum(c.cell_type == "code" for c in nbformat.read(nb_dir / NOTEBOOK, as_version=4).cells)
            prompts_js = "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent)"
            started = False
            for _attempt in range(4):  # Run ▸ Run All Cells; retried if the kernel connection was not ready yet
                dialog = page.locator(".jp-Dialog")
                if dialog.count():  # e.g. "Select Kernel" when the session was not ready: accept the default
                    dialog.first.locator(".jp-mod-accept").click()
                    time.sleep(2)
                page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
                page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
                for _ in range(20):
                    if any(p.strip() != "[ ]:" for p in page.evaluate(prompts_js)):
                        started = True
                        break
                    time.sleep(1)
                if started:
                    break
            if not started:
                page.screenshot(path=str(nb_dir.parent / "not_started.png"), full_page=True)
            assert started, "Run All Cells did not start any cell"
            deadline = time.time() + 300
            while True:
                prompts = [p.strip() for p in page.evaluate(prompts_js)]
                if len(prompts) == n_code and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts):
                    break
                if time.time() > deadline:
                    page.screenshot(path=str(nb_dir.parent / "timeout.png"), full_page=True)
                assert time.time() < deadline, f"cells did not finish within 300 s: prompts {prompts}"
                time.sleep(1)
            panel = page.locator(".dsg-viz-panel").first
            panel.wait_for(state="visible", timeout=60_000)
            panel.locator("img").first.wait_for(timeout=60_000)  # the notebook's panel.run() cell

            # a new seed, then a real click on Run: the panel regenerates and redraws
            seed = panel.locator(".widget-inline-hbox", has=page.locator("label", has_text=re.compile(r"^seed$")))
            seed.locator("input").fill("1")
            seed.locator("input").press("Enter")
            panel.get_by_role("button", name=re.compile("Run")).click()
            panel.get_by_text(re.compile(r"seed 1, generated")).wait_for(timeout=180_000)
            panel.get_by_text(re.compile(r"final weighted terms")).wait_for(timeout=60_000)  # the last display
            assert panel.locator("img").count() >= 2  # image grid and loss curves
            img_ok = panel.locator("img").first.evaluate("i => i.complete && i.naturalWidth > 0")
            assert img_ok, "the panel's image did not render"
            assert panel.locator(".dsg-viz-error").count() == 0, panel.locator(".dsg-viz-error").inner_text()
            assert page.locator(".dsg-viz-error").count() == 0
            panel.scroll_into_view_if_needed()
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            panel.screenshot(path=str(SCREENSHOT))

            # save, then read the executed notebook: no cell may have raised
            before = (nb_dir / NOTEBOOK).stat().st_mtime
            page.locator(".jp-Notebook").first.click(position={"x": 5, "y": 5})
            page.keyboard.press("Control+s")
            deadline = time.time() + 30
            while (nb_dir / NOTEBOOK).stat().st_mtime == before and time.time() < deadline:
                time.sleep(0.5)
        finally:
            browser.close()
    nb = nbformat.read(nb_dir / NOTEBOOK, as_version=4)
    errors = [(i, o.get("ename"), o.get("evalue")) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    assert any(c.get("execution_count") for c in nb.cells if c.cell_type == "code"), "notebook was not saved"
    assert SCREENSHOT.stat().st_size > 10_000
