"""Faults and bad input: nothing silently wrong, nothing lost, no file that runs code.

Every case reports (case, command, exit code, message, what was kept) through :func:`tests.reliability.record`;
``docs/reliability.md`` is the table generated from those reports (``benchmarks/reliability_table.py``), and each
case checks that the committed table lists it with the same exit code. Ctrl-C is injected with
``DSG_VIZ_FAULT=sigint@POINT:N`` (:mod:`dsg_viz._faults`: a real SIGINT sent by the process to itself at the N-th
pass through a point), NaN with ``nan@POINT:N``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dsg_viz import _faults
from dsg_viz.cli import main

from .conftest import JPEG_CKPT
from .reliability import DOC, OUT_ENV, doc_rows, normalize, record

# case id → (area, what the case is); the order is the table's
CASES: dict[str, tuple[str, str]] = {}


def _declare(area: str, *items: tuple[str, str]) -> None:
    for cid, what in items:
        assert cid not in CASES, cid
        CASES[cid] = (area, what)


_declare("Ctrl-C (SIGINT)",
         ("sigint-compare-generation", "Ctrl-C while `compare` generates a sample set (a separate process)"),
         ("sigint-compare-calibration", "Ctrl-C while `compare` calibrates a cell"),
         ("sigint-compare-evaluation", "Ctrl-C while `compare` evaluates a cell"),
         ("sigint-compare-reconstruction", "Ctrl-C while `compare` runs AdaRound"),
         ("sigint-generate", "Ctrl-C during `generate` (a separate process)"),
         ("partial-set-refused", "a partial (interrupted) sample set given to `diagnose`"),
         ("sigint-diagnose-generation", "Ctrl-C while `diagnose` generates its sources"),
         ("sigint-qat", "Ctrl-C during `qat`"))
_declare("NaN / Inf during optimization",
         ("nan-generate", "NaN loss during `generate`"),
         ("inf-generate-broken-checkpoint", "a checkpoint with an infinite BN mean (the loss is Inf at step 0)"),
         ("nan-compare-generation", "NaN loss while `compare` generates a set"),
         ("nan-compare-reconstruction", "NaN loss in AdaRound inside `compare`"))
_declare("Sample sets and the model they are used with",
         ("mismatch-model-zeroq", "ResNet-20 ZeroQ samples given to `diagnose` with ResNet-32"),
         ("mismatch-model-dsg", "ResNet-20 DSG samples given to `diagnose` with ResNet-32"),
         ("mismatch-checkpoint", "samples of one ResNet-20 checkpoint used with another ResNet-20 checkpoint"),
         ("mismatch-input-shape",
          "16×16 `tiny_bn` samples given to `diagnose` with ResNet-20, even with --allow-mismatch"),
         ("mismatch-allowed", "a deliberate cross-model study (`allow_mismatch=True`)"),
         ("mismatch-notebook", "`notebook_utils.quantize_sources` with samples of another model"),
         ("real-samples-any-cifar-model", "real CIFAR-10 images drawn for ResNet-20 used with ResNet-32"),
         ("one-sample-cache", "the one sample cache: key and callers"))
_declare("Files that could run code, or are damaged",
         *[(f"file-{pos}-{kind}", f"{kind} file as {what}")
           for pos, what, kinds in (
               ("samples", "`diagnose --samples`", ("garbage", "truncated", "foreign", "code")),
               ("margins-pt", "`generate --margins-file` (.pt)", ("garbage", "truncated", "foreign", "code")),
               ("margins-npy", "`generate --margins-file` (folder with m.npy/n.npy)", ("garbage", "code")),
               ("margins-npz", "`generate --margins-file` (.npz)", ("code",)),
               ("checkpoint", "`--checkpoint`", ("garbage", "truncated", "foreign", "code")),
               ("qat-checkpoint", "`qat --resume` checkpoint.pt", ("garbage", "truncated", "foreign", "code")),
               ("results", "`compare` results.json to resume", ("garbage", "truncated", "foreign")))
           for kind in kinds])
_declare("Reproducibility and writing files",
         ("determinism-same-threads", "same seed and thread count, two processes"),
         ("threads-recorded", "the thread count in every saved artifact"),
         ("atomic-write-failure", "a write that fails half-way"),
         ("one-way-to-write", "no hand-written atomic write, unsafe load or training-flag juggling left"))

# bad options: one line `error: ...`, exit code 2, checked before any work. `--checkpoint /nonexistent.pt` in a
# command shows the order: the option is refused before the (missing) checkpoint is ever opened.
NOCK = ["--checkpoint", "/nonexistent.pt"]
GEN = ["generate", "--model", "resnet20_cifar10", *NOCK, "--method", "zeroq"]
CMP = ["compare", *NOCK, "--sources", "zeroq", "--bits", "W4A4"]
DIAG = ["diagnose", *NOCK]
QAT = ["qat", "--model", "tiny_bn"]
OPTION_CASES = [
    # (id, what, argv, message regex); {tmp} = a fresh folder, {file} = a regular file in it
    ("generate-lr-nan", "`--lr nan`", GEN + ["--lr", "nan", "--out", "{tmp}/s.pt"], "--lr: must be a finite number"),
    ("generate-lr-inf", "`--lr inf`", GEN + ["--lr", "inf", "--out", "{tmp}/s.pt"], "--lr: must be a finite number"),
    ("generate-lr-huge", "`--lr 1e30`", GEN + ["--lr", "1e30", "--out", "{tmp}/s.pt"], r"--lr: must be in \(0, 10\]"),
    ("generate-lr-zero", "`--lr 0`", GEN + ["--lr", "0", "--out", "{tmp}/s.pt"], r"--lr: must be in \(0, 10\]"),
    ("generate-margin-scale-nan", "`--margin-scale nan`", GEN + ["--margin-scale", "nan", "--out", "{tmp}/s.pt"],
     "--margin-scale: must be a finite number"),
    ("generate-margin-scale-negative", "`--margin-scale -1`", GEN + ["--margin-scale", "-1", "--out", "{tmp}/s.pt"],
     "--margin-scale: must be >= 0"),
    ("generate-margin-quantile-zero", "`--margin-quantile 0`",
     GEN + ["--margin-quantile", "0", "--out", "{tmp}/s.pt"], r"--margin-quantile: must be in \(0, 1\]"),
    ("generate-margin-quantile-above-one", "`--margin-quantile 1.5`",
     GEN + ["--margin-quantile", "1.5", "--out", "{tmp}/s.pt"], r"--margin-quantile: must be in \(0, 1\]"),
    ("generate-num-samples-zero", "`--num-samples 0`", GEN + ["--num-samples", "0", "--out", "{tmp}/s.pt"],
     "--num-samples: must be >= 1"),
    ("generate-batch-size-zero", "`--batch-size 0`", GEN + ["--batch-size", "0", "--out", "{tmp}/s.pt"],
     "--batch-size: must be >= 1"),
    ("generate-steps-negative", "`--steps -1`", GEN + ["--steps", "-1", "--out", "{tmp}/s.pt"],
     "--steps: must be >= 0"),
    ("generate-steps-not-a-number", "`--steps many`", GEN + ["--steps", "many", "--out", "{tmp}/s.pt"],
     "--steps: expected an integer"),
    ("generate-seed-negative", "`--seed -1`", GEN + ["--seed", "-1", "--out", "{tmp}/s.pt"], "--seed: must be >= 0"),
    ("generate-out-png", "`--out X.png` (the grid would overwrite the samples)", GEN + ["--out", "{tmp}/s.png"],
     "must end in .pt"),
    ("generate-out-no-suffix", "`--out X` without .pt", GEN + ["--out", "{tmp}/samples"], "must end in .pt"),
    ("generate-out-folder", "`--out` an existing folder", GEN + ["--out", "{tmp}"], "is a folder"),
    ("generate-out-under-proc", "`--out` under /proc", GEN + ["--out", "/proc/dsg_viz_test/s.pt"],
     "cannot create folder"),
    ("generate-out-parent-is-file", "`--out` whose parent is a file", GEN + ["--out", "{file}/s.pt"],
     "is a file, not a folder"),
    ("compare-bits-empty", '`--bits ""`', ["compare", *NOCK, "--bits", "", "--out", "{tmp}/c"], "bits is empty"),
    ("compare-bits-malformed", "`--bits W4`", ["compare", *NOCK, "--bits", "W4", "--out", "{tmp}/c"],
     "cannot parse bit-widths"),
    ("compare-sources-empty", '`--sources ""`', ["compare", *NOCK, "--sources", "", "--out", "{tmp}/c"],
     "sources is empty"),
    ("compare-method-unknown", "`--method magic`", CMP + ["--method", "magic", "--out", "{tmp}/c"],
     "unknown quantization method"),
    ("compare-seeds-zero", "`--seeds 0`", CMP + ["--seeds", "0", "--out", "{tmp}/c"], "--seeds: must be >= 1"),
    ("compare-num-samples-zero", "`--num-samples 0`", CMP + ["--num-samples", "0", "--out", "{tmp}/c"],
     "--num-samples: must be >= 1"),
    ("compare-eval-limit-zero", "`--eval-limit 0` (used to mean all)", CMP + ["--eval-limit", "0", "--out", "{tmp}/c"],
     "--eval-limit: must be >= 1"),
    ("compare-eval-limit-negative", "`--eval-limit -5` (used to slice the split)",
     CMP + ["--eval-limit", "-5", "--out", "{tmp}/c"], "--eval-limit: must be >= 1"),
    ("compare-margin-scale-inf", "`--margin-scale inf`", CMP + ["--margin-scale", "inf", "--out", "{tmp}/c"],
     "--margin-scale: must be a finite number"),
    ("compare-recon-iters-negative", "`--recon-iters -1`", CMP + ["--recon-iters", "-1", "--out", "{tmp}/c"],
     "--recon-iters: must be >= 0"),
    ("compare-out-is-file", "`--out` an existing file", CMP + ["--out", "{file}"], "is a file; give a folder"),
    ("compare-out-under-proc", "`--out` under /proc", CMP + ["--out", "/proc/dsg_viz_test/c"], "cannot create folder"),
    ("eval-limit-zero", "`eval --limit 0`", ["eval", *NOCK, "--limit", "0"], "--limit: must be >= 1"),
    ("eval-limit-negative", "`eval --limit -3`", ["eval", *NOCK, "--limit", "-3"], "--limit: must be >= 1"),
    ("eval-threads-negative", "`--threads -1`", ["eval", *NOCK, "--threads", "-1"], "--threads: must be >= 1"),
    ("eval-threads-zero", "`--threads 0`", ["eval", *NOCK, "--threads", "0"], "--threads: must be >= 1"),
    ("diagnose-perplexity-zero", "`--perplexity 0`", DIAG + ["--perplexity", "0", "--out", "{tmp}/d"],
     "--perplexity: must be > 0"),
    ("diagnose-perplexity-nan", "`--perplexity nan`", DIAG + ["--perplexity", "nan", "--out", "{tmp}/d"],
     "--perplexity: must be a finite number"),
    ("diagnose-tsne-points-one", "`--tsne-points 1`", DIAG + ["--tsne-points", "1", "--out", "{tmp}/d"],
     "--tsne-points: must be >= 2"),
    ("diagnose-channel-negative", "`--channel -1`", DIAG + ["--channel", "-1", "--out", "{tmp}/d"],
     "--channel: must be >= 0"),
    ("diagnose-out-parent-is-file", "`--out` under a file", DIAG + ["--out", "{file}/d"], "is a file, not a folder"),
    ("qat-lr-g-nan", "`--lr-g nan`", QAT + ["--lr-g", "nan", "--out", "{tmp}/q"], "--lr-g: must be a finite number"),
    ("qat-lr-s-huge", "`--lr-s 1e30`", QAT + ["--lr-s", "1e30", "--out", "{tmp}/q"], r"--lr-s: must be in \(0, 10\]"),
    ("qat-batch-size-one", "`--batch-size 1`", QAT + ["--batch-size", "1", "--out", "{tmp}/q"],
     "--batch-size: must be >= 2"),
    ("qat-val-limit-negative", "`--val-limit -1`", QAT + ["--val-limit", "-1", "--out", "{tmp}/q"],
     "--val-limit: must be >= 0"),
    ("qat-eval-limit-zero", "`--eval-limit 0`", QAT + ["--eval-limit", "0", "--out", "{tmp}/q"],
     "--eval-limit: must be >= 1"),
    ("qat-milestones-not-numbers", "`--milestones a,b`", QAT + ["--milestones", "a,b", "--out", "{tmp}/q"],
     "--milestones 'a,b': write comma-separated epochs"),
    ("qat-out-under-proc", "`--out` under /proc", QAT + ["--out", "/proc/dsg_viz_test/q"], "cannot create folder"),
    ("margins-quantile-zero", "`margins --quantile 0`", ["margins", *NOCK, "--quantile", "0"],
     r"--quantile: must be in \(0, 1\]"),
    ("fetch-data-root-is-file", "`fetch --data-root` a file (before any download)",
     ["fetch", "--data-root", "{file}", "--no-dataset"], "is a file; give a folder"),
    ("unknown-option", "an unknown option", ["eval", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    ("unknown-model", "an unknown model", ["eval", "--model", "resnet9000"], "unknown model"),
]
_declare("Options and output paths (checked before any work)", *[(c[0], c[1]) for c in OPTION_CASES])

_NOTHING = "nothing: no work started, no file written"


@pytest.fixture(autouse=True)
def _no_fault(monkeypatch):
    """No fault plan leaks between tests."""
    monkeypatch.delenv(_faults.ENV, raising=False)
    _faults.reset("")
    yield
    _faults.reset("")


def _fault(monkeypatch, spec: str) -> None:
    monkeypatch.setenv(_faults.ENV, spec)
    _faults.reset()


def _paths(tmp_path, data_root=None):
    pairs = [(tmp_path, "<tmp>")]
    if data_root is not None:
        pairs.insert(0, (data_root, "<data>"))
    return pairs


def _command(argv, paths) -> str:
    return normalize("dsg-viz " + " ".join(shlex.quote(str(a)) for a in argv), *paths)


def _line(err: str, prefix=("error:", "interrupted:")) -> str:
    lines = [ln.strip() for ln in err.replace("\r", "\n").splitlines() if ln.strip().startswith(prefix)]
    return lines[-1] if lines else ""


def _run(argv, capsys) -> tuple[int, str]:
    """Run the CLI in this process; return (exit code, the one `error:`/`interrupted:` line). Exactly one such line
    and no traceback on stderr."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if rc != 0:
        ours = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip().startswith(("error:", "interrupted:"))]
        assert len(ours) == 1, err
    return rc, _line(err)


