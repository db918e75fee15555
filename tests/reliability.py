"""The record behind ``docs/reliability.md``: each case of ``tests/test_faults.py`` reports what happened.

:func:`record` either appends one JSON line to ``$DSG_VIZ_RELIABILITY_OUT`` (``benchmarks/reliability_table.py`` sets
it, runs the suite and renders the table from those lines) or, in a normal test run, checks the case against the
committed table: the case must be listed there with the same exit code. So the table cannot go stale: a new case,
a removed one or a changed exit code fails the suite until the table is regenerated.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reliability.md"
OUT_ENV = "DSG_VIZ_RELIABILITY_OUT"
_CELL = re.compile(r"(?<!\\)\|")


def doc_rows(path: Path = DOC) -> dict[str, dict]:
    """Return ``{case id: {"rc": ..., "message": ...}}`` parsed from the table in ``path`` (``{}`` if missing)."""
    if not path.is_file():
        return {}
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in _CELL.split(line)[1:-1]]
        rows[cells[0].strip("`")] = {"rc": cells[3], "message": cells[4]}
    return rows


_DOC_CACHE: dict | None = None


def normalize(text: str, *paths) -> str:
    """Return ``text`` with the given paths replaced by ``<tmp>`` / ``<data>``-style names and whitespace folded."""
    text = str(text)
    for p, name in paths:
        text = text.replace(str(p), name)
    return " ".join(text.split())


def record(case: str, cases: dict, command: str, rc, message: str, kept: str) -> None:
    """Report one case: ``rc`` the exit code (or ``"—"`` for library calls), ``message`` the first line on stderr
    (or the exception's), ``kept`` what was left on disk afterwards."""
    global _DOC_CACHE
    assert case in cases, f"undeclared reliability case {case!r}: add it to CASES in tests/test_faults.py"
    rc = str(rc)
    out = os.environ.get(OUT_ENV)
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps({"case": case, "command": command, "rc": rc, "message": message, "kept": kept}) + "\n")
        return
    if _DOC_CACHE is None:
        _DOC_CACHE = doc_rows()
    row = _DOC_CACHE.get(case)
    assert row is not None, (f"case {case!r} is missing from docs/reliability.md; regenerate it: "
                             ".venv/bin/python benchmarks/reliability_table.py")
    assert row["rc"] == rc, (f"case {case!r} exits with {rc} but docs/reliability.md says {row['rc']}; regenerate it: "
                             ".venv/bin/python benchmarks/reliability_table.py")
