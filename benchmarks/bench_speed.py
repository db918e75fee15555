"""Speed of DSG generation and of evaluation on this CPU (issue 9); results go to docs/bench_speed.json.

Parts (``--parts``, comma-separated; default all):

* ``a`` ours vs the released-loop baseline (benchmarks/dsg_reference_loop.py) at the paper's settings (batch 40,
  500 steps; ``--steps`` steps are timed and extrapolated to 500), configurations alternating, medians;
* ``b`` where time goes per step (forward, statistics, loss terms, backward, optimizer; statistics fwd+bwd alone);
* ``c`` routes: channels-last, thread settings (subprocesses), bf16 autocast, avoiding weight gradients;
* ``d`` cost growth: time/step and peak RSS for batch 32..512 and ResNet-20/32/44/56 (one subprocess per point),
  plus a run with 4× more samples than the batch (bounded memory); writes docs/img/cost_growth.png;
* ``e`` evaluation of the FP (batch 500) and the W4A4 model (batch 100/250/500) on the 10,000 test images;
* ``f`` projection of 256 ``dsg`` samples × 500 steps from the measured per-step cost;
* ``g`` ``torch.compile`` of the model: compile time and step time (not in the default list: minutes).
* ``h`` accuracy of the reference path: 256 ``dsg`` samples at the tuned margin scale (= ``dsg-tuned``; seed 0,
  500 steps, batch 128)
  generated with ``fused_stats=False, channels_last=False`` (forward pre-hooks on NCHW), calibrated W4A4/W6A6
  (ZeroQ convention, ``ema``) and evaluated on the test split, beside the main table's fast-path cells (same
  settings, seeds 0-2, ``docs/results/main_dsg_zeroq.json``). Not in the default list: ~15 min of one core.

Machines here are shared: every comparison alternates its configurations inside one run and reports medians;
``cpu_s`` (process CPU time) is given beside wall time because it is less sensitive to other jobs' load.

    python benchmarks/bench_speed.py --parts a,b,c,d,e,f --out docs/bench_speed.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
ROOT = Path(os.environ.get("DSG_VIZ_DATA_ROOT", HERE.parent.parent / "shared"))
CKPTS = {20: "resnet20_cifar10_jpeg.pt", 32: "resnet32-d509ac18.th", 44: "resnet44-014dd654.th",
         56: "resnet56-4bfd9763.th"}
PAPER_STEPS = 500


def _ckpt(depth: int) -> str | None:
    p = ROOT / "models" / "cifar10" / CKPTS[depth]
    return str(p) if p.is_file() else None


def _model(depth: int = 20):
    from dsg_viz import create_model

    return create_model(f"resnet{depth}_cifar10", _ckpt(depth))


def _med(xs):
    return statistics.median(xs)


def _clock():
    return time.perf_counter(), time.process_time()


def _since(t):
    w, c = _clock()
    return w - t[0], c - t[1]


def machine() -> dict:
    model = platform.processor()
    with contextlib.suppress(Exception):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    flags = ""
    with contextlib.suppress(Exception):
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags"))
    return {"cpu": model, "cores": os.cpu_count(), "avx512": "avx512f" in flags, "amx": "amx_tile" in flags,
            "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "loadavg_at_start": os.getloadavg()}


# --------------------------------------------------------------------------------------------------------- (a)
def time_ours(model, cfg, margins, seed: int = 0) -> dict:
    """Return wall and CPU seconds per step of :func:`dsg_viz.generate` (whole call / steps) and the per-step median."""
    from dsg_viz import generate

    stamps = []
    t = _clock()
    generate(model, cfg, seed=seed, margins=margins, progress=False,
             callback=lambda b, s, v: stamps.append(time.perf_counter()))
    w, c = _since(t)
    steps = cfg.steps * -(-cfg.num_samples // cfg.batch_size)
    d = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"s_per_step": w / steps, "cpu_s_per_step": c / steps, "median_step_s": _med(d) if d else None}


def time_reference(model, margin_dir, batch_size: int, steps: int) -> dict:
    from dsg_reference_loop import reference_generate

    t = _clock()
    reference_generate(model, margin_dir, batch_size, steps, num_classes=model.spec.num_classes,
                       input_size=model.spec.input_size)
    w, c = _since(t)
    return {"s_per_step": w / steps, "cpu_s_per_step": c / steps}


def part_a(args) -> dict:
    """Ours (dsg-official: same loss; dsg: the paper preset) vs the released-loop baseline, alternating."""
    from dsg_reference_loop import write_margin_files
    from dsg_viz import preset
    from dsg_viz.margins import compute_margins

    torch.set_num_threads(1)
    model = _model(20)
    bs, steps = args.paper_batch, args.steps
    mg = compute_margins(model, bs, seed=0)
    kw = dict(num_samples=bs, batch_size=bs, steps=steps)
    configs = {
        "reference": None,
        # the library defaults (fused BN+statistics on a frozen channels-last copy)
        "ours_dsg_official": preset("dsg-official", **kw),
        "ours_dsg": preset("dsg", **kw),
        # switches off one at a time: NCHW, and the hook path (capture_bn pre-hooks, the caller's model)
        "ours_dsg_official_nchw": preset("dsg-official", channels_last=False, **kw),
        "ours_dsg_official_hooks": preset("dsg-official", channels_last=False, fused_stats=False, **kw),
    }
    runs: dict = {k: [] for k in configs}
    with tempfile.TemporaryDirectory() as d:
        write_margin_files([t[0].item() for t in mg.delta], [t[0].item() for t in mg.gamma], d)
        time_reference(model, d, bs, 2)  # warm-up
        for r in range(args.repeats):
            for k, cfg in configs.items():
                res = time_reference(model, d, bs, steps) if cfg is None else time_ours(model, cfg, mg)
                runs[k].append(res)
                print(f"[a] repeat {r} {k}: {res['s_per_step']:.3f} s/step", flush=True)
    out = {"batch_size": bs, "timed_steps": steps, "extrapolated_to_steps": PAPER_STEPS, "threads": 1,
           "repeats": args.repeats, "results": {}}
    for k, rs in runs.items():
        s = _med([x["s_per_step"] for x in rs])
        c = _med([x["cpu_s_per_step"] for x in rs])
        out["results"][k] = {"median_s_per_step": s, "median_cpu_s_per_step": c, "projected_500_steps_s": s * 500,
                             "all_s_per_step": [x["s_per_step"] for x in rs]}
    ref = out["results"]["reference"]
    for k in configs:
        if k != "reference":
            o = out["results"][k]
            o["speedup_vs_reference"] = ref["median_s_per_step"] / o["median_s_per_step"]
            o["speedup_vs_reference_cpu"] = ref["median_cpu_s_per_step"] / o["median_cpu_s_per_step"]
            # per-repeat ratios (paired by alternation): robust to load drifting between repeats
            o["paired_speedups"] = [a["s_per_step"] / b["s_per_step"] for a, b in zip(runs["reference"], runs[k])]
    return out


# --------------------------------------------------------------------------------------------------------- (b)
def phases_ours(model, cfg, margins, steps: int, cpu: bool = True) -> dict:
    """The steps of :func:`dsg_viz.generate`, split by phase (same operations, statistics taken out of the hooks).

    ``cpu``: process CPU seconds (1 thread: less sensitive to other jobs than wall time), else wall seconds.
    """
    from dsg_viz.bn import bn_targets, capture_bn, per_sample_stats
    from dsg_viz.generation import _init_images, build_objective
    from dsg_viz.objectives import StepContext

    net = model
    if cfg.channels_last:
        net = copy.deepcopy(model).to(memory_format=torch.channels_last)
    targets = bn_targets(model)
    obj = build_objective(cfg, len(targets), margins)
    g = torch.Generator().manual_seed(0)
    x = _init_images(cfg, (cfg.batch_size, *model.spec.input_size), g)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, model.spec.num_classes, (cfg.batch_size,), generator=g)
    x.requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=cfg.plateau_patience, min_lr=cfg.min_lr)
    tm = dict.fromkeys(("forward", "statistics", "loss_terms", "backward", "optimizer"), 0.0)
    hist = []
    clock = time.process_time if cpu else time.perf_counter
    with capture_bn(net, keep="inputs") as cap:
        for step in range(steps + 1):
            t0 = clock()
            logits = net(x)
            t1 = clock()
            stats = [per_sample_stats(a) for a in cap.inputs]
            t2 = clock()
            loss, values = obj(StepContext(x, logits, y, stats, targets, noise=g))
            lv = loss.item()
            t3 = clock()
            (grad,) = torch.autograd.grad(loss, x)
            t4 = clock()
            x.grad = grad
            opt.step()
            sched.step(lv)
            hist.append([v.item() for v in values.values()])
            t5 = clock()
            if step:  # step 0 is a warm-up
                for k, v in zip(tm, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                    tm[k] += v
    return {k: v / steps for k, v in tm.items()}


def phases_reference(model, margin_dir, batch_size: int, steps: int) -> dict:
    from dsg_reference_loop import reference_generate

    reference_generate(model, margin_dir, batch_size, 1, num_classes=model.spec.num_classes,
                       input_size=model.spec.input_size)
    timers: dict = {}
    reference_generate(model, margin_dir, batch_size, steps, num_classes=model.spec.num_classes,
                       input_size=model.spec.input_size, timers=timers)
    return {k: v / steps for k, v in timers.items()}


def stats_alone(model, batch_size: int, repeats: int = 5) -> dict:
    """Forward+backward of the per-layer statistics alone on the BN inputs of one batch: ours vs the reference's."""
    from dsg_viz.bn import capture_bn, per_sample_stats

    with torch.no_grad(), capture_bn(model, keep="inputs", detach=True) as cap:
        model(torch.randn(batch_size, *model.spec.input_size, generator=torch.Generator().manual_seed(0)))
    acts = [a.clone() for a in cap.inputs]

    def ref_stats(a):
        b, c = a.shape[:2]
        return torch.mean(a.view(b, c, -1), dim=2), torch.sqrt(torch.var(a.view(b, c, -1), dim=2) + 1e-6)

    out = {}
    for name, fn in (("ours", per_sample_stats), ("reference", ref_stats)):
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            for a in acts:
                a = a.detach().requires_grad_(True)
                mu, sd = fn(a)
                torch.autograd.grad(mu.sum() * 0.5 + sd.sum(), a)
            ts.append(time.perf_counter() - t)
        out[name] = _med(ts)
    out["speedup"] = out["reference"] / out["ours"]
    return out


