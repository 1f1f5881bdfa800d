"""Shared benchmark helpers: the machine line, markdown tables, mean [min–max] over seeds."""

from __future__ import annotations

import os
import platform
import random
import shlex
import sys
from pathlib import Path
from typing import Callable, Sequence

import torch

# The benchmarks read the reference data beside the checkout (an installed headwise never guesses it).
REFERENCE_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if REFERENCE_DATA.is_dir():
    os.environ.setdefault("HEADWISE_DATA", str(REFERENCE_DATA))

def apply_quick(args, quick: dict, argv=None):
    """With ``--quick``: the benchmark's small settings (named in its --help), so a run takes minutes; a flag
    given on the command line keeps its value (``--quick --adapters 1000``)."""
    if getattr(args, "quick", False):
        given = {word.split("=")[0] for word in (sys.argv[1:] if argv is None else argv) if word.startswith("--")}
        for name, value in quick.items():
            if f"--{name.replace('_', '-')}" not in given:
                setattr(args, name, value)
    return args


def quick_help(quick: dict) -> str:
    """The --quick help text, naming the settings (escaped for argparse's %-formatting)."""
    return ("minutes, not hours: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in quick.items())).replace("%", "%%")


RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HISTORY = Path(__file__).resolve().parent / "HISTORY.md"
RESULTS_JSON = Path(__file__).resolve().parent / "results"  # the committed runs RESULTS.md is built from


def publish(title: str, settings: str, table: str, args, footer: str = "", headline: list[dict] | None = None,
            **figures) -> None:
    """Print a benchmark's report (``# title``, its settings, the table); with ``--json`` write it whole (command,
    date, machine, versions, the text, ``headline`` rows and ``figures``: what ``report.py`` builds RESULTS.md
    from); with ``--append`` add it to HISTORY.md, the dated log."""
    import time

    body = f"{settings}\n\n{table}" + (f"\n\n{footer}" if footer else "")
    print(f"\n# {title} ({machine()})\n\n{body}")
    if getattr(args, "json", None):
        write_json(args.json, title=title, settings=settings, body=body, headline=headline or [], **figures)
    if getattr(args, "append", False):
        with HISTORY.open("a") as handle:
            handle.write(f"\n## {title} ({time.strftime('%Y-%m-%d')})\n\nCommand: `{command_line()}`  \n"
                         f"Machine: {machine()}  \n{body}\n")


def command_line() -> str:
    """The command that is running, as RESULTS shows it (the script relative to the checkout)."""
    script = Path(sys.argv[0]).resolve()
    root = Path(__file__).resolve().parent.parent
    shown = script.relative_to(root) if script.is_relative_to(root) else script
    return shlex.join(["python", str(shown), *sys.argv[1:]])  # quoted: the line runs as shown


def versions() -> dict[str, str]:
    """Python's and the main libraries' versions."""
    from importlib import metadata

    found = {"python": platform.python_version()}
    for name in ("headwise", "torch", "transformers", "peft", "accelerate", "safetensors", "huggingface_hub"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def write_json(path: Path, **payload) -> None:
    """A run as JSON, with the command, the date, the machine and the versions, for report.py and other tools."""
    import json
    import time

    payload = {"command": command_line(), "date": time.strftime("%Y-%m-%d"), "machine": machine(), "versions": versions(),
               **payload}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=1, default=str))


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_spread(values, digits: int = 2) -> str:
    """``mean [min–max]`` of per-seed values (a single value is marked as one draw)."""
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{digits}f} (1 seed)"
    return f"{mean:.{digits}f} [{min(values):.{digits}f}–{max(values):.{digits}f}]"


def seed_note(seeds) -> str:
    return f"Mean [min–max] over seeds {', '.join(map(str, seeds))} (each seed draws the split, the initialisation and the batch order)."


PLOTS = Path(__file__).resolve().parent / "plots"


