"""Does diversity predict accuracy? Rank correlations between homogenization scores and quantized accuracy over
many sample sets (issue 15), as pure functions of numbers.

One *sample set* (a source, a seed and a step count) is one row: its scores (:data:`~.metrics.SCORES`, e.g.
``rel_d_mu``, ``offdiag_pearson_feature``) beside its top-1 after quantizing with it (``"calib/W3A3"``,
``"brecq/W4A4"``, ...). :func:`study_rows` flattens measurement records into such rows, :func:`rank_correlation`
is Spearman's ρ with a bootstrap CI, :func:`within_group_correlation` the same question asked inside each source,
:func:`correlation_table` both for every (score, accuracy) pair and :func:`study_reading` a short reading
computed from that table. ``benchmarks/diversity_study.py`` runs them on ``docs/results/steps_curve.json``.

Why a within-source variant: pooled over sources, a correlation mixes two questions. Real images are both the most
diverse and the best calibration set, Gaussian noise both the least diverse and the worst, so a pooled ρ can be
large only because sources differ — in diversity *and* in everything else (class information, the network's
confidence, image statistics) — while, inside each source, more diversity buys nothing (or the reverse: Simpson's
paradox). The within-source ρ keeps only the variation among sets of the same method (seeds, step counts).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

# the direction in which a score means *more diverse* (less homogenized): +1 higher, -1 lower, 0 no clear direction
DIVERSITY_SIGN: dict[str, int] = {
    "w1": +1, "kl": +1, "offset": +1, "d_mu": +1, "d_sigma": +1, "rel_d_mu": +1, "rel_d_sigma": +1,
    "erank_pixel": +1, "erank_feature": +1,
    "offdiag_cos_pixel": -1, "offdiag_pearson_pixel": -1, "offdiag_cos_feature": -1, "offdiag_pearson_feature": -1,
    "std_ratio": 0, "bn_loss": 0,
}

FEW_ROWS = 10  # below this many rows a percentile-bootstrap CI is unreliable; study_reading does not read it


def _as_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    xa = np.asarray(x, dtype=float).ravel()
    ya = np.asarray(y, dtype=float).ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"x and y differ in length ({xa.size} vs {ya.size}); pass one value of each per row")
    if xa.size < 3:
        raise ValueError(f"a rank correlation needs at least 3 rows (got {xa.size})")
    if not (np.isfinite(xa).all() and np.isfinite(ya).all()):
        raise ValueError("x and y must be finite; drop the rows with a missing value first")
    return xa, ya


def _rowwise_spearman(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Return Spearman's ρ of each row pair of ``X``, ``Y`` [B, n] (average ranks for ties); NaN where a row is
    constant."""
    from scipy.stats import rankdata

    rx = rankdata(X, axis=1)
    ry = rankdata(Y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    sx = np.sqrt((rx * rx).sum(axis=1))
    sy = np.sqrt((ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (rx * ry).sum(axis=1) / (sx * sy)
    r[(sx < 1e-12) | (sy < 1e-12)] = np.nan
    return np.clip(r, -1.0, 1.0)


def _percentile_ci(values: np.ndarray, ci: float) -> list[float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return [math.nan, math.nan]
    a = (1 - ci) / 2
    lo, hi = np.quantile(v, [a, 1 - a])
    return [float(lo), float(hi)]


def _check_ci(n_boot: int, ci: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be an integer >= 1 (got {n_boot!r})")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1) (got {ci!r})")


def _constant_note(xa, ya) -> str | None:
    which = [n for n, v in (("x", xa), ("y", ya)) if np.ptp(v) == 0]
    if which:
        return f"{' and '.join(which)} constant over the rows: ρ is undefined (NaN)"
    return None


def _ties_note(xa, ya) -> str | None:
    ties = [f"{n} has {np.unique(v).size} distinct values in {v.size} rows" for n, v in (("x", xa), ("y", ya))
            if np.unique(v).size < v.size]
    return ("ties ranked by their average (" + "; ".join(ties) + ")") if ties else None


def rank_correlation(x, y, n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> dict:
    """Return Spearman's rank correlation of ``x`` and ``y`` [n] with a percentile-bootstrap confidence interval.

    Args:
        x, y: one finite value per row (e.g. a diversity score and a top-1 per sample set), same length n >= 3.
        n_boot: bootstrap resamples of the rows (drawn with replacement, the same pairs kept together).
        ci: coverage of the interval (0.95 = the 2.5 and 97.5 percentiles of the resampled ρ).
        seed: seed of the resampling (the result is deterministic).

    Returns ``{"rho", "ci": [lo, hi], "p", "n", "n_boot", "note"}``: ρ in [-1, 1] from
    :func:`scipy.stats.spearmanr`; ``p`` its two-sided p-value (t approximation, rough for n < 10); ``n_boot`` the
    resamples that gave a defined ρ (a resample with a constant x or y has none and is left out; the note says how
    many); ``note`` ``None`` or a sentence on ties or undefined values. Ties get average ranks. A constant ``x`` or
    ``y`` gives ``rho``, ``ci`` and ``p`` NaN with a note saying so. Raises ``ValueError`` when the lengths differ,
    n < 3 or a value is not finite.
    """
    from scipy.stats import spearmanr

    xa, ya = _as_pair(x, y)
    _check_ci(n_boot, ci)
    n = xa.size
    notes = []
    const = _constant_note(xa, ya)
    if const:
        return {"rho": math.nan, "ci": [math.nan, math.nan], "p": math.nan, "n": n, "n_boot": 0, "note": const}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = spearmanr(xa, ya)
    rho, p = float(res.statistic), float(res.pvalue)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boot = _rowwise_spearman(xa[idx], ya[idx])
    ok = int(np.isfinite(boot).sum())
    if ok < n_boot:
        notes.append(f"{n_boot - ok} of {n_boot} resamples had a constant x or y and were left out")
    ties = _ties_note(xa, ya)
    if ties:
        notes.append(ties)
    if n < FEW_ROWS:
        notes.append(f"only {n} rows: a percentile bootstrap CI is too narrow to trust below {FEW_ROWS}")
    return {"rho": rho, "ci": _percentile_ci(boot, ci), "p": p, "n": n, "n_boot": ok,
            "note": "; ".join(notes) or None}


def within_group_correlation(x, y, groups, n_boot: int = 2000, ci: float = 0.95, seed: int = 0,
                             min_group: int = 4) -> dict:
    """Return Spearman's ρ computed inside each group (e.g. each source) and combined, with a stratified bootstrap
    CI and a within-group permutation p-value.

    Pooling sources confounds *which method made the set* with *how diverse it is* (module docstring); this
    asks only whether, among sets of the same source, the more diverse ones are the more accurate.

    The combined ρ is the mean of the groups' ρ weighted by their row counts. CI: the rows are resampled with
    replacement *inside* each group (``n_boot`` times), each group's ρ recomputed and combined again (a resample
    whose group has a constant x or y drops that group from that resample's mean); the percentile interval of
    those. p-value: ``y`` is permuted inside each group ``n_boot`` times (the null: no association within any
    group, whatever the differences between groups); two-sided, ``(1 + #{|ρ_perm| >= |ρ|}) / (1 + n_boot)``.

    Args:
        x, y: one finite value per row, same length.
        groups: one label per row (e.g. the source name).
        n_boot: bootstrap resamples and permutations.
        ci: interval coverage; seed: seed of both.
        min_group: groups with fewer rows, or with a constant x or y, are left out (named in ``note``); a ρ of
            3 rows takes only the values ±1 and ±0.5.

    Returns ``{"rho", "ci": [lo, hi], "p", "n" (rows in the groups used), "n_boot", "groups": {name: {"rho",
    "n"}} (every group; ``rho`` NaN for one left out), "note"}``. ``rho``/``ci``/``p`` are NaN when no group is
    usable. Raises ``ValueError`` when lengths differ or there are fewer than 3 rows.
    """
    xa, ya = _as_pair(x, y)
    _check_ci(n_boot, ci)
    g = np.asarray(list(groups), dtype=object).ravel()
    if g.size != xa.size:
        raise ValueError(f"groups has {g.size} labels for {xa.size} rows; pass one label per row")
    if min_group < 3:
        raise ValueError(f"min_group must be >= 3 (got {min_group})")
    names = list(dict.fromkeys(g.tolist()))
    per: dict = {}
    used, skipped = [], []
    for name in names:
        sel = g == name
        gx, gy = xa[sel], ya[sel]
        r = math.nan
        if sel.sum() < min_group:
            skipped.append(f"{name} ({int(sel.sum())} rows < {min_group})")
        elif _constant_note(gx, gy):
            skipped.append(f"{name} (constant {'x' if np.ptp(gx) == 0 else 'y'})")
        else:
            r = float(_rowwise_spearman(gx[None], gy[None])[0])
            used.append(name)
        per[str(name)] = {"rho": r, "n": int(sel.sum())}
    notes = []
    if skipped:
        notes.append("left out: " + ", ".join(skipped))
    if not used:
        notes.append("no usable group: ρ is undefined (NaN)")
        return {"rho": math.nan, "ci": [math.nan, math.nan], "p": math.nan, "n": 0, "n_boot": 0, "groups": per,
                "note": "; ".join(notes)}
    w = np.array([per[str(u)]["n"] for u in used], dtype=float)
    rhos = np.array([per[str(u)]["rho"] for u in used])
    rho = float((w * rhos).sum() / w.sum())
    rng = np.random.default_rng(seed)
    boot = np.empty((len(used), n_boot))
    perm = np.empty((len(used), n_boot))
    for i, name in enumerate(used):
        sel = g == name
        gx, gy = xa[sel], ya[sel]
        m = gx.size
        idx = rng.integers(0, m, size=(n_boot, m))
        boot[i] = _rowwise_spearman(gx[idx], gy[idx])
        pidx = rng.permuted(np.broadcast_to(np.arange(m), (n_boot, m)), axis=1)
        perm[i] = _rowwise_spearman(np.broadcast_to(gx, (n_boot, m)), gy[pidx])
    wb = np.where(np.isfinite(boot), w[:, None], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        comb = np.nansum(wb * np.nan_to_num(boot), axis=0) / wb.sum(axis=0)
    ok = int(np.isfinite(comb).sum())
    if ok < n_boot:
        notes.append(f"{n_boot - ok} of {n_boot} resamples had no group with a defined ρ and were left out")
    nulls = (w[:, None] * perm).sum(axis=0) / w.sum()
    p = float((1 + np.sum(np.abs(nulls) >= abs(rho) - 1e-12)) / (1 + n_boot))
    return {"rho": rho, "ci": _percentile_ci(comb, ci), "p": p, "n": int(w.sum()), "n_boot": ok, "groups": per,
            "note": "; ".join(notes) or None}


def study_rows(records: Sequence[Mapping]) -> list[dict]:
    """Return one row per sample set from measurement records (``benchmarks/steps_curve.py`` cells files, or the
    ``runs`` list of ``docs/results/steps_curve.json``).

    A record is ``{"source": str, "seed": int, "cells": {"<steps>": {"scores": {name: float | None}, "acc":
    {"calib/W3A3": top1, ...}}}}``; a row is ``{"source", "seed", "steps", <score>: float | None, ...,
    <accuracy key>: float | None, ...}`` (every row has every score and accuracy key seen in any record, ``None``
    where that set lacks it). Rows are sorted by source (first appearance), seed, steps. Raises ``ValueError`` on
    a record of another shape or a (source, seed, steps) seen twice.
    """
    if isinstance(records, Mapping) or not isinstance(records, Sequence):
        raise ValueError("records must be a list of {source, seed, cells} dicts")
    rows, seen = [], set()
    score_keys: dict = {}
    acc_keys: dict = {}
    order: dict = {}
    for i, r in enumerate(records):
        if not isinstance(r, Mapping) or not isinstance(r.get("cells"), Mapping) or "source" not in r:
            raise ValueError(f"record {i} is not a {{source, seed, cells}} dict")
        src = str(r["source"])
        order.setdefault(src, len(order))
        for k, c in r["cells"].items():
            try:
                steps = int(k)
            except (TypeError, ValueError):
                raise ValueError(f"record {i} ({src}): cell key {k!r} is not a step count") from None
            if not isinstance(c, Mapping):
                raise ValueError(f"record {i} ({src}): cell {k!r} is not a dict")
            key = (src, r.get("seed"), steps)
            if key in seen:
                raise ValueError(f"sample set {src} seed {r.get('seed')} steps {steps} appears twice")
            seen.add(key)
            scores = c.get("scores") or {}
            acc = c.get("acc") or {}
            if not isinstance(scores, Mapping) or not isinstance(acc, Mapping):
                raise ValueError(f"record {i} ({src}): cell {k!r} has malformed scores or acc")
            score_keys.update(dict.fromkeys(scores))
            acc_keys.update(dict.fromkeys(acc))
            row = {"source": src, "seed": r.get("seed"), "steps": steps}
            row.update({s: (None if v is None else float(v)) for s, v in scores.items()})
            row.update({a: (None if v is None else float(v)) for a, v in acc.items()})
            rows.append(row)
    for row in rows:
        for k in list(score_keys) + list(acc_keys):
            row.setdefault(k, None)
    rows.sort(key=lambda r: (order[r["source"]], -1 if r["seed"] is None else r["seed"], r["steps"]))
    return rows


def _pair(rows: Sequence[Mapping], score: str, acc: str, group_key: str = "source"):
    keep = [r for r in rows if r.get(score) is not None and r.get(acc) is not None
            and math.isfinite(r[score]) and math.isfinite(r[acc])]
    return (np.array([r[score] for r in keep], dtype=float), np.array([r[acc] for r in keep], dtype=float),
            [r.get(group_key) for r in keep])


def _jsonable(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _undefined(n: int, why: str, groups: bool = False) -> dict:
    out = {"rho": None, "ci": [None, None], "p": None, "n": n, "n_boot": 0, "note": why}
    if groups:
        out["groups"] = {}
    return out


def correlation_table(rows: Sequence[Mapping], score_keys: Sequence[str], acc_keys: Sequence[str],
                      group_key: str = "source", n_boot: int = 2000, ci: float = 0.95, seed: int = 0,
                      min_group: int = 4) -> dict:
    """Return every (accuracy key, score) rank correlation over ``rows`` (:func:`study_rows`), pooled and within
    groups (rows with the same ``row[group_key]``, by default the source), as a JSON-serializable dict.

    Each pair uses the rows where both values are present (BRECQ may exist for some step counts only).
    ``{"score_keys", "acc_keys", "group_key", "n_boot", "ci", "seed", "min_group",
    "pooled": {acc: {score: rank_correlation(...)}}, "within": {acc: {score: within_group_correlation(...)}}}``,
    with NaN written as ``None``; a pair with fewer than 3 rows gets ``rho`` ``None`` and a note.
    """
    _check_ci(n_boot, ci)
    pooled: dict = {}
    within: dict = {}
    for a in acc_keys:
        pooled[a], within[a] = {}, {}
        for s in score_keys:
            x, y, g = _pair(rows, s, a, group_key)
            if x.size < 3:
                why = f"only {x.size} rows have both {s} and {a}"
                pooled[a][s], within[a][s] = _undefined(int(x.size), why), _undefined(int(x.size), why, True)
                continue
            pooled[a][s] = _jsonable(rank_correlation(x, y, n_boot=n_boot, ci=ci, seed=seed))
            within[a][s] = _jsonable(within_group_correlation(x, y, g, n_boot=n_boot, ci=ci, seed=seed,
                                                              min_group=min_group))
    return {"score_keys": list(score_keys), "acc_keys": list(acc_keys), "group_key": group_key, "n_boot": n_boot,
            "ci": ci, "seed": seed, "min_group": min_group, "pooled": pooled, "within": within}


def excludes_zero(result: Mapping) -> bool:
    """Return whether a correlation result's CI lies entirely on one side of 0 (``False`` when undefined)."""
    lo, hi = (result.get("ci") or [None, None])[:2]
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return False
    return lo > 0 or hi < 0


def format_rho(result: Mapping, digits: int = 2) -> str:
    """Return ``"ρ [lo, hi]"`` (e.g. ``"-0.62 [-0.80, -0.35]"``) or ``"–"`` when undefined."""
    r = result.get("rho")
    if r is None or not math.isfinite(r):
        return "–"
    lo, hi = result["ci"]
    f = f"{{:+.{digits}f}}"
    ci = "[–]" if lo is None or hi is None or not math.isfinite(lo) else f"[{f.format(lo)}, {f.format(hi)}]"
    return f"{f.format(r)} {ci}"


def _direction(score: str, rhos) -> str:
    sign = DIVERSITY_SIGN.get(score, 0)
    dirs = {int(np.sign(r)) * sign for r in rhos}
    if sign == 0:
        return "no diversity direction"
    if dirs == {1}:
        return "more diverse → more accurate"
    if dirs == {-1}:
        return "more diverse → less accurate"
    return "direction differs between accuracy keys"


def study_reading(table: Mapping, labels: Mapping[str, str] | None = None, min_rows: int = FEW_ROWS) -> str:
    """Return a short Markdown reading of a :func:`correlation_table`, computed from its numbers only: for the
    within-group and the pooled correlations, which scores have a CI excluding 0 at which accuracy keys, in which
    direction (via :data:`DIVERSITY_SIGN`: whether the *more diverse* sets were the more accurate), at which keys
    none does, how many such CIs chance alone would give, and how many pooled findings vanish within groups.
    Pairs with fewer than ``min_rows`` rows are not read (their count is said)."""
    labels = labels or {}
    pct = f"{table['ci'] * 100:g}%"
    accs = list(table["acc_keys"])
    group = table["group_key"]
    lines = []
    found = {}
    for kind, title in (("within", f"Within {group}s"), ("pooled", f"Pooled over {group}s")):
        hits, tested, few = [], 0, 0
        for a in accs:
            for s in table["score_keys"]:
                res = table[kind][a][s]
                if res.get("rho") is None:
                    continue
                if res.get("n", 0) < min_rows:
                    few += 1
                    continue
                tested += 1
                if excludes_zero(res):
                    hits.append((a, s, res))
        found[kind] = {(a, s) for a, s, _ in hits}
        if not tested:
            lines.append(f"- **{title}**: no pair had the {min_rows} rows needed to read a correlation.")
            continue
        if few:
            title += f" ({few} pairs with fewer than {min_rows} rows not read)"
        chance = f"{tested} pairs tested without correction, so about {tested * (1 - table['ci']):.1f} by chance alone"
        if not hits:
            lines.append(f"- **{title}**: no score's {pct} CI excludes 0 at any accuracy key ({chance}).")
            continue
        by_score: dict = {}
        for a, s, res in hits:
            by_score.setdefault(s, []).append((a, res["rho"]))
        parts = [f"`{labels.get(s, s)}` ({', '.join(f'{a} {r:+.2f}' for a, r in lst)}; "
                 f"{_direction(s, [r for _, r in lst])})" for s, lst in by_score.items()]
        none_at = [a for a in accs if not any(h[0] == a for h in hits)]
        tail = f" At {', '.join(none_at)} no score's CI excludes 0." if none_at else ""
        lines.append(f"- **{title}**: {len(hits)} (score, accuracy) pairs have a {pct} CI excluding 0 ({chance}): "
                     + "; ".join(parts) + "." + tail)
    only_pooled = found.get("pooled", set()) - found.get("within", set())
    if only_pooled:
        lines.append(f"- {len(only_pooled)} of the {len(found['pooled'])} pooled findings have a within-{group} CI "
                     f"that includes 0: for those, the pooled ρ may come from differences between {group}s rather "
                     f"than from diversity among sets of the same {group}.")
    return "\n".join(lines)