def part_b(args) -> dict:
    from dsg_reference_loop import write_margin_files
    from dsg_viz import preset
    from dsg_viz.margins import compute_margins

    torch.set_num_threads(1)
    model = _model(20)
    bs, steps = args.paper_batch, max(5, args.steps // 3)
    mg = compute_margins(model, bs, seed=0)
    out = {"batch_size": bs, "steps": steps, "threads": 1, "unit": "seconds per step (median of repeats)"}
    runs: dict = {"reference": [], "ours_dsg_official": [], "ours_dsg_official_cl": []}
    with tempfile.TemporaryDirectory() as d:
        write_margin_files([t[0].item() for t in mg.delta], [t[0].item() for t in mg.gamma], d)
        for _ in range(2):
            runs["reference"].append(phases_reference(model, d, bs, steps))
            for k, cl in (("ours_dsg_official", False), ("ours_dsg_official_cl", True)):
                cfg = preset("dsg-official", batch_size=bs, num_samples=bs, channels_last=cl)
                runs[k].append(phases_ours(model, cfg, mg, steps))
    for k, rs in runs.items():
        out[k] = {p: _med([r[p] for r in rs]) for p in rs[0]}
        out[k]["total"] = sum(out[k].values())
    out["statistics_fwd_bwd_alone"] = stats_alone(model, bs)
    return out


# --------------------------------------------------------------------------------------------------------- (c)
CHILD = r"""
import json, os, statistics, sys, time
cfg = json.loads(sys.argv[1])
import torch
torch.set_num_threads(cfg["threads"])
if cfg.get("interop"):
    torch.set_num_interop_threads(cfg["interop"])
sys.path.insert(0, cfg["here"])
from bench_speed import _model, time_ours
from dsg_viz import preset
from dsg_viz.margins import compute_margins
m = _model(cfg["depth"])
mg = compute_margins(m, cfg["batch"], seed=0)
kw = dict(batch_size=cfg["batch"], channels_last=cfg["channels_last"])
def vm(key):  # /proc: VmHWM is this exec's peak RSS (ru_maxrss would carry the forking parent's peak over)
    line = next(ln for ln in open("/proc/self/status") if ln.startswith(key + ":"))
    return int(line.split()[1]) / 1024
rss_model = vm("VmRSS")
time_ours(m, preset(cfg["method"], num_samples=cfg["batch"], steps=1, **kw), mg)  # warm-up
res = time_ours(m, preset(cfg["method"], num_samples=cfg["num_samples"], steps=cfg["steps"], **kw), mg)
res["peak_rss_mb"] = vm("VmHWM")
res["rss_before_generation_mb"] = rss_model
res["threads"], res["interop"] = torch.get_num_threads(), torch.get_num_interop_threads()
print(json.dumps(res))
"""


def run_child(depth=20, batch=64, steps=5, threads=1, interop=None, num_samples=None, method="dsg",
              channels_last=True) -> dict:
    cfg = {"depth": depth, "batch": batch, "steps": steps, "threads": threads, "interop": interop,
           "num_samples": num_samples or batch, "method": method, "channels_last": channels_last, "here": str(HERE)}
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def step_fn(net, x0, layers=None):
    """One forward + statistics + backward to the input (the generation step without loss terms/optimizer).

    ``layers``: the :class:`~dsg_viz.bn.StatsBatchNorm2d` of a :func:`~dsg_viz.bn.stats_copy`; ``None`` = hooks.
    """
    from dsg_viz.bn import capture_bn

    x = x0.clone().requires_grad_(True)
    with contextlib.nullcontext() if layers is not None else capture_bn(net) as cap:
        out = net(x)
        stats = [m.stats for m in layers] if layers is not None else cap.stats
        loss = out.float().square().mean() + sum(s[0].square().mean() + s[1].square().mean() for s in stats)
    (g,) = torch.autograd.grad(loss, x)
    return loss.detach(), g


def part_c(args) -> dict:
    from dsg_viz import preset
    from dsg_viz.margins import compute_margins

    torch.set_num_threads(1)
    out: dict = {}
    model = _model(20)
    # channels-last, in process, alternating (batch 64 and 256); CPU seconds per step (1 thread)
    for bs in (64, 256):
        mg = compute_margins(model, bs, seed=0)
        runs: dict = {False: [], True: []}
        steps = 8 if bs == 64 else 4
        for _ in range(args.repeats):
            for cl in (False, True):
                cfg = preset("dsg", num_samples=bs, batch_size=bs, steps=steps, channels_last=cl)
                runs[cl].append(time_ours(model, cfg, mg)["cpu_s_per_step"])
        nchw, chl = _med(runs[False]), _med(runs[True])
        out[f"channels_last@{bs}"] = {"nchw_cpu_s_per_step": nchw, "channels_last_cpu_s_per_step": chl,
                                      "speedup": nchw / chl, "threads": 1,
                                      "all": {"nchw": runs[False], "channels_last": runs[True]}}
        print("[c]", f"channels_last@{bs}", out[f"channels_last@{bs}"], flush=True)
    # avoiding weight gradients: autograd.grad to x only (ours) vs loss.backward() with weights requiring grad
    x0 = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    runs = {"input_only": [], "with_weight_grads": []}

    def full_backward():
        from dsg_viz.bn import capture_bn

        x = x0.clone().requires_grad_(True)
        with capture_bn(model) as cap:
            o = model(x)
            loss = o.square().mean() + sum(s[0].square().mean() + s[1].square().mean() for s in cap.stats)
        model.zero_grad()
        loss.backward()
        model.zero_grad(set_to_none=True)

    for _ in range(args.repeats * 2):
        t = time.process_time()
        step_fn(model, x0)
        runs["input_only"].append(time.process_time() - t)
        t = time.process_time()
        full_backward()
        runs["with_weight_grads"].append(time.process_time() - t)
    wg = out["weight_grads@64"] = {f"{k}_cpu_s": _med(v) for k, v in runs.items()}
    wg["speedup"] = wg["with_weight_grads_cpu_s"] / wg["input_only_cpu_s"]
    wg["what"] = "forward + hook statistics + backward, NCHW, batch 64, 1 thread"
    print("[c] weight grads", out["weight_grads@64"], flush=True)
    # bf16 autocast vs fp32 (in process, alternating, few steps: bf16 is very slow without AVX512-BF16/AMX)
    mg = compute_margins(model, 64, seed=0)
    runs = {False: [], True: []}
    for _ in range(2):
        for bf in (False, True):
            cfg = preset("dsg", num_samples=64, batch_size=64, steps=3, autocast_bf16=bf, channels_last=False,
                         fused_stats=False)  # bf16 takes the hook path; compare like with like
            runs[bf].append(time_ours(model, cfg, mg)["cpu_s_per_step"])
    out["bf16@64"] = {"fp32_cpu_s_per_step": _med(runs[False]), "bf16_cpu_s_per_step": _med(runs[True]),
                      "bf16_slowdown": _med(runs[True]) / _med(runs[False]), "threads": 1,
                      "path": "hooks, NCHW (bf16 autocast uses the hook path)"}
    print("[c] bf16", out["bf16@64"], flush=True)
    # threads: one subprocess per setting (interop threads must be set before any parallel work), alternating
    settings = [(1, 1), (2, 1), (2, 2)]
    runs = {f"{t}x{i}@{b}": [] for b in (64, 256) for t, i in settings}
    for _ in range(args.repeats):
        for b in (64, 256):
            for t, i in settings:
                r = run_child(batch=b, steps=6 if b == 64 else 3, threads=t, interop=i)
                runs[f"{t}x{i}@{b}"].append(r["median_step_s"])
                print("[c] threads", t, i, b, r["median_step_s"], flush=True)
    out["threads"] = {k: {"median_s_per_step": _med(v), "all": v} for k, v in runs.items()}
    return out


def part_g(args) -> dict:
    """torch.compile route alone (minutes of compile time on 2 cores)."""
    torch.set_num_threads(1)
    return {"compile@64": compile_route(_model(20), args.repeats)}


def compile_route(model, repeats: int) -> dict:
    """torch.compile of the generation copy (fused BN+statistics, channels-last): compile time, step time."""
    import torch._dynamo

    from dsg_viz.bn import stats_copy

    torch._dynamo.reset()
    x0 = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x0 = x0.contiguous(memory_format=torch.channels_last)
    net, layers = stats_copy(model, channels_last=True)
    t = time.perf_counter()
    comp = torch.compile(net)
    l1, g1 = step_fn(comp, x0, layers)
    compile_s = time.perf_counter() - t
    l0, g0 = step_fn(net, x0, layers)
    runs = {"eager": [], "compiled": []}
    for _ in range(repeats * 2):
        for k, m in (("eager", net), ("compiled", comp)):
            t = time.process_time()
            step_fn(m, x0, layers)
            runs[k].append(time.process_time() - t)
    res = {"compile_and_first_step_s": compile_s, "eager_step_cpu_s": _med(runs["eager"]),
           "compiled_step_cpu_s": _med(runs["compiled"]), "loss_rel_diff": abs(float(l1 - l0)) / abs(float(l0)),
           "grad_rel_diff": float((g1 - g0).norm() / g0.norm()),
           "what": "forward+statistics+backward to x, batch 64, fused channels-last copy, 1 thread"}
    res["speedup"] = res["eager_step_cpu_s"] / res["compiled_step_cpu_s"]
    gain = res["eager_step_cpu_s"] - res["compiled_step_cpu_s"]
    res["break_even_steps"] = compile_s / gain if gain > 0 else None
    print("[g] compile", res, flush=True)
    return res


# --------------------------------------------------------------------------------------------------------- (d)
def part_d(args) -> dict:
    batches = (32, 64, 128, 256, 512)
    depths = (20, 32, 44, 56)
    points = [("batch", 20, b, b) for b in batches] + [("depth", d, 64, 64) for d in depths if d != 20]
    points.append(("bounded", 20, 64, 256))  # 4 batches of 64: peak RSS must match the single batch
    runs: dict = {p: [] for p in points}
    for _ in range(args.growth_repeats):
        for p in points:
            kind, depth, b, n = p
            r = run_child(depth=depth, batch=b, steps=3 if b >= 256 else 4, threads=1, num_samples=n)
            runs[p].append(r)
            print("[d]", p, round(r["median_step_s"], 3), round(r["peak_rss_mb"]), flush=True)
    rows = []
    for (kind, depth, b, n), rs in runs.items():
        rows.append({"kind": kind, "model": f"resnet{depth}_cifar10", "checkpoint": _ckpt(depth) is not None,
                     "batch_size": b, "num_samples": n, "s_per_step": _med([r["median_step_s"] for r in rs]),
                     "cpu_s_per_step": _med([r["cpu_s_per_step"] for r in rs]),
                     "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                     "rss_before_generation_mb": min(r["rss_before_generation_mb"] for r in rs)})
    # depth 20 at batch 64 is the batch sweep's point
    r20 = next(r for r in rows if r["kind"] == "batch" and r["batch_size"] == 64)
    rows.append({**r20, "kind": "depth"})
    out = {"threads": 1, "method": "dsg", "channels_last": True, "rows": rows}
    plot_growth(rows, args.plot)
    out["plot"] = str(args.plot)
    return out


def plot_growth(rows, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, kind, key, xlabel in ((axes[0], "batch", "batch_size", "batch size (ResNet-20)"),
                                  (axes[1], "depth", "model", "depth (batch 64)")):
        rs = sorted((r for r in rows if r["kind"] == kind),
                    key=lambda r: r[key] if kind == "batch" else int(r["model"][6:8]))
        xs = [r[key] if kind == "batch" else int(r["model"][6:8]) for r in rs]
        ax.plot(xs, [r["cpu_s_per_step"] for r in rs], "o-", color="C0", label="CPU time / step")
        lin = [rs[0]["cpu_s_per_step"] * x / xs[0] for x in xs]
        ax.plot(xs, lin, ":", color="C0", alpha=0.6, label="linear from first point")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("CPU seconds per step (1 thread)", color="C0")
        if kind == "batch":
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
        ax2 = ax.twinx()
        ax2.plot(xs, [r["peak_rss_mb"] for r in rs], "s--", color="C3", label="peak RSS")
        ax2.set_ylabel("peak RSS (MB)", color="C3")
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle("dsg generation cost growth (channels-last, fp32)")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------------- (e)
def part_e(args) -> dict:
    from dsg_viz.data import load_split
    from dsg_viz.evaluate import evaluate
    from dsg_viz.quant import calibrate, quantize

    torch.set_num_threads(args.eval_threads)
    t = time.perf_counter()
    test = load_split("test", str(ROOT))
    load_s = time.perf_counter() - t
    model = _model(20)
    qm = calibrate(quantize(model, "W4A4"), torch.randn(256, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    out = {"threads": args.eval_threads, "n_images": len(test), "load_split_cached_s": load_s, "results": {}}
    evaluate(model, test.subset(torch.arange(500)))  # warm-up
    evaluate(qm, test.subset(torch.arange(500)))
    configs = [("fp", model, 500, False), ("fp", model, 500, True)]
    configs += [("w4a4", qm, bs, cl) for bs in (100, 250, 500) for cl in ((False, True) if bs == 500 else (True,))]
    for name, m, bs, cl in configs:
        kw = {"channels_last": cl} if "channels_last" in evaluate.__code__.co_varnames else {}
        t = _clock()
        r = evaluate(m, test, batch_size=bs, **kw)
        w, c = _since(t)
        key = f"{name}@{bs}{'_cl' if cl else '_nchw'}"
        out["results"][key] = {"s": w, "cpu_s": c, "top1": r["top1"]}
        print("[e]", key, out["results"][key], flush=True)
    return out


# --------------------------------------------------------------------------------------------------------- (f)
def part_f(res: dict) -> dict:
    """256 dsg samples × 500 steps from the measured per-step cost (growth at batch 256, threads at batch 256)."""
    out = {"goal_s": 60, "samples": 256, "steps": PAPER_STEPS}
    d = res.get("d", {}).get("rows", [])
    r256 = next((r for r in d if r["kind"] == "batch" and r["batch_size"] == 256), None)
    if r256:
        out["one_batch_of_256_1_thread_s"] = r256["s_per_step"] * PAPER_STEPS
        out["one_batch_of_256_1_thread_cpu_s"] = r256["cpu_s_per_step"] * PAPER_STEPS
    r64 = next((r for r in d if r["kind"] == "batch" and r["batch_size"] == 64), None)
    if r64:
        out["four_batches_of_64_1_thread_s"] = 4 * r64["s_per_step"] * PAPER_STEPS
    th = res.get("c", {}).get("threads", {})
    best = min((v["median_s_per_step"], k) for k, v in th.items() if k.endswith("@256")) if th else None
    if best:
        out["one_batch_of_256_best_threads"] = {"setting": best[1], "s": best[0] * PAPER_STEPS}
    return out


def part_h(args) -> dict:
    from dsg_viz.data import load_split
    from dsg_viz.evaluate import evaluate
    from dsg_viz.generation import SampleSet, make_samples
    from dsg_viz.quant import QuantConfig, calibrate, quantize

    docs = HERE.parent / "docs" / "results"
    scale = float(json.loads((docs / "margin_tuning.json").read_text())["chosen_margin_scale"])
    fast = json.loads((docs / "main_dsg_zeroq.json").read_text())["table"]["calib"]["dsg-tuned"]
    model = _model(20)
    cache = HERE.parent / "runs" / "speed" / f"dsg-reference-path-n256-seed0-ms{scale:g}.pt"
    from dataclasses import replace

    from dsg_viz.generation import preset

    if cache.is_file():
        s = SampleSet.load(cache)
    else:
        s = make_samples(model, "dsg", 256, seed=0, progress=False, batch_size=128, fused_stats=False,
                         channels_last=False, margins=replace(preset("dsg").margins, scale=scale))
        s.save(cache, grid=False)
    test = load_split("test")
    out = {"margin_scale": scale, "generation_seconds": round(s.seconds, 1),
           "config": {k: s.config.get(k) for k in ("fused_stats", "channels_last", "steps", "batch_size")}}
    for bits in ("W4A4", "W6A6"):
        qm = calibrate(quantize(model, QuantConfig.from_bits(bits)), s.images)
        top1 = evaluate(qm, test)["top1"]
        out[bits] = {"reference_path_seed0": top1, "fast_path_seeds0_2": fast[bits]["values"],
                     "fast_path_mean": round(fast[bits]["mean"], 2), "fast_path_std": round(fast[bits]["std"], 2),
                     "difference_to_fast_seed0": round(top1 - fast[bits]["values"][0], 2)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="a,b,c,d,e,f")
    p.add_argument("--steps", type=int, default=20, help="timed steps per run in part a (extrapolated to 500)")
    p.add_argument("--paper-batch", type=int, default=40, help="the released code's batch size")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--growth-repeats", type=int, default=1)
    p.add_argument("--eval-threads", type=int, default=1)
    p.add_argument("--plot", default="docs/img/cost_growth.png")
    p.add_argument("--out", default="docs/bench_speed.json")
    a = p.parse_args()
    res = json.loads(Path(a.out).read_text()) if Path(a.out).is_file() else {}
    res["machine"] = machine()
    parts = {"a": part_a, "b": part_b, "c": part_c, "d": part_d, "e": part_e, "g": part_g, "h": part_h}
    for k in a.parts.split(","):
        t = time.perf_counter()
        res[k] = part_f(res) if k == "f" else parts[k](a)
        res[k]["bench_wall_s"] = time.perf_counter() - t
        res[k]["loadavg_after"] = os.getloadavg()
        res[k]["command"] = " ".join(["python", "benchmarks/bench_speed.py"] + sys.argv[1:])
        res[k]["date"] = time.strftime("%Y-%m-%d %H:%M")
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1))
        print(f"== part {k} ({res[k]['bench_wall_s']:.0f} s)", json.dumps(res[k])[:2000], flush=True)


if __name__ == "__main__":
    main()
