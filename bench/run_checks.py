"""CPU of the sample issue's build and offline checks, this tree against a baseline tree
(another worktree of spark-mail, e.g. `git worktree add /tmp/base <commit>`), run
alternately in the same run so that both see the same machine load:

    python bench/run_checks.py /tmp/base [rounds]

Each round and tree: a fresh process times, in median CPU time,
- `run_checks` warm (200 calls, links not checked; the HTML-only rules' findings are kept
  per HTML, so this is the rest of the rules),
- the HTML-only rules on an HTML new to the process each time (`html_findings`, 100 calls;
  a comment with a counter makes each HTML new),
- a build of an issue new to the process (50 builds; what the process keeps of an issue's
  text and HTML is dropped before each, as bench/build.py does),
- the same issue built again (50 builds, nothing dropped: preview, dispatch, the desk);
and a cold `spark-mail check --no-links` process is timed (user + sys CPU).
The findings, HTML and text part of both trees are printed as identical or not.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
SAMPLE = "issues/2025-01-20-engineering-leadership.md"
WARM = f"""
import hashlib, json, statistics, sys, time
from pathlib import Path
sys.path.insert(0, {str(HERE / "bench")!r})
from kept import forget_the_issue
from spark_mail.checks import html_findings, run_checks
from spark_mail.checks.styles import StyledEmail
from spark_mail.config import load_settings
from spark_mail.render import build
settings = load_settings(Path.cwd())
sample = Path({SAMPLE!r})
email = build(sample, settings)
for _ in range(10):
    report = run_checks(email, settings)

def median_ms(call, runs):
    times = []
    for n in range(runs):
        start = time.process_time()
        call(n)
        times.append(time.process_time() - start)
    return statistics.median(times) * 1000

def new_build(n):
    forget_the_issue()  # bench/kept.py: what the process keeps of the issue, dropped
    build(sample, settings)

html = email.html
figures = [
    median_ms(lambda n: run_checks(email, settings), 200),
    median_ms(lambda n: html_findings(StyledEmail(html + f"<!-- {{n}} -->"), None), 100),
    median_ms(new_build, 50),
    median_ms(lambda n: build(sample, settings), 50),
]
print(json.dumps(figures))
digest = hashlib.sha256((email.html + email.text).encode()).hexdigest()
print(json.dumps([report.to_json(), digest], sort_keys=True))
"""


def python(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True, check=True
    )


def cold_cpu(tree: Path) -> float:
    """user + sys CPU seconds of one `spark-mail check --no-links` process."""
    before = os.times()
    python(tree, "-m", "spark_mail", "check", SAMPLE, "--no-links")
    after = os.times()
    return (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )


FIGURES = (
    "run_checks warm", "html-only rules, new HTML", "build, new issue", "build, same issue",
)  # fmt: skip


def main() -> None:
    base = Path(sys.argv[1]).resolve()
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    trees = {"baseline": base, "this tree": HERE}
    warm: dict[str, list[list[float]]] = {name: [] for name in trees}
    cold: dict[str, list[float]] = {name: [] for name in trees}
    outputs: dict[str, str] = {}
    for _ in range(rounds):
        for name, tree in trees.items():
            figures, outputs[name] = python(tree, "-c", WARM).stdout.splitlines()
            warm[name].append(json.loads(figures))
            cold[name].append(cold_cpu(tree))
    print(f"{SAMPLE}, {rounds} rounds, trees run alternately; medians of CPU time")
    print(f"{'':28s}{'baseline':>10s}{'this tree':>11s}{'ratio':>7s}")
    for i, figure in enumerate(FIGURES):
        old, new = (statistics.median(r[i] for r in warm[name]) for name in trees)
        print(f"{figure:28s}{old:7.2f} ms{new:8.2f} ms{new / old:7.2f}")
    old, new = (statistics.median(cold[name]) for name in trees)
    print(f"{'cold `check` process':28s}{old * 1000:7.0f} ms{new * 1000:8.0f} ms{new / old:7.2f}")
    same = outputs["baseline"] == outputs["this tree"]
    print("findings, HTML and text part: " + ("identical" if same else "DIFFERENT"))


if __name__ == "__main__":
    main()
