"""``diagnose``: homogenization diagnostics of sample sets."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ._common import add_common, integer, load_model, number, require_complete, resolve_method_arg


def cmd_diagnose(args) -> None:
    from ..diagnostics import metrics as M
    from ..diagnostics.report import diagnose, load_accuracy
    from .. import _io
    from ..cache import get_or_generate
    from ..generation import NOT_GIVEN, SampleSet, make_samples, preset

    _io.check_output_dir(args.out, "--out")  # before any work
    accuracy = load_accuracy(args.accuracy) if args.accuracy else None  # read and checked before any work too
    sets = {}
    for f in args.samples or []:  # read (and checked) before the model is built
        s = SampleSet.load(f)
        key = s.method if s.method not in sets else Path(f).stem
        sets[key] = s
    model, _, sha = load_model(args)
    for key, s in sets.items():
        s.check_fit(model, allow_mismatch=args.allow_mismatch, name=key)
    sources = [resolve_method_arg(x.strip()) for x in (args.sources or "").split(",") if x.strip()]
    if accuracy is not None:  # another model/checkpoint, or no source in common: an error before generating
        import warnings

        from ..diagnostics.report import check_accuracy

        names = list(dict.fromkeys([*sets, *(["real"] if args.real else []), *sources]))
        with warnings.catch_warnings():  # diagnose() warns once, below, under --allow-mismatch
            warnings.simplefilter("ignore")
            check_accuracy(accuracy, model, names, args.allow_mismatch)
    if args.real:
        sets["real"] = make_samples(model, "real", args.real, seed=args.seed, data_root=args.data_root,
                                    progress=False)
    for src in sources:
        if src in sets:
            continue
        # options not given (None) keep the preset's value; gaussian keeps its 0 steps
        overrides = {} if src == "real" else {
            "steps": args.steps if preset(src).steps and args.steps is not None else NOT_GIVEN,
            "batch_size": NOT_GIVEN if args.batch_size is None else args.batch_size}
        if src == "real":
            sets[src] = make_samples(model, src, args.num_samples, seed=args.seed, data_root=args.data_root,
                                     progress=False)
        else:  # the shared sample cache (dsg_viz.cache), as compare and the notebooks use it
            sets[src] = get_or_generate(model, src, args.num_samples, seed=args.seed, data_root=args.data_root,
                                        checkpoint_sha256=sha, progress=not args.json, **overrides).samples
        require_complete(sets[src], f"the {src} samples", f"nothing was written to {args.out}")
    layer = args.layer
    if layer is not None and layer.lstrip("-").isdigit():
        layer = int(layer)
    t0 = time.perf_counter()
    from ..data import forward_batch_size

    res = diagnose(model, sets, args.out, layer=layer, channel=args.channel, tsne_points=args.tsne_points,
                   perplexity=args.perplexity, seed=args.seed, progress=not args.json,
                   batch_size=forward_batch_size(model.spec, args.batch_size, 256), max_values=args.max_values,
                   allow_mismatch=args.allow_mismatch, accuracy=accuracy)
    if args.json:
        extra = {"accuracy": res["accuracy"]["values"]} if accuracy is not None else {}
        print(json.dumps({"out": str(args.out), "scores": res["scores"], **extra, "files": res["files"],
                          "seconds": round(time.perf_counter() - t0, 1)}))
    else:
        print(M.summary_markdown(res))
        print(f"wrote {args.out}/report.html, summary.json, summary.md and {len(res['files']) - 3} figures")


def register(sub) -> None:
    """Add ``diagnose`` to the ``dsg-viz`` subparsers."""
    q = sub.add_parser("diagnose", help="homogenization diagnostics of sample sets (figures, scores, report.html)")
    add_common(q)
    q.add_argument("--samples", nargs="*", default=None,
                   help="saved sample sets (.pt from 'dsg-viz generate'); each must have been made for --model and "
                        "its checkpoint (see --allow-mismatch)")
    q.add_argument("--allow-mismatch", action="store_true",
                   help="use sample sets made for another model or checkpoint, with a warning (a deliberate "
                        "cross-model study); a different input size is always an error")
    q.add_argument("--sources", default="real,gaussian,zeroq,dsg",
                   help="comma-separated sources (presets or real), generated or loaded from the shared sample cache "
                        "(runs/cache, $DSG_VIZ_SAMPLE_CACHE); '' for saved sets only")
    q.add_argument("--num-samples", type=integer(2), default=256)
    q.add_argument("--real", type=integer(2), default=None, metavar="N",
                   help="add N real train images (validation subset excluded) as the reference source")
    q.add_argument("--steps", type=integer(0), default=None, help="generation steps (default: each preset's)")
    q.add_argument("--batch-size", type=integer(1), default=None,
                   help="generation batch (default: each preset's); for ImageNet-size models also the images per "
                        "forward pass of the feature collection (default 32)")
    q.add_argument("--seed", type=integer(0), default=0)
    q.add_argument("--layer", default=None, help="BN layer (index or dotted name) of histogram and scatter")
    q.add_argument("--channel", type=integer(0), default=0)
    q.add_argument("--tsne-points", type=integer(2), default=2000)
    q.add_argument("--max-values", type=integer(1), default=20_000,
                   help="pooled BN-input values kept per layer and channel for W1/KL and histograms (a seeded "
                        "subsample; wide layers keep at most 2^21 values in all)")
    q.add_argument("--perplexity", type=number(0, lo_open=True), default=30.0,
                   help="t-SNE perplexity, > 0 (default 30; clipped below a third of the points)")
    q.add_argument("--accuracy", default=None, metavar="RESULTS.json",
                   help="a 'dsg-viz compare' results.json of the same model: adds each source's top-1 (mean ± std "
                        "over seeds, one row per method and bit width) to summary.json, summary.md and report.html; "
                        "checked before any work")
    q.add_argument("--out", required=True, help="report folder (checked before any work)")
    q.set_defaults(func=cmd_diagnose)
