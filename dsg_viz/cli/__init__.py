"""``dsg-viz`` command line: eval, generate, compare, demo, diagnose, margins, qat, fetch, list-models.

Each command lives in a module of this package (``core``, ``compare``, ``diagnose``, ``margins``, ``qat``) that
turns parsed options into a typed config and calls the library; library modules never see an argparse namespace.
Expected errors (bad paths, wrong checkpoint, unknown names, out-of-range or non-finite numbers, unwritable outputs,
unsafe or foreign files, NaN/Inf during optimization) print one line ``error: ...`` and exit with code 2; output
paths are checked before any work. Ctrl-C prints ``interrupted: ...`` (where, and what was kept) and exits with
code 130. ``--json`` prints one JSON object on stdout as the last line. ``docs/reliability.md`` lists the cases.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from ..errors import DsgVizError
from ._common import add_common as _add_common  # noqa: F401  (names of the old dsg_viz.cli module)
from ._common import emit as _emit  # noqa: F401
from ._common import load_model as _load_model  # noqa: F401

COMMAND_MODULES = ("core", "compare", "diagnose", "margins", "qat")


def build_parser() -> argparse.ArgumentParser:
    """Return the ``dsg-viz`` parser with every command registered."""
    import importlib

    from ._common import Parser

    p = Parser(prog="dsg-viz", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dsg-viz`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a bad option (one line, code 2) or --help (code 0): returned like every other code
        return e.code if isinstance(e.code, int) else 2
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    quiet = contextlib.nullcontext()
    try:
        from .. import distributed

        if distributed.launched():  # under torchrun: join the group; rank r computes on its own device
            from ._common import resolve_device

            ctx = distributed.init(resolve_device(getattr(args, "device", "cpu")))
            if hasattr(args, "device"):
                args.device = str(ctx.device)
            if not ctx.is_main:  # rank 0 reports; the others stay silent on stdout
                quiet = contextlib.redirect_stdout(open(os.devnull, "w"))  # noqa: SIM115
        with quiet:
            args.func(args)
    except DsgVizError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C; Interrupted says where and what was kept
        print(f"interrupted: {e}" if str(e) else "interrupted", file=sys.stderr)
        return 130
    finally:
        from .. import distributed

        distributed.shutdown()
    return 0
