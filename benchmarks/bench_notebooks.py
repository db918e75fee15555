"""Time every tutorial notebook end to end, as a reader runs it, and record the numbers it reports.

Each run executes one notebook top to bottom with nbclient in **its own subprocess** (a fresh kernel), from
``notebooks/``, at ``DSG_VIZ_SETTINGS`` = ``quick`` (default) or ``paper``:

* **cold**: an empty sample cache (a new ``$DSG_VIZ_SAMPLE_CACHE`` folder), so every sample set is generated;
* **warm**: right after the cold run, on the cache it filled, so every set loads.

The decoded CIFAR-10 arrays (``~/.cache/dsg_viz``, made once per machine by the first ``load_split``) are warm in
both. ``--repeats`` cold+warm pairs per notebook (median reported); wall time and the CPU time of the subprocess and
its kernel (``RUSAGE_CHILDREN``) are recorded with the load average before and after each run, the machine's
``lscpu`` model name and flags, the thread setting and the torch version. The numbers the notebook computed
(its ``SUMMARY`` dict, read after the last cell) are recorded per settings, so the notebooks can show how far quick
is from paper (:func:`dsg_viz.notebook_utils.quick_vs_paper`).

``--cache DIR`` instead runs warm-only on an existing cache (e.g. ``runs/cache`` filled at paper settings); the
cold time is then *estimated* as the warm time plus the generation seconds recorded in every set the notebook
loaded (``made in … s`` lines), and labelled as an estimate.

    python benchmarks/bench_notebooks.py                                   # all six, quick, 3 × cold + warm
    python benchmarks/bench_notebooks.py --notebooks 00,02 --repeats 1
    python benchmarks/bench_notebooks.py --settings paper --cache runs/cache --repeats 1

Writes ``docs/bench_notebooks.json`` (merged with what is there: one entry per notebook and settings) and the
"Notebooks" section of ``docs/benchmarks.md`` (replaced in place, or appended).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NB_DIR = REPO / "notebooks"
JSON_OUT = REPO / "docs" / "bench_notebooks.json"
MD_OUT = REPO / "docs" / "benchmarks.md"
SECTION = "## Notebooks"
GOALS = {"00_quickstart": 120, "01_bn_statistics": 240, "02_zeroq_vs_dsg": 120, "03_homogenization": 240,
         "04_quantize": 120, "05_ablation_and_beyond": 240}
CELL_TIMEOUT = 3600
LOADED = re.compile(r"loaded \d+ samples from cache .*? \(made in (\d+) s")
GENERATED = re.compile(r"(\S+): generated (\d+) samples in ([\d.]+) s")


# ------------------------------------------------------------------------------------------- one run

def run_one(path: Path) -> dict:
    """Execute the notebook at ``path`` (in this process, with a fresh kernel); return what it reported."""
    import nbformat
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell

    nb = nbformat.read(path, as_version=4)
    nb.cells.append(new_code_cell('import json\nprint("__SUMMARY__" + json.dumps(globals().get("SUMMARY", {}), '
                                  'default=float))'))
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(NB_DIR)}})
    t0 = time.perf_counter()
    client.execute()
    wall = time.perf_counter() - t0
    text = "\n".join(o.get("text", "") if o.get("output_type") == "stream"
                     else o.get("data", {}).get("text/plain", "")
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    summary = {}
    for line in text.splitlines():
        if line.startswith("__SUMMARY__"):
            summary = json.loads(line[len("__SUMMARY__"):])
    errors = [o.get("ename") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    return {"wall_in_process": wall, "summary": summary, "errors": errors,
            "made_in": [int(m) for m in LOADED.findall(text)],
            "generated": [(m[0], int(m[1]), float(m[2])) for m in GENERATED.findall(text)]}


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_subprocess(name: str, settings: str, cache: Path, threads: int | None) -> dict:
    """Run one notebook in a subprocess; return wall and CPU seconds, load averages and what it reported."""
    env = dict(os.environ, DSG_VIZ_SETTINGS=settings, DSG_VIZ_SAMPLE_CACHE=str(cache), MPLBACKEND="Agg")
    env.pop("DSG_VIZ_SMOKE", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    else:
        env.pop("OMP_NUM_THREADS", None)
    load0, cpu0, t0 = os.getloadavg()[0], _children_cpu(), time.perf_counter()
    r = subprocess.run([sys.executable, __file__, "--one", str(NB_DIR / f"{name}.ipynb")], env=env,
                       capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if r.returncode != 0:
        raise SystemExit(f"{name} ({settings}) failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out.update(wall=round(wall, 1), cpu=round(cpu, 1), load=[round(load0, 2), round(os.getloadavg()[0], 2)])
    return out


# ----------------------------------------------------------------------------------------- machine

def machine() -> dict:
    import torch

    info = {"cpus": os.cpu_count(), "torch": torch.__version__, "python": sys.version.split()[0],
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, val = line.partition(":")
        if key.strip() == "Model name":
            info["model"] = val.strip()
        elif key.strip() == "Flags":
            flags = val.split()
            info["flags"] = " ".join(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4")))
    return info


# --------------------------------------------------------------------------------------------- report

def _median(xs):
    return round(statistics.median(xs), 1) if xs else None


def _fmt(x) -> str:
    return "–" if x is None else f"{x:.0f}"


def markdown(data: dict) -> str:
    """Return the "Notebooks" section of docs/benchmarks.md from the recorded JSON."""
    m = data.get("machine", {})
    lines = [SECTION, "",
             "Issue 19: every notebook's first result within minutes on a 2-core laptop. Script: "
             "`benchmarks/bench_notebooks.py` (each run: one notebook, top to bottom, nbclient, its own subprocess "
             "and kernel, from `notebooks/`); raw numbers: `docs/bench_notebooks.json`. **Cold** = an empty sample "
             "cache (every set generated), **warm** = the same run again on the cache it filled; the decoded "
             "CIFAR-10 arrays (`~/.cache/dsg_viz`) are warm in both. Goal for `quick` from a cold cache: ≤ 2 min "
             "for 00, 02, 04 and ≤ 4 min for 01, 03, 05.", "",
             f"Machine: `lscpu` \"{m.get('model', '?')}\", {m.get('cpus', '?')} CPUs, flags "
             f"`{m.get('flags', '?')}`; PyTorch {m.get('torch', '?')} (CPU capability {m.get('cpu_capability', '?')}),"
             f" Python {m.get('python', '?')}.", ""]
    for settings in ("quick", "paper"):
        rows = [(n, d[settings]) for n, d in data.get("notebooks", {}).items() if settings in d]
        if not rows:
            continue
        rec = rows[0][1]
        lines += [f"### `{settings}` settings", "",
                  f"Command: `{rec.get('command', '')}`; threads: {rec.get('threads') or 'torch default'}; "
                  f"run {rec.get('date', '')}.", ""]
        if settings == "quick":
            lines += ["| notebook | goal (cold) | cold wall s (median) | cold runs | warm wall s (median) | warm runs | "
                      "cold CPU s (median) | load average during the runs |",
                      "|---|---:|---:|---|---:|---|---:|---|"]
            for n, r in rows:
                loads = [x for run in r.get("runs", []) for x in run.get("load", [])]
                lines.append(
                    f"| {n} | {GOALS.get(n, 0) // 60} min | {_fmt(_median(r.get('cold', [])))} | "
                    f"{', '.join(_fmt(x) for x in r.get('cold', []))} | {_fmt(_median(r.get('warm', [])))} | "
                    f"{', '.join(_fmt(x) for x in r.get('warm', []))} | {_fmt(_median(r.get('cpu_cold', [])))} | "
                    + (f"{min(loads):.1f}–{max(loads):.1f}" if loads else "–") + " |")
        else:
            lines += ["| notebook | warm wall s | cold wall s (estimate: warm + the recorded generation time of "
                      "its sets) | load average |", "|---|---:|---:|---|"]
            for n, r in rows:
                loads = [x for run in r.get("runs", []) for x in run.get("load", [])]
                cold = (f"{_fmt(_median(r['cold']))} (measured)" if r.get("cold")
                        else _fmt(r.get("cold_estimate")))
                lines.append(f"| {n} | {_fmt(_median(r.get('warm', [])))} | {cold} | "
                             + (f"{min(loads):.1f}–{max(loads):.1f}" if loads else "–") + " |")
        lines.append("")
    notes = data.get("notes")
    if notes:
        lines += [notes.strip(), ""]
    return "\n".join(lines)


def write_markdown(text: str, path: Path = MD_OUT) -> None:
    """Replace the "Notebooks" section of ``path`` (up to the next ``## `` heading) with ``text``, or append it."""
    doc = path.read_text() if path.is_file() else "# Benchmarks\n"
    start = doc.find("\n" + SECTION + "\n")
    if start < 0:
        doc = doc.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        nxt = doc.find("\n## ", start + 1 + len(SECTION))
        doc = doc[:start + 1] + text.rstrip("\n") + "\n" + (doc[nxt:] if nxt >= 0 else "")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(doc)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------- main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--notebooks", default="00,01,02,03,04,05", help="comma-separated prefixes (default: all six)")
    p.add_argument("--settings", default="quick", choices=("quick", "paper"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the kernels (default: torch's)")
    p.add_argument("--cache", default=None, help="warm-only runs on this existing sample cache (cold estimated)")
    p.add_argument("--json", default=str(JSON_OUT))
    p.add_argument("--md", default=str(MD_OUT), help="the file whose 'Notebooks' section is rewritten ('' = none)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(Path(args.one))))
        return 0
    names = [n.stem for n in sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))
             if n.name[:2] in {x.strip() for x in args.notebooks.split(",")}]
    jpath = Path(args.json)
    data = json.loads(jpath.read_text()) if jpath.is_file() else {}
    data["machine"] = machine()
    command = "python benchmarks/bench_notebooks.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]))
    for name in names:
        rec = {"command": command.strip(), "threads": args.threads, "date": _dt.date.today().isoformat(),
               "runs": [], "cold": [], "warm": [], "cpu_cold": [], "cpu_warm": []}
        for i in range(args.repeats):
            if args.cache:
                r = run_subprocess(name, args.settings, Path(args.cache), args.threads)
                rec["runs"].append(dict(r, kind="warm"))
                rec["warm"].append(r["wall"])
                rec["cpu_warm"].append(r["cpu"])
                rec["cold_estimate"] = round(_median(rec["warm"]) + sum(r["made_in"]), 1)
                print(f"{name} {args.settings} warm {r['wall']:.0f} s (cpu {r['cpu']:.0f} s, load {r['load']}); "
                      f"its sets were made in {sum(r['made_in'])} s", flush=True)
            else:
                cache = Path(tempfile.mkdtemp(prefix=f"bench_nb_{name[:2]}_"))
                try:
                    for kind in ("cold", "warm"):
                        r = run_subprocess(name, args.settings, cache, args.threads)
                        rec["runs"].append(dict(r, kind=kind))
                        rec[kind].append(r["wall"])
                        rec[f"cpu_{kind}"].append(r["cpu"])
                        print(f"{name} {args.settings} {kind} #{i + 1}: {r['wall']:.0f} s wall, {r['cpu']:.0f} s "
                              f"cpu, load {r['load']}", flush=True)
                finally:
                    shutil.rmtree(cache, ignore_errors=True)
            rec["summary"] = rec["runs"][-1]["summary"]
            data.setdefault("notebooks", {}).setdefault(name, {})[args.settings] = rec
            tmp = jpath.with_name(jpath.name + ".tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, jpath)
    if args.md:
        write_markdown(markdown(data), Path(args.md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