def _files(root: Path) -> set:
    return {p for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- options and output paths


@pytest.mark.parametrize("cid, what, argv, match", OPTION_CASES, ids=[c[0] for c in OPTION_CASES])
def test_bad_option_one_line_exit_2(cid, what, argv, match, tmp_path, capsys):
    f = tmp_path / "a_file"
    f.write_text("x")
    before = _files(tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)).replace("{file}", str(f)) for a in argv]
    rc, msg = _run(args, capsys)
    assert rc == 2 and re.search(match, msg), msg
    assert _files(tmp_path) == before  # nothing written
    assert not Path("/proc/dsg_viz_test").exists()
    record(cid, CASES, _command(args, _paths(tmp_path)), rc, normalize(msg, *_paths(tmp_path)), _NOTHING)


# --------------------------------------------------------------------------- Ctrl-C and resume

# two small comparisons of the JPEG ResNet-20 (8 samples, 2 steps, 100 test images): A = noise and ZeroQ, calibration
# only (its "W4A4,w4a4" is one column: bit widths are normalized, duplicates dropped); B = ZeroQ with AdaRound
CMP_COMMON = ["compare", "--checkpoint", "{ckpt}", "--data-root", "{data}", "--seeds", "1", "--num-samples", "8",
              "--steps", "2", "--batch-size", "8", "--eval-limit", "100", "--json"]
