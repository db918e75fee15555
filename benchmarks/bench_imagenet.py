"""Cost of DSG generation for an ImageNet-size model at 224 × 224 (issue 17): seconds per step, the fp32
forward+backward floor of the same batch, and the extrapolation to the paper's 256 samples × 500 steps.

Random-init weights (the cost does not depend on the weights), so nothing is read or downloaded. Per-step times come
from :func:`dsg_viz.generate` itself (a callback stamps each step; the first ``--warmup`` steps are left out); the
floor is one forward and one backward to the input of the frozen network (eval mode, channels-last, fp32), as in
``benchmarks/bench_generation.py``. The CPU model, thread count, load average and peak memory are recorded, and
besides wall seconds the process CPU seconds of each step (all threads): on a shared, oversubscribed machine the wall
time inflates with the load while CPU seconds / threads estimates the idle wall time (run it with
``OMP_WAIT_POLICY=PASSIVE`` so that threads waiting at a barrier do not spin and count).

    python benchmarks/bench_imagenet.py --model resnet18 --batch 32 --steps 3 --threads 2 --out imagenet_cpu.json
    python benchmarks/bench_imagenet.py --model resnet18 --batch 64 --steps 20 --device cuda --precisions fp32,bf16
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import resource
import statistics
import time


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def floor_steps(model, batch: int, steps: int, warmup: int, device) -> tuple[list[float], list[float]]:
    """Return ``steps`` wall timings (s) of one fp32 forward+backward to the input of frozen ``model``, and the
    process CPU seconds (all threads) of each."""
    import torch

    net = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.randn(batch, *model.spec.input_size, generator=torch.Generator().manual_seed(0)).to(device)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    out, cpu = [], []
    for i in range(warmup + steps):
        sync(device)
        t, c = time.perf_counter(), time.process_time()
        torch.autograd.grad(net(x).sum(), x)
        sync(device)
        if i >= warmup:
            out.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    return out, cpu


def generation_steps(model, method: str, batch: int, precision: str, steps: int, warmup: int, device):
    """Return ``(step wall times, step CPU seconds, precision resolved, seconds of the whole generate() call)``."""
    from dsg_viz import generate, preset

    stamps, cpu = [], []

    def stamp(*_):
        sync(device)
        stamps.append(time.perf_counter())
        cpu.append(time.process_time())

    cfg = preset(method, num_samples=batch, batch_size=batch, steps=warmup + steps + 1, precision=precision)
    t0 = time.perf_counter()
    s = generate(model, cfg, progress=False, callback=stamp)
    total = time.perf_counter() - t0
    d = [b - a for a, b in zip(stamps, stamps[1:])]
    dc = [b - a for a, b in zip(cpu, cpu[1:])]
    return d[warmup:], dc[warmup:], s.precision.get("resolved"), total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--method", default="dsg")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=3, help="timed steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precisions", default="fp32", help="comma-separated: fp32, bf16, auto")
    p.add_argument("--samples", type=int, default=256, help="extrapolate to this many samples ...")
    p.add_argument("--total-steps", type=int, default=500, help="... of this many steps")
    p.add_argument("--out", default=None)
    a = p.parse_args()

    import torch

    from dsg_viz import create_model

    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    torch.manual_seed(0)
    model = create_model(a.model).to(device)  # random init: the cost does not depend on the weights
    res = {"model": a.model, "input_size": list(model.spec.input_size), "method": a.method, "batch": a.batch,
           "device": str(device), "threads": a.threads, "cpu": cpu_model(), "torch": torch.__version__,
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
           "timed_steps": a.steps, "warmup_steps": a.warmup, "load_before": os.getloadavg()[0]}
    fl, flc = floor_steps(model, a.batch, a.steps, a.warmup, device)
    res["floor_fp32_s"] = statistics.median(fl)
    res["floor_fp32_cpu_s"] = statistics.median(flc)
    res["floor_fp32_all"] = fl
    n_batches = math.ceil(a.samples / a.batch)
    res["runs"] = []
    for prec in [x.strip() for x in a.precisions.split(",") if x.strip()]:
        st, stc, resolved, total = generation_steps(model, a.method, a.batch, prec, a.steps, a.warmup, device)
        step = statistics.median(st)
        res["runs"].append({
            "precision": prec, "resolved": resolved, "step_s": step, "steps_all": st,
            "step_cpu_s": statistics.median(stc),
            "ratio_cpu_to_fp32_floor": statistics.median(stc) / res["floor_fp32_cpu_s"],
            "ratio_to_fp32_floor": step / res["floor_fp32_s"], "call_s": total,
            "extrapolated_h": step * a.total_steps * n_batches / 3600,
            "extrapolation": f"{len(st)} measured steps × {a.total_steps} steps × {n_batches} batches of {a.batch} "
                             f"({a.samples} samples)"})
    res["load_after"] = os.getloadavg()[0]
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        res["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    print(json.dumps(res, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
