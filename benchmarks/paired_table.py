"""Mean ± std per row and **paired** differences per seed from a ``dsg-viz compare`` results.json.

For each bit width: every row's mean ± std over seeds, and for each pair (A, B) the per-seed differences B − A,
their mean and std, a paired t-test (two-sided p, scipy) and how many seeds agree in sign. Works on a partial
results.json too (cells only; missing seeds are left out of the pairing).

Usage: python benchmarks/paired_table.py RESULTS_JSON [--pairs zeroq:dsg,zeroq+ce:dsg] [--method calib] > table.md
"""

from __future__ import annotations

import argparse
import json
import statistics

from scipy import stats


def collect(results: dict, method: str) -> dict:
    """``{source: {bits: {seed: top1}}}`` from the cells of a results dict."""
    rows: dict = {}
    for key, cell in results["cells"].items():
        m, src, bits, seed = key.split("|")
        if m == method:
            rows.setdefault(src, {}).setdefault(bits, {})[int(seed.removeprefix("seed"))] = cell["top1"]
    return rows


def paired(a: dict, b: dict) -> dict | None:
    """Per-seed ``b − a`` over the seeds both have: values, mean, std, t-test p, sign agreement."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    d = [b[s] - a[s] for s in seeds]
    p = float(stats.ttest_rel([b[s] for s in seeds], [a[s] for s in seeds]).pvalue) if len(seeds) > 1 else None
    return {"seeds": seeds, "diff": d, "mean": statistics.mean(d), "std": statistics.stdev(d) if len(d) > 1 else None,
            "p": p, "positive": sum(x > 0 for x in d), "n": len(d)}


def markdown(results: dict, pairs: list[tuple[str, str]], method: str = "calib") -> str:
    rows = collect(results, method)
    bits = [b for b in results["config"]["bits"] if any(b in r for r in rows.values())]
    order = [s for s in results["config"]["sources"] if s in rows]
    out = [f"FP top-1 {results['fp']['top1']:.2f} ({results['fp']['n']} test images); method `{method}`; "
           "mean ± std over seeds (n).", "", "| source | " + " | ".join(bits) + " |", "|---" * (len(bits) + 1) + "|"]
    for s in order:
        cells = []
        for b in bits:
            v = list(rows[s].get(b, {}).values())
            cells.append("—" if not v else f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f} ({len(v)})"
                         if len(v) > 1 else f"{v[0]:.2f} (1)")
        out.append(f"| {s} | " + " | ".join(cells) + " |")
    out += ["", "Paired differences per seed (B − A): mean ± std, per-seed values, paired t-test p, seeds with B > A.",
            "", "| B − A | bits | mean ± std | per seed | p | B > A |", "|---|---|---|---|---|---|"]
    for a, b in pairs:
        if a not in rows or b not in rows:
            continue
        for bit in bits:
            r = paired(rows[a].get(bit, {}), rows[b].get(bit, {}))
            if r is None:
                continue
            std = f" ± {r['std']:.2f}" if r["std"] is not None else ""
            p = f"{r['p']:.3f}" if r["p"] is not None else "—"
            out.append(f"| {b} − {a} | {bit} | {r['mean']:+.2f}{std} | "
                       f"{', '.join(f'{x:+.2f}' for x in r['diff'])} | {p} | {r['positive']}/{r['n']} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--pairs", default="zeroq:dsg,zeroq+ce:dsg,zeroq:zeroq+ce,zeroq+ce:dsg-tuned,zeroq:real,dsg:real")
    ap.add_argument("--method", default="calib")
    a = ap.parse_args()
    pairs = [tuple(p.split(":")) for p in a.pairs.split(",") if p]
    print(markdown(json.load(open(a.results)), pairs, a.method))


if __name__ == "__main__":
    main()
