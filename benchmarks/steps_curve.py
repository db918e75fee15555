"""How many optimization steps does a usable sample set need? Accuracy and homogenization against steps, on the
**validation split** (the last 500 train images of each class; never test), for issue 19.

One run per (source, seed) optimizes 256 samples for the largest step count and keeps every batch after each step
count asked for (``generate(..., keep_steps=...)``; ``SampleSet.at(k)`` is bitwise the set a k-step run makes, since
the plateau schedule never looks ahead: ``tests/test_generation.py::test_keep_steps_equals_a_shorter_run``). For
every kept set it records

* the homogenization scores of :func:`dsg_viz.diagnostics.metrics.summarize` against 256 real train images
  (relative dispersion D^μ/real, feature Pearson correlation, effective rank, W1 to the BN Gaussian, ...);
* calibration-only top-1 on the validation split at ``--bits`` (ZeroQ convention, ``ema``);
* BRECQ top-1 at ``--brecq-bits`` for the step counts in ``--brecq-steps`` (``ReconstructionConfig`` defaults
  unless ``--recon-iters``).

``real`` (256 train images, never val) and ``gaussian`` are measured once per seed as reference lines. Every
(source, seed) writes ``runs/steps_curve/cells/<source>-seed<seed>.json`` as soon as a cell is done (a rerun resumes);
``--stage report`` merges them into ``docs/results/steps_curve.json``, ``docs/results/steps_curve.md`` and
``docs/img/steps_curve.png``. Two processes on two cores (one thread each, different sources) do not share files.

    export DSG_VIZ_DATA_ROOT=../shared
    python benchmarks/steps_curve.py --sources zeroq,real,gaussian --seeds 0,1,2 &
    python benchmarks/steps_curve.py --sources dsg,zeroq+ce --seeds 0,1,2 &
    wait; python benchmarks/steps_curve.py --stage report
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired_table import paired  # noqa: E402 - benchmarks/paired_table.py: per-seed differences and paired t-test

ROOT = Path(__file__).resolve().parents[1]
CELLS = ROOT / "runs" / "steps_curve" / "cells"
SETS = ROOT / "runs" / "steps_curve" / "sets"
JSON_OUT = ROOT / "docs" / "results" / "steps_curve.json"
MD_OUT = ROOT / "docs" / "results" / "steps_curve.md"
PNG_OUT = ROOT / "docs" / "img" / "steps_curve.png"
CKPT = "resnet20_cifar10_jpeg.pt"
SCORES = ("rel_d_mu", "rel_d_sigma", "w1", "offdiag_pearson_feature", "offdiag_cos_feature", "erank_feature",
          "offdiag_cos_pixel", "erank_pixel", "bn_loss")
# --variant LABEL=PRESET:field=value,...: a source that is a preset with some fields changed (the DSG-knob sweep of
# benchmarks/knob_sweep.py); LABEL -> (preset, {field: value})
VARIANTS: dict[str, tuple[str, dict]] = {}


def _value(text: str):
    """``"0.1"`` → 0.1, ``"4"`` → 4, ``"none"`` → None, ``"true"`` → True, anything else stays a string."""
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse_variant(spec: str) -> tuple[str, str, dict]:
    """Parse ``LABEL=PRESET:field=value,field=value`` (``margins.scale=0.1`` sets a field of the margin config).

    Returns ``(label, preset, {field: value})``; a malformed spec exits with a message that shows the form."""
    label, eq, rest = spec.partition("=")
    base, colon, fields = rest.partition(":")
    if not eq or not colon or not label.strip() or not base.strip():
        raise SystemExit(f"error: --variant {spec!r}: expected LABEL=PRESET:field=value,... "
                         "(e.g. 'dsg@ms0.1=dsg:margins.scale=0.1')")
    over = {}
    for item in filter(None, (f.strip() for f in fields.split(","))):
        k, eq2, v = item.partition("=")
        if not eq2:
            raise SystemExit(f"error: --variant {spec!r}: {item!r} is not field=value")
        over[k.strip()] = _value(v)
    return label.strip(), base.strip(), over


def variant_config(label: str, **kw):
    """The :class:`GenerationConfig` of source ``label``: its preset with the variant's fields (if any) and ``kw``."""
    from dataclasses import replace

    from dsg_viz.generation import PRESETS, preset

    base, over = VARIANTS.get(label, (label, {}))
    flat = {k: v for k, v in over.items() if "." not in k}
    for k, v in over.items():
        if "." in k:
            head, _, field = k.partition(".")
            flat[head] = replace(flat.get(head, getattr(PRESETS[base], head)), **{field: v})
    return preset(base, **flat, **kw)


