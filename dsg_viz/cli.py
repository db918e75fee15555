"""``dsg-viz`` command line: eval, generate, compare, demo, diagnose, margins, fetch, list-models.

Expected errors (bad paths, wrong checkpoint, unknown names, out-of-range options) print one line
``error: ...`` and exit with code 2. ``--json`` prints one JSON object on stdout as the last line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import DsgVizError


def _add_common(p: argparse.ArgumentParser, model_default: str | None = "resnet20_cifar10") -> None:
    p.add_argument("--model", default=model_default, help="registered model name (see 'dsg-viz list-models')")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint file (.th/.pt); default: <data-root>/models/<dataset>/<published file>")
    p.add_argument("--data-root", default=None, help="data root (default: $DSG_VIZ_DATA_ROOT, else ./data)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")


def _load_model(args):
    from .data import resolve_checkpoint
    from .models import create_model, get_spec, sha256_file

    spec = get_spec(args.model)
    ckpt = resolve_checkpoint(args.checkpoint, spec.default_checkpoint, args.data_root, spec.dataset)
    model = create_model(args.model, ckpt)
    sha = sha256_file(ckpt) if ckpt else None
    return model, ckpt, sha


def _emit(args, obj: dict, human: str) -> None:
    if args.json:
        print(json.dumps(obj))
    else:
        print(human)


def cmd_list_models(args) -> None:
    from .models import get_spec, list_models

    rows = [vars(get_spec(n)) | {} for n in list_models()]
    human = "\n".join(f"{r['name']:<20} {r['dataset']:<9} input {r['input_size']}  BN layers {r['num_bn']}"
                      for r in rows)
    _emit(args, {"models": [{k: v for k, v in r.items()} for r in rows]}, human)


def cmd_eval(args) -> None:
    from .data import load_split
    from .evaluate import evaluate

    model, ckpt, _ = _load_model(args)
    split = load_split(args.split, args.data_root)
    if args.limit:
        import torch

        split = split.subset(torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:args.limit])
    r = evaluate(model, split, progress=not args.json)
    r.update({"model": args.model, "checkpoint": ckpt, "split": args.split})
    _emit(args, r, f"{args.model} on CIFAR-10 {args.split} ({r['n']} images): top-1 {r['top1']:.2f}  "
                   f"top-5 {r['top5']:.2f}")


def cmd_generate(args) -> None:
    from dataclasses import replace

    from .generation import MarginConfig, make_samples

    model, ckpt, sha = _load_model(args)
    overrides = {"batch_size": args.batch_size, "steps": args.steps, "lr": args.lr}
    if args.margin_quantile is not None or args.margin_scale is not None or args.margin_source or args.margin_axis \
            or args.margins_file:
        from .generation import preset

        base = preset(args.method).margins if args.method != "real" else MarginConfig()
        overrides["margins"] = replace(
            base, **{k: v for k, v in {"quantile": args.margin_quantile, "scale": args.margin_scale,
                                       "source": args.margin_source, "axis": args.margin_axis,
                                       "file": args.margins_file}.items() if v is not None})
    if args.bf16:
        overrides["autocast_bf16"] = True
    s = make_samples(model, args.method, args.num_samples, seed=args.seed, data_root=args.data_root,
                     progress=not args.json, checkpoint_sha256=sha, **overrides)
    out = s.save(args.out, grid=True, mean=model.spec.mean, std=model.spec.std)
    final = {k: v[-1][-1] for k, v in s.history.items() if v and v[-1]}
    obj = {"out": str(out), "grid": str(Path(out).with_suffix(".png")), "method": s.method, "num_samples": len(s),
           "seconds": round(s.seconds, 2), "interrupted": s.interrupted, "final_loss": final}
    _emit(args, obj, f"wrote {len(s)} {s.method} samples to {out} (grid {obj['grid']}) in {s.seconds:.1f} s"
                     + (" [interrupted]" if s.interrupted else ""))


def cmd_fetch(args) -> None:
    from .data import resolve_data_root
    from .fetch import fetch

    root = resolve_data_root(args.data_root)
    r = fetch(root, models=args.models.split(",") if args.models else None, dataset=not args.no_dataset,
              base_url=args.base_url)
    _emit(args, r, f"fetched into {root}: dataset {r['dataset']}, checkpoints {', '.join(r['checkpoints'])}")


def build_parser() -> argparse.ArgumentParser:
    from .generation import METHODS

    p = argparse.ArgumentParser(prog="dsg-viz", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    q = sub.add_parser("list-models", help="list registered models")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list_models)

    q = sub.add_parser("eval", help="top-1/top-5 of a model on CIFAR-10")
    _add_common(q)
    q.add_argument("--split", default="test", choices=["test", "train"])
    q.add_argument("--limit", type=int, default=None, help="evaluate a fixed random subset of this many images")
    q.set_defaults(func=cmd_eval)

    q = sub.add_parser("generate", help="generate a sample set (gaussian, zeroq, dsg, ..., or real)")
    _add_common(q)
    q.add_argument("--method", default="dsg", choices=METHODS)
    q.add_argument("--num-samples", type=int, default=256)
    q.add_argument("--batch-size", type=int, default=None)
    q.add_argument("--steps", type=int, default=None)
    q.add_argument("--lr", type=float, default=None)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--margin-quantile", type=float, default=None, help="SDA margin quantile ε (paper 0.9)")
    q.add_argument("--margin-scale", type=float, default=None, help="multiply the SDA margins by this factor")
    q.add_argument("--margin-source", default=None, choices=["per_sample", "batch"])
    q.add_argument("--margin-axis", default=None, choices=["layer", "channel"])
    q.add_argument("--margins-file", default=None, help="load margins (.pt, .npz or folder with m.npy/n.npy)")
    q.add_argument("--bf16", action="store_true", help="bf16 autocast for forward/backward (stats stay fp32)")
    q.add_argument("--out", required=True, help="output .pt file (a PNG grid is written beside it)")
    q.set_defaults(func=cmd_generate)

    q = sub.add_parser("fetch", help="download CIFAR-10 and the published checkpoints into the data root")
    q.add_argument("--data-root", default=None)
    q.add_argument("--models", default=None, help="comma-separated model names (default: all CIFAR ResNets)")
    q.add_argument("--no-dataset", action="store_true", help="only the checkpoints")
    q.add_argument("--base-url", default=None, help="override the checkpoints' base URL (e.g. a file:// mirror)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_fetch)

    for register in _EXTRA:
        register(sub)
    return p


_EXTRA: list = []  # other modules append ``register(subparsers)`` functions (compare, diagnose, ...)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dsg-viz`` console script; returns the exit code."""
    _load_extra()
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    try:
        args.func(args)
    except DsgVizError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def _load_extra() -> None:
    if _EXTRA:
        return
    import importlib

    for mod in ("dsg_viz.compare", "dsg_viz.diagnostics.report", "dsg_viz.margin_study", "dsg_viz.qat"):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod and not mod.startswith(str(e.name)):
                raise
            continue
        if hasattr(m, "register_cli"):
            _EXTRA.append(m.register_cli)


if __name__ == "__main__":
    sys.exit(main())
