"""Run every benchmark against pytorch-metric-learning and write docs/benchmarks.md.

Each benchmark script runs as a subprocess (``--quick`` passed on when given here); the markdown it
prints on stdout is captured, cleaned (a table printed row by row and then again in full is kept
once; its headings are nested under the section) and placed in its own section with the exact
command, its run time and a short fixed explanation of what the targets are. The header gives the
date, the machine (cores, load average before and after), torch and PML versions and the thread
setting; the footer the total run time.

    python benchmarks/run_all.py            # full (about an hour on 2 cores)
    python benchmarks/run_all.py --quick    # small sizes everywhere (minutes)
    python benchmarks/run_all.py --only step accuracy --out /tmp/bench.md

A quick (or --only) run carries forward, clearly marked, what the previous file held that this run
did not regenerate at full size (hand-written full-run sections); a full run replaces everything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Section:
    """One benchmark: its script, arguments and the fixed text explaining it."""

    key: str
    title: str
    script: str
    args: tuple[str, ...] = ()
    explanation: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def command(self, quick: bool) -> list[str]:
        return ["python", f"benchmarks/{self.script}", *self.args, *(["--quick"] if quick else [])]


SECTIONS: tuple[Section, ...] = (
    Section(
        "losses", "Loss speed", "bench_losses.py", ("--threads", "1", "--clock", "process"),
        "Forward + backward time of every deepmetric loss against its pytorch-metric-learning (PML) "
        "counterpart on identical inputs (same embeddings, labels and parameters), one thread, "
        "process CPU time. The *floor* is `F.normalize(x) @ F.normalize(x).T` summed, forward + "
        "backward: the least any cosine pair loss must do. Targets (issue 2): every shared loss at "
        "least as fast as PML; none more than 2x the floor at 512 x 512. 'values agree' checks the "
        "two losses' values (relative difference < 1e-4).",
        {"OMP_NUM_THREADS": "1"},
    ),
    Section(
        "eval", "Evaluation", "bench_eval.py", (),
        "Precision@1, R-precision and MAP@R of the same embeddings computed by "
        "`deepmetric.evaluation.evaluate_embeddings` and by PML's `AccuracyCalculator`, each in a "
        "fresh subprocess (wall time, peak resident memory); then exact k-NN scaling to a 1M "
        "gallery. Targets (issue 2): at least 2x faster than PML with at most 1/4 of its peak "
        "memory, same values to 1e-4.",
        {"OMP_NUM_THREADS": "1"},
    ),
    Section(
        "index", "Large-scale search", "bench_index.py", (),
        "Exact k-NN (torch) against faiss flat / IVF / HNSW: build time, query time, the "
        "extrapolated full leave-one-out pass, recall@10 against exact search and peak memory of a "
        "fresh process. This benchmark sets its own thread count (`--threads`, default 2).",
    ),
    Section(
        "step", "Training step", "bench_step.py", ("--threads", "1"),
        "Process CPU time of `deepmetric.training.fit`'s steady-state training step (its own loop: P x K "
        "sampling, DataLoader over per-item seeded items, decoding or the `data.cache` pixels, the model's "
        "training transform, forward, loss, backward, optimizer step, logging, checkpoints; no evaluations) "
        "against a plain PyTorch loop over images decoded once into memory that applies the same "
        "augmentation (random resized crop, flip, normalisation), same model, loss, optimizer, batch and "
        "threads, in one process, interleaved. fit / plain is the cost of everything fit adds (1.00 = "
        "nothing); 'flips only' is a loop doing less work than fit (no crop, no per-item transform). Target "
        "(issue 'training at the speed of a plain loop'): fit with `data.cache: memory` at <= 1.10x the plain "
        "loop at 128 px. Then where the time of a step goes, and the cache on three datasets.",
        {"OMP_NUM_THREADS": "1"},
    ),
    Section(
        "accuracy", "Accuracy vs pytorch-metric-learning", "bench_accuracy_vs_pml.py", ("--threads", "2"),
        "The same network (offline EfficientNet-Lite0 embedder built from one config, identical "
        "initial weights), data splits, transforms, P x K batches, image size, optimizer and number "
        "of steps, trained once by `deepmetric.training.fit` with our loss and once by PML's "
        "`MetricLossOnly` trainer with PML's loss (and miner, for multi-similarity) and "
        "`MPerClassSampler`; both last-step networks are scored on the unseen test classes by "
        "`evaluate_embeddings` (Recall@1, MAP@R). Same budget, so the columns should agree within "
        "seed noise; wall time is training only (both cores: 54 trainings must fit the hour).",
        {"OMP_NUM_THREADS": "2"},
    ),
)


def is_table_line(line: str) -> bool:
    return line.lstrip().startswith("|")


def clean_output(text: str) -> str:
    """The markdown a benchmark printed, ready to nest under a ``##`` section.

    * a table (block of consecutive ``|`` lines) whose every line appears again in one later
      table is dropped (scripts that stream rows and then print the whole table);
    * headings (``#``, ``##``, ...) become ``###`` headings;
    * runs of blank lines collapse to one; leading/trailing blank lines go.
    """
    lines = [ln.rstrip() for ln in text.splitlines()]
    blocks: list[tuple[int, int]] = []  # [start, end) of table blocks
    i = 0
    while i < len(lines):
        if is_table_line(lines[i]):
            j = i
            while j < len(lines) and is_table_line(lines[j]):
                j += 1
            blocks.append((i, j))
            i = j
        else:
            i += 1
    drop: set[int] = set()
    for b, (s, e) in enumerate(blocks):
        mine = set(lines[s:e])
        if any(mine <= set(lines[s2:e2]) for s2, e2 in blocks[b + 1:]):
            drop.update(range(s, e))
    out: list[str] = []
    for n, line in enumerate(lines):
        if n in drop:
            continue
        if line.startswith("#"):
            line = "### " + line.lstrip("#").strip()
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out)


def tables_in(text: str) -> list[str]:
    """The markdown tables (blocks of ``|`` lines) of ``text``, in order."""
    tables: list[list[str]] = []
    current: list[str] = []
    for line in text.splitlines():
        if is_table_line(line):
            current.append(line.rstrip())
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return ["\n".join(t) for t in tables]


@dataclass
class Result:
    """What one benchmark run produced."""

    section: Section
    command: str
    stdout: str
    seconds: float
    returncode: int
    stderr_tail: str = ""


def run_section(section: Section, quick: bool) -> Result:
    cmd = section.command(quick)
    env = dict(os.environ, **section.env)
    env.setdefault("PYTHONUNBUFFERED", "1")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *cmd[1:]], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    tail = "\n".join(proc.stderr.strip().splitlines()[-15:]) if proc.returncode != 0 else ""
    return Result(section, " ".join(cmd), proc.stdout, seconds, proc.returncode, tail)


def render_section(result: Result, quick: bool) -> str:
    s = result.section
    parts = [f"## {s.title}", "", s.explanation, "",
             f"Reproduce: `{result.command}` ({result.seconds:.0f} s in this run"
             f"{'; QUICK mode: small sizes, numbers are indicative only' if quick else ''})."]
    if result.returncode != 0:
        parts += ["", f"**The script failed (exit code {result.returncode})**; last lines of its error output:",
                  "", "```", result.stderr_tail or "(none)", "```"]
    body = clean_output(result.stdout)
    if body:
        parts += ["", body]
    elif result.returncode == 0:
        parts += ["", "(the script printed no table)"]
    return "\n".join(parts)


def machine_header(quick: bool, load_before: tuple[float, float, float], load_after: tuple[float, float, float],
                   threads: str, versions: dict[str, str], date: str) -> str:
    """The document's title and the machine / software description."""
    vers = ", ".join(f"{k} {v}" for k, v in versions.items())
    return "\n".join([
        "# Benchmarks",
        "",
        "Generated by `python benchmarks/run_all.py" + (" --quick" if quick else "") + "`; do not edit by hand "
        "(edit the scripts or run_all.py's section texts and regenerate).",
        "",
        f"* date: {date}",
        f"* mode: {'QUICK (small sizes, few steps; indicative only)' if quick else 'full'}",
        f"* machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}",
        f"* software: {vers}",
        f"* threads: {threads}",
        f"* load average (1, 5, 15 min) before: {', '.join(f'{x:.1f}' for x in load_before)}; "
        f"after: {', '.join(f'{x:.1f}' for x in load_after)} (a shared machine inflates wall times; "
        "CPU-time columns are less affected)",
    ])


def assemble(header: str, results: list[Result], quick: bool, total_seconds: float) -> str:
    """The whole document: header, one section per benchmark, total run time."""
    body = "\n\n".join(render_section(r, quick) for r in results)
    failed = [r.section.key for r in results if r.returncode != 0]
    footer = f"Total run time: {total_seconds / 60:.1f} min ({total_seconds:.0f} s)"
    if failed:
        footer += f"; failed: {', '.join(failed)}"
    return f"{header}\n\n{body}\n\n---\n\n{footer}.\n"


KEPT_MARK = "<!-- kept: results written before this generator; carried forward verbatim -->"
GENERATED_MARK = "Generated by `python benchmarks/run_all.py"


def kept_previous(previous: str) -> str:
    """The part of an existing docs/benchmarks.md to carry forward under a new generated file.

    A hand-written file (no generator line) is kept whole, its headings nested one level deeper;
    a generated file passes on what it kept (everything after :data:`KEPT_MARK`)."""
    if not previous.strip():
        return ""
    if KEPT_MARK in previous:
        return previous.split(KEPT_MARK, 1)[1].strip()
    if GENERATED_MARK in previous:
        return ""
    lines = []
    for line in previous.strip().splitlines():
        if line.startswith("# "):
            continue  # the old title
        lines.append("#" + line if line.startswith("#") else line)
    return "\n".join(lines).strip()


def with_kept(document: str, kept: str) -> str:
    """``document`` plus the carried-forward part, clearly marked as not regenerated."""
    if not kept:
        return document
    return (f"{document}\n## Earlier results kept from the previous docs/benchmarks.md\n\n"
            "Written before this file was generated (full-size runs by the benchmarks' authors); kept "
            "because this run did not regenerate them at full size. A full `run_all.py` run (without "
            f"`--quick`) supersedes them.\n\n{KEPT_MARK}\n\n{kept}\n")


def _versions() -> dict[str, str]:
    out = {}
    for name in ("torch", "pytorch_metric_learning", "faiss", "deepmetric"):
        try:
            mod = __import__(name)
            out[name.replace("_", "-")] = str(getattr(mod, "__version__", "?"))
        except ImportError:
            out[name] = "not installed"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    ap.add_argument("--only", nargs="+", choices=[s.key for s in SECTIONS], help="run only these sections")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--drop-previous", action="store_true",
                    help="with --quick or --only: do not carry forward the earlier full-run results of --out")
    args = ap.parse_args()
    chosen = [s for s in SECTIONS if args.only is None or s.key in args.only]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    results = []
    for section in chosen:
        print(f"running {section.key}: {' '.join(section.command(args.quick))}", file=sys.stderr, flush=True)
        result = run_section(section, args.quick)
        print(f"  {result.seconds:.0f} s, exit {result.returncode}", file=sys.stderr, flush=True)
        results.append(result)
    total = time.perf_counter() - t0
    header = machine_header(
        args.quick, load_before, os.getloadavg(),
        "each script sets its own: OMP_NUM_THREADS=1 and torch.set_num_threads(1) for losses, evaluation "
        "and the training step; accuracy and bench_index use 2 threads",
        _versions(), dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = assemble(header, results, args.quick, total)
    partial = args.quick or args.only is not None
    if partial and not args.drop_previous and args.out.is_file():
        document = with_kept(document, kept_previous(args.out.read_text()))
    args.out.write_text(document)
    print(f"wrote {args.out} ({total:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
