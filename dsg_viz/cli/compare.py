"""``compare`` (the main job) and ``demo`` (the embedded default)."""

from __future__ import annotations

import json
import time

from ._common import (add_common, add_device, add_threads, check_dataset, checkpoint_arg, integer, number, parse_list,
                      resolve_device, resolve_method_arg)


def cmd_compare(args, demo: bool = False) -> None:
    from ..compare import DEMO, CompareConfig, results_markdown, run_compare
    from ..data import resolve_data_root

    device = str(resolve_device(args.device))
    if demo:
        ckpt = args.checkpoint or str(resolve_data_root(args.data_root) / "models" / "cifar10" /
                                      DEMO["checkpoint_file"])
        cfg = CompareConfig(model=DEMO["model"], checkpoint=ckpt, sources=DEMO["sources"], bits=DEMO["bits"],
                            seeds=DEMO["seeds"], num_samples=DEMO["num_samples"], steps=DEMO["steps"],
                            batch_size=DEMO["batch_size"], data_root=args.data_root, bf16=args.bf16,
                            precision=args.precision, device=device)
    else:
        check_dataset(args)
        cfg = CompareConfig(model=args.model, checkpoint=checkpoint_arg(args),
                            sources=tuple(map(resolve_method_arg, parse_list(args.sources))),
                            bits=parse_list(args.bits), seeds=args.seeds, num_samples=args.num_samples,
                            steps=args.steps, batch_size=args.batch_size, calibration=args.calibration,
                            weight_range=args.weight_range, convention=args.convention,
                            methods=parse_list(args.method), margin_scale=args.margin_scale, bf16=args.bf16,
                            precision=args.precision,
                            data_root=args.data_root, eval_limit=args.eval_limit, eval_split=args.eval_split,
                            device=device, recon_iters=args.recon_iters)
    t0 = time.perf_counter()
    res = run_compare(cfg, args.out, progress=not args.json, log=(lambda *a: None) if args.json else print)
    wall = time.perf_counter() - t0
    if res is None:  # a non-zero rank of a distributed run: rank 0 reports
        return
    md = results_markdown(res, cfg)
    if args.json:
        print(json.dumps({"out": str(args.out), "fp": res["fp"]["top1"], "table": res["table"],
                          "seconds": round(wall, 1)}))
    else:
        print(md)
        print(f"wrote {args.out}/results.json, results.md, accuracy.png in {wall:.0f} s")


def register(sub) -> None:
    """Add ``compare`` and ``demo``."""
    from ..compare import DEMO_SOURCES

    q = sub.add_parser("compare", help="noise vs ZeroQ vs DSG vs real data, quantized and evaluated")
    add_common(q)
    q.add_argument("--sources", default=",".join(DEMO_SOURCES),
                   help="comma-separated sources (presets or real): gaussian, zeroq (published ZeroQ), zeroq+ce (its "
                        "BN loss + CE and priors, DSG's base), zeroq+ce+sda/+lse/+sci, dsg (the paper), dsg-tuned "
                        "(margin scale 0.3), dsg-official (the released code), real")
    q.add_argument("--bits", default="W4A4,W6A6,W8A8", help="comma-separated bit widths, e.g. W4A4,W6A6")
    q.add_argument("--seeds", type=integer(1), default=3)
    q.add_argument("--num-samples", type=integer(1), default=256)
    q.add_argument("--steps", type=integer(0), default=None, help="generation steps (default: each preset's, 500)")
    q.add_argument("--batch-size", type=integer(1), default=None)
    q.add_argument("--calibration", default="ema", choices=["ema", "minmax", "percentile", "mse"])
    q.add_argument("--weight-range", default="minmax", choices=["minmax", "mse"])
    q.add_argument("--convention", default="zeroq", choices=["zeroq", "brecq"],
                   help="zeroq: every layer at the same bits; brecq: first/last layer at 8 bits")
    q.add_argument("--method", default="calib",
                   help="comma-separated: calib, adaround, brecq (reconstruction), qat (generator + distillation, "
                        "rows zeroq+ce→gdfq, dsg/dsg-tuned→dsg and dsg-official generators, CPU schedule)")
    q.add_argument("--margin-scale", type=number(0), default=None,
                   help="scale of the SDA margins of every SDA source (default: each preset's: dsg 1, dsg-tuned 0.3)")
    q.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16"],
                   help="generation precision (default: the presets' auto = bf16 where the device has native bf16, "
                        "AMX-BF16 CPU or CUDA, else fp32; statistics and losses stay fp32)")
    q.add_argument("--bf16", action="store_true", help="deprecated: --precision bf16")
    q.add_argument("--eval-limit", type=integer(1), default=None,
                   help="evaluate on a fixed subset of this many test images (smoke runs; default: all)")
    q.add_argument("--recon-iters", type=integer(0), default=None,
                   help="adaround/brecq optimization steps per unit (default 200, CPU-sized; the papers use 20,000)")
    q.add_argument("--eval-split", default="test", choices=["test", "val"],
                   help="test: report (ImageNet: the val/ folder); val: held-out train images, for tuning any "
                        "setting (CIFAR-10: 5,000; ImageNet: the last 10 per class of train/)")
    q.add_argument("--out", required=True,
                   help="run folder (checked before any work); finished cells are kept in OUT/results.json, so Ctrl-C "
                        "(exit code 130) and a rerun of the same command resume")
    q.set_defaults(func=cmd_compare)

    q = sub.add_parser("demo", help="compare with the embedded default (JPEG ResNet-20, W4A4/W6A6, ~5 min)")
    q.add_argument("--checkpoint", default=None)
    q.add_argument("--data-root", default=None)
    add_threads(q)
    add_device(q)
    q.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16"])
    q.add_argument("--bf16", action="store_true", help="deprecated: --precision bf16")
    q.add_argument("--json", action="store_true")
    q.add_argument("--out", default="runs/demo")
    q.set_defaults(func=lambda a: cmd_compare(a, demo=True))
