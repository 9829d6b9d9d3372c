"""Benchmark the build of the sample issue: warm, per phase, and cold processes.

    python bench/build.py [--runs 30] [--cold-runs 7]

Prints medians (machines here are shared and noisy; this is not a timed test) and each
figure's ratio to its target: warm build <= 25 ms, cold `spark-mail build` <= 450 ms,
cold `spark-mail --help` <= 200 ms.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "issues" / "2025-01-20-engineering-leadership.md"
PHASES = ("parse", "markdown", "jinja", "mjml", "inline", "text")
TARGETS_MS = {"warm build": 25.0, "cold build": 450.0, "cold --help": 200.0}


def ms(seconds: float) -> float:
    return seconds * 1000


def warm(runs: int) -> tuple[float, dict[str, float]]:
    from spark_mail.config import load_settings
    from spark_mail.render import build

    settings = load_settings(REPO)
    build(SAMPLE, settings)  # first build loads the libraries and compiles the templates
    totals: list[float] = []
    phases: dict[str, list[float]] = {p: [] for p in PHASES}
    for _ in range(runs):
        start = time.perf_counter()
        email = build(SAMPLE, settings)
        totals.append(time.perf_counter() - start)
        for phase in PHASES:
            phases[phase].append(email.timings[phase])
    return statistics.median(totals), {p: statistics.median(v) for p, v in phases.items()}


def cold(args: list[str], runs: int) -> float:
    times = []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(runs):
            start = time.perf_counter()
            out_args = ["--out", out] if args[0] == "build" else []
            subprocess.run(
                [sys.executable, "-m", "spark_mail", *args, *out_args],
                cwd=REPO,
                check=True,
                capture_output=True,
            )
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--cold-runs", type=int, default=7)
    opts = parser.parse_args()

    total, phases = warm(opts.runs)
    results = {
        "warm build": ms(total),
        "cold build": ms(cold(["build", str(SAMPLE)], opts.cold_runs)),
        "cold --help": ms(cold(["--help"], opts.cold_runs)),
    }
    from spark_mail.config import load_settings
    from spark_mail.render import build

    size = build(SAMPLE, load_settings(REPO)).html_bytes
    print(f"sample issue: {SAMPLE.name}, HTML {size / 1024:.1f} KB")
    print(f"warm build phases (median of {opts.runs}):")
    for phase, seconds in phases.items():
        print(f"  {phase:<9} {ms(seconds):7.2f} ms  ({seconds / total:5.1%})")
    print(f"{'figure':<13} {'median':>10} {'target':>9} {'ratio':>7}")
    for name, value in results.items():
        target = TARGETS_MS[name]
        verdict = "ok" if value <= target else "OVER"
        print(f"{name:<13} {value:8.1f} ms {target:6.0f} ms {value / target:6.2f}x  {verdict}")


if __name__ == "__main__":
    main()
