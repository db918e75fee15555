"""Fault injection for the reliability suite (``tests/test_faults.py``, ``docs/reliability.md``).

``DSG_VIZ_FAULT="ACTION@POINT:N[,...]"`` makes the N-th pass through ``POINT`` in this process fail:

* ``sigint``: send SIGINT to this process, exactly as Ctrl-C in a terminal does;
* ``nan``: the caller turns its loss (and one named term) into NaN.

Points: ``generate`` (each optimization step of :func:`dsg_viz.generation.generate`), ``calibrate`` (each
calibration batch), ``evaluate`` (each evaluation batch), ``reconstruct`` (each AdaRound/BRECQ step), ``train``
(each QAT iteration). Unset — the normal case — :func:`hit` costs one global lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "DSG_VIZ_FAULT"
ACTIONS = ("sigint", "nan")
POINTS = ("generate", "calibrate", "evaluate", "reconstruct", "train")

_plan: dict[str, dict[int, str]] | None = None
_counts: dict[str, int] = {}


def reset(spec: str | None = None) -> dict:
    """Parse ``spec`` (default: ``$DSG_VIZ_FAULT``) into the plan and zero the counters; return the plan."""
    global _plan
    spec = os.environ.get(ENV, "") if spec is None else spec
    plan: dict[str, dict[int, str]] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        try:
            action, rest = item.split("@")
            point, n = rest.split(":")
            n = int(n)
        except ValueError:
            raise ValueError(f"{ENV}: cannot parse {item!r}; write ACTION@POINT:N, e.g. sigint@calibrate:2") from None
        if action not in ACTIONS or point not in POINTS or n < 1:
            raise ValueError(f"{ENV}: {item!r}: action one of {ACTIONS}, point one of {POINTS}, N >= 1")
        plan.setdefault(point, {})[n] = action
    _plan = plan
    _counts.clear()
    return plan


def hit(point: str) -> str | None:
    """Count one pass through ``point``; return the action planned for this pass (``None`` almost always).
    ``sigint`` is sent here, so a ``KeyboardInterrupt`` follows at once."""
    if _plan is None:
        reset()
    if not _plan or point not in _plan:
        return None
    n = _counts[point] = _counts.get(point, 0) + 1
    action = _plan[point].get(n)
    if action == "sigint":
        os.kill(os.getpid(), signal.SIGINT)
    return action