def machine() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count()}
    try:
        txt = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in txt.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == "Model name":
                out["model"] = v.strip()
            if k.strip() == "Flags":
                keep = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8", "fma")
                out["flags"] = " ".join(f for f in v.split() if f in keep)
    except (OSError, subprocess.SubprocessError):
        pass
    out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return out


def _atomic_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def run(args) -> None:
    from dsg_viz import create_model
    from dsg_viz.bn import bn_targets
    from dsg_viz.compare import CompareConfig, quantize_calibrate_eval
    from dsg_viz.data import load_eval_split, resolve_data_root
    from dsg_viz.diagnostics.metrics import collect_features, summarize
    from dsg_viz.evaluate import evaluate
    from dsg_viz.generation import SampleSet, generate, preset, real_samples

    torch.set_num_threads(args.threads)
    ckpt = str(resolve_data_root(args.data_root) / "models" / "cifar10" / CKPT)
    model = create_model("resnet20_cifar10", ckpt)
    val = load_eval_split(model.spec, "val", args.data_root)
    targets = bn_targets(model)
    steps = sorted(int(s) for s in args.steps.split(","))
    brecq_steps = sorted(int(s) for s in args.brecq_steps.split(",")) if args.brecq_steps else []
    bits = args.bits.split(",")
    brecq_bits = args.brecq_bits.split(",") if args.brecq_bits else []
    ccfg = CompareConfig(convention="zeroq", calibration="ema", recon_iters=args.recon_iters)
    real_ref = real_samples("resnet20_cifar10", args.num_samples, seed=0, data_root=args.data_root)
    f_real = collect_features(model, real_ref.images)
    fp = None
    for seed in [int(s) for s in args.seeds.split(",")]:
        for src in args.sources.split(","):
            path = CELLS / f"{src}-seed{seed}.json"
            rec = json.loads(path.read_text()) if path.exists() else {}
            rec.setdefault("cells", {})
            if src in VARIANTS:
                rec["variant"] = {"preset": VARIANTS[src][0], "overrides": VARIANTS[src][1]}
            rec.update({"source": src, "seed": seed, "num_samples": args.num_samples, "threads": args.threads,
                        "machine": machine(), "checkpoint": CKPT, "eval_split": "val", "n_val": len(val),
                        "recon_iters": args.recon_iters})
            if fp is None:
                fp = evaluate(model, val)
            rec["fp_val_top1"] = fp["top1"]
            ks = [0] if src in ("real", "gaussian") else steps
            need = []
            for k in ks:
                c = rec["cells"].get(str(k), {})
                want = [f"calib/{b}" for b in bits] + ([f"brecq/{b}" for b in brecq_bits]
                                                      if (k in brecq_steps or k == 0) else [])
                if "scores" not in c or any(w not in c.get("acc", {}) for w in want):
                    need.append(k)
            if not need:
                print(f"{src} seed {seed}: done", flush=True)
                continue
            sets = {}
            if src == "real":
                sets[0] = real_samples("resnet20_cifar10", args.num_samples, seed=seed, data_root=args.data_root)
            else:
                SETS.mkdir(parents=True, exist_ok=True)
                files = {k: SETS / f"{src}-n{args.num_samples}-seed{seed}-k{k}.pt" for k in ks}
                if all(files[k].exists() for k in need):
                    sets = {k: SampleSet.load(files[k]) for k in need}
                else:
                    kw = {} if args.precision is None else {"precision": args.precision}
                    if src == "gaussian":
                        cfg = preset("gaussian", num_samples=args.num_samples)
                    else:
                        cfg = variant_config(src, num_samples=args.num_samples, steps=max(steps), **kw)
                    t = time.perf_counter()
                    full = generate(model, cfg, seed=seed, progress=False,
                                    keep_steps=[k for k in ks if 0 < k < max(steps)] or None)
                    rec["gen_seconds"] = round(time.perf_counter() - t, 1)
                    rec["precision"] = full.precision
                    rec["batch_size"] = cfg.batch_size
                    rec["config"] = full.config
                    print(f"{src} seed {seed}: generated in {rec['gen_seconds']} s ({full.precision.get('resolved')})",
                          flush=True)
                    for k in ks:
                        s = full if src == "gaussian" else full.at(k)
                        s.save(files[k], grid=False)
                        sets[k] = s
            for k in need:
                s = sets[k]
                c = rec["cells"].setdefault(str(k), {"acc": {}, "seconds": {}})
                if "scores" not in c:
                    summ = summarize({"real": f_real, "x": collect_features(model, s.images)}, targets)
                    c["scores"] = {n: summ["scores"]["x"].get(n) for n in SCORES}
                    c["final_total"] = (statistics.mean(h[-1] for h in s.history["total"])
                                        if s.history.get("total") and s.history["total"][0] else None)
                    _atomic_json(path, rec)
                for method, bb in (("calib", bits), ("brecq", brecq_bits if (k in brecq_steps or k == 0) else [])):
                    for b in bb:
                        key = f"{method}/{b}"
                        if key in c["acc"]:
                            continue
                        cell = quantize_calibrate_eval(model, s.images, b, ccfg, val, method, seed, progress=False)
                        c["acc"][key] = cell["top1"]
                        c["seconds"][key] = cell["quant_seconds"] + cell["eval_seconds"]
                        print(f"{src} seed {seed} steps {k} {key}: {cell['top1']:.2f} "
                              f"({c['seconds'][key]:.0f} s)", flush=True)
                        _atomic_json(path, rec)
            rec["command"] = "python benchmarks/steps_curve.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
            _atomic_json(path, rec)


