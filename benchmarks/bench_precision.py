"""Accuracy parity of bf16- vs fp32-generated sample sets (issue 19): docs/results/precision_parity.{json,md}.

For each seed, the ``dsg`` preset (256 samples, 500 steps, batch ``--batch-size``) is generated twice — network in
fp32 and under bf16 autocast (statistics and losses fp32 either way) — then each set calibrates a quantized copy of
the JPEG ResNet-20 (calibration only, ZeroQ convention: every layer at the same bits, ``ema`` activation ranges,
min/max weights) at W4A4 and W3A3, evaluated on the 10,000 test images. Seeds and precisions alternate; sets go
through the shared sample cache (dsg_viz.cache), cells into the JSON after each one, so a rerun resumes.

    python benchmarks/bench_precision.py --seeds 0,1,2 --bits W4A4,W3A3 --threads 1 \
        --out docs/results/precision_parity.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("DSG_VIZ_DATA_ROOT", HERE.parent.parent / "shared"))
CKPT = ROOT / "models" / "cifar10" / "resnet20_cifar10_jpeg.pt"


def _write(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _ms(xs: list[float]) -> str:
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def summarize(res: dict) -> dict:
    """Per bit width: per-seed accuracies of each precision, mean ± std, and the paired bf16 − fp32 difference."""
    out = {}
    for bits in res["bits"]:
        row = {}
        for p in ("fp32", "bf16"):
            row[p] = {s: res["cells"][k]["top1"] for s in res["seeds"]
                      if (k := f"{p}/{bits}/seed{s}") in res["cells"]}
        both = [s for s in res["seeds"] if s in row["fp32"] and s in row["bf16"]]
        diffs = [row["bf16"][s] - row["fp32"][s] for s in both]
        out[bits] = {"fp32": row["fp32"], "bf16": row["bf16"], "paired_diff": dict(zip(both, diffs)),
                     "fp32_mean": statistics.mean(row["fp32"].values()) if row["fp32"] else None,
                     "fp32_std": statistics.stdev(row["fp32"].values()) if len(row["fp32"]) > 1 else None,
                     "bf16_mean": statistics.mean(row["bf16"].values()) if row["bf16"] else None,
                     "bf16_std": statistics.stdev(row["bf16"].values()) if len(row["bf16"]) > 1 else None,
                     "diff_mean": statistics.mean(diffs) if diffs else None,
                     "diff_std": statistics.stdev(diffs) if len(diffs) > 1 else None}
    return out


def markdown(res: dict) -> str:
    s = summarize(res)
    lines = [f"# Precision parity: `dsg` sets generated in bf16 vs fp32 ({res['date']})", "",
             f"JPEG ResNet-20 (FP {res.get('fp_top1', float('nan')):.2f}), `dsg` preset, {res['num_samples']} samples, "
             f"{res['steps']} steps, batch {res['batch_size']}; calibration only (ZeroQ convention, `ema`), "
             f"{res['eval_limit'] or 10000:,} test images. CPU: {res['machine']['cpu_model']} "
             f"({res['machine']['torch_cpu_capability']}, native bf16: {res['machine']['native_bf16_reason']}). "
             f"Command: `{res['command']}`.", "",
             "| bits | precision | " + " | ".join(f"seed {x}" for x in res["seeds"]) + " | mean ± std |",
             "|---|---|" + "---|" * len(res["seeds"]) + "---|"]
    for bits, r in s.items():
        for p in ("fp32", "bf16"):
            vals = [r[p].get(x) for x in res["seeds"]]
            lines.append(f"| {bits} | {p} | " + " | ".join("–" if v is None else f"{v:.2f}" for v in vals)
                         + f" | {_ms(list(r[p].values()))} |")
        d = [r["paired_diff"].get(x) for x in res["seeds"]]
        lines.append(f"| {bits} | bf16 − fp32 | " + " | ".join("–" if v is None else f"{v:+.2f}" for v in d)
                     + f" | {_ms(list(r['paired_diff'].values()))} |")
    lines += ["", "Generation wall time per set (s; this machine, shared, so indicative only): "
              + ", ".join(f"{k} {v['seconds']:.0f}" for k, v in sorted(res["sets"].items())), ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--bits", default="W4A4,W3A3")
    p.add_argument("--num-samples", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-limit", type=int, default=None, help="smoke runs only")
    p.add_argument("--out", default="docs/results/precision_parity.json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    sys.path.insert(0, str(HERE.parent))
    from dsg_viz import create_model, preset
    from dsg_viz._hw import cpu_info
    from dsg_viz.cache import get_or_generate
    from dsg_viz.compare import CompareConfig, quantize_calibrate_eval
    from dsg_viz.data import load_split
    from dsg_viz.evaluate import evaluate

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    seeds = [int(x) for x in a.seeds.split(",")]
    bits = a.bits.split(",")
    res = json.loads(out.read_text()) if out.is_file() else {}
    settings = {"num_samples": a.num_samples, "batch_size": a.batch_size, "steps": a.steps, "eval_limit": a.eval_limit}
    if res and any(res.get(k) != v for k, v in settings.items()):
        raise SystemExit(f"{out} holds another configuration; use another --out")
    res.update(settings, seeds=sorted(set(res.get("seeds", [])) | set(seeds)), bits=list(dict.fromkeys(
        res.get("bits", []) + bits)), command="python " + " ".join(sys.argv), machine=cpu_info(),
        threads=a.threads, date=time.strftime("%Y-%m-%d %H:%M"))
    res.setdefault("cells", {})
    res.setdefault("sets", {})
    model = create_model("resnet20_cifar10", str(CKPT))
    test = load_split("test", str(ROOT))
    if a.eval_limit:
        test = test.subset(torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:a.eval_limit])
    if "fp_top1" not in res:
        res["fp_top1"] = evaluate(model, test)["top1"]
    ccfg = CompareConfig(model="resnet20_cifar10", convention="zeroq", calibration="ema", weight_range="minmax")
    for seed in seeds:
        for prec in ("fp32", "bf16"):
            cfg = preset("dsg", num_samples=a.num_samples, batch_size=a.batch_size, steps=a.steps, precision=prec)
            todo = [b for b in bits if f"{prec}/{b}/seed{seed}" not in res["cells"]]
            if not todo:
                continue
            t = time.perf_counter()
            s, path, loaded = get_or_generate(model, cfg, seed=seed, progress=False)
            name = f"{prec}/seed{seed}"
            if name not in res["sets"] or not loaded:
                res["sets"][name] = {"seconds": round(s.seconds, 1), "loaded": loaded, "path": str(path),
                                     "precision": s.precision, "final_total": s.history["total"][-1][-1],
                                     "loadavg": os.getloadavg()}
            print(f"[{time.strftime('%H:%M')}] {name}: {'cached' if loaded else 'generated'} in "
                  f"{time.perf_counter() - t:.0f} s ({s.precision.get('resolved')})", flush=True)
            for b in todo:
                cell = quantize_calibrate_eval(model, s.images, b, ccfg, test, seed=seed)
                res["cells"][f"{prec}/{b}/seed{seed}"] = cell
                res["summary"] = summarize(res)
                _write(out, res)
                print(f"  {prec} {b} seed {seed}: top-1 {cell['top1']:.2f}", flush=True)
    res["summary"] = summarize(res)
    _write(out, res)
    out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
