"""CPU of the offline checks (`run_checks`) of the sample issue, this tree against a baseline
tree (another worktree of spark-mail, e.g. `git worktree add /tmp/base <commit>`), run
alternately in the same run so that both see the same machine load:

    python bench/run_checks.py /tmp/base [rounds]

Each round and tree: a fresh process times `run_checks` warm (median CPU time of 200 calls,
links not checked), and a cold `spark-mail check --no-links` process is timed (user + sys CPU).
The findings of both trees are printed as identical or not.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
SAMPLE = "issues/2025-01-20-engineering-leadership.md"
WARM = f"""
import json, statistics, time
from pathlib import Path
from spark_mail.checks import run_checks
from spark_mail.config import load_settings
from spark_mail.render import build
settings = load_settings(Path.cwd())
email = build(Path({SAMPLE!r}), settings)
for _ in range(10):
    report = run_checks(email, settings)
times = []
for _ in range(200):
    start = time.process_time()
    run_checks(email, settings)
    times.append(time.process_time() - start)
print(statistics.median(times) * 1000)
print(json.dumps(report.to_json(), sort_keys=True))
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


def main() -> None:
    base = Path(sys.argv[1]).resolve()
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    trees = {"baseline": base, "this tree": HERE}
    warm: dict[str, list[float]] = {name: [] for name in trees}
    cold: dict[str, list[float]] = {name: [] for name in trees}
    reports: dict[str, str] = {}
    for _ in range(rounds):
        for name, tree in trees.items():
            ms, reports[name] = python(tree, "-c", WARM).stdout.splitlines()
            warm[name].append(float(ms))
            cold[name].append(cold_cpu(tree))
    print(f"run_checks of {SAMPLE}, {rounds} rounds, trees run alternately")
    for name in trees:
        print(
            f"{name:10s} warm {statistics.median(warm[name]):6.2f} ms CPU (median of 200, per "
            f"round: {', '.join(f'{x:.1f}' for x in warm[name])})   cold `check` "
            f"{statistics.median(cold[name]):.3f} s CPU"
        )
    ratio = statistics.median(warm["this tree"]) / statistics.median(warm["baseline"])
    print(f"warm: this tree takes {ratio:.2f}x the baseline's CPU")
    same = reports["baseline"] == reports["this tree"]
    print("findings: " + ("identical" if same else "DIFFERENT"))


if __name__ == "__main__":
    main()
