"""Benchmark per-reader copies of the sample issue (no network): copies per second.

    python bench/personalize.py [--readers 20000] [--runs 5]

The sample issue is rendered once with the default layout (per-reader unsubscribe link,
List-Unsubscribe header and poll links, each with a signed token) and once with a layout
that also greets the reader by first name and links with it. Then it makes one copy per
generated reader and prints the median rate against the target (>= 20,000 copies/s on a
2-core machine), the bytes of a copy, and the rate of the whole own-list front end:
streaming the subscribers CSV (validate, dedupe, suppress) plus making each copy.
Not a test: machines here are shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "issues" / "2025-01-20-engineering-leadership.md"
TARGET_PER_SECOND = 20_000
GREETING = """
    <mj-section css-class="card" padding="8px 0">
      <mj-column>
        <mj-text><p>Hi {{ reader.first_name | default("there") }},</p><p>You get this at
        {{ reader.email }}.
        <a href="https://tinybigspark.com/refer?name={{ reader.first_name }}">Refer a friend</a>
        </p></mj-text>
      </mj-column>
    </mj-section>
"""


def newsletter(folder: Path) -> Path:
    """A copy of the sample newsletter with a `greet` layout and the issue in both layouts."""
    shutil.copy(REPO / "spark-mail.toml", folder / "spark-mail.toml")
    entry = (REPO / "layouts" / "default" / "email.mjml").read_text(encoding="utf-8")
    include = '{% include "partials/header.mjml" %}'
    (folder / "layouts" / "greet").mkdir(parents=True)
    (folder / "layouts" / "greet" / "email.mjml").write_text(
        entry.replace(include, include + GREETING), encoding="utf-8"
    )
    (folder / "issues").mkdir()
    text = SAMPLE.read_text(encoding="utf-8")
    (folder / "issues" / "sample.md").write_text(text, encoding="utf-8")
    (folder / "issues" / "greet.md").write_text(
        text.replace("---\n", "---\nlayout: greet\n", 1), encoding="utf-8"
    )
    with (folder / "subscribers.csv").open("w", encoding="utf-8") as fh:
        fh.write("email,first_name,unsubscribed\n")
    return folder


def write_readers(path: Path, count: int) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.writelines(
            f"reader{i}@example{i % 89}.com,Reader {i},{'yes' if i % 100 == 99 else ''}\n"
            for i in range(count)
        )


def rate(template, readers, runs: int) -> float:  # type: ignore[no-untyped-def]
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        for reader in readers:
            template.copy(reader)
        seconds.append(time.perf_counter() - start)
    return len(readers) / statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    opts = parser.parse_args()

    from spark_mail.audience import Reader, iter_readers
    from spark_mail.config import load_settings
    from spark_mail.personalize import prepare

    print("$ " + shlex.join([Path(sys.executable).name, *sys.argv]))
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        root = newsletter(Path(tmp))
        settings = load_settings(root, env={"SPARK_MAIL_SIGNING_SECRET": "bench-" + "s" * 32})
        readers = [
            Reader(f"reader{i}@example.com", {"first_name": f"Reader {i}"}, i + 2)
            for i in range(opts.readers)
        ]
        for name in ("sample", "greet"):
            start = time.perf_counter()
            template = prepare(root / "issues" / f"{name}.md", settings)
            prepared = time.perf_counter() - start
            per_second = rate(template, readers, opts.runs)
            copy = template.copy(readers[0])
            size = len(copy.html.encode()) + len(copy.text.encode())
            layout = "default layout" if name == "sample" else "greeting layout"
            print(
                f"{layout:16} render once {prepared * 1000:6.1f} ms, "
                f"{len(template.slots)} reader slots; copies {per_second:9,.0f}/s "
                f"(target {TARGET_PER_SECOND:,}/s: ratio {per_second / TARGET_PER_SECOND:.2f}); "
                f"{size / 1024:.1f} KB a copy"
            )

        csv_file = root / "subscribers.csv"
        write_readers(csv_file, opts.readers)
        template = prepare(root / "issues" / "greet.md", settings)
        start = time.perf_counter()
        made = sum(1 for reader in iter_readers(csv_file) if template.copy(reader))
        seconds = time.perf_counter() - start
        print(
            f"CSV -> copies   {opts.readers:,} rows read, {made:,} copies "
            f"(1% unsubscribed) in {seconds:.2f} s: {opts.readers / seconds:,.0f} rows/s"
        )


if __name__ == "__main__":
    main()
