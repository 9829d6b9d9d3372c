"""Web archive build time: 500 generated issues (the sample issue's text, varied titles, tags,
numbers and dates), all recorded as sent in a real ledger.

    python bench/site.py [--issues 500] [--runs 3]

Prints, as medians of `--runs` real `spark-mail site build` processes (Python start-up
included) on this machine:
- cold: no site yet; target under 10 s;
- incremental: one issue's text changed since the last build (the steady state: the build
  before has run too); target under 1 s;
- no change: nothing to do but read the ledger, hash the files and swap the folders;
- incremental, in process: the same without starting Python (what the builder itself takes);
and, measured in the same run as baselines: reading and parsing every issue (front matter +
Markdown, the least a cold build must do), reading and hashing every issue file (the least an
incremental build must do) and `spark-mail --version` (the start-up any command pays), with
each figure's ratio to its baseline. The machine is shared: compare the ratios across runs.
Each figure is given twice: wall time and CPU time (user + sys of the process and its
children: what the build costs whatever else the machine is doing); the ratios are of CPU
times.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bytecode import compile_spark_mail

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "issues" / "2025-01-20-engineering-leadership.md"
TAGS = ["leadership", "engineering", "management", "hiring", "product", "architecture",
        "career", "culture", "testing", "devops", "security", "data"]  # fmt: skip
TARGETS = {"cold": 10.0, "incremental": 1.0}


def make_newsletter(root: Path, count: int) -> list[Path]:
    """A newsletter with `count` issues, every one recorded as sent."""
    from spark_mail.config import load_settings
    from spark_mail.ledger import open_ledger

    (root / "issues").mkdir(parents=True)
    settings_text = (REPO / "spark-mail.toml").read_text(encoding="utf-8")
    (root / "spark-mail.toml").write_text(
        'site_url = "https://tinybigspark.com"\n' + settings_text, encoding="utf-8"
    )
    front, body = SAMPLE.read_text(encoding="utf-8").split("\n---\n", 1)
    start = dt.date(2015, 1, 5)
    paths = []
    for n in range(1, count + 1):
        day = start + dt.timedelta(days=7 * n)
        tags = ", ".join(TAGS[(n + k * 5) % len(TAGS)] for k in range(3))
        text = (
            front.replace('title: "Engineering Leadership', f'title: "Issue {n}: Engineering')
            .replace("date: 2025-01-20", f"date: {day.isoformat()}")
            .replace("number: 42", f"number: {n}")
            .replace("tags: [leadership, engineering, management]", f"tags: [{tags}]")
        )
        path = root / "issues" / f"{day.isoformat()}-issue-{n}.md"
        path.write_text(f"{text}\n---\n{body}", encoding="utf-8")
        paths.append(path)
    settings = load_settings(root, env={})
    with open_ledger(settings) as ledger:
        for path in paths:
            when = dt.datetime.combine(dt.date.fromisoformat(path.name[:10]), dt.time(12), dt.UTC)
            ledger.claim(path.stem, "bench", "outbox", "send", when)
            ledger.mark_sent(path.stem, when)
    return paths


Timing = tuple[float, float]  # (wall, CPU) seconds


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_run(args: list[str], cwd: Path | None = None) -> Timing:
    """Run a process to its end: its wall time and CPU time (with its own children's)."""
    start, cpu = time.perf_counter(), children_cpu()
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start, children_cpu() - cpu


def site_build(root: Path) -> Timing:
    return timed_run([sys.executable, "-m", "spark_mail", "site", "build"], cwd=root)


def start_up() -> Timing:
    """The fixed cost of any spark-mail command: start Python, import, answer --version."""
    return timed_run([sys.executable, "-m", "spark_mail", "--version"])


def process_cpu() -> float:
    """CPU time of this process and of the children it has waited for (the build's workers)."""
    return time.process_time() + children_cpu()


def median(timings: list[Timing]) -> Timing:
    return statistics.median(t[0] for t in timings), statistics.median(t[1] for t in timings)


def in_process(root: Path, changed: Path) -> Timing:
    """An incremental build without the process start: what the builder itself takes."""
    from spark_mail.config import load_settings
    from spark_mail.site import build_site

    settings = load_settings(root, env={})
    build_site(settings)  # imports, warm caches
    changed.write_text(changed.read_text() + "\nOne line more, in process.\n")
    start, cpu = time.perf_counter(), process_cpu()
    build_site(settings)
    return time.perf_counter() - start, process_cpu() - cpu


def parse_all(paths: list[Path]) -> Timing:
    from spark_mail.issue import load_issue
    from spark_mail.render import markdown as md

    start, cpu = time.perf_counter(), time.process_time()
    for path in paths:
        md.split_blocks(md.parse(load_issue(path).body))
    return time.perf_counter() - start, time.process_time() - cpu


def hash_all(paths: list[Path]) -> Timing:
    start, cpu = time.perf_counter(), time.process_time()
    for path in paths:
        hashlib.sha256(path.read_bytes()).hexdigest()
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issues", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    opts = parser.parse_args()
    print(compile_spark_mail())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "newsletter"
        paths = make_newsletter(root, opts.issues)
        parse_all(paths[:5])  # load the libraries before timing the baselines
        baselines = {
            "parse": median([parse_all(paths) for _ in range(opts.runs)]),
            "hash": median([hash_all(paths) for _ in range(opts.runs)]),
            "start": median([start_up() for _ in range(opts.runs)]),
        }
        cold: list[Timing] = []
        incremental: list[Timing] = []
        unchanged: list[Timing] = []
        for run in range(opts.runs):
            for folder in ("site", ".site.previous"):
                shutil.rmtree(root / folder, ignore_errors=True)
            cold.append(site_build(root))
            site_build(root)  # from here on a build has its predecessor's to start from
            changed = paths[run * 7 % len(paths)]
            changed.write_text(changed.read_text() + f"\nOne more line ({run}).\n")
            incremental.append(site_build(root))
            unchanged.append(site_build(root))
        pages = sum(1 for p in (root / "site").rglob("*") if p.is_file())
        builder = median([in_process(root, paths[-1 - n]) for n in range(opts.runs)])
    figures = {
        "cold": (median(cold), "parse"),
        "incremental": (median(incremental), "start"),
        "no change": (median(unchanged), "start"),
        "incremental, in process": (builder, "hash"),
    }
    print(f"{opts.issues} issues, {pages} files in the site; medians of {opts.runs} runs; "
          f"load average {' '.join(f'{n:.2f}' for n in os.getloadavg())}")  # fmt: skip
    print(f"{'baseline':<46} {'wall':>8} {'cpu':>8}")
    for name, what in (("parse", "read + parse every issue"),
                       ("hash", "read + hash every issue file"),
                       ("start", "`spark-mail --version` process")):  # fmt: skip
        wall, cpu = baselines[name]
        print(f"{name + ': ' + what:<46} {wall:7.3f}s {cpu:7.3f}s")
    print(f"{'build':<24} {'wall':>8} {'cpu':>8} {'target':>8} {'vs target':>10} "
          f"{'cpu vs baseline':>16}")  # fmt: skip
    for name, ((wall, cpu), base) in figures.items():
        target = TARGETS.get(name)
        goal = f"{target:7.1f}s" if target else f"{'-':>8}"
        against = f"{wall / target:9.2f}x" if target else f"{'-':>10}"
        verdict = "" if target is None else ("  ok" if wall <= target else "  OVER")
        ratio = f"{cpu / baselines[base][1]:7.1f}x {base}"
        print(f"{name:<24} {wall:7.2f}s {cpu:7.2f}s {goal} {against} {ratio:>16}{verdict}")


if __name__ == "__main__":
    main()
