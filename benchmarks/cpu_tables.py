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

The parts are independent (run two side by side, one thread each); every one resumes from its results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

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


def _precisions() -> str:
    """The precision each cached set was generated in, from the cache (``bf16``/``fp32`` per source)."""
    from dsg_viz.generation import SampleSet

    seen: dict = {}
    for f in sorted((ROOT / "runs" / "cache" / "resnet20_cifar10").glob("*-n256-seed*.pt")):
        try:
            s = SampleSet.load(f)
        except Exception:  # noqa: BLE001 - an unreadable entry says nothing about precision
            continue
        seen.setdefault(s.method, set()).add((s.precision or {}).get("resolved", "fp32"))
    return ", ".join(f"{m}: {'/'.join(sorted(p))}" for m, p in sorted(seen.items()))


def report() -> None:
    DOCS.mkdir(parents=True, exist_ok=True)
    for conv in ("zeroq", "brecq"):
        runs = [r for r in (_load(_folder("main", conv)), _load(_folder("variants", conv))) if r]
        if not runs:
            continue
        res = merge(runs)
        (DOCS / f"cpu_calib_{conv}.json").write_text(json.dumps(res, indent=1, sort_keys=True))
        conv_text = next(iter(res["cells"].values()))["convention"]
        md = [f"### Calibration only, {conv} convention", "", conv_text, "", paired_markdown(res, CALIB_PAIRS)]
        (DOCS / f"cpu_calib_{conv}.md").write_text("\n".join(md) + "\n")
        print("\n".join(md))
    rec = _load(_folder("recon", "zeroq"))
    if rec:
        res = merge([rec])
        (DOCS / "cpu_recon.json").write_text(json.dumps(res, indent=1, sort_keys=True))
        md = []
        for m in res["config"]["methods"]:
            md += [f"### {m}, zeroq convention", "", paired_markdown(res, [("zeroq", "dsg")], m), ""]
        (DOCS / "cpu_recon.md").write_text("\n".join(md))
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
