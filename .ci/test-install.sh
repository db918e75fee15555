#!/usr/bin/env bash
# `make test-install`: dsg_viz installs like a library into an environment that already has PyTorch.
#
# 1. builds the sdist and the wheel (`python -m build`: the wheel is built from the sdist, so a file missing from the
#    sdist fails here) and checks that the wheel holds only dsg_viz/ and its metadata (no tests/, no notebooks/);
# 2. creates a fresh virtual environment and installs the tested torch/torchvision into it (constraints.txt), as a
#    researcher's existing PyTorch environment would have them;
# 3. installs the wheel WITHOUT constraining torch (the other dependencies are held at constraints.txt, so CI does not
#    depend on today's PyPI releases), and checks that pip left torch alone: same version, same file path, same inode
#    of torch/__init__.py and of the dist-info RECORD (a reinstall of the same version would write new files), and no
#    torch/torchvision in pip's "Successfully installed" line;
# 4. runs `pip check`, `dsg-viz --help`, `dsg-viz list-models`, `python -m dsg_viz --help`, imports every module (those
#    needing an extra that is not installed are named and skipped), and a tiny `generate` on the tiny_bn model, all
#    from a temporary folder outside the source tree with PYTHONPATH unset, so the installed package (not the source
#    tree) is what runs.
#
# Usage: .ci/test-install.sh [PYTHON]   (PYTHON builds the fresh venv; default python3.11 or python3)
# Environment: DSG_VIZ_KEEP_INSTALL_DIR=1 keeps the temporary folder (about 5.5 GB: a CUDA build of torch).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${1:-$(command -v python3.11 || command -v python3)}
BUILD_PY=${BUILD_PY:-$ROOT/.venv/bin/python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dsg_viz-test-install.XXXXXX")
if [ "${DSG_VIZ_KEEP_INSTALL_DIR:-0}" != 1 ]; then trap 'rm -rf "$WORK"' EXIT; fi
unset PYTHONPATH
export PIP_DISABLE_PIP_VERSION_CHECK=1
t0=$SECONDS
step() { printf '\n== [%4ds] %s\n' "$((SECONDS - t0))" "$*"; }
fail() { echo "test-install FAILED: $*" >&2; exit 1; }

step "build sdist and wheel ($BUILD_PY -m build)"
"$BUILD_PY" -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log"; fail "python -m build"; }
WHEEL=$(ls "$WORK"/dist/dsg_viz-*.whl)
SDIST=$(ls "$WORK"/dist/dsg_viz-*.tar.gz)
echo "built $(basename "$SDIST") and $(basename "$WHEEL")"
"$BUILD_PY" - "$WHEEL" <<'EOF' || fail "wheel contents"
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
bad = [n for n in names if not (n.startswith("dsg_viz/") or n.split("/")[0].endswith(".dist-info"))]
assert not bad, f"wheel holds files outside dsg_viz/: {bad[:10]}"
assert "dsg_viz/__init__.py" in names and "dsg_viz/cli/__init__.py" in names, "package files missing from the wheel"
ep = [n for n in names if n.endswith("entry_points.txt")]
assert ep, "no entry_points.txt"
print(f"wheel: {len(names)} files, all under dsg_viz/ or its .dist-info")
EOF

step "fresh venv with the tested torch/torchvision ($PY)"
"$PY" -m venv "$WORK/venv"
VPY=$WORK/venv/bin/python
"$VPY" -m pip install -q --no-compile -c constraints.txt torch torchvision 2>&1 | grep -v "^WARNING: Location" || true
"$VPY" -c "import torch, torchvision" || fail "torch did not install into the fresh venv"
torch_id() {
    "$VPY" - <<'EOF'
import importlib.metadata as md, os, torch, torchvision
rec = next(f for f in md.distribution("torch").files if f.name == "RECORD").locate()
print(f"torch {torch.__version__} at {torch.__file__} (inode {os.stat(torch.__file__).st_ino}, RECORD inode "
      f"{os.stat(rec).st_ino}); torchvision {torchvision.__version__} at {torchvision.__file__} "
      f"(inode {os.stat(torchvision.__file__).st_ino})")
EOF
}
BEFORE=$(torch_id)
echo "before: $BEFORE"

step "install the wheel (torch unconstrained; other dependencies at constraints.txt)"
grep -v -E '^(torch|torchvision)==' constraints.txt >"$WORK/constraints-no-torch.txt"
"$VPY" -m pip install -c "$WORK/constraints-no-torch.txt" "$WHEEL" >"$WORK/pip-install.log" 2>&1 \
    || { grep -v "^WARNING: Location" "$WORK/pip-install.log" | tail -30; fail "pip install of the wheel"; }
grep -E "^Successfully installed" "$WORK/pip-install.log" || true
if grep -E "^Successfully installed" "$WORK/pip-install.log" | grep -q -E " (torch|torchvision)-[0-9]"; then
    fail "pip reinstalled torch or torchvision"
fi
AFTER=$(torch_id)
echo "after:  $AFTER"
[ "$BEFORE" = "$AFTER" ] || fail "torch changed: before '$BEFORE', after '$AFTER'"
echo "torch untouched"

step "pip check"
"$VPY" -m pip check

step "smoke commands from $WORK/run (outside the source tree)"
mkdir -p "$WORK/run"
cd "$WORK/run"
BIN=$WORK/venv/bin
"$BIN/dsg-viz" --help >help.txt || fail "dsg-viz --help"
head -3 help.txt
"$BIN/dsg-viz" list-models | tee models.txt
grep -q "^tiny_bn" models.txt || fail "list-models does not list tiny_bn"
"$VPY" -m dsg_viz --help >/dev/null || fail "python -m dsg_viz --help"
"$VPY" - "$ROOT" <<'EOF' || fail "imports of the installed package"
import importlib, importlib.metadata as md, pkgutil, sys
import dsg_viz
root = sys.argv[1]
assert not dsg_viz.__file__.startswith(root), f"imported the source tree: {dsg_viz.__file__}"
assert dsg_viz.__version__ == md.version("dsg_viz"), (dsg_viz.__version__, md.version("dsg_viz"))
skipped = []
for m in pkgutil.walk_packages(dsg_viz.__path__, "dsg_viz."):
    if m.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(m.name)
    except ModuleNotFoundError as e:  # only an optional extra may be missing (ipywidgets: the notebooks extra)
        if e.name.split(".")[0] in ("dsg_viz", "tests") or e.name.split(".")[0] not in ("ipywidgets", "IPython"):
            raise
        skipped.append(f"{m.name} (needs {e.name})")
print(f"dsg_viz {dsg_viz.__version__} from {dsg_viz.__file__}; every module imports"
      + (f" except {', '.join(skipped)}" if skipped else ""))
for name in dsg_viz.__all__:
    getattr(dsg_viz, name)
EOF
"$BIN/dsg-viz" generate --model tiny_bn --method dsg --num-samples 8 --batch-size 8 --steps 2 --threads 1 \
    --out tiny.pt --json | tail -1 >generate.json || fail "dsg-viz generate"
"$VPY" - <<'EOF' || fail "the generated sample set"
import json, torch
r = json.loads(open("generate.json").read())
saved = torch.load(r["out"], map_location="cpu", weights_only=False)
assert saved, "empty sample-set file"
print(f"generate: {r['num_samples']} samples ({r['method']}) in {r['seconds']} s -> {r['out']}, grid {r['grid']}")
assert r["num_samples"] == 8 and not r["interrupted"]
EOF
[ -s tiny.png ] || fail "no PNG grid"

step "test-install passed"
