"""The homogenization diagnostics table of docs/results.md (issue 15): every row under its own name, 3 seeds.

One ``dsg-viz diagnose`` per seed over the 256-sample, 500-step sets of the CPU tables (``benchmarks/cpu_tables.py``;
loaded from the shared sample cache, ``runs/cache``) plus 256 real train images drawn with the same seed (never the
validation subset), then the mean ± std over seeds of every score.

    export DSG_VIZ_DATA_ROOT=../shared
    python benchmarks/diagnostics_table.py --stage run      # runs/diagnose/seed{0,1,2}/ (about a minute each)
    python benchmarks/diagnostics_table.py --stage report   # docs/results/diagnostics.{json,md}, docs/img/diag_*.png

The reading under the table is ``docs/results/diagnostics_reading.md`` (written from these numbers), appended as is.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from dsg_viz import _io

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "results"
WORK = ROOT / "runs" / "diagnose"
CKPT = "resnet20_cifar10_jpeg.pt"
SOURCES = "zeroq,zeroq+ce,dsg,dsg-tuned,dsg-official,zeroq+ce+sda,zeroq+ce+lse,zeroq+ce+sci,gaussian"
ROWS = (  # (score key, label)
    ("w1", "W1 to BN Gaussian (σ units)"),
    ("kl", "KL(hist ‖ BN Gaussian)"),
    ("offset", "batch offset \\|μ̂−μ\\|/σ"),
    ("std_ratio", "batch std ratio σ̂/σ"),
    ("d_mu", "dispersion D^μ"),
    ("d_sigma", "dispersion D^σ"),
    ("rel_d_mu", "D^μ / D^μ(real)"),
    ("rel_d_sigma", "D^σ / D^σ(real)"),
    ("bn_loss", "per-sample BN loss Σ_l (ZeroQ)"),
    ("offdiag_cos_pixel", "mean \\|cos\\| off-diag, pixels"),
    ("offdiag_pearson_pixel", "mean \\|Pearson\\| off-diag, pixels"),
    ("offdiag_cos_feature", "mean \\|cos\\| off-diag, features"),
    ("offdiag_pearson_feature", "mean \\|Pearson\\| off-diag, features"),
    ("erank_pixel", "effective rank (cos), pixels"),
    ("erank_feature", "effective rank (cos), features"),
)
ORDER = ("real", "gaussian", "zeroq", "zeroq+ce", "dsg", "dsg-tuned", "dsg-official", "zeroq+ce+sda",
         "zeroq+ce+lse", "zeroq+ce+sci")


def run(args) -> None:
    data_root = args.data_root or os.environ.get("DSG_VIZ_DATA_ROOT") or "data"
    for seed in args.seeds.split(","):
        out = WORK / f"seed{seed}"
        if (out / "summary.json").is_file():
            print(f"seed {seed}: done ({out})")
            continue
        cmd = [str(Path(sys.executable).with_name("dsg-viz")), "diagnose", "--checkpoint",
               str(Path(data_root) / "models" / "cifar10" / CKPT), "--threads", str(args.threads),
               "--sources", SOURCES, "--real", "256", "--num-samples", "256", "--seed", seed, "--json",
               "--out", str(out)]
        print("+", " ".join(cmd), flush=True)
        if subprocess.call(cmd):
            raise SystemExit(f"error: diagnose failed for seed {seed}")


def _fmt(v: list[float]) -> str:
    digits = 3 if max(abs(x) for x in v) < 10 else 1
    m = statistics.mean(v)
    if len(v) == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {statistics.stdev(v):.{digits}f}"


def study_records(per_seed: dict) -> list[dict]:
    """One ``{source, seed, eval_split, cells: {steps: {scores, acc}}}`` record per diagnosed set (the shape
    ``benchmarks/diversity_study.py`` reads), with the set's test-split top-1 from the CPU tables
    (``docs/results/cpu_calib_zeroq.json``: ``calib/<bits>``; ``docs/results/cpu_recon.json``: ``adaround/<bits>``,
    ``brecq/<bits>``) where measured."""
    acc: dict = {}
    for name in ("cpu_calib_zeroq.json", "cpu_recon.json"):
        f = DOCS / name
        for key, cell in (json.loads(f.read_text())["cells"].items() if f.is_file() else []):
            method, src, bits, seed = key.split("|")
            acc.setdefault((src, int(seed.removeprefix("seed"))), {})[f"{method}/{bits}"] = cell["top1"]
    recs = []
    for seed, by_src in sorted(per_seed.items()):
        for src, scores in by_src.items():
            steps = "0" if src in ("real", "gaussian") else "500"
            recs.append({"source": src, "seed": seed, "eval_split": "test",
                         "cells": {steps: {"scores": scores, "acc": acc.get((src, seed), {})}}})
    return recs


def report() -> None:
    runs = {int(p.parent.name.removeprefix("seed")): json.loads(p.read_text())
            for p in sorted(WORK.glob("seed*/summary.json"))}
    if not runs:
        raise SystemExit(f"error: no diagnose runs under {WORK}; run --stage run first")
    sources = [s for s in ORDER if all(s in r["scores"] for r in runs.values())]
    per_seed = {seed: {s: r["scores"][s] for s in sources} for seed, r in runs.items()}
    noise = [r["noise_reference"] for r in runs.values()]
    table = {s: {k: [per_seed[seed][s][k] for seed in sorted(runs)] for k, _ in ROWS} for s in sources}
    first = runs[min(runs)]
    out = {"sources": sources, "seeds": sorted(runs), "n": first["n"], "layers": first.get("layers"),
           "per_seed": per_seed, "noise_reference": noise,
           "mean": {s: {k: statistics.mean(v) for k, v in d.items()} for s, d in table.items()},
           "std": {s: {k: (statistics.stdev(v) if len(v) > 1 else None) for k, v in d.items()}
                   for s, d in table.items()},
           "command": "python benchmarks/diagnostics_table.py --stage run",
           "seconds": {seed: r["meta"].get("seconds") for seed, r in runs.items()}}
    out.update(split="test", runs=study_records(per_seed))
    _io.write_text(DOCS / "diagnostics.json", json.dumps(out, indent=1, sort_keys=True))
    nkeys = ("offdiag_cos_pixel", "offdiag_pearson_pixel", "offdiag_cos_feature", "offdiag_pearson_feature",
             "erank_pixel", "erank_feature")
    lines = [f"# Homogenization diagnostics: {', '.join(sources)} (3 seeds)" if len(runs) == 3 else
             f"# Homogenization diagnostics: {', '.join(sources)} ({len(runs)} seeds)", "",
             f"JPEG-fine-tuned ResNet-20; {first['n']} samples per set; the 500-step sets of the CPU tables (each "
             "preset's own settings, loaded from the shared sample cache) and 256 real train images drawn with the "
             "same seed (validation subset excluded); mean ± std over seeds "
             f"{', '.join(map(str, sorted(runs)))}. Layer-averaged over the BN layers (the BN loss summed); "
             "features = penultimate (64-d). Command:", "",
             "```bash", "python benchmarks/diagnostics_table.py --stage run   # dsg-viz diagnose per seed",
             "python benchmarks/diagnostics_table.py --stage report", "```", "",
             "| score | " + " | ".join(sources) + " | N(0,1) noise |", "|---|" + "---:|" * (len(sources) + 1)]
    for k, label in ROWS:
        cells = [_fmt(table[s][k]) for s in sources]
        nz = _fmt([n[k] for n in noise]) if k in nkeys else "–"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {nz} |")
    reading = DOCS / "diagnostics_reading.md"
    if reading.is_file():
        lines += ["", reading.read_text().strip()]
    img = ROOT / "docs" / "img"
    for name in ("tsne_source", "dispersion"):
        f = WORK / f"seed{min(runs)}" / f"{name}.png"
        if f.is_file():
            _io.write_bytes(img / f"diag_{name}.png", f.read_bytes())
    lines += ["", f"![t-SNE of penultimate features, seed {min(runs)}](../img/diag_tsne_source.png)",
              f"![per-layer dispersion, seed {min(runs)}](../img/diag_dispersion.png)"]
    _io.write_text(DOCS / "diagnostics.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", choices=("run", "report"), default="report")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", default=None)
    args = p.parse_args(argv)
    run(args) if args.stage == "run" else report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