CMP_CONFIGS = {"A": ["--sources", "gaussian,zeroq", "--bits", "W4A4,w4a4", "--method", "calib"],
               "B": ["--sources", "zeroq", "--bits", "W4A4", "--method", "calib,adaround", "--recon-iters", "2"]}
CMP_CELLS = {"A": ["calib|gaussian|W4A4|seed0", "calib|zeroq|W4A4|seed0"],
             "B": ["calib|zeroq|W4A4|seed0", "adaround|zeroq|W4A4|seed0"]}


def _cmp_args(data_root, out, config: str = "A") -> list[str]:
    return ([a.replace("{ckpt}", str(JPEG_CKPT)).replace("{data}", str(data_root)) for a in CMP_COMMON]
            + CMP_CONFIGS[config] + ["--out", str(out)])


def _cells(path: Path) -> dict:
    """Cells of a results.json without their timings (the numbers a re-run must reproduce exactly)."""
    cells = json.loads((path / "results.json").read_text())["cells"]
    return {k: {f: v for f, v in c.items() if not f.endswith("seconds")} for k, c in cells.items()}


@pytest.fixture(scope="module")
def clean_compare(data_root, tmp_path_factory):
    """``clean_compare(config)``: the cells of one uninterrupted run of comparison A or B (its own sample cache),
    the reference every interrupted-then-resumed run must equal."""
    done = {}

    def get(config: str = "A") -> dict:
        if config not in done:
            root = tmp_path_factory.mktemp(f"clean{config}")
            old = os.environ.get("DSG_VIZ_SAMPLE_CACHE")
            os.environ["DSG_VIZ_SAMPLE_CACHE"] = str(root / "cache")
            try:
                assert main(_cmp_args(data_root, root / "out", config)) == 0
            finally:
                if old is None:
                    os.environ.pop("DSG_VIZ_SAMPLE_CACHE", None)
                else:
                    os.environ["DSG_VIZ_SAMPLE_CACHE"] = old
            done[config] = _cells(root / "out")
            assert sorted(done[config]) == sorted(CMP_CELLS[config])
        return done[config]

    return get


