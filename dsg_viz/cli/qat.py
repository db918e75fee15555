"""``qat``: generative data-free quantization-aware training."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ._common import add_common, emit, integer, load_model, number


def cmd_qat(args) -> None:
    from ..qat import (CHECKPOINT, export_generator_samples, load_generator, qat_preset, qat_splits,
                       train_qat)

    from .. import _io

    _io.check_output_dir(args.out, "--out")  # before any work
    model, ckpt, sha = load_model(args)
    preset = args.preset or ("cifar" if model.spec.dataset == "cifar10" else "paper")
    cfg = qat_preset(preset, generator=args.generator, bits=args.bits, epochs=args.epochs, iters=args.iters,
                     batch_size=args.batch_size, warmup_epochs=args.warmup_epochs, lr_s=args.lr_s, lr_g=args.lr_g,
                     kd_reduction=args.kd_reduction, gen_output=args.gen_output, margin_scale=args.margin_scale,
                     seed=args.seed)
    if args.val_limit is not None:
        cfg = replace(cfg, val_limit=None if args.val_limit == 0 else args.val_limit)
    if args.milestones is not None:
        try:
            ms = tuple(int(m) for m in args.milestones.split(",") if m.strip())
        except ValueError:
            from ..errors import ConfigError

            raise ConfigError(f"--milestones {args.milestones!r}: write comma-separated epochs, e.g. "
                              "100,200,300") from None
        cfg = replace(cfg, milestones=ms)
        cfg.validate()
    val = test = None
    if model.spec.dataset == "cifar10":
        val, test = qat_splits(args.data_root, cfg.val_limit, 0)
    elif model.spec.dataset == "imagenet":
        val, test = imagenet_splits(model.spec, args.data_root, cfg.val_limit, args.eval_limit, quiet=args.json)
    elif not args.json:
        print(f"no real data for {model.spec.dataset} models: training without validation or test scores")
    quiet = args.json
    r = train_qat(model, cfg, args.out, val=val, test=test, resume=args.resume, progress=not quiet,
                  log=(lambda *_: None) if quiet else print, checkpoint_sha256=sha,
                  fp_reference=not args.no_fp_reference)
    if args.export and r["epochs_done"]:
        gen = load_generator(Path(args.out) / CHECKPOINT, model.spec)
        s = export_generator_samples(gen.to(next(model.parameters()).device), args.export, seed=cfg.seed,
                                     method=f"qat-{cfg.generator}", checkpoint_sha256=sha)
        r["export"] = str(s.save(Path(args.out) / "samples.pt", grid=True, mean=model.spec.mean, std=model.spec.std))
    lines = [f"QAT {model.spec.name} {cfg.bits} generator {cfg.generator} (preset {preset}): "
             f"{r['epochs_done']}/{cfg.epochs} epochs × {cfg.iters} iterations in {r['seconds']:.0f} s"]
    for key, what in (("final", "final epoch"), ("val_selected", "val-selected epoch")):
        c = r.get(key)
        if c and "test" in c:
            lines.append(f"  {what} {c['epoch']}: val top-1 {c['val_top1']:.2f}  test top-1 {c['test']['top1']:.2f}"
                         f"  top-5 {c['test']['top5']:.2f}")
    if "fp" in r:
        lines.append(f"  FP test top-1 {r['fp']['test']['top1']:.2f}")
    if r.get("interrupted"):  # Ctrl-C: the finished epochs are checkpointed; exit code 130
        from ..errors import Interrupted

        raise Interrupted(f"stopped after {r['epochs_done']}/{cfg.epochs} finished epoch(s), kept in "
                          f"{Path(args.out) / CHECKPOINT}; rerun the same command with --resume to continue")
    if not r["complete"]:
        lines.append("  not finished: rerun the same command with --resume")
    emit(args, {k: v for k, v in r.items() if k != "history"} | {"out": str(args.out)}, "\n".join(lines))


def imagenet_splits(spec, data_root, val_limit: int | None, eval_limit: int | None, quiet: bool = False):
    """Return ``(val, test)`` of an ImageNet model, lazily decoded: a ``val_limit`` subset of the held-out train
    images (``None`` when there is no ``train/`` folder: no epoch selection) and the ``val/`` folder (a fixed
    ``eval_limit`` subset when given)."""
    import torch

    from ..data import load_eval_split
    from ..errors import DataError

    test = load_eval_split(spec, "test", data_root)
    if eval_limit:
        test = test.subset(torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:eval_limit])
    try:
        val = load_eval_split(spec, "val", data_root)
    except DataError as e:
        if not quiet:
            print(f"note: no epoch selection ({e})")
        return None, test
    if val_limit is not None and val_limit < len(val):
        val = val.subset(torch.randperm(len(val), generator=torch.Generator().manual_seed(0))[:val_limit])
    return val, test


def register(sub) -> None:
    """Add ``qat``."""
    from ..qat import GENERATOR_PRESETS, KD_REDUCTIONS, QAT_PRESETS

    q = sub.add_parser("qat", help="generative data-free QAT: generator (gdfq/dsg/dsg-official) + KD student")
    add_common(q)
    q.add_argument("--generator", default="dsg", choices=list(GENERATOR_PRESETS),
                   help="generator objective: gdfq, dsg (paper intent) or dsg-official (released code)")
    q.add_argument("--bits", default="W4A4", help="student bit widths, e.g. W4A4")
    q.add_argument("--preset", default=None, choices=list(QAT_PRESETS),
                   help="schedule: paper (DSG release), cifar (GDFQ CIFAR, 400×200×200), cpu (short); "
                        "default: cifar for CIFAR models, else paper")
    q.add_argument("--epochs", type=integer(1), default=None)
    q.add_argument("--iters", type=integer(1), default=None, help="iterations per epoch")
    q.add_argument("--batch-size", type=integer(2), default=None)
    q.add_argument("--warmup-epochs", type=integer(0), default=None, help="generator-only epochs")
    q.add_argument("--milestones", default=None, help="comma-separated lr-decay epochs, e.g. 100,200,300")
    q.add_argument("--lr-s", type=number(0, 10, lo_open=True), default=None, help="student SGD learning rate")
    q.add_argument("--lr-g", type=number(0, 10, lo_open=True), default=None, help="generator Adam learning rate")
    q.add_argument("--kd-reduction", default=None, choices=list(KD_REDUCTIONS),
                   help="batchmean (default) or mean (the released element-wise mean)")
    q.add_argument("--gen-output", default=None, choices=["pixel", "bn"],
                   help="pixel: tanh → RGB → normalized (default); bn: GDFQ's affine-free BN head")
    q.add_argument("--margin-scale", type=number(0), default=None, help="scale of the SDA margins (dsg presets)")
    q.add_argument("--val-limit", type=integer(0), default=None, help="validation images per epoch (0 = all 5,000)")
    q.add_argument("--eval-limit", type=integer(1), default=None,
                   help="ImageNet: evaluate on a fixed subset of this many val/ images (smoke runs)")
    q.add_argument("--seed", type=integer(0), default=None)
    q.add_argument("--export", type=integer(0), default=0, help="also write N generator samples to OUT/samples.pt")
    q.add_argument("--no-fp-reference", action="store_true", help="skip the FP model's val/test evaluation")
    q.add_argument("--resume", action="store_true", help="continue OUT/checkpoint.pt")
    q.add_argument("--out", required=True, help="run directory")
    q.set_defaults(func=cmd_qat)
