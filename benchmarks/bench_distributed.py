"""Generation throughput: 1 process × 2 threads against 2 processes × 1 thread (torchrun, gloo), side by side.

ResNet-20 (JPEG checkpoint), the `dsg` preset, N samples in batches of B, S steps; each configuration is run
--repeats times alternating, and the median of the generation seconds each run reports (model loading and process
start excluded; wall time with them is recorded too). The floor is the plain fp32 forward+backward of the same
network and batch at 2 threads, measured in the same run. Then a **projection** for 1–8 GPUs from the per-batch
cost measured on an H200 by benchmarks/gpu_check.sh (docs/results/gpu_check.md): batches are independent, so N
GPUs need ceil(batches / N) batch-times (gather cost neglected).

Usage: python benchmarks/bench_distributed.py [--samples 256 --batch-size 64 --steps 20 --repeats 3]
       [--out docs/bench_distributed.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def cpu_info() -> dict:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = info.get("Flags", "").split()
    return {"model": info.get("Model name", "").strip(),
            "flags": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags],
            "load1": os.getloadavg()[0]}


def floor_seconds(batch: int, ckpt: str, threads: int = 2, reps: int = 10) -> float:
    from dsg_viz import create_model

    torch.set_num_threads(threads)
    m = create_model("resnet20_cifar10", ckpt).eval()
    x = torch.randn(batch, 3, 32, 32, requires_grad=True)
    for _ in range(3):
        m(x).sum().backward()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        m(x).sum().backward()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def run(nproc: int, threads: int, a, ckpt: str) -> dict:
    args = ["generate", "--checkpoint", ckpt, "--method", "dsg", "--num-samples", str(a.samples), "--batch-size",
            str(a.batch_size), "--steps", str(a.steps), "--threads", str(threads), "--device", "cpu", "--json"]
    with tempfile.TemporaryDirectory() as d:
        cmd = ([sys.executable, "-m", "dsg_viz"] if nproc == 1 else
               [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m",
                "dsg_viz"])
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), DSG_VIZ_SAMPLE_CACHE=d)
        t = time.perf_counter()
        p = subprocess.run(cmd + args + ["--out", f"{d}/s.pt"], capture_output=True, text=True, env=env, cwd=ROOT)
        wall = time.perf_counter() - t
    if p.returncode:
        raise SystemExit(p.stderr[-2000:])
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return {"seconds": r["seconds"], "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data-root", default=os.environ.get("DSG_VIZ_DATA_ROOT", str(ROOT.parent / "shared")))
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    ckpt = str(Path(a.data_root) / "models" / "cifar10" / "resnet20_cifar10_jpeg.pt")
    res: dict = {"cpu": cpu_info(), "samples": a.samples, "batch_size": a.batch_size, "steps": a.steps,
                 "date": time.strftime("%Y-%m-%d %H:%M"), "runs": {"1x2": [], "2x1": []}}
    for _ in range(a.repeats):  # alternate, so drifting load hits both alike
        res["runs"]["1x2"].append(run(1, 2, a, ckpt))
        res["runs"]["2x1"].append(run(2, 1, a, ckpt))
    res["floor_fwd_bwd_s"] = floor_seconds(a.batch_size, ckpt)
    steps_total = math.ceil(a.samples / a.batch_size) * a.steps
    for k, v in res["runs"].items():
        med = statistics.median(r["seconds"] for r in v)
        res[k] = {"median_seconds": med, "median_wall": statistics.median(r["wall"] for r in v),
                  "s_per_step": med / steps_total, "floor_ratio": med / steps_total / res["floor_fwd_bwd_s"]}
    res["speedup_2x1_over_1x2"] = res["1x2"]["median_seconds"] / res["2x1"]["median_seconds"]
    # projection for GPUs from the H200 measurement (gpu_check: dsg, 256 samples in batches of 64, 500 steps)
    gpu = {"per_batch_s": 46.2 / 4, "source": "docs/results/gpu_check.md: dsg 256 × 500 in 46.2 s, 4 batches of 64"}
    gpu["projection"] = {str(n): {str(s): round(math.ceil(s / 64 / n) * gpu["per_batch_s"], 1) for s in (256, 1024, 4096)}
                         for n in (1, 2, 4, 8)}
    res["gpu"] = gpu
    print(json.dumps(res, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
