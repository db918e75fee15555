"""Collect finished ``dsg-viz qat`` runs into ``docs/results/qat.json`` (key ``cells``) and print a Markdown table.

    python benchmarks/qat_table.py                       # every runs/qat/*/result.json
    python benchmarks/qat_table.py --root runs/qat --md  # also print the table

A cell is keyed ``<generator>|<bits>|<preset>|seed<k>``; the preset is recognised from the run's schedule
(epochs × iterations × batch). Other keys of qat.json (the first W4A4 runs, PTQ references, projections) are kept.
Wall time comes from ``runs/qat/wall.txt`` lines ``<name> wall <s> s`` when present.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def preset_of(cfg: dict) -> str:
    from dsg_viz.qat import QAT_PRESETS

    for name, p in QAT_PRESETS.items():
        if (p.epochs, p.iters, p.batch_size) == (cfg["epochs"], cfg["iters"], cfg["batch_size"]):
            return name
    return f"{cfg['epochs']}x{cfg['iters']}x{cfg['batch_size']}"


def collect(root: Path) -> dict:
    walls = {}
    if (root / "wall.txt").is_file():
        walls = {m[0]: int(m[1]) for m in re.findall(r"^(\S+(?: \S+)?) wall (\d+) s", (root / "wall.txt").read_text(),
                                                      re.M)}
    cells = {}
    for p in sorted(root.glob("*/result.json")):
        r = json.loads(p.read_text())
        c = r["config"]
        key = f"{c['generator']}|{c['bits']}|{preset_of(c)}|seed{c['seed']}"
        cells[key] = {
            "run": str(p.parent.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p.parent),
            "complete": r["complete"], "epochs_done": r["epochs_done"],
            "final": r["final"], "val_selected": r["val_selected"],
            "train_seconds": r["seconds"], "iter_seconds": r["iter_seconds"],
            "wall_seconds": walls.get(p.parent.name) or walls.get(f"{c['generator']} {c['bits']}"),
            "val_top1_per_epoch": [h.get("val_top1") for h in r["history"]],
            "teacher_acc_on_generated_per_epoch": [round(h["teacher_acc_gen"], 4) for h in r["history"]],
        }
    return cells


def markdown(cells: dict) -> str:
    lines = ["| generator | bits | preset | seed | final epoch top-1 | val-selected (epoch) top-1 | s / iteration | "
             "train s |", "|---|---|---|---|---|---|---|---|"]
    for g, b, pr, s in sorted((k.split("|") for k in cells), key=lambda t: (t[2], t[1], t[0], t[3])):
        k = "|".join((g, b, pr, s))
        c = cells[k]
        f, v = c["final"], c["val_selected"]
        lines.append(f"| `{g}` | {b} | `{pr}` | {s[4:]} | {f['test']['top1']:.2f} | {v['test']['top1']:.2f} "
                     f"({v['epoch']}) | {c['iter_seconds']:.2f} | {c['train_seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=str(ROOT / "runs" / "qat"))
    p.add_argument("--json", default=str(ROOT / "docs" / "results" / "qat.json"))
    p.add_argument("--md", action="store_true", help="print the Markdown table")
    a = p.parse_args()
    cells = collect(Path(a.root))
    jp = Path(a.json)
    res = json.loads(jp.read_text()) if jp.is_file() else {}
    res["cells"] = cells
    jp.write_text(json.dumps(res, indent=1) + "\n")
    print(markdown(cells) if a.md else json.dumps({k: (v["final"]["test"]["top1"], v["val_selected"]["test"]["top1"])
                                                  for k, v in cells.items()}, indent=1))


if __name__ == "__main__":
    main()
