"""Web archive build time: 500 generated issues (the sample issue's text, varied titles, tags,
numbers and dates), all recorded as sent in a real ledger.

    python bench/site.py [--issues 500] [--runs 3]

Prints, as medians of `--runs` real `spark-mail site build` processes (Python start-up
included) on this machine:
- cold: an empty output folder; target under 10 s;
- incremental: one issue's text changed since the last build; target under 1 s;
- no change: nothing to do but read the ledger and hash the files;
and, measured in the same run as baselines: reading and parsing every issue (front matter +
Markdown, the least a cold build must do) and reading and hashing every issue file (the least
an incremental build must do), with each figure's ratio to its baseline.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
            ledger.claim(path.stem, "bench", "outbox", now=when)
            ledger.mark_sent(path.stem, now=when)
            ledger.release(path.stem)
    return paths


def site_build(root: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "spark_mail", "site", "build"],
        cwd=root,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def parse_all(paths: list[Path]) -> float:
    from spark_mail.issue import load_issue
    from spark_mail.render import markdown as md

    start = time.perf_counter()
    for path in paths:
        md.split_blocks(md.parse(load_issue(path).body))
    return time.perf_counter() - start


def hash_all(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        hashlib.sha256(path.read_bytes()).hexdigest()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issues", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "newsletter"
        paths = make_newsletter(root, opts.issues)
        parse_all(paths[:5])  # load the libraries before timing the baselines
        baselines = {
            "parse": statistics.median(parse_all(paths) for _ in range(opts.runs)),
            "hash": statistics.median(hash_all(paths) for _ in range(opts.runs)),
        }
        cold, incremental, unchanged = [], [], []
        for run in range(opts.runs):
            shutil.rmtree(root / "site", ignore_errors=True)
            cold.append(site_build(root))
            changed = paths[run * 7 % len(paths)]
            changed.write_text(changed.read_text() + f"\nOne more line ({run}).\n")
            incremental.append(site_build(root))
            unchanged.append(site_build(root))
        pages = sum(1 for p in (root / "site").rglob("*") if p.is_file())
    figures = {
        "cold": (statistics.median(cold), "parse"),
        "incremental": (statistics.median(incremental), "hash"),
        "no change": (statistics.median(unchanged), "hash"),
    }
    print(f"{opts.issues} issues, {pages} files in the site; medians of {opts.runs} runs")
    print(f"baseline parse: read + parse every issue       {baselines['parse']:7.3f} s")
    print(f"baseline hash:  read + hash every issue file   {baselines['hash']:7.3f} s")
    print(f"{'build':<12} {'median':>8} {'target':>8} {'vs target':>10} {'vs baseline':>14}")
    for name, (seconds, base) in figures.items():
        target = TARGETS.get(name)
        against = f"{seconds / target:9.2f}x" if target else f"{'-':>10}"
        verdict = "" if target is None else ("  ok" if seconds <= target else "  OVER")
        ratio = f"{seconds / baselines[base]:7.1f}x {base}"
        print(f"{name:<12} {seconds:7.2f}s {target or 0:7.1f}s {against} {ratio:>14}{verdict}")


if __name__ == "__main__":
    main()
