"""Would plateau-based early stopping (issue 19's optional ``--until-plateau``) hold accuracy at lower cost?

Replays the loss histories of the steps-curve runs (``runs/steps_curve/sets/<source>-n256-seed<s>-k500.pt``, made by
``benchmarks/steps_curve.py``): for each batch, the step at which a plateau rule would stop — the best total loss of
the last ``--window`` steps improved by less than ``--tol`` (relative) on the best before them, checked from step
``--min-steps`` on — and the validation accuracy the steps curve measured at the nearest measured step count at or
above it (``docs/results/steps_curve.json``). Writes ``docs/results/plateau_check.json`` and prints a table.

    python benchmarks/plateau_check.py                     # window 50, tol 1 %, min 100 steps
    python benchmarks/plateau_check.py --window 100 --tol 0.005
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETS = ROOT / "runs" / "steps_curve" / "sets"
CURVE = ROOT / "docs" / "results" / "steps_curve.json"
OUT = ROOT / "docs" / "results" / "plateau_check.json"


def stop_step(losses: list[float], window: int, tol: float, min_steps: int) -> int:
    """Return the step count (1-based) after which the rule stops, or ``len(losses)`` if it never does."""
    best, out = float("inf"), []
    for v in losses:
        best = min(best, v)
        out.append(best)
    for i in range(max(min_steps, window), len(losses)):
        if out[i] > out[i - window] * (1 - tol):
            return i + 1
    return len(losses)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--window", type=int, default=50)
    p.add_argument("--tol", type=float, default=0.01)
    p.add_argument("--min-steps", type=int, default=100)
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args(argv)
    from dsg_viz.generation import SampleSet

    curve = json.loads(CURVE.read_text())
    acc: dict = {}
    for r in curve["runs"]:
        for k, c in r["cells"].items():
            acc.setdefault(r["source"], {}).setdefault(int(k), {})[r["seed"]] = c.get("acc", {})
    rows = []
    for f in sorted(SETS.glob("*-k500.pt")):
        s = SampleSet.load(f)
        stops = [stop_step(h, a.window, a.tol, a.min_steps) for h in s.history["total"]]
        measured = sorted(acc.get(s.method, {}))
        at = next((k for k in measured if k >= max(stops)), measured[-1] if measured else None)
        cell = acc.get(s.method, {}).get(at, {}).get(s.seed, {})
        full = acc.get(s.method, {}).get(500, {}).get(s.seed, {})
        rows.append({"source": s.method, "seed": s.seed, "stops": stops, "mean_stop": statistics.mean(stops),
                     "accuracy_at": at, "acc": cell, "acc_500": full})
    out = {"rule": {"window": a.window, "tol": a.tol, "min_steps": a.min_steps},
           "command": "python benchmarks/plateau_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "rows": rows}
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(f"rule: stop when the best loss of the last {a.window} steps improved by < {a.tol:.1%} (from step "
          f"{a.min_steps})\n")
    print("| source | seed | stop step per batch | val top-1 at the next measured count (W4A4 / W3A3) | at 500 |")
    print("|---|---:|---|---|---|")
    for r in rows:
        f = lambda d: f"{d.get('calib/W4A4', float('nan')):.2f} / {d.get('calib/W3A3', float('nan')):.2f}"  # noqa: E731
        print(f"| {r['source']} | {r['seed']} | {', '.join(map(str, r['stops']))} | {f(r['acc'])} "
              f"(at {r['accuracy_at']}) | {f(r['acc_500'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