def pyplot():
    """matplotlib's pyplot on the file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, name: str) -> Path:
    """Save ``fig`` as benchmarks/plots/<name> and close it."""
    fig.tight_layout()
    PLOTS.mkdir(exist_ok=True)
    path = PLOTS / name
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def interleaved_ratios(runs: dict[str, Callable[[], float]], reference: str, repeats: int, seed: int = 0,
                       warmup: int = 2) -> dict[str, list[float]]:
    """Time every run once per round in a shuffled order (after ``warmup`` calls each); per round, each
    run's time over ``reference``'s time in the same round. A run returns its own elapsed seconds."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    rng = random.Random(seed)
    ratios = {name: [] for name in runs if name != reference}
    for _ in range(repeats):
        order = list(runs)
        rng.shuffle(order)
        times = {name: runs[name]() for name in order}
        for name in ratios:
            ratios[name].append(times[name] / times[reference])
    return ratios


def median(values) -> float:
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def bootstrap_median(values, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the median."""
    rng = random.Random(seed)
    medians = sorted(median(rng.choices(values, k=len(values))) for _ in range(draws))
    return medians[int(0.025 * draws)], medians[int(0.975 * draws)]


# -- any model: the same flags on every benchmark ------------------------------------------------------
DTYPES = ("float32", "bfloat16", "float16")


def add_model_arguments(parser, batch_size: int = 8, attn_implementation: str = "sdpa") -> None:
    """``--model --device --dtype --attn-implementation --batch-size``: run a benchmark on any decoder, not only
    the bundled SmolLM2-135M-Instruct (a bundled name, a Hub id or a local folder)."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", default="smollm2-135m-instruct", help="bundled name, Hub id or local folder of the base model")
    group.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1, mps ...")
    group.add_argument("--dtype", default="float32", choices=DTYPES, help="the base model's dtype")
    group.add_argument("--attn-implementation", default=attn_implementation, choices=["eager", "sdpa", "flash_attention_2"])
    group.add_argument("--batch-size", type=int, default=batch_size, help="rows per evaluation (and training) batch")


def load_model(args, **overrides):
    """``(model, tokenizer)`` as the model flags say, on ``--device`` in eval mode; ``overrides`` replace flags
    (``attn_implementation="eager"``)."""
    import headwise

    options = {"dtype": getattr(torch, args.dtype), "attn_implementation": args.attn_implementation, **overrides}
    model, tokenizer = headwise.load_base_model(args.model, **options)
    return model.to(args.device).eval(), tokenizer


def model_note(args, **overrides) -> str:
    """The settings line's model part: ``model, dtype, attention, device``."""
    attention = overrides.get("attn_implementation", args.attn_implementation)
    return f"{args.model}, {args.dtype}, {attention}, {args.device}"


# -- paired differences -----------------------------------------------------------------------------
def paired_bootstrap(method: Sequence[Sequence[float]], baseline: Sequence[Sequence[float]], draws: int = 2000,
                     seed: int = 0) -> dict:
    """Mean of ``method`` − ``baseline`` over groups (a task at a seed) of paired per-item scores, each group
    weighted equally, with a 95% interval from resampling the items within every group (the same items for both)."""
    import numpy as np

    if len(method) != len(baseline) or any(len(a) != len(b) for a, b in zip(method, baseline)):
        raise ValueError("paired_bootstrap needs the same items for the method and the baseline in every group")
    rng = np.random.default_rng(seed)
    differences = [np.asarray(a, float) - np.asarray(b, float) for a, b in zip(method, baseline)]
    means = np.zeros(draws)
    for group in differences:
        picks = rng.integers(0, len(group), size=(draws, len(group)))
        means += group[picks].mean(1)
    means /= len(differences)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"difference": float(np.mean([g.mean() for g in differences])), "ci95": [float(low), float(high)],
            "method_score": float(np.mean([np.mean(a) for a in method])),
            "baseline_score": float(np.mean([np.mean(b) for b in baseline])),
            "groups": len(differences), "items": int(sum(len(g) for g in differences))}


def headline_row(benchmark: str, method: str, baseline: str, metric: str, figure: dict, scope: str) -> dict:
    """One row of RESULTS.md's headline table: a method against its baseline, from ``paired_bootstrap``."""
    return {"benchmark": benchmark, "method": method, "baseline": baseline, "metric": metric, "scope": scope, **figure}


