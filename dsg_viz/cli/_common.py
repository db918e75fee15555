"""Shared pieces of the ``dsg-viz`` commands: common options, the device rule, model loading, output."""

from __future__ import annotations

import argparse
import json
import math

from ..errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
DATASETS = ("cifar10", "imagenet", "synthetic")


def add_common(p: argparse.ArgumentParser, model_default: str | None = "resnet20_cifar10") -> None:
    """Options every model command takes: ``--model --checkpoint --weights --dataset --data-root --threads --device
    --json``."""
    p.add_argument("--model", default=model_default, help="registered model name (see 'dsg-viz list-models')")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint file (.th/.pt); default: <data-root>/models/<dataset>/<published file>")
    p.add_argument("--weights", default=None, metavar="PATH|random",
                   help="a torchvision state dict (.pth, read with torch.load(weights_only=True)) for ImageNet models "
                        "(resnet18, resnet50, mobilenet_v2); 'random' = random init (smoke tests). Nothing is "
                        "downloaded: see 'dsg-viz fetch --imagenet-weights'")
    p.add_argument("--dataset", default=None, choices=DATASETS,
                   help="the model's dataset (default: the model's own; a different one is an error). imagenet reads "
                        "<data-root>/val/<wnid>/*.JPEG (or <data-root>/datasets/imagenet/val)")
    p.add_argument("--data-root", default=None, help="data root (default: $DSG_VIZ_DATA_ROOT, else ./data)")
    add_threads(p)
    add_device(p)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=integer(1), default=None,
                   help="torch intra-op threads (default: all cores). Results are bitwise reproducible for the same "
                        "seed and thread count; other thread counts give slightly different numbers")


class Parser(argparse.ArgumentParser):
    """``ArgumentParser`` whose errors are one line, ``error: ...`` (exit code 2), like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def integer(lo: int | None = None, hi: int | None = None, note: str = ""):
    """Return an argparse ``type`` that accepts an integer in ``[lo, hi]`` (``None``: unbounded)."""

    def parse(text: str) -> int:
        try:
            v = int(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {_range(lo, hi)} (got {v}){note}")
        return v

    parse.__name__ = "integer"
    return parse


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False, note: str = ""):
    """Return an argparse ``type`` that accepts a finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``);
    ``nan`` and ``inf`` are refused."""

    def parse(text: str) -> float:
        try:
            v = float(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number (got {text!r})")
        if (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {_range(lo, hi, lo_open)} (got {v:g}){note}")
        return v

    parse.__name__ = "number"
    return parse


def _range(lo, hi, lo_open: bool = False) -> str:
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if lo is None:
        return f"<= {hi:g}"
    return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}]"


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N (default: auto)")


def resolve_device(name: str | None):
    """``auto``/``None`` → ``cuda`` when available else ``cpu``; ``cpu``; ``cuda`` / ``cuda:N`` (checked)."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use one of {', '.join(DEVICES)} or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {name!r}; use one of {', '.join(DEVICES)} or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s); "
                              f"use cuda:0…cuda:{torch.cuda.device_count() - 1}")
    return dev


def check_dataset(args):
    """Return the spec of ``args.model`` after checking ``--dataset`` (if given) and ``--checkpoint``/``--weights``."""
    from ..models import get_spec

    spec = get_spec(args.model)
    ds = getattr(args, "dataset", None)
    if ds and ds != spec.dataset:
        raise ConfigError(f"--dataset {ds} does not fit --model {spec.name} (dataset {spec.dataset}); pick a "
                          f"{ds} model (see 'dsg-viz list-models') or drop --dataset")
    if args.checkpoint and getattr(args, "weights", None):
        raise ConfigError("pass either --checkpoint or --weights, not both")
    return spec


def checkpoint_arg(args) -> str | None:
    """Return the checkpoint the options name: ``--checkpoint`` or ``--weights`` (``random`` included), or ``None``."""
    return args.checkpoint or getattr(args, "weights", None)


def load_model(args):
    """Build ``args.model`` from its checkpoint on ``args.device``; return ``(model, checkpoint, sha256)``.

    ``--weights PATH`` is read with ``torch.load(weights_only=True)``; ``--weights random`` gives a random init (with
    a warning); an ImageNet model without either is an error (:func:`dsg_viz.data.resolve_model_checkpoint`)."""
    from ..data import resolve_model_checkpoint
    from ..models import create_model, load_checkpoint, sha256_file

    spec = check_dataset(args)
    ckpt = resolve_model_checkpoint(spec, checkpoint_arg(args), args.data_root)
    if ckpt and getattr(args, "weights", None):
        model = load_checkpoint(create_model(args.model), ckpt, weights_only=True)
        model.checkpoint_sha256 = sha256_file(ckpt)  # as create_model(name, checkpoint) records it
    else:
        model = create_model(args.model, ckpt)
    sha = sha256_file(ckpt) if ckpt else None
    device = resolve_device(getattr(args, "device", "cpu"))
    return model.to(device), ckpt, sha


def emit(args, obj: dict, human: str) -> None:
    """Print ``obj`` as one JSON line with ``--json``, else the human-readable text."""
    if args.json:
        print(json.dumps(obj))
    else:
        print(human)


def parse_list(s: str) -> tuple[str, ...]:
    """``"a, b,,c"`` → ``("a", "b", "c")``."""
    return tuple(x.strip() for x in s.split(",") if x.strip())


def require_complete(samples, what: str, written: str = "nothing was written") -> None:
    """Raise :class:`~dsg_viz.errors.Interrupted` when ``samples`` is a partial set (Ctrl-C during generation)."""
    if getattr(samples, "interrupted", False):
        from ..errors import Interrupted

        raise Interrupted(f"generation of {what} stopped after {len(samples)} samples; the partial set is not used "
                          f"and {written}")


def resolve_method_arg(name: str) -> str:
    """Return today's name of a ``--method`` / ``--sources`` entry; a deprecated name (``zeroq-original``,
    ``zeroq+sda``, ...) gives its replacement and a one-line note on stderr."""
    import sys

    from ..generation import DEPRECATED_NAMES

    if name in DEPRECATED_NAMES:
        print(f"note: {name!r} is deprecated and will be removed in the next release; use "
              f"{DEPRECATED_NAMES[name]!r} (same settings)", file=sys.stderr)
        return DEPRECATED_NAMES[name]
    return name
