"""Every benchmark in one run (``make bench``): the cost measurements and quick modes of the accuracy ones.

    .venv/bin/python benchmarks/bench.py [--quick] [--only overhead scaling ...] [--no-results] [--out benchmarks/out]

Each benchmark runs in its own process (no state or memory carried from one to the next) and writes
``<out>/<name>.json``; this script adds ``<out>/bench.json`` (date, machine, library versions, every
command, its wall time and its figures) and appends a dated section to HISTORY.md (the log) with the same;
RESULTS.md is built from the committed runs in results/ by report.py.
``--quick`` also runs the cost benchmarks in their smoke modes (a check that everything runs).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import HISTORY, machine, versions

HERE = Path(__file__).resolve().parent

# name, title, script, arguments: fewer rounds than the scripts' defaults and the accuracy benchmarks in their
# quick modes, so that the whole run takes about 30 minutes on 2 cores (mixed_batches about 10 of them)
STEPS = [
    ("overhead", "Inference overhead vs the bare model", "overhead.py", ["--repeats", "5"]),
    ("train_cost", "Training step cost vs PEFT LoRA", "train_cost.py", ["--repeats", "3"]),
    ("scaling", "Cost against sequence length, batch size and adapted heads", "scaling.py", ["--repeats", "2"]),
    ("lofit_vs_peft", "LoFiT vs PEFT, quick mode", "lofit_vs_peft.py", ["--quick"]),
    ("soft_injection_vs_icl", "Soft injection vs ICL, quick mode", "soft_injection_vs_icl.py", ["--quick"]),
    ("zerotuning_classification", "ZeroTuning on classification, quick mode", "zerotuning_classification.py", ["--quick"]),
    ("mixed_batches", "Mixed adapter batches, quick mode with 1,000 adapters", "mixed_batches.py", ["--quick", "--adapters", "1000"]),
]
COST_STEPS = {"overhead", "train_cost", "scaling"}


def report(stdout: str) -> str:
    """What a benchmark prints from its last ``# title`` line on: the heading, the settings and the table."""
    lines = stdout.rstrip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("# ")]
    return "\n".join(lines[starts[-1]:]) if starts else "\n".join(lines[-30:])


def shown(path: Path) -> str:
    """``path`` as a command in RESULTS should show it: relative to the checkout when inside it."""
    return str(path.relative_to(HERE.parent)) if path.is_relative_to(HERE.parent) else str(path)


def run_step(name: str, script: str, arguments: list[str], out: Path) -> dict:
    """Run one benchmark in a fresh process, echoing its output; its command, wall time, report and JSON."""
    target = out / f"{name}.json"
    command = [sys.executable, script, *arguments, "--json", str(target)]
    line = f"python benchmarks/{script} {' '.join([*arguments, '--json', shown(target)])}"
    print(f"\n=== {line}", flush=True)
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=HERE, stdout=subprocess.PIPE, text=True, bufsize=1)
    captured = []
    for line in process.stdout:
        print(line, end="", flush=True)
        captured.append(line)
    code = process.wait()
    seconds = time.perf_counter() - start
    figures = json.loads(target.read_text()) if code == 0 and target.exists() else None
    return {"command": line, "seconds": round(seconds, 1), "returncode": code, "report": report("".join(captured)),
            "figures": figures}


def results_section(stamp: str, runs: dict[str, dict], titles: dict[str, str], facts: dict, command: str) -> str:
    lines = [f"\n## make bench, {stamp} — one run each (written by benchmarks/bench.py)\n",
             f"Command: `{command}`  ",
             f"Machine: {facts['machine']}  ",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in facts["versions"].items()) + "  ",
             f"Total wall time: {facts['seconds'] / 60:.1f} min; figures as JSON in `{facts['out']}/`.\n"]
    for name, run in runs.items():
        status = "" if run["returncode"] == 0 else f" — FAILED (exit {run['returncode']})"
        lines.append(f"### {titles[name]}{status}\n")
        lines.append(f"Command: `{run['command']}` ({run['seconds'] / 60:.1f} min)\n")
        body = run["report"].splitlines()
        if body and body[0].startswith("# "):
            body = body[1:]
        lines.append("\n".join(body).strip() + "\n")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the cost benchmarks in their smoke modes too")
    parser.add_argument("--only", nargs="+", choices=[name for name, *_ in STEPS], help="run these benchmarks only")
    parser.add_argument("--out", type=Path, default=HERE / "out", help="where the JSON files go")
    parser.add_argument("--no-results", dest="results", action="store_false", help="do not append to HISTORY.md")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M %Z")
    began = time.perf_counter()
    runs, titles = {}, {}
    for name, title, script, arguments in STEPS:
        if args.only and name not in args.only:
            continue
        quick = ["--quick"] if args.quick and name in COST_STEPS else []
        runs[name], titles[name] = run_step(name, script, [*arguments, *quick], out), title
    facts = {"date": stamp, "machine": machine(), "versions": versions(), "seconds": round(time.perf_counter() - began, 1),
             "out": shown(out)}
    command = "python benchmarks/bench.py " + " ".join(sys.argv[1:])
    (out / "bench.json").write_text(json.dumps({**facts, "command": command, "runs": runs}, indent=1))
    if args.results:
        with HISTORY.open("a") as handle:
            handle.write(results_section(stamp, runs, titles, facts, command.strip()))
    print(f"\nmake bench: {len(runs)} benchmarks in {facts['seconds'] / 60:.1f} min; {out / 'bench.json'}"
          + ("; HISTORY.md section appended" if args.results else ""))
    failed = [name for name, run in runs.items() if run["returncode"] != 0]
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
