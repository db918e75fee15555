"""torch.distributed on CPU: 2 gloo ranks (torchrun) against one process, same thread count (1).

Generation gives bitwise-identical sets (batch b always uses its own seed), sharded evaluation the same top-1/top-5,
QAT with a DDP student the same loss curve within fp32 tolerance at a matched global batch, and a failing rank
stops every rank with an error that names it. CUDA paths are checked by benchmarks/gpu_check.sh on a GPU machine.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("dist_worker.py")


def _run(args, tmp_path, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(WORKER.parents[1]), **(env_extra or {}))
    p = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if not torch.distributed.is_available():
        pytest.skip("this PyTorch build has no torch.distributed")
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, str(WORKER), str(out)], out)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
          str(out)], out)
    return out, json.loads((out / "res1.json").read_text()), json.loads((out / "res2.json").read_text())


def test_two_ranks_generate_the_same_images_bitwise(runs):
    out, one, two = runs
    assert two["world"] == 2 and one["world"] == 1
    a = torch.load(out / "gen1.pt", weights_only=False)
    b = torch.load(out / "gen2.pt", weights_only=False)
    assert a["images"].shape == (18, 3, 16, 16)
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["labels"], b["labels"])
    assert one["gen_total"] == two["gen_total"]  # per-batch loss curves, in batch order


def test_sharded_evaluation_equals_one_process(runs):
    _, one, two = runs
    assert one["eval"] == two["eval"] and one["eval"]["n"] == 103


def test_ddp_qat_loss_curve_matches_one_process(runs):
    _, one, two = runs
    assert len(one["qat"]) == len(two["qat"]) == 3
    for e1, e2 in zip(one["qat"], two["qat"]):
        assert e1.keys() == e2.keys()
        for k in e1:
            if k.startswith("gen_") or k == "teacher_acc_gen":  # the replicated generator step: identical
                assert e1[k] == pytest.approx(e2[k], rel=1e-6, abs=1e-7), k
            else:  # the student: gradients averaged over two half batches (fp32 summation order differs)
                assert e1[k] == pytest.approx(e2[k], rel=1e-4, abs=1e-5), k
    assert one["qat"][0]["student_total"] != one["qat"][-1]["student_total"]  # it trained


def test_a_failing_rank_fails_every_rank_by_name(runs):
    _, one, two = runs
    assert one["failure"] == "single process: boom"
    assert "rank 1 failed: ValueError: boom" in two["failure"] and "nothing was written" in two["failure"]


def test_cli_generate_under_torchrun_equals_one_process(tmp_path):
    args = ["generate", "--model", "tiny_bn", "--method", "zeroq+ce", "--num-samples", "12", "--batch-size", "4",
            "--steps", "2", "--threads", "1", "--device", "cpu", "--json"]
    _run([sys.executable, "-m", "dsg_viz", *args, "--out", str(tmp_path / "one.pt")], tmp_path)
    p = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
              "dsg_viz", *args, "--out", str(tmp_path / "two.pt")], tmp_path)
    assert p.stdout.count('"num_samples": 12') == 1  # rank 0 reports, rank 1 is silent
    a = torch.load(tmp_path / "one.pt", weights_only=False)
    b = torch.load(tmp_path / "two.pt", weights_only=False)
    assert torch.equal(a["images"], b["images"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine; "
                    "benchmarks/gpu_check.sh checks the CUDA path on a GPU machine")
def test_cuda_generate_and_evaluate(tmp_path):
    from dsg_viz import create_model, generate, preset

    m = create_model("tiny_bn").cuda()
    s = generate(m, preset("dsg", num_samples=8, batch_size=4, steps=2), progress=False)
    assert s.images.shape == (8, 3, 16, 16) and torch.isfinite(s.images).all()


def test_cli_compare_under_torchrun_equals_one_process(tmp_path, data_root):
    ckpt = str(data_root / "models" / "cifar10" / "resnet20_cifar10_jpeg.pt")
    args = ["compare", "--checkpoint", ckpt, "--data-root", str(data_root), "--sources", "zeroq", "--bits", "W4A4",
            "--seeds", "1", "--num-samples", "8", "--steps", "2", "--eval-limit", "100", "--threads", "1",
            "--device", "cpu", "--json"]
    env = {"DSG_VIZ_SAMPLE_CACHE": str(tmp_path / "cache1")}
    one = _run([sys.executable, "-m", "dsg_viz", *args, "--out", str(tmp_path / "one")], tmp_path, env)
    env = {"DSG_VIZ_SAMPLE_CACHE": str(tmp_path / "cache2")}  # the two ranks generate again, sharded
    two = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                "dsg_viz", *args, "--out", str(tmp_path / "two")], tmp_path, env)
    t1 = json.loads(one.stdout.strip().splitlines()[-1])["table"]
    t2 = json.loads(two.stdout.strip().splitlines()[-1])["table"]
    assert t1 == t2
    r1 = json.loads((tmp_path / "one" / "results.json").read_text())["cells"]
    r2 = json.loads((tmp_path / "two" / "results.json").read_text())["cells"]
    assert {k: v["top1"] for k, v in r1.items()} == {k: v["top1"] for k, v in r2.items()}
