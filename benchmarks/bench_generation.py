"""Generation throughput: images·steps per second and peak memory of the presets on ResNet-20.

Each measurement runs in its own subprocess (for a clean peak RSS); configurations alternate across repeats and
the median is reported, because these machines are shared and noisy.

    python benchmarks/bench_generation.py --methods zeroq+ce,dsg-tuned --batch-sizes 64,256 --steps 30 --repeats 3 \
        --out docs/bench_generation.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads({threads})
from dsg_viz import create_model, preset, generate
m = create_model("resnet20_cifar10", {ckpt!r})
cfg = preset({method!r}, num_samples={bs}, batch_size={bs}, steps={steps}, autocast_bf16={bf16})
generate(m, preset({method!r}, num_samples={bs}, batch_size={bs}, steps=2), progress=False)  # warm-up
t = time.perf_counter()
generate(m, cfg, progress=False)
dt = time.perf_counter() - t
print(json.dumps({{"seconds": dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--methods", default="zeroq+ce,dsg-tuned",
                   help="comma-separated presets; the ratio of the second to the first is reported")
    p.add_argument("--batch-sizes", default="64,256")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--checkpoint", default=os.path.join(os.environ.get("DSG_VIZ_DATA_ROOT", "../shared"),
                                                        "models/cifar10/resnet20_cifar10_jpeg.pt"))
    p.add_argument("--out", default=None)
    a = p.parse_args()
    configs = [(m, int(b)) for b in a.batch_sizes.split(",") for m in a.methods.split(",")]
    runs: dict = {f"{m}@{b}": [] for m, b in configs}
    for r in range(a.repeats):
        for m, b in configs:
            code = CHILD.format(threads=a.threads, ckpt=a.checkpoint, method=m, bs=b, steps=a.steps, bf16=a.bf16)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            runs[f"{m}@{b}"].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(r, m, b, runs[f"{m}@{b}"][-1], flush=True)
    res = {"steps": a.steps, "threads": a.threads, "bf16": a.bf16, "repeats": a.repeats,
           "date": time.strftime("%Y-%m-%d %H:%M"), "results": {}}
    for key, rs in runs.items():
        m, b = key.split("@")
        sec = statistics.median(x["seconds"] for x in rs)
        res["results"][key] = {"method": m, "batch_size": int(b), "median_seconds": sec,
                               "seconds_per_step": sec / a.steps, "images_steps_per_s": int(b) * a.steps / sec,
                               "peak_rss_mb": max(x["peak_rss_mb"] for x in rs),
                               "all_seconds": [x["seconds"] for x in rs]}
    methods = a.methods.split(",")
    for b in sorted({b for _, b in configs}):
        if len(methods) < 2:
            break
        z, d = res["results"].get(f"{methods[0]}@{b}"), res["results"].get(f"{methods[1]}@{b}")
        if z and d:
            res["results"][f"{methods[1]}_over_{methods[0]}@{b}"] = d["median_seconds"] / z["median_seconds"]
    print(json.dumps(res, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
