"""Does diversity predict accuracy? (issue 15) Rank correlations between the homogenization scores of every
measured sample set and its quantized top-1, pooled over sources and within each source.

Input: ``docs/results/steps_curve.json`` (written by ``python benchmarks/steps_curve.py --stage report``; one row per
source × seed × step count, accuracy on the validation split), or any ``--input`` files of the same shape (a dict
with ``runs`` = a list of ``{source, seed, cells: {steps: {scores, acc}}}`` records, or one such record, e.g. a
``runs/steps_curve/cells/*.json`` file). Sample sets are keyed by (source, seed, steps); one seen twice is an error.

Outputs:

* ``docs/results/diversity_accuracy.json``: the rows, Spearman ρ with a percentile-bootstrap CI for every
  (score, accuracy key), pooled and within sources (:mod:`dsg_viz.diagnostics.study`), and the reading;
* ``docs/results/diversity_accuracy.md``: the tables and a reading computed from them (which score, if any, has a
  CI excluding 0, and at which bit widths);
* ``docs/img/diversity_vs_accuracy_<bits>.png``: one figure per bit width (rows: calibration, BRECQ where measured;
  one panel per score: the issue's four plus any other whose CI excludes 0 at that bit width).

Command (seconds; no model is run)::

    python benchmarks/diversity_study.py
    # or, with other result files of the same shape:
    python benchmarks/diversity_study.py --input docs/results/steps_curve.json more.json
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IN_DEFAULT = ROOT / "docs" / "results" / "steps_curve.json"
JSON_OUT = ROOT / "docs" / "results" / "diversity_accuracy.json"
MD_OUT = ROOT / "docs" / "results" / "diversity_accuracy.md"
IMG_DIR = ROOT / "docs" / "img"
SCORES = ("rel_d_mu", "rel_d_sigma", "w1", "offdiag_pearson_feature", "offdiag_cos_feature", "erank_feature",
          "offdiag_cos_pixel", "erank_pixel", "bn_loss")
PLOT_SCORES = ("rel_d_mu", "offdiag_pearson_feature", "erank_feature", "w1")  # the four
ACC_ORDER = ("calib/W4A4", "calib/W3A3", "calib/W2A4", "brecq/W4A4", "brecq/W3A3", "brecq/W2A4")
VAL_NOTE = ("Accuracy is top-1 on the **validation split** (5,000 train images — the last 500 of each class — held "
            "out from every tuning choice). The pretrained network saw these images in training, so the absolute "
            "levels are inflated compared with the test split; the rank correlations compare sample sets with one "
            "another on the same images.")


def read_records(paths) -> tuple[list[dict], list[str]]:
    """Return the records of every input file and the splits they name; a file of another shape exits with a
    message naming it."""
    recs, splits = [], []
    for p in map(Path, paths):
        if not p.is_file():
            hint = (" (run the measurement, then 'python benchmarks/steps_curve.py --stage report')"
                    if p.resolve() == IN_DEFAULT else "")
            raise SystemExit(f"error: {p} does not exist{hint}")
        try:
            obj = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SystemExit(f"error: {p} is not a readable JSON file ({type(e).__name__})") from None
        if isinstance(obj, dict) and isinstance(obj.get("runs"), list):
            got = obj["runs"]
            if obj.get("split"):
                splits.append(str(obj["split"]))
        elif isinstance(obj, dict) and isinstance(obj.get("cells"), dict) and "source" in obj:
            got = [obj]
        else:
            raise SystemExit(f"error: {p} is neither a results file with 'runs' (docs/results/steps_curve.json) nor "
                             "one {source, seed, cells} record (runs/steps_curve/cells/*.json)")
        splits += [str(r["eval_split"]) for r in got if isinstance(r, dict) and r.get("eval_split")]
        recs += got
    return recs, list(dict.fromkeys(splits))


def _shown(path) -> str:
    """``path`` relative to the repository when inside it, else as given."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(path)


def acc_order(keys) -> list[str]:
    return [k for k in ACC_ORDER if k in keys] + sorted(set(keys) - set(ACC_ORDER))


def bits_of(key: str) -> str:
    return key.split("/", 1)[-1]


