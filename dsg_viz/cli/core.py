"""``list-models``, ``eval``, ``generate`` and ``fetch``."""

from __future__ import annotations

from pathlib import Path

from ._common import add_common, emit, integer, load_model, number, resolve_method_arg


def cmd_list_models(args) -> None:
    from ..models import get_spec, list_models

    rows = [dict(vars(get_spec(n))) for n in list_models()]
    human = "\n".join(f"{r['name']:<20} {r['dataset']:<9} input {r['input_size']}  BN layers {r['num_bn']}"
                      for r in rows)
    emit(args, {"models": rows}, human)


def cmd_eval(args) -> None:
    import torch

    from ..data import forward_batch_size, load_eval_split
    from ..evaluate import evaluate

    model, ckpt, _ = load_model(args)
    split = load_eval_split(model.spec, args.split, args.data_root)
    if args.limit is not None:
        split = split.subset(torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:args.limit])
    r = evaluate(model, split, progress=not args.json,
                 batch_size=forward_batch_size(model.spec, args.batch_size, 100))
    r.update({"model": args.model, "checkpoint": ckpt, "split": args.split, "device": str(model_device(model))})
    emit(args, r, f"{args.model} on {model.spec.dataset} {args.split} ({r['n']} images): top-1 {r['top1']:.2f}  "
                  f"top-5 {r['top5']:.2f}")


def model_device(model):
    return next(model.parameters()).device