def to_cache(args) -> None:
    """Put every full-length generated set (the largest step count) into the shared sample cache
    (:mod:`dsg_viz.cache`, the key ``dsg-viz compare`` computes for the same preset, sample count, seed and resolved
    precision), so that the test-split table of the same sets loads them instead of generating them again."""
    from dataclasses import asdict

    from dsg_viz import cache, create_model
    from dsg_viz.data import resolve_data_root
    from dsg_viz.generation import SampleSet, preset

    ckpt = str(resolve_data_root(args.data_root) / "models" / "cifar10" / CKPT)
    model = create_model("resnet20_cifar10", ckpt)
    name, ident = cache.model_identity(model)
    kmax = max(int(s) for s in args.steps.split(","))
    for f in sorted(SETS.glob(f"*-k{kmax}.pt")):
        s = SampleSet.load(f)
        cfg = preset(s.method, num_samples=len(s))
        if json.dumps(asdict(cfg), sort_keys=True, default=str) != json.dumps(s.config, sort_keys=True, default=str):
            print(f"{f.name}: its config is not preset {s.method!r} at {len(s)} samples; not cached")
            continue
        key = cache.sample_key(name, ident, cfg, len(s), s.seed, s.version, s.precision.get("resolved"))
        path = cache.cache_path(key, s.method, len(s), s.seed, name)
        if path.exists():
            print(f"{f.name}: already in the cache ({path})")
            continue
        if not ident.startswith("weights:"):
            s.checkpoint_sha256 = ident
        s.save(path, grid=False)
        print(f"{f.name} -> {path}")


