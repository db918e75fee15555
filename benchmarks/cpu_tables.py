"""The CPU test-split tables of issue 15: every row under its own name, 3 seeds, paired per-seed differences.

Calibration only (both layer conventions; W4A4, W5A5, W6A6, W8A8, W3A3, W2A4) for gaussian, real, the published
``zeroq``, ``zeroq+ce``, the paper's ``dsg``, ``dsg-tuned``, ``dsg-official`` and the single-component ablations
``zeroq+ce+sda``/``+lse``/``+sci``; reconstruction (AdaRound, BRECQ at W4A4, W3A3, W2A4) for ``zeroq`` and ``dsg``.
256 samples per set, each preset's own settings (500 steps, its batch size, precision ``auto``: bf16 on this AMX
CPU), ``ema`` activation calibration, min/max per-channel weights, the 10,000 test images. Every run is one
``dsg-viz compare`` (its sets come from the shared sample cache, ``runs/cache``; the steps curve's 500-step sets of
zeroq, zeroq+ce and dsg are there already, ``python benchmarks/steps_curve.py --stage cache``).

    export DSG_VIZ_DATA_ROOT=../shared
    python benchmarks/cpu_tables.py --stage run --part main      # zeroq, dsg, zeroq+ce, gaussian, real
    python benchmarks/cpu_tables.py --stage run --part variants  # dsg-tuned, dsg-official, the ablations
    python benchmarks/cpu_tables.py --stage run --part recon     # adaround / brecq for zeroq and dsg
    python benchmarks/cpu_tables.py --stage report               # docs/results/cpu_*.{json,md}

The parts are independent (run two side by side, one thread each); every one resumes from its results.json. The
committed brecq-convention variant rows were run as two processes, ``dsg-tuned,dsg-official`` into
``runs/tables/variants-brecq`` and the three ablations into ``runs/tables/variants2-brecq`` (the same ``dsg-viz
compare`` with ``--sources`` split); the report merges both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from dsg_viz import _io

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired_table import markdown as paired_markdown  # noqa: E402 - benchmarks/paired_table.py

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "results"
WORK = ROOT / "runs" / "tables"
CKPT = "resnet20_cifar10_jpeg.pt"
BITS = "W4A4,W5A5,W6A6,W8A8,W3A3,W2A4"
PARTS = {
    "main": dict(sources="zeroq,dsg,zeroq+ce,gaussian,real", method="calib", bits=BITS, conventions=("zeroq", "brecq")),
    "variants": dict(sources="dsg-tuned,dsg-official,zeroq+ce+sda,zeroq+ce+lse,zeroq+ce+sci", method="calib",
                     bits=BITS, conventions=("zeroq", "brecq")),
    "recon": dict(sources="zeroq,dsg", method="adaround,brecq", bits="W4A4,W3A3,W2A4", conventions=("zeroq",)),
}
ORDER = ("zeroq", "dsg", "zeroq+ce", "dsg-tuned", "dsg-official", "zeroq+ce+sda", "zeroq+ce+lse", "zeroq+ce+sci",
         "gaussian", "real")
CALIB_PAIRS = [("zeroq", "dsg"), ("zeroq+ce", "dsg"), ("zeroq", "zeroq+ce"), ("zeroq+ce", "zeroq+ce+sda"),
               ("zeroq+ce", "zeroq+ce+lse"), ("zeroq+ce", "zeroq+ce+sci"), ("dsg", "dsg-tuned"),
               ("dsg", "dsg-official"), ("zeroq", "real"), ("dsg", "real")]


def _folder(part: str, conv: str) -> Path:
    return WORK / f"{part}-{conv}" if part != "recon" else WORK / f"recon-{conv}"


def command(part: str, conv: str, data_root: str, threads: int) -> list[str]:
    p = PARTS[part]
    return [str(Path(sys.executable).with_name("dsg-viz")), "compare",
            "--checkpoint", str(Path(data_root) / "models" / "cifar10" / CKPT), "--sources", p["sources"],
            "--method", p["method"], "--bits", p["bits"], "--seeds", "3", "--num-samples", "256",
            "--convention", conv, "--threads", str(threads), "--out", str(_folder(part, conv))]


def run(args) -> None:
    data_root = args.data_root or os.environ.get("DSG_VIZ_DATA_ROOT") or "data"
    for conv in PARTS[args.part]["conventions"]:
        cmd = command(args.part, conv, data_root, args.threads)
        print("+", " ".join(cmd), flush=True)
        rc = subprocess.call(cmd)
        if rc:
            raise SystemExit(rc)


def merge(results: list[dict]) -> dict:
    """One results dict from several ``dsg-viz compare`` runs of the same settings: cells united, sources ordered,
    the checkpoint named by file (no machine path)."""
    out = {"fp": results[0]["fp"], "config": dict(results[0]["config"]), "cells": {}}
    srcs = []
    for r in results:
        if r["fp"]["top1"] != out["fp"]["top1"]:
            raise SystemExit("error: the runs disagree on the FP accuracy; they are not the same model and split")
        out["cells"].update(r["cells"])
        srcs += [s for s in r["config"]["sources"] if s not in srcs]
    out["config"]["sources"] = sorted(srcs, key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER))
    out["config"]["checkpoint"] = CKPT
    out["config"]["data_root"] = None
    return out


def _load(folder: Path) -> dict | None:
    f = folder / "results.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _precisions(sources) -> str:
    """The precision each generated set of ``sources`` × seeds 0–2 was made in, read from the very cache files
    ``dsg-viz compare`` loads (the key of the preset at 256 samples and the precision ``auto`` resolves to here)."""
    import torch

    from dsg_viz import cache, create_model
    from dsg_viz.data import resolve_data_root
    from dsg_viz.generation import SampleSet, preset, resolve_precision

    model = create_model("resnet20_cifar10", str(resolve_data_root(None) / "models" / "cifar10" / CKPT))
    name, ident = cache.model_identity(model)
    seen: dict = {}
    for src in sources:
        if src in ("real", "gaussian"):
            continue
        cfg = preset(src, num_samples=256)
        for seed in range(3):
            key = cache.sample_key(name, ident, cfg, 256, seed, precision=resolve_precision(cfg, torch.device("cpu"))[0])
            f = cache.cache_path(key, src, 256, seed, name)
            got = (SampleSet.load(f).precision or {}).get("resolved", "?") if f.is_file() else "missing"
            seen.setdefault(got, []).append(f"{src}/{seed}")
    if set(seen) == {"bf16"}:
        return "every generated set here was made under bf16, as each set records"
    return "; ".join(f"{p}: {', '.join(v)}" for p, v in sorted(seen.items()))


INTRO = """# Calibration only on CPU (test split): every preset under its own name, 3 seeds