def markdown(res: dict, labels: dict) -> str:
    from dsg_viz.diagnostics.study import excludes_zero, format_rho

    t = res["table"]
    rows = res["rows"]
    pct = f"{t['ci'] * 100:g}%"
    srcs = res["sources"]
    gen = [s for s in srcs if any(r["source"] == s and r["steps"] for r in rows)]
    lines = [
        f"# {res.get('title', 'Does diversity predict accuracy?')}", "",
        f"Made by `{res['command']}` from {', '.join(f'`{i}`' for i in res['inputs'])} "
        "(`benchmarks/diversity_study.py`; its docstring has the commands).", "",
        f"{len(rows)} sample sets: sources {', '.join(srcs)}; seeds {', '.join(map(str, res['seeds']))}; step counts "
        f"{', '.join(map(str, res['steps']))} (0 = real images or Gaussian noise, not optimized). Each set's "
        "homogenization scores (against 256 real train images) beside its top-1 after quantizing with it.", "",
    ]
    if res["validation"]:
        lines += [VAL_NOTE, ""]
    lines += [
        f"Spearman's ρ with a {pct} percentile-bootstrap CI ({t['n_boot']} resamples of the rows, seed {t['seed']}). "
        "**Pooled**: all sets together, so differences *between* sources (real vs noise vs ZeroQ vs DSG) count. "
        f"**Within sources**: ρ inside each source with at least {t['min_group']} sets, averaged weighted by their "
        "counts; CI from resampling inside each source, p from permuting accuracy inside each source. It asks whether, "
        "among sets of the same method, the more diverse are the more accurate. Bold: CI excludes 0. Direction: for "
        "D^μ, D^σ, W1 and effective rank higher means more diverse; for the |cos|/|Pearson| scores lower does.", "",
        "## Reading (computed from the tables below)", "", res["reading"], "",
    ]

    def cell(r):
        s = format_rho(r)
        return f"**{s}**" if excludes_zero(r) else s

    def p(r):
        return "–" if r.get("p") is None else f"{r['p']:.2g}"

    for a in t["acc_keys"]:
        lines += [f"## {a}", "",
                  "| score | pooled ρ [CI] | p | n | within sources ρ [CI] | p (perm.) | " +
                  " | ".join(f"ρ {s}" for s in gen) + " |",
                  "|---|---:|---:|---:|---:|---:|" + "---:|" * len(gen)]
        for s in t["score_keys"]:
            po, wi = t["pooled"][a][s], t["within"][a][s]
            per = [wi.get("groups", {}).get(g, {}).get("rho") for g in gen]
            lines.append(f"| {labels.get(s, s).replace('|', chr(92) + '|')} (`{s}`) | {cell(po)} | {p(po)} | "
                         f"{po['n']} | {cell(wi)} | {p(wi)} | " +
                         " | ".join("–" if v is None else f"{v:+.2f}" for v in per) + " |")
        notes = sorted({r["note"] for s in t["score_keys"] for r in (t["pooled"][a][s], t["within"][a][s])
                        if r.get("note")})
        if notes:
            lines += ["", "Notes: " + " · ".join(notes)]
        lines.append("")
    if res["figures"]:
        lines += ["## Figures", ""]
        for b, f in res["figures"].items():
            lines += [f"![diversity vs accuracy, {b}](../img/{Path(f).name})", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", nargs="+", default=[str(IN_DEFAULT)],
                   help="results files with 'runs' (default docs/results/steps_curve.json) or single records")
    p.add_argument("--scores", default=",".join(SCORES), help="comma-separated score keys")
    p.add_argument("--acc", default=None, help="comma-separated accuracy keys (default: every one found)")
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--ci", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-group", type=int, default=4, help="fewest sets of a source for its within-source ρ")
    p.add_argument("--json-out", default=str(JSON_OUT))
    p.add_argument("--md-out", default=str(MD_OUT))
    p.add_argument("--img-dir", default=str(IMG_DIR))
    p.add_argument("--img-name", default="diversity_vs_accuracy",
                   help="figure file names: <img-name>_<bits>.png (another name keeps a second study's figures apart)")
    p.add_argument("--title", default="Does diversity predict accuracy?", help="the Markdown report's heading")
    args = p.parse_args(argv)

    from dsg_viz.diagnostics.metrics import SCORES as LABELS
    from dsg_viz.diagnostics.plots import new_figure, plot_diversity_vs_accuracy
    from dsg_viz.diagnostics.study import correlation_table, excludes_zero, study_reading, study_rows

    recs, splits = read_records(args.input)
    try:
        rows = study_rows(recs)
    except ValueError as e:
        raise SystemExit(f"error: {', '.join(args.input)}: {e}") from None
    if len(rows) < 3:
        raise SystemExit(f"error: only {len(rows)} sample sets in {', '.join(args.input)}; a correlation needs 3")
    scores = [s.strip() for s in args.scores.split(",") if s.strip()]
    found_acc = {k for r in rows for k, v in r.items() if "/" in k and v is not None}
    accs = [a.strip() for a in args.acc.split(",")] if args.acc else acc_order(found_acc)
    missing = [k for k in scores + accs if all(r.get(k) is None for r in rows)]
    if missing:
        raise SystemExit(f"error: no sample set has {', '.join(missing)}; choose from scores "
                         f"{', '.join(k for k in SCORES if any(r.get(k) is not None for r in rows))} and accuracy keys "
                         f"{', '.join(acc_order(found_acc))}")
    table = correlation_table(rows, scores, accs, n_boot=args.n_boot, ci=args.ci, seed=args.seed,
                              min_group=args.min_group)
    reading = study_reading(table, LABELS)
    inputs = [_shown(i) for i in args.input]
    res = {
        "command": "python benchmarks/diversity_study.py " + " ".join(shlex.quote(a) for a in
                                                                       (argv if argv is not None else sys.argv[1:])),
        "inputs": inputs, "splits": splits, "validation": any(s.startswith("val") for s in splits),
        "sources": list(dict.fromkeys(r["source"] for r in rows)),
        "seeds": sorted({r["seed"] for r in rows if r["seed"] is not None}),
        "steps": sorted({r["steps"] for r in rows}),
        "title": args.title, "n_rows": len(rows), "table": table, "reading": reading, "rows": rows, "figures": {},
        "figure_scores": {},
    }
    res["command"] = res["command"].strip()
    # one figure per bit width: a row of panels per method measured at it
    img_dir = Path(args.img_dir)
    bits = list(dict.fromkeys(bits_of(a) for a in accs))
    figs = {}
    for b in bits:
        keys = [a for a in accs if bits_of(a) == b]
        extra = [s for s in scores if s not in PLOT_SCORES and any(
            excludes_zero(table[k][a][s]) for a in keys for k in ("pooled", "within"))]
        panel_scores = [s for s in scores if s in PLOT_SCORES or s in extra]
        res["figure_scores"][b] = panel_scores
        ncols = min(len(panel_scores), 4)
        per = -(-len(panel_scores) // ncols)  # rows of panels per method
        fig, axes = new_figure(len(keys) * per * ncols, panel=(3.4, 3.4), ncols=ncols)
        for i, a in enumerate(keys):
            block = axes[i * per * ncols:(i + 1) * per * ncols]
            for unused in block[len(panel_scores):]:
                fig.delaxes(unused)
            plot_diversity_vs_accuracy(rows, a, panel_scores, table=table, legend=i == 0,
                                       ax=block[:len(panel_scores)])
        fig.suptitle(f"Diversity vs accuracy at {b} (ρ [{table['ci'] * 100:g}% CI]: pooled; within sources)")
        figs[b] = fig
        res["figures"][b] = str(img_dir / f"{args.img_name}_{re.sub(r'[^A-Za-z0-9]', '', b)}.png")
    md = markdown(res, LABELS)
    # everything computed; now write (each file to a temporary name, then renamed)
    from dsg_viz import _io

    for b, fig in figs.items():
        _io.save_figure(fig, res["figures"][b], dpi=110)
    res["figures"] = {b: _shown(f) for b, f in res["figures"].items()}
    _io.write_text(args.json_out, json.dumps(res, indent=1))
    _io.write_text(args.md_out, md)
    print(md)
    print(f"wrote {args.json_out}, {args.md_out} and {len(figs)} figure(s) in {img_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