# ------------------------------------------------------------------------------------------- report

def _ms(v: list[float]) -> tuple[float, float]:
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def merge() -> dict:
    recs = [json.loads(p.read_text()) for p in sorted(CELLS.glob("*.json"))]
    if not recs:
        raise SystemExit(f"no cells under {CELLS}; run the measurement first")
    out = {"split": "val (the last 500 train images of each class, 5,000 images)", "checkpoint": CKPT,
           "convention": "zeroq, ema calibration", "fp_val_top1": recs[0].get("fp_val_top1"),
           "machine": recs[0].get("machine"), "runs": recs}
    return out


def table(res: dict) -> tuple[dict, list[str], list[str]]:
    """Return ``{source: {steps: {metric: [values over seeds]}}}``, the accuracy keys and the sources."""
    agg: dict = {}
    keys: set = set()
    for r in res["runs"]:
        for k, c in r["cells"].items():
            d = agg.setdefault(r["source"], {}).setdefault(int(k), {})
            for m, v in c.get("acc", {}).items():
                d.setdefault(m, []).append(v)
                keys.add(m)
            for m, v in c.get("scores", {}).items():
                if v is not None:
                    d.setdefault(m, []).append(v)
    # an accuracy measured at fewer than two step counts of a generated source is no curve (e.g. a W2A4 cell of an
    # aborted first run): left out
    keys = {m for m in keys if sum(1 for s, d in agg.items() if s not in ("real", "gaussian")
                                   for k, v in d.items() if v.get(m)) >= 2}
    order = ["calib/W4A4", "calib/W3A3", "calib/W2A4", "brecq/W4A4", "brecq/W3A3"]
    acc_keys = [k for k in order if k in keys] + sorted(keys - set(order))
    sources = [s for s in ("zeroq", "zeroq+ce", "dsg", "dsg-tuned", "real", "gaussian") if s in agg] + \
        sorted(set(agg) - {"zeroq", "zeroq+ce", "dsg", "dsg-tuned", "real", "gaussian"})
    return agg, acc_keys, sources


def per_seed(res: dict, source: str) -> dict:
    """``{steps: {acc key: {seed: top-1}}}`` of one source."""
    out: dict = {}
    for r in res["runs"]:
        if r["source"] == source:
            for k, c in r["cells"].items():
                for m, v in c.get("acc", {}).items():
                    out.setdefault(int(k), {}).setdefault(m, {})[r["seed"]] = v
    return out


