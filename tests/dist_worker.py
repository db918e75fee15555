"""Worker for tests/test_distributed.py: run under ``torchrun --nproc_per_node 2`` (2 gloo ranks) or as one plain
process; writes what it computed to OUT (rank 0 only) so the test can compare the two runs."""

import json
import sys
from pathlib import Path

import torch

from dsg_viz import create_model, distributed, generate, preset
from dsg_viz.data import Split
from dsg_viz.evaluate import evaluate
from dsg_viz.qat import qat_preset, train_qat

torch.set_num_threads(1)
out = Path(sys.argv[1])
ctx = distributed.init("cpu")
model = create_model("tiny_bn")
res = {"world": ctx.world}

# generation: 5 batches of 4 over the ranks (rank 0 gets 0, 2, 4; rank 1 gets 1, 3)
s = generate(model, preset("dsg", num_samples=18, batch_size=4, steps=3), seed=7, progress=False)
res["gen_total"] = s.history["total"]

# evaluation: 103 random images (uneven slices)
g = torch.Generator().manual_seed(0)
split = Split(torch.randint(0, 256, (103, 3, 16, 16), dtype=torch.uint8, generator=g),
              torch.randint(0, 4, (103,), generator=g))
res["eval"] = evaluate(model, split, batch_size=10)

# QAT: matched global batch of 8 (4 per rank), student by DDP, generator replicated
cfg = qat_preset("cpu", generator="dsg", bits="W4A4", epochs=3, iters=2, batch_size=8, warmup_epochs=0)
r = train_qat(model, cfg, out / f"qat{ctx.world}", progress=False, log=lambda *_: None, fp_reference=False)
res["qat"] = [{k: v for k, v in h.items() if k.startswith(("gen_", "student_", "teacher_"))} for h in r["history"]]

# a failing rank: every rank stops with an error naming it
try:
    distributed.run_everywhere(lambda: (_ for _ in ()).throw(ValueError("boom")) if ctx.rank == ctx.world - 1 else 1)
    res["failure"] = None
except distributed.DistributedError as e:
    res["failure"] = str(e)
except ValueError as e:
    res["failure"] = f"single process: {e}"
if ctx.is_main:
    s.save(out / f"gen{ctx.world}.pt", grid=False)
    (out / f"res{ctx.world}.json").write_text(json.dumps(res))
distributed.shutdown()
