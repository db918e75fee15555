"""Every tutorial notebook runs top to bottom in smoke mode (DSG_VIZ_SMOKE=1) without an error, writes nothing to
stderr, shows progress without widgets (a tqdm.auto bar is a widget in a kernel, and a closed one later reads "Error
displaying widget" in JupyterLab), ends with a takeaway computed from its own numbers, and the committed notebooks
are outputs-stripped, have the SETTINGS switch and match notebooks/build_notebooks.py. (Their timings at quick and
paper settings: benchmarks/bench_notebooks.py; in a real browser: tests/test_browser.py.)"""

import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NB_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(p.name for p in NB_DIR.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT = 240


def test_notebooks_are_numbered_stripped_and_generated():
    assert NOTEBOOKS == ["00_quickstart.ipynb", "01_bn_statistics.ipynb", "02_zeroq_vs_dsg.ipynb",
                         "03_homogenization.ipynb", "04_quantize.ipynb", "05_ablation_and_beyond.ipynb"]
    for name in NOTEBOOKS:
        nb = nbformat.read(NB_DIR / name, as_version=4)
        assert nb.cells[0].cell_type == "markdown" and "What you will learn" in nb.cells[0].source, name
        assert nb.cells[1].cell_type == "code" and "parameters" in nb.cells[1].metadata.get("tags", []), name
        assert 'SMOKE = os.environ.get("DSG_VIZ_SMOKE") == "1"' in nb.cells[1].source, name
        assert 'SETTINGS = os.environ.get("DSG_VIZ_SETTINGS", "quick")' in nb.cells[1].source, name
        text = "\n".join(c.source for c in nb.cells)
        for stale in ("work in progress", "not in this version", "being added"):
            assert stale not in text, f"{name}: stale text {stale!r}"
        for c in nb.cells:
            if c.cell_type == "code":
                assert not c.outputs and c.execution_count is None, f"{name}: outputs not stripped"
                assert "\ndef " not in "\n" + c.source, f"{name}: notebooks define no functions"
    r = subprocess.run([sys.executable, str(NB_DIR / "build_notebooks.py"), "--check"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def notebook_env(data_root, tmp_path_factory):
    """Smoke mode, the real data root and one sample cache shared by all notebooks of this run. The kernels use one
    thread: on a busy 2-core machine, 2 intra-op threads ran these small smoke workloads up to 20× slower."""
    cache = tmp_path_factory.mktemp("notebook_cache")
    env = {"DSG_VIZ_SMOKE": "1", "DSG_VIZ_DATA_ROOT": str(data_root), "DSG_VIZ_SAMPLE_CACHE": str(cache),
           "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_smoke_mode(name, notebook_env):
    from nbclient import NotebookClient

    nb = nbformat.read(NB_DIR / name, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(NB_DIR)}})
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError (with the cell and traceback) on the first error
    wall = time.perf_counter() - t0
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    code = [c for c in nb.cells if c.cell_type == "code"]
    images = sum("image/png" in o.get("data", {}) for c in code for o in c.get("outputs", []))
    assert images >= 1, f"{name} drew no figure"
    stderr = [(i, o.get("text", "")[:200]) for i, c in enumerate(code) for o in c.get("outputs", [])
              if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    assert not stderr, f"{name} wrote to stderr: {stderr}"
    widget_cells = [i for i, c in enumerate(code) for o in c.get("outputs", [])
                    if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    panel_cells = [i for i, c in enumerate(code) if "Panel(" in c.source]
    assert widget_cells == panel_cells, f"{name}: widget outputs in cells {widget_cells}, panels in {panel_cells}"
    shown = "\n".join(o.get("data", {}).get("text/markdown", "") for c in code for o in c.get("outputs", []))
    if name != "00_quickstart.ipynb":
        assert "Takeaway" in shown, f"{name}: no takeaway computed from its results"
    else:
        assert "**This run**" in shown and "DSG − ZeroQ" in shown
    print(f"{name}: {wall:.1f} s, {images} figures")