def markdown(res: dict) -> str:
    agg, acc_keys, sources = table(res)
    seeds = sorted({r["seed"] for r in res["runs"]})
    lines = [f"Validation top-1 (%, {res['split']}; FP {res['fp_val_top1']:.2f}), mean ± std over seeds "
             f"{', '.join(map(str, seeds))} (n in brackets when fewer). ResNet-20 (`{CKPT}`), 256 samples, "
             f"{res['convention']}. `real` = 256 train images (never val), `gaussian` = N(0, 1) pixels: "
             "references with 0 steps.", "",
             "| source | steps | " + " | ".join(acc_keys) + " | D^μ/real | feature |Pearson| | W1 |",
             "|---|---:|" + "---:|" * (len(acc_keys) + 3)]
    n_all = len(seeds)
    for s in sources:
        for k in sorted(agg[s]):
            d = agg[s][k]
            cells = []
            for m in acc_keys + ["rel_d_mu", "offdiag_pearson_feature", "w1"]:
                v = d.get(m)
                if not v:
                    cells.append("—")
                    continue
                mu, sd = _ms(v)
                digits = 2 if m in acc_keys else 3
                cells.append(f"{mu:.{digits}f} ± {sd:.{digits}f}" + (f" ({len(v)})" if len(v) < n_all else ""))
            lines.append(f"| {s} | {k} | " + " | ".join(cells) + " |")
    kmax = max((k for src in sources for k in agg[src]), default=0)
    gen_src = [x for x in sources if x not in ("real", "gaussian")]
    calib = [m for m in acc_keys if m.startswith("calib/")]
    ks = sorted({k for x in gen_src for k in agg[x] if 0 < k < kmax})
    if gen_src and calib and ks:
        lines += ["", f"**Gap to {kmax} steps** (the choice of the notebooks' `quick` step count): per source and step "
                      f"count, the mean over seeds of top-1 at k steps minus top-1 at {kmax} steps of the same seed "
                      "(calibration only), and the largest |gap| over the sources.", "",
                  "| steps | " + " | ".join(f"{x} {m.split('/')[1]}" for x in gen_src for m in calib)
                  + " | largest abs. gap |", "|---:|" + "---:|" * (len(gen_src) * len(calib) + 1)]
        ps = {x: per_seed(res, x) for x in gen_src}
        for k in ks:
            gaps = []
            for x in gen_src:
                for m in calib:
                    a_, b_ = ps[x].get(k, {}).get(m, {}), ps[x].get(kmax, {}).get(m, {})
                    seeds_ = sorted(set(a_) & set(b_))
                    gaps.append(statistics.mean(a_[q] - b_[q] for q in seeds_) if seeds_ else None)
            real_gaps = [abs(g) for g in gaps if g is not None]
            lines.append(f"| {k} | " + " | ".join("—" if g is None else f"{g:+.2f}" for g in gaps)
                         + f" | {max(real_gaps):.2f} |" if real_gaps else f"| {k} | " + " | ".join("—" for _ in gaps) + " | — |")
    hs = ["rel_d_mu", "rel_d_sigma", "w1", "offdiag_pearson_feature", "erank_feature", "offdiag_cos_pixel"]
    lines += ["", f"Homogenization of the full-length ({kmax}-step) sets and of the references, mean ± std over the "
                  "seeds (`dsg_viz.diagnostics.metrics.summarize` against 256 real train images, seed 0): relative "
                  "dispersion of the per-sample BN means and stds (real = 1; higher = more diverse), W1 of the BN "
                  "inputs to the BN Gaussian (σ units; 0 = exactly on it), mean |Pearson| between samples' "
                  "penultimate features and the effective rank of their cosine matrix (higher = more diverse), mean |cos| between samples' pixels.", "",
              "| source | steps | " + " | ".join(f"`{h}`" for h in hs) + " |", "|---|---:|" + "---:|" * len(hs)]
    for src in sources:
        k = 0 if src in ("real", "gaussian") else kmax
        d = agg[src].get(k)
        if not d:
            continue
        cells = []
        for h in hs:
            v = d.get(h)
            cells.append("—" if not v else f"{_ms(v)[0]:.3f} ± {_ms(v)[1]:.3f}" + (f" ({len(v)})" if len(v) < n_all else ""))
        lines.append(f"| {src} | {k} | " + " | ".join(cells) + " |")
    lines += ["", "Paired differences per seed on the validation split (B − A over the seeds both have; same seed = same "
                  "random start and labels): mean ± std, per-seed values, paired t-test p, seeds with B > A.", "",
              "| B − A | steps | bits | mean ± std | per seed | p | B > A |", "|---|---:|---|---|---|---|---|"]
    for a_, b_ in (("zeroq", "dsg"), ("zeroq+ce", "dsg"), ("zeroq", "zeroq+ce")):
        for k in sorted(set(per_seed(res, a_)) & set(per_seed(res, b_))):
            for m in acc_keys:
                pr = paired(per_seed(res, a_)[k].get(m, {}), per_seed(res, b_)[k].get(m, {}))
                if pr is None:
                    continue
                sd = f" ± {pr['std']:.2f}" if pr["std"] is not None else ""
                pv = f"{pr['p']:.3f}" if pr["p"] is not None else "–"
                lines.append(f"| {b_} − {a_} | {k} | {m} | {pr['mean']:+.2f}{sd} | "
                             + ", ".join(f"{x:+.2f}" for x in pr["diff"]) + f" | {pv} | {pr['positive']}/{pr['n']} |")
    gens = {}
    for r in res["runs"]:
        if r.get("gen_seconds") and r["source"] not in ("gaussian", "real"):
            gens.setdefault(r["source"], []).append(r["gen_seconds"])
    if gens:
        lines += ["", "Generation wall time of the full run (largest step count, 256 samples, one thread; "
                      "the machine is in `docs/results/steps_curve.json`): " +
                  "; ".join(f"{s} median {statistics.median(v):.0f} s" for s, v in gens.items()) + "."]
    return "\n".join(lines) + "\n"


