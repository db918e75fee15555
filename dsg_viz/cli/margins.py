"""``margins``: SDA margin sanity check."""

from __future__ import annotations

from ._common import add_common, integer, load_model, number


def register(sub) -> None:
    q = sub.add_parser("margins", help="SDA margin sanity check: noise margins vs real validation-image spread")
    add_common(q)
    q.add_argument("--batch-size", type=integer(2), default=64)
    q.add_argument("--quantile", type=number(0, 1, lo_open=True), default=0.9, help="ε in (0, 1] (paper 0.9)")
    q.add_argument("--source", default="per_sample", choices=["per_sample", "batch"])
    q.add_argument("--axis", default="layer", choices=["layer", "channel"])
    q.add_argument("--real", type=integer(2), default=512, help="number of validation images for the reference")
    q.set_defaults(func=cmd_margins)


def cmd_margins(args) -> None:
    import json

    import torch

    from ..margin_study import margin_report, report_markdown
    from ..data import normalize, train_val_split

    model, _, _ = load_model(args)
    _, val = train_val_split(args.data_root)
    idx = torch.randperm(len(val), generator=torch.Generator().manual_seed(0))[:args.real]
    x = normalize(val.images[idx], model.spec.mean, model.spec.std)
    rep = margin_report(model, x, args.batch_size, args.quantile, args.source, args.axis)
    if args.json:
        print(json.dumps(rep))
    else:
        print(report_markdown(rep))
