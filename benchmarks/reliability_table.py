"""Write docs/reliability.md from the fault and bad-input suite (tests/test_faults.py).

Runs the suite with ``$DSG_VIZ_RELIABILITY_OUT`` set, so that every case appends what happened (command, exit code,
message, what was kept) as one JSON line, then renders the table in the order of ``tests.test_faults.CASES``. Every
declared case must have reported, and the suite must pass. The suite itself checks that the committed table lists
exactly the declared cases with the same exit codes (tests/reliability.py), so the page cannot go stale.

Usage (from the repository root, with the data root the tests use):

    .venv/bin/python benchmarks/reliability_table.py            # runs tests/test_faults.py, writes docs/reliability.md
    .venv/bin/python benchmarks/reliability_table.py --from X   # render from an existing JSONL record
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HEADER = """# Reliability: faults and bad input

What dsg_viz does when a run is interrupted, a number is out of range, an output cannot be written, a file is
damaged or could run code, a sample set belongs to another model, or an optimization produces NaN. The contract:

* **bad input** (an option, a path, a file): one line `error: ...` on stderr, exit code **2**, no traceback, checked
  *before* any work starts, nothing written;
* **Ctrl-C** (SIGINT): one line `interrupted: ...` saying where it stopped and what was kept, exit code **130**;
  finished work is kept, nothing is ever computed from an interrupted step (a partial sample set is never cached,
  calibrated on or silently loaded), and rerunning the same command resumes to the same numbers as an
  uninterrupted run;
* **files** are read with `torch.load(weights_only=True)` (and a NumPy-only unpickler for `.npy` object arrays):
  tensors and plain containers only, so a file from someone else cannot run code; every file is written atomically
  (`dsg_viz._io`);
* **reproducibility**: same seed and same thread count give bitwise-identical images on CPU; other thread counts
  give different floating-point reductions and so slightly different images (a mean |Δ| of 0.21 in the model's
  input space was measured between two thread counts), so every saved artifact records `threads`.

This page is generated from the test suite (`tests/test_faults.py`, {n} cases) by
`benchmarks/reliability_table.py`; the suite fails when a case is added, removed or changes its exit code without
the page being regenerated. Paths are shown as `<tmp>` (a fresh folder) and `<data>` (the data root); `—` in the
exit-code column marks a library call. Faults are injected with `DSG_VIZ_FAULT=sigint@POINT:N` (a real SIGINT the
process sends itself at the N-th pass through a point) or `nan@POINT:N` (`dsg_viz._faults`).
"""


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(records: list[dict], cases: dict) -> str:
    by_id = {r["case"]: r for r in records}
    missing = [c for c in cases if c not in by_id]
    if missing:
        raise SystemExit(f"cases without a record (did their tests run and pass?): {', '.join(missing)}")
    lines = [HEADER.format(n=len(cases))]
    area = None
    for cid, (a, what) in cases.items():
        if a != area:
            area = a
            lines += ["", f"## {area}", "", "| case | what | command | exit | message | kept |",
                      "|---|---|---|---|---|---|"]
        r = by_id[cid]
        lines.append(f"| `{cid}` | {_cell(what)} | `{_cell(r['command'])}` | {_cell(r['rc'])} | "
                     f"{_cell(r['message'])} | {_cell(r['kept'])} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--from", dest="source", default=None, help="render from this JSONL record instead of running")
    p.add_argument("--out", default=str(REPO / "docs" / "reliability.md"))
    a = p.parse_args()
    from tests.reliability import OUT_ENV
    from tests.test_faults import CASES

    if a.source:
        rec = Path(a.source)
    else:
        rec = Path(tempfile.mkdtemp(prefix="dsg_viz_reliability_")) / "record.jsonl"
        env = dict(os.environ, **{OUT_ENV: str(rec)})
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_faults.py"],
                           cwd=REPO, env=env)
        if r.returncode != 0:
            print("the suite failed; docs/reliability.md not written", file=sys.stderr)
            return r.returncode
    records = [json.loads(line) for line in rec.read_text(encoding="utf-8").splitlines() if line.strip()]
    Path(a.out).write_text(render(records, CASES), encoding="utf-8")
    print(f"wrote {a.out}: {len(CASES)} cases")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