def plot(res: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dsg_viz.diagnostics.plots import source_colors

    agg, acc_keys, sources = table(res)
    gen = [s for s in sources if s not in ("real", "gaussian")]
    colors = source_colors(sources)
    fig, axes = plt.subplots(1, len(acc_keys), figsize=(3.8 * len(acc_keys), 3.4), squeeze=False)
    for ax, m in zip(axes[0], acc_keys):
        for s in gen:
            ks = [k for k in sorted(agg[s]) if agg[s][k].get(m)]
            if not ks:
                continue
            mus = [_ms(agg[s][k][m])[0] for k in ks]
            sds = [_ms(agg[s][k][m])[1] for k in ks]
            ax.errorbar(ks, mus, yerr=sds, marker="o", ms=3, capsize=2, label=s, color=colors[s])
        for s, ls in (("real", "--"), ("gaussian", ":")):
            if s in agg and agg[s].get(0, {}).get(m):
                ax.axhline(_ms(agg[s][0][m])[0], ls=ls, color=colors[s], lw=1, label=f"{s} (reference)")
        ax.set_xscale("log")
        ticks = sorted({k for s in gen for k in agg[s] if k > 0})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("optimization steps")
        ax.set_title(m.replace("/", " "))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation top-1 (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def report(args) -> None:
    res = merge()
    _atomic_json(JSON_OUT, res)
    md = markdown(res)
    MD_OUT.write_text("# Accuracy and homogenization against optimization steps (validation split)\n\n"
                      "Made by `benchmarks/steps_curve.py` (its docstring has the commands).\n\n"
                      "![validation top-1 against optimization steps](../img/steps_curve.png)\n\n" + md)
    fig = plot(res)
    PNG_OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PNG_OUT, dpi=110, bbox_inches="tight")
    print(md)


def main(argv=None) -> int:
    global CELLS, SETS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", choices=("run", "report", "cache"), default="run")
    p.add_argument("--sources", default="zeroq,zeroq+ce,dsg,real,gaussian")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", default="25,50,100,200,300,500")
    p.add_argument("--bits", default="W4A4,W3A3,W2A4")
    p.add_argument("--brecq-bits", default="W4A4")
    p.add_argument("--brecq-steps", default="25,100,500", help="step counts that also get BRECQ ('' = none)")
    p.add_argument("--recon-iters", type=int, default=None, help="BRECQ steps per unit (default: the library's)")
    p.add_argument("--num-samples", type=int, default=256)
    p.add_argument("--precision", default=None, help="auto (default of the presets), fp32 or bf16")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", default=None)
    p.add_argument("--work", default=str(CELLS.parent), help="where cells and kept sets go (runs/steps_curve)")
    p.add_argument("--variant", action="append", default=[],
                   help="LABEL=PRESET:field=value,... a preset with fields changed, usable as a source LABEL "
                        "(e.g. 'dsg@ms0.1=dsg:margins.scale=0.1'); repeatable")
    args = p.parse_args(argv)
    for spec in args.variant:
        label, base, over = parse_variant(spec)
        VARIANTS[label] = (base, over)
    CELLS, SETS = Path(args.work) / "cells", Path(args.work) / "sets"
    if args.stage == "report":
        report(args)
    elif args.stage == "cache":
        to_cache(args)
    else:
        run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