def interval(figure: dict, digits: int = 3, scale: float = 1.0) -> str:
    """``+0.123 [0.050, 0.190]``: a paired difference and its 95% interval."""
    low, high = (scale * v for v in figure["ci95"])
    return f"{scale * figure['difference']:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


# -- resuming a long run: each task and seed's result kept as it finishes ----------------------------------------
# What may change between sessions: where things go, and which results are wanted (tasks, seeds, ZeroTuning's
# initial tokens: its results are kept under "<set> (<initial> first)", so each is computed alone).
RESUME_IGNORES = ("resume", "json", "out", "append", "quick", "tasks", "seeds", "initial_tokens")


def add_run_arguments(parser, quick: dict, resume: bool = False) -> None:
    """The flags the accuracy benchmarks share: --out, --append, --quick (``quick``'s settings), --json, the model
    flags and, with ``resume``, --resume."""
    parser.add_argument("--out", default=str(PLOTS), help="where the plots go")
    parser.add_argument("--append", action="store_true", help="append the report to benchmarks/HISTORY.md")
    parser.add_argument("--quick", action="store_true", help=quick_help(quick))
    parser.add_argument("--json", type=Path, help="write the run (report, splits, per-item scores) here")
    add_model_arguments(parser)
    if resume:
        add_resume_argument(parser)


def add_resume_argument(parser) -> None:
    parser.add_argument(
        "--resume", type=Path,
        help="keep each task and seed's result in this file (JSON lines) as it finishes and skip those already there: "
             "a run interrupted, or split over sessions (--seeds 0, then --seeds 0 1 2), goes on where it stopped; "
             "refused if the file was written with other settings")


class ResultCache:
    """Per (task, seed) results of one run's settings, appended to ``path`` (none: nothing kept). Results go
    through JSON both ways, so a resumed run and a fresh one build their tables from the same values."""

    def __init__(self, path: Path | None, args) -> None:
        import json

        self.path, self.done, self.reused, self.computed = path, {}, 0, 0
        settings = json.loads(json.dumps({k: v for k, v in sorted(vars(args).items()) if k not in RESUME_IGNORES}, default=str))
        if path is None:
            return
        if path.exists() and path.stat().st_size:
            lines = path.read_text().splitlines()
            try:
                header = json.loads(lines[0])
                entries = [json.loads(line) for line in lines[1:] if line.strip()]
            except json.JSONDecodeError as error:
                raise SystemExit(f"--resume {path}: not a results file this benchmark wrote ({error}); pass a new file")
            written = {k: v for k, v in header.get("settings", {}).items() if k not in RESUME_IGNORES}
            if written != settings:
                changed = sorted(k for k in set(settings) | set(written) if settings.get(k) != written.get(k))
                raise SystemExit(f"--resume {path} was written with other settings ({', '.join(changed)}): give the same "
                                 "flags, or a new file")
            self.done = {(e["task"], e["seed"]): e["result"] for e in entries}
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"settings": settings}) + "\n")

    def time_note(self, minutes: float) -> str:
        """'12 min', or what the time covers when some results were read back from the file."""
        if not self.reused:
            return f"{minutes:.0f} min"
        if not self.computed:
            return f"all {self.reused} task-seed results read back from --resume's file (computed in earlier invocations)"
        return (f"{minutes:.0f} min for {self.computed} of {self.computed + self.reused} task-seed results (the others read "
                f"back from --resume's file, computed in earlier invocations)")

    def run(self, task: str, seed: int, compute: Callable[[], dict]) -> dict:
        """The result of ``task`` at ``seed``: from the file if it is there, else ``compute()``'s, then kept."""
        import json

        if (task, seed) in self.done:
            self.reused += 1
            return self.done[(task, seed)]
        self.computed += 1
        result = json.loads(json.dumps(compute()))
        if self.path is not None:
            with self.path.open("a") as handle:
                handle.write(json.dumps({"task": task, "seed": seed, "result": result}) + "\n")
        self.done[(task, seed)] = result
        return result
