"""A sweep of the DSG knobs for the diversity-vs-accuracy study (issue 15): the paper's ``dsg`` preset with one knob
changed at a time (SDA margin scale, LSE weight, SCI on/off and weight), each set measured like the steps curve
(``benchmarks/steps_curve.py``: homogenization scores against 256 real train images, calibration-only top-1 on the
**validation split** at W4A4/W3A3/W2A4, BRECQ W4A4 at the last step count), at 50, 200 and 500 steps.

    export DSG_VIZ_DATA_ROOT=../shared
    python benchmarks/knob_sweep.py                  # seed 0, every knob; resumes (cells in runs/knob_sweep/cells)
    python benchmarks/knob_sweep.py --stage report   # docs/results/knob_sweep.{json,md}
    python benchmarks/diversity_study.py --input docs/results/steps_curve.json docs/results/knob_sweep.json \\
        --acc calib/W4A4,calib/W3A3,calib/W2A4,brecq/W4A4

The unchanged ``dsg`` itself (margin scale 1, LSE weight 2, SCI at weight 1/L) is the steps curve's ``dsg`` row;
nothing here is measured on the test split, so the sweep may inform a choice (none is made here).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from dsg_viz import _io

sys.path.insert(0, str(Path(__file__).resolve().parent))
import steps_curve  # noqa: E402 - benchmarks/steps_curve.py: the measurement itself

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "knob_sweep"
JSON_OUT = ROOT / "docs" / "results" / "knob_sweep.json"
MD_OUT = ROOT / "docs" / "results" / "knob_sweep.md"
# label → (knob, value, --variant spec); dsg's own values: margin scale 1, lse_weight 2, sci "intended" at 1/L
KNOBS = {
    "dsg@ms0.1": ("SDA margin scale", "0.1", "dsg:margins.scale=0.1"),
    "dsg@ms0.3": ("SDA margin scale", "0.3 (= dsg-tuned)", "dsg:margins.scale=0.3"),
    "dsg@ms3": ("SDA margin scale", "3", "dsg:margins.scale=3"),
    "dsg@lse1": ("LSE weight", "1 (LSE off)", "dsg:lse_weight=1"),
    "dsg@sci-off": ("SCI", "off", "dsg:sci=off"),
    "dsg@sci0.5": ("SCI weight", "0.5 (≈ 10/L)", "dsg:sci_weight=0.5"),
}
STEPS = "50,200,500"


def run(args) -> None:
    labels = args.variants.split(",") if args.variants else list(KNOBS)
    unknown = [v for v in labels if v not in KNOBS]
    if unknown:
        raise SystemExit(f"error: unknown variant(s) {', '.join(unknown)}; choose from {', '.join(KNOBS)}")
    argv = ["--work", str(WORK), "--sources", ",".join(labels), "--seeds", args.seeds, "--steps", STEPS,
            "--bits", "W4A4,W3A3,W2A4", "--brecq-bits", "W4A4", "--brecq-steps", "500",
            "--threads", str(args.threads)]
    for v in labels:
        argv += ["--variant", f"{v}={KNOBS[v][2]}"]
    if args.data_root:
        argv += ["--data-root", args.data_root]
    steps_curve.main(argv)


def report() -> None:
    recs = [json.loads(p.read_text()) for p in sorted((WORK / "cells").glob("*.json"))]
    if not recs:
        raise SystemExit(f"error: no cells under {WORK / 'cells'}; run 'python benchmarks/knob_sweep.py' first")
    for r in recs:
        knob, value, _ = KNOBS.get(r["source"], ("?", "?", ""))
        r["knob"], r["value"] = knob, value
    res = {"split": "val (the last 500 train images of each class, 5,000 images)", "checkpoint": steps_curve.CKPT,
           "convention": "zeroq, ema calibration", "fp_val_top1": recs[0].get("fp_val_top1"),
           "machine": recs[0].get("machine"), "runs": recs}
    _io.write_text(JSON_OUT, json.dumps(res, indent=1, sort_keys=True))
    acc_keys = ["calib/W4A4", "calib/W3A3", "calib/W2A4", "brecq/W4A4"]
    score_keys = ["rel_d_mu", "offdiag_pearson_feature", "erank_feature", "w1"]
    lines = ["# A sweep of the DSG knobs (validation split)", "",
             "Made by `benchmarks/knob_sweep.py` (its docstring has the commands). The paper's `dsg` with one knob "
             "changed; 256 samples, seed "
             + ", ".join(sorted({str(r['seed']) for r in recs}))
             + f"; top-1 on the validation split (FP {res['fp_val_top1']:.2f}); scores against 256 real train "
             "images. The unchanged `dsg` is the steps curve's row (docs/results/steps_curve.md).", "",
             "| variant | knob | value | steps | " + " | ".join(acc_keys) + " | " + " | ".join(score_keys) + " |",
             "|" + "---|" * (4 + len(acc_keys) + len(score_keys))]
    ref = []  # the unchanged dsg of the steps curve, same seeds and step counts, as the first rows
    sc = ROOT / "docs" / "results" / "steps_curve.json"
    if sc.is_file():
        seeds = {r["seed"] for r in recs}
        for r in json.loads(sc.read_text())["runs"]:
            if r["source"] == "dsg" and r["seed"] in seeds:
                cells = {k: v for k, v in r["cells"].items() if k in STEPS.split(",")}
                ref.append(dict(r, cells=cells, knob="(none: the paper's dsg)", value="ms 1, LSE 2, SCI 1/L"))
    order = list(KNOBS)
    for r in ref + sorted(recs, key=lambda r: (order.index(r["source"]) if r["source"] in order else len(order),
                                               r["seed"])):
        for k in sorted(r["cells"], key=int):
            c = r["cells"][k]
            acc = [f"{c['acc'][a]:.2f}" if a in c.get("acc", {}) else "—" for a in acc_keys]
            sc = [f"{c['scores'][s]:.3f}" if c.get("scores", {}).get(s) is not None else "—" for s in score_keys]
            lines.append(f"| {r['source']} | {r['knob']} | {r['value']} | {k} | " + " | ".join(acc + sc) + " |")
    secs = [r["gen_seconds"] for r in recs if r.get("gen_seconds")]
    if secs:
        lines += ["", f"Generation: median {statistics.median(secs):.0f} s per 256-sample, 500-step set on one thread "
                      "(other jobs shared the machine's two cores)."]
    _io.write_text(MD_OUT, "\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", choices=("run", "report"), default="run")
    p.add_argument("--variants", default="", help=f"comma-separated subset of {', '.join(KNOBS)} (default: all)")
    p.add_argument("--seeds", default="0")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", default=None)
    args = p.parse_args(argv)
    if args.stage == "report":
        report()
    else:
        run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
