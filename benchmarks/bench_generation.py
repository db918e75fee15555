"""Generation speed as a ratio to the network's own forward+backward, measured in the same run (issue 19).

The **floor** is the plain frozen network (eval mode, channels-last), one forward and one backward to the input
(``autograd.grad(logits.sum(), x)``), in fp32 and under bf16 autocast; a generation step cannot be cheaper than
that. Every generation step time is reported as seconds per step and as a ratio to the **fp32 floor** of the same
batch, so numbers from different machines compare; the CPU model, its flags (avx2, avx512f, avx512_bf16,
amx_bf16), PyTorch's CPU capability and the load average are recorded with them.

Per-step times come from :func:`dsg_viz.generate` itself (a callback stamps each step; the first steps of every
call are warm-up), configurations alternate within each repeat, medians over repeats. ``--full`` adds one whole
``dsg`` run (256 samples × 500 steps in one batch, ``precision="auto"``: wall time including the statistics copy and
the margins) and its floor ratio. ``--isa`` repeats the per-step table in a subprocess with oneDNN limited to an
ISA (``AVX512_CORE_BF16``: bf16 without AMX tiles; ``AVX2``, with ``ATEN_CPU_CAPABILITY=avx2``: an AVX2-only CPU),
to see what ``auto`` would face on those CPUs.

    python benchmarks/bench_generation.py --methods zeroq,dsg --batch-sizes 256,128 --precisions fp32,bf16 \
        --steps 6 --repeats 3 --threads 2 --full --out docs/bench_generation.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("DSG_VIZ_DATA_ROOT", HERE.parent.parent / "shared"))
CKPT = ROOT / "models" / "cifar10" / "resnet20_cifar10_jpeg.pt"
WARMUP = 2  # steps of each generate() call not timed (oneDNN builds its kernels on the first calls)
CLOCK = time.perf_counter  # --clock cpu: time.process_time (this process's CPU time: on a loaded machine, at one
# thread, close to what an idle core gives; at 2 threads it counts both threads, spinning included)


def floor_step(model, batch: int, bf16: bool, steps: int, channels_last: bool = True) -> list[float]:
    """Return ``steps`` timings (s) of one plain forward+backward to the input of frozen ``model`` (after warm-up)."""
    import torch

    net = copy.deepcopy(model).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.randn(batch, *model.spec.input_size, generator=torch.Generator().manual_seed(0))
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    out = []
    for i in range(WARMUP + steps):
        t = CLOCK()
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            y = net(x)
        torch.autograd.grad(y.float().sum(), x)
        if i >= WARMUP:
            out.append(CLOCK() - t)
    return out


def generate_steps(model, method: str, batch: int, precision: str, steps: int, margins=None) -> list[float]:
    """Return the step times (s) of ``generate`` (``method`` preset, one batch), the first ``WARMUP`` left out."""
    from dsg_viz import generate, preset

    stamps = []
    cfg = preset(method, num_samples=batch, batch_size=batch, steps=WARMUP + steps + 1, precision=precision)
    generate(model, cfg, margins=margins, progress=False, callback=lambda b, s, v: stamps.append(CLOCK()))
    d = [b - a for a, b in zip(stamps, stamps[1:])]
    return d[WARMUP:]


def per_step_table(a) -> dict:
    """Alternate floors and generation configurations over ``a.repeats`` rounds; return medians and ratios."""
    import torch

    torch.set_num_threads(a.threads)
    from dsg_viz import create_model, preset
    from dsg_viz._hw import cpu_info
    from dsg_viz.margins import compute_margins

    model = create_model("resnet20_cifar10", str(CKPT) if CKPT.is_file() else None)
    batches = [int(b) for b in a.batch_sizes.split(",")]
    methods = a.methods.split(",")
    precs = a.precisions.split(",")
    margins = {}
    for m in methods:  # margins once per batch size (generate would recompute them every call)
        if preset(m).sda:
            mc = preset(m).margins
            for b in batches:
                margins[m, b] = compute_margins(model, b, mc.quantile, mc.source, mc.axis, mc.scale, seed=0)
    configs = [("floor", p, b) for b in batches for p in precs] + [(m, p, b) for b in batches for m in methods
                                                                    for p in precs]
    runs: dict = {c: [] for c in configs}
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    for r in range(a.repeats):
        for c in configs:
            m, p, b = c
            if m == "floor":
                ts = floor_step(model, b, p == "bf16", a.steps)
            else:
                ts = generate_steps(model, m, b, p, a.steps, margins.get((m, b)))
            runs[c].append(statistics.median(ts))
            print(f"[{r}] {m:6s} {p} batch {b}: {runs[c][-1]:.4f} s/step", flush=True)
    res = {"machine": cpu_info(), "threads": a.threads, "clock": a.clock, "steps_per_call": a.steps,
           "warmup_steps": WARMUP,
           "repeats": a.repeats, "date": time.strftime("%Y-%m-%d %H:%M"), "loadavg_start": load0,
           "loadavg_end": os.getloadavg(), "seconds": round(time.perf_counter() - t0, 1),
           "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
           "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY"), "results": {}}
    for (m, p, b), xs in runs.items():
        floor = statistics.median(runs[("floor", "fp32", b)]) if ("floor", "fp32", b) in runs else None
        med = statistics.median(xs)
        res["results"][f"{m}/{p}@{b}"] = {
            "method": m, "precision": p, "batch_size": b, "s_per_step": med, "images_steps_per_s": b / med,
            "ratio_to_fp32_floor": med / floor if floor else None, "repeats_s_per_step": xs,
            "projected_500_steps_s": med * 500}
    return res


def full_run(a, compile: bool = False) -> dict:
    """One whole ``dsg`` generation, 256 samples × 500 steps in one batch, precision auto: wall time and ratio to
    the floors (measured right after it, same process). ``compile``: with ``torch.compile`` (its compile time is in
    the wall time; the first step's time is reported apart)."""
    import torch

    torch.set_num_threads(a.threads)
    from dsg_viz import create_model, generate, preset

    model = create_model("resnet20_cifar10", str(CKPT) if CKPT.is_file() else None)
    cfg = preset("dsg", num_samples=a.full_samples, batch_size=a.full_samples, steps=a.full_steps, precision="auto",
                 compile=compile)
    load0 = os.getloadavg()
    stamps = []
    t, c = time.perf_counter(), time.process_time()
    s = generate(model, cfg, seed=0, progress=False,
                 callback=lambda b, st, v: stamps.append((time.perf_counter(), time.process_time())))
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    steps = [b[0] - a_[0] for a_, b in zip(stamps, stamps[1:])]
    cpu_steps = [b[1] - a_[1] for a_, b in zip(stamps, stamps[1:])]
    floor = statistics.median(floor_step(model, a.full_samples, False, a.steps))
    floor16 = statistics.median(floor_step(model, a.full_samples, True, a.steps))
    return {"method": "dsg", "num_samples": a.full_samples, "batch_size": a.full_samples, "steps": a.full_steps,
            "compile": compile, "first_step_s": stamps[0][0] - t if stamps else None,
            "first_step_cpu_s": stamps[0][1] - c if stamps else None,
            "median_step_s": statistics.median(steps) if steps else None,
            "median_step_cpu_s": statistics.median(cpu_steps) if cpu_steps else None,
            "precision": s.precision, "wall_s": wall, "process_cpu_s": cpu, "threads": a.threads,
            "s_per_step": wall / a.full_steps,
            "fp32_floor_s_per_step": floor, "bf16_floor_s_per_step": floor16, "floor_clock": a.clock,
            # the run's time on the floors' clock (wall, or process CPU time with --clock cpu) over 500 floor steps
            "ratio_to_fp32_floor": (cpu if a.clock == "cpu" else wall) / (a.full_steps * floor),
            "ratio_to_bf16_floor": (cpu if a.clock == "cpu" else wall) / (a.full_steps * floor16),
            "goal_s": 60, "loadavg_start": load0, "loadavg_end": os.getloadavg(),
            "final_total_loss": s.history["total"][-1][-1], "date": time.strftime("%Y-%m-%d %H:%M")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default="zeroq,dsg")
    p.add_argument("--batch-sizes", default="256,128")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--steps", type=int, default=6, help="timed steps per call (after 2 warm-up steps)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="per-step timer: wall (perf_counter) or this process's CPU time (loaded machines, 1 thread)")
    p.add_argument("--full", action="store_true", help="also one whole 256 × 500 dsg run (precision auto)")
    p.add_argument("--full-samples", type=int, default=256)
    p.add_argument("--full-steps", type=int, default=500)
    p.add_argument("--full-compile", action="store_true",
                   help="also the whole run with compile=True, twice in subprocesses sharing a fresh inductor cache "
                        "(cold, then warm)")
    p.add_argument("--child-full", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--isa", default="", help="comma-separated oneDNN ISA limits to repeat the table under "
                                             "(e.g. AVX512_CORE_BF16,AVX2), each in a subprocess")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    global CLOCK
    CLOCK = time.process_time if a.clock == "cpu" else time.perf_counter
    sys.path.insert(0, str(HERE.parent))
    if a.child_full:
        print("RESULT " + json.dumps(full_run(a, compile=True)))
        return
    res = per_step_table(a)
    if a.child:
        print("RESULT " + json.dumps(res))
        return
    res["command"] = "python " + " ".join(sys.argv)

    def save():
        if a.out:
            Path(a.out).write_text(json.dumps(res, indent=1))

    save()  # the table first: a later part that runs out of time leaves it written
    if a.full:
        res["full"] = full_run(a)
        print("full:", json.dumps(res["full"]), flush=True)
        save()
    if a.full_compile:
        import tempfile

        cache = tempfile.mkdtemp(prefix="inductor-cache-")
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
        for name in ("cold", "warm"):
            args = [sys.executable, __file__, "--child-full", "--threads", str(a.threads), "--clock", a.clock,
                    "--steps", str(a.steps), "--full-samples", str(a.full_samples), "--full-steps", str(a.full_steps)]
            out = subprocess.run(args, env=env, capture_output=True, text=True)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
            res[f"full_compile_{name}"] = json.loads(line[-1][7:]) if line else {"error": out.stderr[-2000:]}
            print(f"full compile {name}:", json.dumps(res[f"full_compile_{name}"]), flush=True)
            save()
    res["isa_limited"] = {}
    for isa in [x for x in a.isa.split(",") if x]:
        env = dict(os.environ, ONEDNN_MAX_CPU_ISA=isa)
        if isa.upper().startswith("AVX2"):
            env["ATEN_CPU_CAPABILITY"] = "avx2"
        args = [sys.executable, __file__, "--child", "--methods", a.methods, "--batch-sizes", a.batch_sizes,
                "--precisions", a.precisions, "--steps", str(a.steps), "--repeats", str(a.repeats),
                "--threads", str(a.threads), "--clock", a.clock]
        out = subprocess.run(args, env=env, capture_output=True, text=True)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        res["isa_limited"][isa] = json.loads(line[-1][7:]) if line else {"error": out.stderr[-2000:]}
        print(isa, "done", flush=True)
        save()
    print(json.dumps({k: v["s_per_step"] for k, v in res["results"].items()}, indent=1))
    save()


if __name__ == "__main__":
    main()
