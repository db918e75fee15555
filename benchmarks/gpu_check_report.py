"""Report of ``benchmarks/gpu_check.sh``: each GPU number beside the CPU result recorded in docs/.

Usage: python benchmarks/gpu_check_report.py OUT_DIR  (prints Markdown)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _load(p: Path):
    """The JSON of a file, or of its last line (a command's ``--json`` output); None when absent or broken."""
    try:
        text = p.read_text().strip()
        try:
            return json.loads(text)
        except ValueError:
            return json.loads(text.splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _cpu_row(source: str, bits: str):
    """Mean ± std (n) of a calibration-only cell of the committed CPU tables (zeroq convention), or None: the
    issue-15 tables (docs/results/cpu_calib_zeroq.json, every preset under its own name) first, then the earlier
    main table."""
    import statistics

    cells = (_load(DOCS / "results" / "cpu_calib_zeroq.json") or {}).get("cells", {})
    v = [c["top1"] for k, c in cells.items() if k.startswith(f"calib|{source}|{bits}|")]
    if len(v) > 1:
        return f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f} (n={len(v)})"
    for name in ("main_base_zeroq.json", "main_dsg_zeroq.json"):
        t = (_load(DOCS / "results" / name) or {}).get("table", {}).get("calib", {})
        if source in t and bits in t[source]:
            c = t[source][bits]
            return f"{c['mean']:.2f} ± {c['std']:.2f} (n={c['n']})"
    return None


def main(out: str) -> None:
    out = Path(out)
    env = _load(out / "env.json") or {}
    print(f"# GPU check\n\n{env.get('gpu')} · torch {env.get('torch')} (CUDA {env.get('cuda')}) · "
          f"Python {env.get('python')}\n")
    print("| step | GPU result | CPU result in docs/ | GPU wall (s) |\n|---|---|---|---|")
    wall = {p.stem: (_load(p) or {}).get("wall") for p in out.glob("*.wall")}
    ev = _load(out / "eval.json")
    print(f"| eval FP top-1 (10,000 test images) | {ev['top1']:.2f} | 88.30 (README) | "
          f"{wall.get('eval', 0):.1f} |" if ev else "| eval | FAILED | 88.30 | |")
    cpu_gen = (_load(DOCS / "bench_generation.json") or {}).get("results", {})
    for m in ("zeroq", "dsg"):
        g = _load(out / f"gen_{m}.json")
        if not g:
            print(f"| generate {m} | FAILED | | |")
            continue
        steps = g.get("steps", 500) * -(-g["num_samples"] // g.get("batch_size", 128))  # batches × steps
        # bench_generation.py since issue 19: "<method>/<precision>@<batch>" with "s_per_step" (before: "<m>@256")
        ref = cpu_gen.get(f"{m}/fp32@256") or cpu_gen.get(f"{m}@256") or {}
        sps = ref.get("s_per_step", ref.get("seconds_per_step"))
        cpu = (f"{sps:.3f} s/step at batch 256, fp32, 2 threads (docs/bench_generation.json)" if ref else "—")
        print(f"| generate {m} {g['num_samples']} × {g.get('steps')} | {g['seconds']:.1f} s = "
              f"{1000 * g['seconds'] / steps:.1f} ms/step (batch {g.get('batch_size')}) | {cpu} | "
              f"{wall.get(f'gen_{m}', 0):.1f} |")
    c = _load(out / "compare.json")
    if c:
        for src, row in c["table"].get("calib", {}).items():
            for bits, cell in row.items():
                print(f"| compare calib {src} {bits} (seed 0) | {cell['mean']:.2f} | "
                      f"{_cpu_row(src, bits) or '— (no CPU row of this name)'} | |")
        print(f"| compare wall | | | {wall.get('compare', 0):.1f} |")
    else:
        print("| compare | FAILED | | |")
    q = _load(out / "qat.json")
    if q and q.get("final"):
        qcpu = (_load(DOCS / "results" / "qat.json") or {}).get("runs", {})
        ref = next((r for r in qcpu.values() if r.get("generator") == "dsg" and r.get("bits") == "W4A4"
                    and r.get("config", {}).get("epochs") == 8), None)
        cpu = (f"epoch-1 val {ref['val_top1_per_epoch'][0]:.1f}, {ref['iter_seconds']:.2f} s/iteration "
               "(cpu preset, 1 warm-up epoch, so its epoch 1 trains the generator only)" if ref else "—")
        fin = q["final"]
        print(f"| QAT dsg W4A4, 1 epoch × 60 × 32 | val {fin.get('val_top1')}, test "
              f"{fin.get('test', {}).get('top1')}, {q.get('iter_seconds')} s/iteration | {cpu} | "
              f"{wall.get('qat', 0):.1f} |")
    else:
        print("| QAT | FAILED | | |")


if __name__ == "__main__":
    main(sys.argv[1])
