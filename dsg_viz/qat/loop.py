"""The QAT loop: generator step, student distillation step, per-epoch validation and checkpoints."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import _faults, _io
from .._modes import eval_mode
from ..bn import bn_layers, bn_targets, capture_bn
from ..errors import ConfigError, DataError
from ..objectives import Margins
from .config import QAT_PRESETS, QATConfig
from .objectives import (GeneratorContext, build_generator_objective, generator_margins,
                         generator_preset)
from .state import CHECKPOINT, LOG, RESULT, _jsonable, _RESUMABLE, _state_copy


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            reduction: str = "batchmean") -> torch.Tensor:
    """Return ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` for logits [N, K]: summed over classes and averaged over
    samples (``"batchmean"``), or averaged over all N·K elements (``"mean"``, the released code)."""
    t = temperature
    log_p = F.log_softmax(student_logits.float() / t, dim=1)
    log_q = F.log_softmax(teacher_logits.float() / t, dim=1)
    kl = (log_q.exp() * (log_q - log_p)).sum()
    denom = student_logits.shape[0] if reduction == "batchmean" else student_logits.numel()
    return kl / denom * t * t


class _EMARange:
    """Observer that sets an :class:`~dsg_viz.quant.ActQuantizer`'s range to an EMA of each batch's global
    min/max (initialized by the first batch; the released code's faulty bias correction is not reproduced)."""

    def __init__(self, quantizer, beta: float):
        self.q, self.beta = quantizer, beta

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        lo, hi = _global_min_max(x)
        if bool(self.q.calibrated):
            lo = self.beta * self.q.x_min.item() + (1 - self.beta) * lo
            hi = self.beta * self.q.x_max.item() + (1 - self.beta) * hi
        self.q.set_range(lo, hi)


def _global_min_max(x: torch.Tensor) -> tuple[float, float]:
    """min/max of ``x``, over every rank's slice under torch.distributed (so the ranges equal one process's)."""
    from ..distributed import context

    ctx = context()
    if not ctx.enabled:
        return x.min().item(), x.max().item()
    t = torch.stack([-x.min().float(), x.max().float()]).to(ctx.device if ctx.backend == "nccl" else "cpu")
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return -t[0].item(), t[1].item()


def _rank_mean(values: dict[str, float]) -> dict[str, float]:
    """Average per-rank scalars over the ranks (each rank's values are means over equal slices)."""
    from ..distributed import context

    ctx = context()
    if not ctx.enabled:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64,
                     device=ctx.device if ctx.backend == "nccl" else "cpu")
    torch.distributed.all_reduce(t)
    return {k: v / ctx.world for k, v in zip(keys, t.cpu().tolist())}


def _observe_ranges(qm, beta: float | None) -> None:
    """Attach EMA observers to every activation quantizer (``beta``), or detach them (``None``: ranges frozen)."""
    for q in qm.act_quantizers().values():
        q.observer = None if beta is None else _EMARange(q, beta)


@contextlib.contextmanager
def _static_weights(qm):
    """Evaluate with weight ranges computed once (and cached) instead of on every forward; restore afterwards."""
    wqs = list(qm.weight_quantizers().values())
    mods = {id(m.weight_quantizer): m for m in qm.modules() if hasattr(m, "weight_quantizer")}
    try:
        for wq in wqs:
            wq.set_range(mods[id(wq)].weight.detach())
            wq.dynamic = False
        yield qm
    finally:
        for wq in wqs:
            wq.dynamic = True


def _evaluate(qm, split, batch_size: int = 100) -> dict:
    from ..evaluate import evaluate

    with _static_weights(qm):
        return evaluate(qm, split, batch_size=batch_size)


def train_qat(model: nn.Module, cfg: QATConfig, out: str | os.PathLike, *, val=None, test=None,
              resume: bool = False, max_epochs: int | None = None, progress: bool = True, log=print,
              checkpoint_sha256: str | None = None, fp_reference: bool = True) -> dict:
    """Train a generator and a quantized student of ``model``; return the result dict (also ``out/result.json``).

    Args:
        model: the FP teacher from :func:`dsg_viz.create_model` (with BN layers and a ``spec``); never modified
            (no gradients land on it; its train/eval flag is restored). Everything runs on its device.
        cfg: the :class:`QATConfig`.
        out: run directory: ``checkpoint.pt`` (atomic, every epoch), ``log.jsonl`` (one line per epoch),
            ``result.json``.
        val: :class:`~dsg_viz.data.Split` scored after every epoch for model selection (held-out train images;
            never the test split). ``None``: no selection.
        test: :class:`~dsg_viz.data.Split` evaluated once the last epoch is done, for the final and for the
            validation-selected student.
        resume: continue from ``out/checkpoint.pt`` (the same settings, except ``epochs``, are required).
            Without it an existing checkpoint is an error.
        max_epochs: stop after this many epochs in this call (a planned interruption; ``None`` = run to the end).
        log: ``log(str)`` for one-line messages.
        fp_reference: also evaluate the FP model on ``val`` and ``test`` at the end (``result["fp"]``).

    Returns ``{"complete", "epochs_done", "history", "final", "val_selected", "fp", "seconds", ...}``;
    ``final``/``val_selected`` carry ``epoch``, ``val`` and (when complete and ``test`` is given) ``test``.
    A ``KeyboardInterrupt`` stops after the last finished epoch's checkpoint and returns ``interrupted=True``.
    """
    from .. import __version__
    from ..evaluate import evaluate
    from ..models.generator import create_generator
    from ..quant import QuantConfig, quantize

    from ..distributed import context

    cfg.validate()
    dctx = context()
    if dctx.enabled and cfg.batch_size % dctx.world:
        raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by the {dctx.world} ranks; the student's "
                          "global batch is split evenly (use a multiple of the number of processes)")
    spec = getattr(model, "spec", None)
    if spec is None:
        raise ConfigError("model has no .spec; build it with dsg_viz.create_model")
    gcfg = generator_preset(cfg.generator, margin_scale=cfg.margin_scale)
    from ..data import forward_batch_size

    eval_bs = forward_batch_size(spec, cfg.batch_size, 100)  # 224 px: the training batch bounds memory
    device = next(model.parameters()).device
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = out / CHECKPOINT, out / LOG
    targets = bn_targets(model)
    L = len(targets)
    running_var = tuple(bn.running_var.detach().clone().float() for _, bn in bn_layers(model))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        gen = create_generator(spec, latent_dim=cfg.latent_dim, output=cfg.gen_output,
                               bn_eps=cfg.gen_bn_eps).to(device)
    qcfg = QuantConfig.from_bits(cfg.bits)
    qm = quantize(model, qcfg).eval()
    for wq in qm.weight_quantizers().values():
        wq.dynamic = True
    student, mine = qm, slice(None)
    if dctx.enabled:  # DDP student on this rank's slice of the global batch (the generator step is replicated)
        from torch.nn.parallel import DistributedDataParallel

        student = DistributedDataParallel(qm, device_ids=[device] if device.type == "cuda" else None)
        per = cfg.batch_size // dctx.world
        mine = slice(dctx.rank * per, (dctx.rank + 1) * per)
    opt_s = torch.optim.SGD(qm.parameters(), lr=cfg.lr_s, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                            nesterov=cfg.nesterov and cfg.momentum > 0)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr_g, betas=cfg.betas_g)
    rng = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    best: dict | None = None
    seconds = 0.0
    start = 0
    margins = None

    if ckpt_path.is_file():
        if not resume:
            raise ConfigError(f"{ckpt_path} exists; pass resume=True (--resume) to continue it, or use another "
                              "output directory")
        ck = _io.load(ckpt_path, "QAT checkpoint", "delete it to restart")
        if not isinstance(ck, dict) or ck.get("format") != "dsg_viz.qat/1":
            raise DataError(f"{ckpt_path} is not a dsg_viz QAT checkpoint; delete it to restart")
        old = ck.get("config", {})
        diff = [f.name for f in fields(QATConfig) if f.name not in _RESUMABLE
                and _jsonable(old.get(f.name, f.default)) != _jsonable(getattr(cfg, f.name))]  # new fields: default
        if ck.get("model") != spec.name:
            diff.append("model")
        if checkpoint_sha256 and ck.get("checkpoint_sha256") not in (None, checkpoint_sha256):
            diff.append("checkpoint")
        if diff:
            raise ConfigError(f"{ckpt_path} was written with different settings ({', '.join(diff)} differ); "
                              "resume with the same settings (only --epochs may change) or use another --out")
        qm.load_state_dict(ck["student"])
        gen.load_state_dict(ck["generator"])
        opt_s.load_state_dict(ck["opt_s"])
        opt_g.load_state_dict(ck["opt_g"])
        rng.set_state(ck["rng"])
        history, best, seconds, start = ck["history"], ck["best"], ck["seconds"], ck["epoch"]
        margins = ck["margins"]
        if dctx.is_main:
            _io.write_text(log_path, "".join(json.dumps(h) + "\n" for h in history))
        log(f"resuming {out} after epoch {start}/{cfg.epochs}")
    elif log_path.exists():
        if dctx.is_main:
            log_path.unlink()

    if margins is None:
        bm, sm = generator_margins(model, gcfg, cfg.batch_size, cfg.seed)
        margins = {"batch": bm.to_dict() if bm else None, "sample": sm.to_dict() if sm else None}
    bm = Margins.from_dict(margins["batch"]) if margins["batch"] else None
    sm = Margins.from_dict(margins["sample"]) if margins["sample"] else None
    objective = build_generator_objective(gcfg, L, bm, sm)
    gen_params = [p for p in gen.parameters() if p.requires_grad]

    modes = contextlib.ExitStack()  # the teacher in eval mode until the end; each module's flag restored
    modes.enter_context(eval_mode(model))
    interrupted = False
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.iters, leave=False)
    run_epochs = 0
    try:
        for epoch in range(start, cfg.epochs):
            if max_epochs is not None and run_epochs >= max_epochs:
                break
            t0 = time.perf_counter()
            lr_s, lr_g = cfg.lr_at(cfg.lr_s, epoch), cfg.lr_at(cfg.lr_g, epoch)
            for grp in opt_s.param_groups:
                grp["lr"] = lr_s
            for grp in opt_g.param_groups:
                grp["lr"] = lr_g
            train_student = epoch >= cfg.warmup_epochs
            act_live = epoch < cfg.act_warmup_epochs
            _observe_ranges(qm, cfg.act_ema_beta if act_live else None)
            sums: dict[str, float] = {}
            if bar is not None:
                bar.reset(total=cfg.iters)
                bar.set_description(f"qat {cfg.generator} {cfg.bits} epoch {epoch + 1}/{cfg.epochs}")
            for it in range(cfg.iters):
                _faults.hit("train")
                z = torch.randn(cfg.batch_size, cfg.latent_dim, generator=rng).to(device)
                y = torch.randint(0, spec.num_classes, (cfg.batch_size,), generator=rng).to(device)
                # generator step: the teacher is frozen (gradients go to the generator's parameters only)
                with capture_bn(model, keep="inputs") as cap:
                    x = gen(z, y)
                    t_logits = model(x)
                ctx = GeneratorContext(x, t_logits.float(), y, cap.inputs, targets, running_var, noise=rng)
                loss_g, values = objective(ctx)
                if not math.isfinite(loss_g.item()):
                    from ..generation import GenerationError

                    bad = [k for k, v in values.items() if not torch.isfinite(v).all()]
                    raise GenerationError(f"generator loss became {loss_g.item()} at epoch {epoch}, iteration {it} "
                                          f"(term(s): {', '.join(bad) or 'total'}); lower lr_g")
                grads = torch.autograd.grad(loss_g, gen_params)
                for p, g_ in zip(gen_params, grads):
                    p.grad = g_
                opt_g.step()
                # student step on the detached images and teacher logits (GDFQ)
                xs, tl, ys = x.detach()[mine], t_logits.detach()[mine], y[mine]
                with contextlib.nullcontext() if train_student else torch.no_grad():
                    s_logits = student(xs)
                    kd = kd_loss(s_logits, tl, cfg.temperature, cfg.kd_reduction)
                    ce = F.cross_entropy(s_logits.float(), ys)
                    loss_s = cfg.kd_weight * kd + cfg.ce_weight * ce
                if train_student:
                    opt_s.zero_grad(set_to_none=True)
                    loss_s.backward()
                    opt_s.step()
                step = {f"gen_{k}": v.item() for k, v in values.items()}
                step.update(gen_total=loss_g.item(),
                            teacher_acc_gen=(t_logits.detach().argmax(1) == y).float().mean().item())
                step.update(_rank_mean({"student_kd": kd.item(), "student_ce": ce.item(),
                                        "student_total": loss_s.item(),
                                        "student_acc_gen": (s_logits.detach().argmax(1) == ys).float().mean().item()}))
                for k, v in step.items():
                    sums[k] = sums.get(k, 0.0) + v
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(G=f"{loss_g.item():.3f}", S=f"{loss_s.item():.3f}", refresh=False)
            if act_live and epoch + 1 >= cfg.act_warmup_epochs:
                _observe_ranges(qm, None)
            train_s = time.perf_counter() - t0
            rec = {"epoch": epoch + 1, "lr_s": lr_s, "lr_g": lr_g, "student_trained": train_student,
                   "act_ranges": "ema" if act_live else "frozen"}
            rec.update({k: v / cfg.iters for k, v in sums.items()})
            if val is not None:
                r = _evaluate(qm, val, eval_bs)
                rec.update(val_top1=r["top1"], val_top5=r["top5"], val_n=r["n"])
                if best is None or r["top1"] > best["val_top1"]:
                    best = {"epoch": epoch + 1, "val_top1": r["top1"], "val_top5": r["top5"],
                            "student": _state_copy(qm)}
            epoch_s = time.perf_counter() - t0
            seconds += epoch_s
            rec.update(train_seconds=round(train_s, 2), epoch_seconds=round(epoch_s, 2),
                       iter_seconds=round(train_s / cfg.iters, 4))
            history.append(rec)
            if dctx.is_main:  # rank 0 writes the checkpoint and the log
                _io.save({"format": "dsg_viz.qat/1", "version": __version__, "threads": torch.get_num_threads(),
                          "config": asdict(cfg), "generator_objective": asdict(gcfg), "model": spec.name,
                          "checkpoint_sha256": checkpoint_sha256, "epoch": epoch + 1, "student": _state_copy(qm),
                          "generator": _state_copy(gen), "opt_s": opt_s.state_dict(), "opt_g": opt_g.state_dict(),
                          "rng": rng.get_state(), "history": history, "best": best, "seconds": seconds,
                          "margins": margins}, ckpt_path)
                with open(log_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
            run_epochs += 1
            msg = (f"epoch {epoch + 1}/{cfg.epochs}: G {rec['gen_total']:.3f}  S {rec['student_total']:.3f}  "
                   f"teacher acc on G {100 * rec['teacher_acc_gen']:.1f}%")
            if val is not None:
                msg += f"  val top-1 {rec['val_top1']:.2f}"
            log(msg + f"  ({epoch_s:.0f} s)")
    except KeyboardInterrupt:
        interrupted = True
        log(f"interrupted; {len(history)} epoch(s) checkpointed in {ckpt_path} (rerun with --resume)")
    finally:
        _observe_ranges(qm, None)
        modes.close()
        if bar is not None:
            bar.close()

    done = len(history)
    complete = done >= cfg.epochs and not interrupted
    result = {"format": "dsg_viz.qat-result/1", "version": __version__, "threads": torch.get_num_threads(),
              "model": spec.name,
              "checkpoint_sha256": checkpoint_sha256, "config": asdict(cfg), "generator_objective": asdict(gcfg),
              "quantization": qcfg.describe() + "; QAT: straight-through estimator, per-channel weight ranges "
              "recomputed every forward, activation ranges EMA(β=%g) of batch min/max for %d epoch(s) then frozen, "
              "student BN in eval mode" % (cfg.act_ema_beta, cfg.act_warmup_epochs),
              "margins": {k: (Margins.from_dict(v).layer_means() if v else None) for k, v in margins.items()},
              "complete": complete, "interrupted": interrupted, "epochs_done": done, "seconds": round(seconds, 1),
              "iter_seconds": (round(sum(h["train_seconds"] for h in history) / (done * cfg.iters), 4)
                               if done else None),
              "history": history}
    last = history[-1] if history else None
    result["final"] = ({"epoch": last["epoch"], "val_top1": last.get("val_top1"), "val_top5": last.get("val_top5")}
                       if last else None)
    result["val_selected"] = ({k: best[k] for k in ("epoch", "val_top1", "val_top5")} if best else None)
    if complete and test is not None:
        t0 = time.perf_counter()
        result["final"]["test"] = _evaluate(qm, test, eval_bs)
        if best is not None:
            if best["epoch"] == last["epoch"]:
                result["val_selected"]["test"] = result["final"]["test"]
            else:
                qb = quantize(model, qcfg).eval()
                qb.load_state_dict(best["student"])
                qb.to(device)
                result["val_selected"]["test"] = _evaluate(qb, test, eval_bs)
        if fp_reference:
            result["fp"] = {"test": evaluate(model, test, batch_size=eval_bs)}
            if val is not None:
                result["fp"]["val"] = evaluate(model, val, batch_size=eval_bs)
        result["test_eval_seconds"] = round(time.perf_counter() - t0, 1)
    if dctx.is_main:
        _io.write_text(out / RESULT, json.dumps(result, indent=1))
    return result


def qat_splits(data_root: str | None = None, val_limit: int | None = 1000, seed: int = 0):
    """Return ``(val, test)``: a fixed random ``val_limit`` subset of the validation split (the last 500 train
    images of each class; ``None`` = all 5,000) and the full CIFAR-10 test split."""
    from ..data import load_split, train_val_split

    val = train_val_split(data_root)[1]
    if val_limit is not None and val_limit < len(val):
        val = val.subset(torch.randperm(len(val), generator=torch.Generator().manual_seed(seed))[:val_limit])
    return val, load_split("test", data_root)


@torch.no_grad()
def export_generator_samples(generator: nn.Module, n: int, batch_size: int = 64, seed: int = 0,
                             labels: torch.Tensor | None = None, method: str = "generator",
                             checkpoint_sha256: str | None = None):
    """Return a :class:`~dsg_viz.generation.SampleSet` of ``n`` images [n, 3, H, W] (model input space) drawn from
    ``generator`` with uniform labels (or ``labels`` [n]), so they flow into diagnostics and calibration like any
    other sample set. The generator runs, as in training, with BN on batch statistics, on a copy (its running
    statistics are untouched)."""
    from .. import __version__
    from ..generation import SampleSet

    if n < 1 or batch_size < 2:
        raise ConfigError(f"n must be >= 1 and batch_size >= 2 (got {n}, {batch_size})")
    spec = generator.model_spec
    g = torch.Generator().manual_seed(seed)
    if labels is None:
        labels = torch.randint(0, spec.num_classes, (n,), generator=g)
    elif labels.shape != (n,):
        raise ConfigError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    gen = copy.deepcopy(generator).train()
    device = next(gen.parameters()).device
    t0 = time.perf_counter()
    imgs = []
    for s in range(0, n, batch_size):
        y = labels[s:s + batch_size]
        if len(y) == 1:  # BN in train mode needs two samples: pad and drop
            y = torch.cat([y, y])
        z = torch.randn(len(y), gen.latent_dim, generator=g)
        imgs.append(gen(z.to(device), y.to(device)).float().cpu()[:len(labels[s:s + batch_size])])
    return SampleSet(images=torch.cat(imgs), labels=labels.clone(), method=method,
                     config={"generator": generator.gen_spec.name, "output": generator.output,
                             "latent_dim": generator.latent_dim, "batch_size": batch_size},
                     seed=seed, model=spec.name, checkpoint_sha256=checkpoint_sha256, version=__version__,
                     seconds=time.perf_counter() - t0)


def qat_cell(model: nn.Module, bits: str, cfg: QATConfig | None = None, *, out: str | os.PathLike | None = None,
             data_root: str | None = None, resume: bool = True, progress: bool = False,
             checkpoint_sha256: str | None = None) -> dict:
    """Run (or resume) QAT of ``model`` at ``bits`` and return a compare-style cell.

    ``{"top1", "top5", "n"}`` are the **final** epoch's test accuracy (no selection at all); ``"val_selected"``
    holds the epoch chosen on the validation split and its test accuracy. ``cfg`` defaults to the ``cpu`` preset;
    ``out`` (default: a temporary directory) keeps the checkpoints so an interrupted cell resumes.
    """
    cfg = replace(cfg or QAT_PRESETS["cpu"], bits=bits)
    val, test = qat_splits(data_root, cfg.val_limit, cfg.seed)
    with contextlib.ExitStack() as stack:
        if out is None:
            out = stack.enter_context(tempfile.TemporaryDirectory(prefix="dsg_viz_qat_"))
        r = train_qat(model, cfg, out, val=val, test=test, resume=resume, progress=progress,
                      log=(lambda *_: None), checkpoint_sha256=checkpoint_sha256)
    if not r["complete"]:
        raise KeyboardInterrupt("QAT cell interrupted")
    fin, sel = r["final"], r["val_selected"]
    return {"top1": fin["test"]["top1"], "top5": fin["test"]["top5"], "n": fin["test"]["n"],
            "final_epoch": fin["epoch"], "val_selected": sel, "generator": cfg.generator, "epochs": cfg.epochs,
            "iters": cfg.iters, "batch_size": cfg.batch_size, "seconds": r["seconds"],
            "convention": r["quantization"]}
