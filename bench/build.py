"""Benchmark the build of the sample issue: warm, per phase, and cold processes.

    python bench/build.py [--runs 30] [--cold-runs 7] [--mjml PATH | --no-mjml]

Prints medians (machines here are shared and noisy; this is not a timed test) and each
figure's ratio to its target: warm build <= 25 ms, cold `spark-mail build` <= 450 ms,
cold `spark-mail --help` <= 200 ms.

Beside them, in the same run: the official mjml CLI (Node) compiling the same newsletter
cold (the sample's MJML as spark-mail's Jinja step renders it, inlining included), and the
ratio of the cold `spark-mail build` (Markdown, MJML, inlining, text part, three files) to
it; target <= 0.6. The mjml CLI is `--mjml PATH`, else `mjml` on PATH, else one installed
with npm into a folder in the system's temp directory (never into the repository); without
node and npm the comparison is skipped with a line saying so.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bytecode import compile_spark_mail
from kept import forget_the_issue

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "issues" / "2025-01-20-engineering-leadership.md"
PHASES = ("parse", "markdown", "jinja", "mjml", "inline", "text")
TARGETS_MS = {"warm build": 25.0, "cold build": 450.0, "cold --help": 200.0}
MJML_RATIO_TARGET = 0.6
MJML_CACHE = Path(tempfile.gettempdir()) / "spark-mail-bench-mjml"


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
        forget_the_issue()
        start = time.perf_counter()
        email = build(SAMPLE, settings)
        totals.append(time.perf_counter() - start)
        for phase in PHASES:
            phases[phase].append(email.timings[phase])
    return statistics.median(totals), {p: statistics.median(v) for p, v in phases.items()}


def rebuild(runs: int) -> float:
    """The same issue built again in one process (the preview, a send after its check)."""
    from spark_mail.config import load_settings
    from spark_mail.render import build

    settings = load_settings(REPO)
    build(SAMPLE, settings)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        build(SAMPLE, settings)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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


def find_mjml(given: str | None) -> tuple[str | None, str]:
    """The official mjml CLI, or None and why not."""
    if given:
        return given, "given with --mjml"
    on_path = shutil.which("mjml")
    if on_path:
        return on_path, "on PATH"
    cached = MJML_CACHE / "node_modules" / ".bin" / "mjml"
    if cached.exists():
        return str(cached), f"installed earlier in {MJML_CACHE}"
    if not (shutil.which("node") and shutil.which("npm")):
        return None, "node and npm are not installed"
    MJML_CACHE.mkdir(parents=True, exist_ok=True)
    print(f"installing the mjml CLI with npm into {MJML_CACHE} (once) ...", flush=True)
    done = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--silent", "mjml"],
        cwd=MJML_CACHE,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or not cached.exists():
        return None, f"npm install mjml failed: {done.stderr.strip()[-200:]}"
    return str(cached), f"installed now in {MJML_CACHE}"


def sample_mjml() -> str:
    """The sample newsletter as MJML: spark-mail's Jinja step, before its own compile."""
    from spark_mail.config import load_settings
    from spark_mail.issue import load_issue
    from spark_mail.render import layout as layout_mod
    from spark_mail.render.view import body_blocks, layout_context, make_view

    settings = load_settings(REPO)
    issue = load_issue(SAMPLE)
    view = make_view(issue, settings, body_blocks(issue, settings))
    layout_dir = layout_mod.find_layout(issue.layout, settings.layout_dirs())
    return layout_mod.render_mjml(layout_dir, settings.layout_dirs(), layout_context(view))


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(args: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one process."""
    cpu, start = child_cpu(), time.perf_counter()
    subprocess.run(args, cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - start, child_cpu() - cpu


def side_by_side(mjml: str, runs: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) of a cold `spark-mail build` and of a cold mjml compile, run
    alternately so that both meet the same machine load (this machine is shared). CPU time
    is the steadier figure when other work competes for the cores."""
    ours: list[tuple[float, float]] = []
    theirs: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "sample.mjml"
        source.write_text(sample_mjml(), encoding="utf-8")
        for _ in range(runs):
            ours.append(timed([sys.executable, "-m", "spark_mail", "build", str(SAMPLE),
                               "--out", tmp]))  # fmt: skip
            theirs.append(timed([mjml, str(source), "-o", str(Path(tmp) / "out.html")]))

    def medians(pairs: list[tuple[float, float]]) -> tuple[float, float]:
        return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)

    return {"spark-mail build": medians(ours), "mjml compile": medians(theirs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--cold-runs", type=int, default=7)
    parser.add_argument("--mjml", help="the official mjml CLI to compare with")
    parser.add_argument("--no-mjml", action="store_true", help="skip the mjml comparison")
    opts = parser.parse_args()

    print(compile_spark_mail())
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
    print(f"same issue built again in one process: {ms(rebuild(opts.runs)):.1f} ms (no target)")
    print(f"{'figure':<13} {'median':>10} {'target':>9} {'ratio':>7}")
    for name, value in results.items():
        target = TARGETS_MS[name]
        verdict = "ok" if value <= target else "OVER"
        print(f"{name:<13} {value:8.1f} ms {target:6.0f} ms {value / target:6.2f}x  {verdict}")
    if opts.no_mjml:
        print("official mjml CLI: skipped (--no-mjml)")
        return
    mjml, why = find_mjml(opts.mjml)
    if mjml is None:
        print(f"official mjml CLI: skipped ({why})")
        return
    pair = side_by_side(mjml, opts.cold_runs)
    print(f"official mjml CLI ({why}), alternating with spark-mail, median of {opts.cold_runs}:")
    for name, (wall, cpu) in pair.items():
        print(f"  cold {name:<17} {ms(wall):8.1f} ms wall {ms(cpu):8.1f} ms CPU")
    for i, what in enumerate(("wall", "CPU")):
        ratio = pair["spark-mail build"][i] / pair["mjml compile"][i]
        verdict = "ok" if ratio <= MJML_RATIO_TARGET else "OVER"
        print(f"  ratio ({what}) {ratio:.2f} (target <= {MJML_RATIO_TARGET})  {verdict}")


if __name__ == "__main__":
    main()