JPEG-fine-tuned ResNet-20 (`resnet20_cifar10_jpeg.pt`, FP 88.30), 256 samples per set, 3 seeds (0–2) per row, each
preset's own generation settings (500 steps; batch 64, `dsg-official` its released batch 40; precision `auto`, which
is bf16 autocast on this AMX-BF16 CPU: {precisions}), `ema` activation calibration, min/max
per-channel weights, the 10,000 test images. Seed s of every preset starts from the same random generator state, so
rows are paired by seed; the paired tables give B − A per seed with a paired t-test. Nothing was tuned on these
numbers (the one tuned setting, `dsg-tuned`'s margin scale, was chosen on the validation split).

```bash
export DSG_VIZ_DATA_ROOT=../shared
python benchmarks/cpu_tables.py --stage run --part main       # and, side by side: --part variants
python benchmarks/cpu_tables.py --stage report
```

Each part is one `dsg-viz compare` per convention (the script prints it); the zeroq, zeroq+ce and dsg sets are the
steps curve's 500-step sets, put into the shared sample cache (`python benchmarks/steps_curve.py --stage cache`).
"""

RECON_INTRO = """# Reconstruction on CPU (test split): the published ZeroQ against the paper's DSG, 3 seeds

The same 256-sample sets as the CPU calibration table (seeds 0–2; zeroq convention: every layer at the stated bits),
AdaRound and BRECQ-style block reconstruction with the package's CPU schedule (`ReconstructionConfig` defaults: 200
steps per unit; the papers use 20,000), `ema` activation ranges, the 10,000 test images.

```bash
python benchmarks/cpu_tables.py --stage run --part recon
```
"""


def report() -> None:
    DOCS.mkdir(parents=True, exist_ok=True)
    md = [INTRO.format(precisions=_precisions(ORDER))]
    for conv in ("zeroq", "brecq"):
        # variants2-<conv>: the same settings run as a second process over some of the variant sources
        runs = [r for r in (_load(_folder("main", conv)), _load(_folder("variants", conv)),
                            _load(WORK / f"variants2-{conv}")) if r]
        if not runs:
            continue
        res = merge(runs)
        _io.write_text(DOCS / f"cpu_calib_{conv}.json", json.dumps(res, indent=1, sort_keys=True))
        conv_text = next(iter(res["cells"].values()))["convention"]
        md += [f"## {conv} convention", "", f"Cells as in this example: {conv_text}.", "",
               paired_markdown(res, CALIB_PAIRS), ""]
    _io.write_text(DOCS / "cpu_calib.md", "\n".join(md))
    print("\n".join(md))
    rec = _load(_folder("recon", "zeroq"))
    if rec:
        res = merge([rec])
        _io.write_text(DOCS / "cpu_recon.json", json.dumps(res, indent=1, sort_keys=True))
        md = [RECON_INTRO]
        for m in res["config"]["methods"]:
            md += [f"## {m}", "", paired_markdown(res, [("zeroq", "dsg")], m), ""]
        _io.write_text(DOCS / "cpu_recon.md", "\n".join(md))
        print("\n".join(md))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", choices=("run", "report"), default="report")
    p.add_argument("--part", choices=tuple(PARTS), default="main")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", default=None)
    args = p.parse_args(argv)
    if args.stage == "run":
        run(args)
    else:
        report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