def _interrupted_then_resumed(cid, spec, config, expect_kept, data_root, tmp_path, monkeypatch, capsys, clean,
                              subprocess_=False):
    clean = clean(config)
    cache = tmp_path / "cache"
    monkeypatch.setenv("DSG_VIZ_SAMPLE_CACHE", str(cache))
    out = tmp_path / "out"
    argv = _cmp_args(data_root, out, config)
    if subprocess_:  # a real process receiving SIGINT, at the thread count of this one (same numbers)
        env = dict(os.environ, **{_faults.ENV: spec})
        p = subprocess.run([sys.executable, "-m", "dsg_viz", *argv, "--threads", str(torch.get_num_threads())],
                           capture_output=True, text=True, env=env, timeout=600)
        rc, msg = p.returncode, _line(p.stderr)
        assert "Traceback" not in p.stderr, p.stderr
    else:
        _fault(monkeypatch, spec)
        rc, msg = _run(argv, capsys)
        _fault(monkeypatch, "")
    assert rc == 130 and msg.startswith("interrupted: stopped while"), msg
    kept = _cells(out)
    assert sorted(kept) == sorted(expect_kept) and all(kept[k] == clean[k] for k in kept)  # only finished cells
    partial = not any(cache.glob("resnet20_cifar10/zeroq-*.pt"))
    what = (f"{len(kept)} finished cell(s) in results.json ({', '.join(sorted(kept))}); "
            + ("the partial zeroq set neither cached nor used; " if partial else "")
            + "rerunning the same command completes the table, equal to an uninterrupted run cell by cell")
    # resume: the same command, no fault
    rc2, _ = _run(argv, capsys)
    assert rc2 == 0 and _cells(out) == clean
    paths = _paths(tmp_path, data_root)
    record(cid, CASES, f"DSG_VIZ_FAULT={spec} " + _command(argv, paths), rc, normalize(msg, *paths), what)


def test_sigint_during_compare_generation_subprocess(data_root, tmp_path, monkeypatch, capsys, clean_compare):
    # gaussian (no optimization) finishes its cell; zeroq's generation is stopped at its 2nd step
    _interrupted_then_resumed("sigint-compare-generation", "sigint@generate:2", "A", ["calib|gaussian|W4A4|seed0"],
                              data_root, tmp_path, monkeypatch, capsys, clean_compare, subprocess_=True)


def test_sigint_during_compare_calibration(data_root, tmp_path, monkeypatch, capsys, clean_compare):
    # calibration batches: gaussian (1), zeroq (2)
    _interrupted_then_resumed("sigint-compare-calibration", "sigint@calibrate:2", "A", ["calib|gaussian|W4A4|seed0"],
                              data_root, tmp_path, monkeypatch, capsys, clean_compare)


def test_sigint_during_compare_evaluation(data_root, tmp_path, monkeypatch, capsys, clean_compare):
    # evaluation batches: FP (1), gaussian (2), zeroq (3)
    _interrupted_then_resumed("sigint-compare-evaluation", "sigint@evaluate:3", "A", ["calib|gaussian|W4A4|seed0"],
                              data_root, tmp_path, monkeypatch, capsys, clean_compare)


def test_sigint_during_compare_reconstruction(data_root, tmp_path, monkeypatch, capsys, clean_compare):
    # the 3rd AdaRound step (unit 2): the calib cell is finished, the adaround cell is not recorded
    _interrupted_then_resumed("sigint-compare-reconstruction", "sigint@reconstruct:3", "B", ["calib|zeroq|W4A4|seed0"],
                              data_root, tmp_path, monkeypatch, capsys, clean_compare)


def test_sigint_during_generate_subprocess(tmp_path, capsys):
    from dsg_viz.errors import DataError
    from dsg_viz.generation import SampleSet

    out = tmp_path / "s.pt"
    argv = ["generate", "--model", "tiny_bn", "--method", "zeroq", "--num-samples", "8", "--batch-size", "4",
            "--steps", "3", "--out", str(out), "--json"]
    env = dict(os.environ, **{_faults.ENV: "sigint@generate:5"})  # batch 2, after one of its 3 steps
    p = subprocess.run([sys.executable, "-m", "dsg_viz", *argv], capture_output=True, text=True, env=env, timeout=300)
    msg = _line(p.stderr)
    assert p.returncode == 130 and "Traceback" not in p.stderr, p.stderr
    part = tmp_path / "s.partial.pt"
    assert not out.exists() and part.is_file() and "s.partial.pt" in msg
    with pytest.raises(DataError, match="partial set"):
        SampleSet.load(part)
    s = SampleSet.load(part, allow_partial=True)
    assert s.interrupted and len(s) == 8 and len(s.history["total"][-1]) == 1
    record("sigint-generate", CASES, _command(argv, _paths(tmp_path)) + " (SIGINT at step 2 of batch 2)",
           p.returncode, normalize(msg, *_paths(tmp_path)),
           "OUT.partial.pt (batch 1 finished, batch 2 as it stood), refused by SampleSet.load unless "
           "allow_partial=True; OUT not written")

    # the partial set is refused where a set is used
    argv = ["diagnose", "--model", "tiny_bn", "--samples", str(part), "--sources", "", "--out", str(tmp_path / "d")]
    rc, msg = _run(argv, capsys)
    assert rc == 2 and "is a partial set" in msg
    record("partial-set-refused", CASES, _command(argv, _paths(tmp_path)), rc, normalize(msg, *_paths(tmp_path)),
           _NOTHING)