def cmd_generate(args) -> None:
    from dataclasses import replace

    from .. import _io
    from ..errors import Interrupted
    from ..generation import GenerationError, MarginConfig, make_samples

    out = _io.check_output_file(args.out, "--out", suffix=".pt")  # before any work; the grid goes to X.png
    args.method = resolve_method_arg(args.method)
    model, ckpt, sha = load_model(args)
    # only the options given: None is a value for some fields (preset() applies it)
    overrides = {k: v for k, v in {"batch_size": args.batch_size, "steps": args.steps, "lr": args.lr}.items()
                 if v is not None}
    if args.margin_quantile is not None or args.margin_scale is not None or args.margin_source or args.margin_axis \
            or args.margins_file:
        from ..generation import preset

        base = preset(args.method).margins if args.method != "real" else MarginConfig()
        overrides["margins"] = replace(
            base, **{k: v for k, v in {"quantile": args.margin_quantile, "scale": args.margin_scale,
                                       "source": args.margin_source, "axis": args.margin_axis,
                                       "file": args.margins_file}.items() if v is not None})
    if args.bf16 and args.precision not in (None, "bf16"):
        from ..errors import ConfigError

        raise ConfigError(f"--bf16 contradicts --precision {args.precision}; use --precision alone")
    if args.precision or args.bf16:  # --bf16: the deprecated spelling of --precision bf16
        overrides["precision"] = args.precision or "bf16"
    if args.compile:
        overrides["compile"] = True
    try:
        s = make_samples(model, args.method, args.num_samples, seed=args.seed, data_root=args.data_root,
                         progress=not args.json, checkpoint_sha256=sha, **overrides)
    except GenerationError as e:
        raise GenerationError(f"{e}; nothing was written to {out}") from None
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise Interrupted(f"stopped before any batch existed; nothing was written to {out}") from None
    if s.interrupted:  # Ctrl-C: keep what exists under a name that says so (SampleSet.load refuses it by default)
        part = s.save(out.with_name(out.stem + ".partial" + out.suffix), grid=False)
        hist = s.history.get("total") or [[]]
        nb = -(-args.num_samples // s.config.get("batch_size", args.num_samples))
        raise Interrupted(f"generation stopped in batch {len(hist)}/{nb} after {len(hist[-1])} of "
                          f"{s.config.get('steps')} steps: kept {len(s)} of {args.num_samples} samples (the last batch "
                          f"unfinished) in {part}, marked partial (SampleSet.load refuses it unless "
                          f"allow_partial=True); {out} was not written")
    out = s.save(out, grid=True, mean=model.spec.mean, std=model.spec.std)
    final = {k: v[-1][-1] for k, v in s.history.items() if v and v[-1]}
    obj = {"out": str(out), "grid": str(Path(out).with_suffix(".png")), "method": s.method, "num_samples": len(s),
           "seconds": round(s.seconds, 2), "interrupted": s.interrupted, "final_loss": final,
           "steps": s.config.get("steps"), "batch_size": s.config.get("batch_size"),
           "device": str(model_device(model)), "precision": s.precision.get("resolved")}
    emit(args, obj, f"wrote {len(s)} {s.method} samples to {out} (grid {obj['grid']}) in {s.seconds:.1f} s"
                    + (f" ({obj['precision']})" if obj["precision"] else "")
                    + (" [interrupted]" if s.interrupted else ""))


def cmd_fetch(args) -> None:
    from .. import _io
    from ..data import resolve_data_root
    from ..fetch import fetch

    root = _io.check_output_dir(resolve_data_root(args.data_root), "--data-root")  # before any download
    imagenet = [m.strip() for m in (args.imagenet_weights or "").split(",") if m.strip()]
    if imagenet and not args.models:  # only the ImageNet weights were asked for
        r = {"dataset": None, "checkpoints": []}
    else:
        r = fetch(root, models=args.models.split(",") if args.models else None, dataset=not args.no_dataset,
                  base_url=args.base_url)
    if imagenet:
        from ..fetch import fetch_imagenet_weights

        r["imagenet_weights"] = fetch_imagenet_weights(root, imagenet, progress=not args.json)
        r["checkpoints"] += r["imagenet_weights"]
    emit(args, r, f"fetched into {root}: dataset {r['dataset']}, checkpoints {', '.join(r['checkpoints'])}")


def register(sub) -> None:
    """Add ``list-models``, ``eval``, ``generate`` and ``fetch``."""
    from ..generation import DEPRECATED_NAMES, MAX_LR, METHODS

    q = sub.add_parser("list-models", help="list registered models")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list_models)

    q = sub.add_parser("eval", help="top-1/top-5 of a model on its test (or train) split")
    add_common(q)
    q.add_argument("--split", default="test", choices=["test", "train", "val"],
                   help="test (ImageNet: the val/ folder); train; val: held-out train images for tuning (CIFAR: "
                        "5,000; ImageNet: the last 10 per class of train/)")
    q.add_argument("--limit", type=integer(1), default=None, help="evaluate a fixed random subset of this many images")
    q.add_argument("--batch-size", type=integer(1), default=None,
                   help="images per forward pass of ImageNet-size models (default 32; CIFAR models use 100)")
    q.set_defaults(func=cmd_eval)

    q = sub.add_parser("generate", help="generate a sample set (gaussian, zeroq, dsg, ..., or real)")
    add_common(q)
    q.add_argument("--method", default="dsg", choices=METHODS + tuple(DEPRECATED_NAMES), metavar="METHOD",
                   help=f"{', '.join(METHODS)} (old names {', '.join(DEPRECATED_NAMES)} still work, with a note)")
    q.add_argument("--num-samples", type=integer(1), default=256)
    q.add_argument("--batch-size", type=integer(1), default=None)
    q.add_argument("--steps", type=integer(0), default=None)
    q.add_argument("--lr", type=number(0, MAX_LR, lo_open=True), default=None,
                   help=f"Adam learning rate of the pixels, in (0, {MAX_LR:g}] (presets: 0.5, dsg-official 0.9)")
    q.add_argument("--seed", type=integer(0), default=0)
    q.add_argument("--margin-quantile", type=number(0, 1, lo_open=True), default=None,
                   help="SDA margin quantile ε in (0, 1] (paper 0.9)")
    q.add_argument("--margin-scale", type=number(0), default=None, help="multiply the SDA margins by this factor")
    q.add_argument("--margin-source", default=None, choices=["per_sample", "batch"])
    q.add_argument("--margin-axis", default=None, choices=["layer", "channel"])
    q.add_argument("--margins-file", default=None, help="load margins (.pt, .npz or folder with m.npy/n.npy)")
    q.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16"],
                   help="network forward/backward precision (statistics and losses stay fp32); default auto: bf16 "
                        "where the device has native bf16 (AMX-BF16 CPU, CUDA), else fp32")
    q.add_argument("--bf16", action="store_true", help="deprecated: --precision bf16")
    q.add_argument("--compile", action="store_true",
                   help="torch.compile the network (faster steps after minutes of compiling; C++ compiler needed)")
    q.add_argument("--out", required=True,
                   help="output .pt file (a PNG grid is written beside it; checked before any work). Ctrl-C keeps "
                        "what exists in OUT.partial.pt and exits with code 130")
    q.set_defaults(func=cmd_generate)

    q = sub.add_parser("fetch", help="download CIFAR-10 and the published checkpoints into the data root")
    q.add_argument("--data-root", default=None)
    q.add_argument("--models", default=None, help="comma-separated model names (default: all CIFAR ResNets)")
    q.add_argument("--no-dataset", action="store_true", help="only the checkpoints")
    q.add_argument("--base-url", default=None, help="override the checkpoints' base URL (e.g. a file:// mirror)")
    q.add_argument("--imagenet-weights", default=None, metavar="NAMES",
                   help="comma-separated ImageNet models (resnet18, resnet50, mobilenet_v2): download torchvision's "
                        "published IMAGENET1K_V1 weights into <data-root>/models/imagenet/NAME.pth (alone: only these)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_fetch)