def test_sigint_during_diagnose_generation(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DSG_VIZ_SAMPLE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "d"
    argv = ["diagnose", "--model", "tiny_bn", "--sources", "zeroq", "--num-samples", "8", "--steps", "3", "--json",
            "--out", str(out)]
    _fault(monkeypatch, "sigint@generate:2")
    rc, msg = _run(argv, capsys)
    assert rc == 130 and "nothing was written" in msg and not _files(out)
    record("sigint-diagnose-generation", CASES, "DSG_VIZ_FAULT=sigint@generate:2 " + _command(argv, _paths(tmp_path)),
           rc, normalize(msg, *_paths(tmp_path)), "nothing: no report from a partial set")


def test_sigint_during_qat(tmp_path, monkeypatch, capsys):
    out = tmp_path / "q"
    argv = ["qat", "--model", "tiny_bn", "--generator", "gdfq", "--preset", "cpu", "--epochs", "3", "--iters", "2",
            "--batch-size", "4", "--warmup-epochs", "0", "--json", "--out", str(out)]
    _fault(monkeypatch, "sigint@train:5")  # iteration 1 of epoch 3: two epochs are finished
    rc, msg = _run(argv, capsys)
    assert rc == 130 and "2/3 finished epoch(s)" in msg and "--resume" in msg
    from dsg_viz import _io

    ck = _io.load(out / "checkpoint.pt")
    assert ck["epoch"] == 2
    record("sigint-qat", CASES, "DSG_VIZ_FAULT=sigint@train:5 " + _command(argv, _paths(tmp_path)), rc,
           normalize(msg, *_paths(tmp_path)), "checkpoint.pt after the last finished epoch; --resume continues it")


# --------------------------------------------------------------------------- NaN / Inf


def test_nan_during_generate(tmp_path, monkeypatch, capsys):
    out = tmp_path / "s.pt"
    argv = ["generate", "--model", "tiny_bn", "--method", "zeroq", "--num-samples", "4", "--batch-size", "4",
            "--steps", "3", "--json", "--out", str(out)]
    _fault(monkeypatch, "nan@generate:2")
    rc, msg = _run(argv, capsys)
    assert rc == 2 and "loss became nan at batch 0, step 1 (term(s): bn)" in msg and "nothing was written" in msg
    assert not _files(tmp_path)
    record("nan-generate", CASES, "DSG_VIZ_FAULT=nan@generate:2 " + _command(argv, _paths(tmp_path)), rc,
           normalize(msg, *_paths(tmp_path)), _NOTHING.split(":")[0] + ": no file written")


def test_inf_from_broken_checkpoint(tmp_path, capsys):
    from dsg_viz import create_model

    m = create_model("resnet20_cifar10")
    sd = m.state_dict()
    sd["bn1.running_mean"][0] = float("inf")
    ck = tmp_path / "broken.pt"
    torch.save({"state_dict": sd}, ck)
    argv = ["generate", "--checkpoint", str(ck), "--method", "zeroq", "--num-samples", "2", "--batch-size", "2",
            "--steps", "2", "--json", "--out", str(tmp_path / "s.pt")]
    rc, msg = _run(argv, capsys)
    assert rc == 2 and "loss became inf at batch 0, step 0 (term(s): bn)" in msg
    assert not (tmp_path / "s.pt").exists()
    record("inf-generate-broken-checkpoint", CASES, _command(argv, _paths(tmp_path)), rc,
           normalize(msg, *_paths(tmp_path)), "nothing: no file written")


@pytest.mark.parametrize("cid, spec, config, kept, match", [
    ("nan-compare-generation", "nan@generate:1", "A", ["calib|gaussian|W4A4|seed0"],
     r"loss became nan at batch 0, step 0 \(term\(s\): bn\).*while generating the zeroq samples"),
    ("nan-compare-reconstruction", "nan@reconstruct:1", "B", ["calib|zeroq|W4A4|seed0"],
     r"reconstruction loss became nan in unit 1 'conv1' at step 0 \(term: reconstruction"),
])
def test_nan_inside_compare(cid, spec, config, kept, match, data_root, tmp_path, monkeypatch, capsys, clean_compare):
    clean = clean_compare(config)
    monkeypatch.setenv("DSG_VIZ_SAMPLE_CACHE", str(tmp_path / "cache"))
    argv = _cmp_args(data_root, tmp_path / "out", config)
    _fault(monkeypatch, spec)
    rc, msg = _run(argv, capsys)
    assert rc == 2 and re.search(match, msg), msg
    assert f"{len(kept)} finished cell" in msg
    cells = _cells(tmp_path / "out")
    assert sorted(cells) == sorted(kept) and all(cells[k] == clean[k] for k in cells)
    paths = _paths(tmp_path, data_root)
    record(cid, CASES, f"DSG_VIZ_FAULT={spec} " + _command(argv, paths), rc, normalize(msg, *paths),
           f"{len(kept)} finished cell(s) in results.json; a rerun resumes from them")


# --------------------------------------------------------------------------- samples vs model


@pytest.fixture(scope="module")
def r20_sets(data_root, tmp_path_factory):
    """Tiny ZeroQ and DSG sets of the JPEG ResNet-20, saved."""
    from dsg_viz import create_model
    from dsg_viz.generation import make_samples
    from dsg_viz.models import sha256_file

    root = tmp_path_factory.mktemp("r20sets")
    m = create_model("resnet20_cifar10", str(JPEG_CKPT))
    out = {}
    for method in ("zeroq", "dsg"):
        s = make_samples(m, method, 4, batch_size=4, steps=1, progress=False, checkpoint_sha256=sha256_file(JPEG_CKPT))
        out[method] = s.save(root / f"{method}.pt", grid=False)
    return out


@pytest.mark.parametrize("cid, method, model, ckpt, match", [
    ("mismatch-model-zeroq", "zeroq", "resnet32_cifar10", "resnet32-d509ac18.th",
     "made for resnet20_cifar10 and this model is resnet32_cifar10"),
    ("mismatch-model-dsg", "dsg", "resnet32_cifar10", "resnet32-d509ac18.th",
     "made for resnet20_cifar10 and this model is resnet32_cifar10"),
    ("mismatch-checkpoint", "zeroq", "resnet20_cifar10", "resnet20-12fca82f.th", "made with checkpoint sha256"),
])
def test_samples_of_another_model_are_refused(cid, method, model, ckpt, match, r20_sets, data_root, tmp_path, capsys):
    argv = ["diagnose", "--model", model, "--checkpoint", str(data_root / "models" / "cifar10" / ckpt), "--samples",
            str(r20_sets[method]), "--sources", "", "--out", str(tmp_path / "d")]
    rc, msg = _run(argv, capsys)
    assert rc == 2 and match in msg and "--allow-mismatch" in msg, msg
    assert not _files(tmp_path)
    paths = [(r20_sets[method].parent, "<sets>"), *_paths(tmp_path, data_root)]
    record(cid, CASES, _command(argv, paths), rc, normalize(msg, *paths), _NOTHING)


def test_input_shape_mismatch_is_always_an_error(data_root, tmp_path, capsys):
    from dsg_viz import create_model
    from dsg_viz.generation import make_samples

    f = make_samples(create_model("tiny_bn"), "gaussian", 4, progress=False).save(tmp_path / "tiny.pt", grid=False)
    argv = ["diagnose", "--checkpoint", str(JPEG_CKPT), "--samples", str(f), "--sources", "", "--allow-mismatch",
            "--out", str(tmp_path / "d")]
    rc, msg = _run(argv, capsys)
    assert rc == 2 and "holds (3, 16, 16) images but resnet20_cifar10 takes (3, 32, 32)" in msg
    paths = _paths(tmp_path, data_root)
    record("mismatch-input-shape", CASES, _command(argv, paths), rc, normalize(msg, *paths), _NOTHING)


def test_mismatch_allowed_warns_and_real_samples_fit_any_cifar_model(r20_sets, data_root):
    from dsg_viz import create_model
    from dsg_viz.errors import DataError
    from dsg_viz.generation import SampleMismatchWarning, SampleSet, make_samples
    from dsg_viz.notebook_utils import quantize_sources, sample_config

    r32 = create_model("resnet32_cifar10", str(data_root / "models" / "cifar10" / "resnet32-d509ac18.th"))
    s = SampleSet.load(r20_sets["dsg"])
    with pytest.warns(SampleMismatchWarning, match="made for resnet20_cifar10") as w:
        s.check_fit(r32, allow_mismatch=True)
    record("mismatch-allowed", CASES, "SampleSet.check_fit(resnet32, allow_mismatch=True)  (diagnose --allow-mismatch)",
           "—", "warning: " + str(w[0].message).split(" (allowed")[0], "the set is used as asked")

    cfg = sample_config(4, 1, 4, sources=("zeroq",))
    with pytest.raises(DataError, match="made for resnet20_cifar10") as e:
        quantize_sources(r32, {"zeroq": SampleSet.load(r20_sets["zeroq"])}, cfg, test=None)
    record("mismatch-notebook", CASES, "notebook_utils.quantize_sources(resnet32, {'zeroq': <ResNet-20 set>}, ...)",
           "—", f"DataError: {e.value}", "nothing computed")

    real = make_samples(create_model("resnet20_cifar10"), "real", 4, data_root=str(data_root))
    real.check_fit(r32)  # the same CIFAR-10 images and normalization: no error, no warning
    record("real-samples-any-cifar-model", CASES, "SampleSet(real, drawn for resnet20).check_fit(resnet32)", "—",
           "(accepted: same images, same input normalization)", "—")


def test_one_sample_cache_keyed_on_everything(tmp_path, monkeypatch):
    """Issue 16 item 3 (done in dsg_viz.cache): one key over model, checkpoint, full config, seed, version; compare,
    the notebooks and the generation panel all go through it."""
    from dataclasses import replace

    from dsg_viz import cache, create_model
    from dsg_viz import notebook_utils as nu
    from dsg_viz.compare import CompareConfig, get_samples
    from dsg_viz.generation import MarginConfig, generate, preset

    cfg = preset("zeroq", num_samples=4, batch_size=4, steps=1)
    base = dict(model_name="tiny_bn", checkpoint_sha256="a" * 64, cfg=cfg, seed=0, version="1.0")
    keys = {cache.sample_key(**base)}
    for change in (dict(model_name="resnet20_cifar10"), dict(checkpoint_sha256="b" * 64),
                   dict(cfg=replace(cfg, lr=0.4)), dict(cfg=replace(cfg, tv_weight=0.02)),
                   dict(cfg=replace(cfg, margins=MarginConfig(scale=0.5))), dict(seed=1), dict(version="1.1")):
        keys.add(cache.sample_key(**(base | change)))
    assert len(keys) == 8  # every input changes the key

    tiny = create_model("tiny_bn")
    made = generate(tiny, cfg, progress=False)
    calls = []

    def spy(model, source, *a, **k):
        calls.append(source if isinstance(source, str) else source.method)
        return cache.CachedSamples(made, tmp_path / "x.pt", False)

    monkeypatch.setattr(cache, "get_or_generate", spy)
    get_samples(tiny, CompareConfig(model="tiny_bn", sources=("zeroq",), num_samples=4, steps=1, batch_size=4),
                "zeroq", 0, None)
    nu.cached_samples(tiny, "zeroq", nu.sample_config(4, 1, 4), 0, progress=False, log=lambda *a: None)
    from dsg_viz.widgets import GenerationPanel

    GenerationPanel(tiny, "zeroq", cache_dir=tmp_path, num_samples=4, steps=1, batch_size=4).run()
    assert calls == ["zeroq", "zeroq", "zeroq"]
    record("one-sample-cache", CASES, "cache.sample_key(...) with each input changed; compare.get_samples, "
           "notebook_utils.cached_samples, GenerationPanel.run", "—",
           "(8 distinct keys; all three callers use dsg_viz.cache.get_or_generate)", "—")


# --------------------------------------------------------------------------- files


class _Code:
    """Unpickling this creates a marker file: what a malicious file could do instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _bad_file(kind: str, path: Path, valid: Path | None, foreign, marker: Path, fmt: str = "pt") -> Path:
    if kind == "garbage":
        path.write_bytes(b"\x00\x93NUMPY garbage, not a file of this format \xff" * 3)
    elif kind == "truncated":
        data = valid.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "foreign":
        if fmt == "json":
            path.write_text(json.dumps(foreign))
        else:
            torch.save(foreign, path)
    elif kind == "code":
        if fmt == "npy":
            import numpy as np

            arr = np.empty(2, dtype=object)
            arr[0], arr[1] = 0.1, _Code(marker)
            np.save(path, arr, allow_pickle=True)
        elif fmt == "npz":
            import numpy as np

            arr = np.empty(1, dtype=object)
            arr[0] = _Code(marker)
            np.savez(path, m=arr, n=arr)
        else:
            torch.save({"images": _Code(marker), "labels": _Code(marker), "state_dict": {"w": _Code(marker)},
                        "delta": [_Code(marker)], "gamma": [], "format": "dsg_viz.qat/1"}, path)
    return path


FILE_CASES = [c for c in CASES if c.startswith("file-")]
MATCH = {"garbage": "not a readable", "truncated": "not a readable", "code": "could run code",
         "foreign": "not a dsg_viz|must hold a dict|holds no state dict|not a dsg_viz compare results"}


@pytest.mark.parametrize("cid", FILE_CASES)
def test_damaged_or_unsafe_file_in_every_position(cid, tmp_path, capsys, monkeypatch):
    from dsg_viz import create_model
    from dsg_viz.generation import make_samples
    from dsg_viz.margins import compute_margins

    monkeypatch.setenv("DSG_VIZ_SAMPLE_CACHE", str(tmp_path / "cache"))
    pos, kind = cid[len("file-"):].rsplit("-", 1)
    marker = tmp_path / "CODE_RAN"
    tiny = create_model("tiny_bn")
    work = tmp_path / "in"
    work.mkdir()
    gen = ["generate", "--model", "tiny_bn", "--method", "dsg", "--num-samples", "4", "--batch-size", "4", "--steps",
           "1", "--json", "--out", str(tmp_path / "g.pt")]
    if pos == "samples":
        valid = make_samples(tiny, "gaussian", 4, progress=False).save(work / "valid.pt", grid=False)
        f = _bad_file(kind, work / "s.pt", valid, {"foo": torch.zeros(2)}, marker)
        argv = ["diagnose", "--model", "tiny_bn", "--samples", str(f), "--sources", "", "--out", str(tmp_path / "d")]
    elif pos == "margins-pt":
        valid = work / "valid.pt"
        torch.save(compute_margins(tiny).to_dict(), valid)
        f = _bad_file(kind, work / "m.pt", valid, {"something": torch.zeros(3)}, marker)
        argv = gen + ["--margins-file", str(f)]
    elif pos == "margins-npy":
        folder = work / "margins"
        folder.mkdir()
        _bad_file(kind, folder / "m.npy", None, None, marker, fmt="npy")
        _bad_file(kind, folder / "n.npy", None, None, marker, fmt="npy")
        argv = gen + ["--margins-file", str(folder)]
    elif pos == "margins-npz":
        f = _bad_file(kind, work / "m.npz", None, None, marker, fmt="npz")
        argv = gen + ["--margins-file", str(f)]
    elif pos == "checkpoint":
        valid = work / "valid.pt"
        torch.save({"state_dict": tiny.state_dict()}, valid)
        f = _bad_file(kind, work / "ck.pt", valid, {"state_dict": {"w": "not a tensor"}}, marker)
        argv = ["eval", "--model", "tiny_bn", "--checkpoint", str(f)]
    elif pos == "qat-checkpoint":
        out = tmp_path / "q"
        out.mkdir()
        valid = work / "valid.pt"
        torch.save({"format": "dsg_viz.qat/1", "student": tiny.state_dict()}, valid)
        _bad_file(kind, out / "checkpoint.pt", valid, {"student": tiny.state_dict()}, marker)
        argv = ["qat", "--model", "tiny_bn", "--preset", "cpu", "--epochs", "1", "--iters", "1", "--batch-size", "4",
                "--resume", "--json", "--out", str(out)]
    else:  # results
        out = tmp_path / "c"
        out.mkdir()
        valid = work / "valid.json"
        valid.write_text(json.dumps({"config": {"model": "resnet20_cifar10"}, "cells": {"calib|zeroq|W4A4|seed0":
                                                                                           {"top1": 80.0}}}))
        f = _bad_file(kind, out / "results.json", valid, ["not", "a", "results", "file"], marker, fmt="json")
        argv = ["compare", *NOCK, "--sources", "zeroq", "--bits", "W4A4", "--json", "--out", str(out)]
    before = {p: p.read_bytes() for p in _files(tmp_path)}
    rc, msg = _run(argv, capsys)
    assert rc == 2 and re.search(MATCH[kind], msg), msg
    assert not marker.exists()  # no code ran
    assert {p: p.read_bytes() for p in _files(tmp_path)} == before  # the damaged file is left as it was
    kept = ("the file untouched; no code run" if kind == "code" else "the file untouched") + "; nothing written"
    record(cid, CASES, _command(argv, _paths(tmp_path)), rc, normalize(msg, *_paths(tmp_path)), kept)


# --------------------------------------------------------------------------- reproducibility, writing files


def test_same_seed_same_threads_bitwise_across_processes(tmp_path):
    from dsg_viz import create_model
    from dsg_viz.generation import SampleSet, make_samples

    out = tmp_path / "s.pt"
    argv = ["generate", "--model", "tiny_bn", "--method", "dsg", "--num-samples", "8", "--batch-size", "4", "--steps",
            "4", "--seed", "3", "--threads", "1", "--json", "--out", str(out)]
    p = subprocess.run([sys.executable, "-m", "dsg_viz", *argv], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = make_samples(create_model("tiny_bn"), "dsg", 8, seed=3, batch_size=4, steps=4, progress=False)
    finally:
        torch.set_num_threads(threads)
    there = SampleSet.load(out)
    assert there.threads == here.threads == 1 and torch.equal(there.images, here.images)
    record("determinism-same-threads", CASES, _command(argv, _paths(tmp_path)) + " vs the same in another process",
           p.returncode, "(bitwise-identical images; the set records threads=1)", "—")


def test_threads_recorded_in_every_artifact(data_root, tmp_path, clean_compare, monkeypatch, capsys):
    from dsg_viz import _io

    monkeypatch.setenv("DSG_VIZ_SAMPLE_CACHE", str(tmp_path / "cache"))
    n = torch.get_num_threads()
    rc = main(["generate", "--model", "tiny_bn", "--method", "zeroq", "--num-samples", "4", "--batch-size", "4",
               "--steps", "1", "--json", "--out", str(tmp_path / "s.pt")])
    assert rc == 0 and _io.load(tmp_path / "s.pt")["threads"] == n
    assert all(c["threads"] == n for c in clean_compare("A").values())
    rc = main(["qat", "--model", "tiny_bn", "--generator", "gdfq", "--preset", "cpu", "--epochs", "1", "--iters", "1",
               "--batch-size", "4", "--warmup-epochs", "0", "--json", "--out", str(tmp_path / "q")])
    assert rc == 0
    assert json.loads((tmp_path / "q" / "result.json").read_text())["threads"] == n
    assert _io.load(tmp_path / "q" / "checkpoint.pt")["threads"] == n
    rc = main(["diagnose", "--model", "tiny_bn", "--samples", str(tmp_path / "s.pt"), "--sources", "gaussian",
               "--num-samples", "4", "--tsne-points", "8", "--json", "--out", str(tmp_path / "d")])
    assert rc == 0 and json.loads((tmp_path / "d" / "summary.json").read_text())["meta"]["threads"] == n
    capsys.readouterr()
    record("threads-recorded", CASES, "generate, compare, qat, diagnose", 0,
           "(torch.get_num_threads() in the sample set, every results.json cell, QAT checkpoint and result, "
           "diagnose summary.json)", "—")


def test_atomic_write_failure_keeps_the_old_file(tmp_path):
    from dsg_viz import _io

    f = tmp_path / "s.pt"
    _io.save({"a": torch.ones(2)}, f)
    old = f.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full (simulated)")

    with pytest.raises(RuntimeError, match="disk full"):
        _io.save({"a": Unpicklable()}, f)
    assert f.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ["s.pt"]
    record("atomic-write-failure", CASES, "dsg_viz._io.save(obj, path) raising half-way", "—",
           "(the exception propagates)", "the previous file, byte for byte; no temporary file left")


def test_one_way_to_write_and_load():
    """Atomic writes, torch.load and training-flag save/restore each live in one helper (dsg_viz._io, _modes)."""
    pkg = Path(__file__).resolve().parents[1] / "dsg_viz"
    offenders = []
    for py in pkg.rglob("*.py"):
        rel = py.relative_to(pkg).as_posix()
        text = py.read_text(encoding="utf-8")
        for pattern, home in ((r"os\.replace\(", "_io.py"), (r"torch\.load\((?!weights_only)", "_io.py"),
                              (r"weights_only\s*=\s*False", None), (r"np\.load\(", "_io.py"),
                              (r"\.train\(\s*was", None), (r"was_training\s*=", None)):
            if re.search(pattern, text) and rel != home:
                offenders.append(f"{rel}: {pattern}")
    assert not offenders, offenders
    record("one-way-to-write", CASES, "grep dsg_viz/ for os.replace, torch.load, weights_only=False, "
           "allow_pickle=True, training-flag save/restore", "—", "(only dsg_viz/_io.py and dsg_viz/_modes.py)", "—")


def test_reliability_doc_is_current():
    """docs/reliability.md lists exactly the declared cases (regenerate: benchmarks/reliability_table.py)."""
    if os.environ.get(OUT_ENV):
        pytest.skip("benchmarks/reliability_table.py is regenerating the page")
    rows = doc_rows(DOC)
    assert set(rows) == set(CASES), (f"docs/reliability.md is stale (missing {sorted(set(CASES) - set(rows))}, extra "
                                     f"{sorted(set(rows) - set(CASES))}); regenerate it: "
                                     ".venv/bin/python benchmarks/reliability_table.py")
    assert len(CASES) >= 50
