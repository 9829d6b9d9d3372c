"""`spark-mail new`: a fresh issue file with every section stubbed.

The stub builds as it is (so `preview` works from the first second), and its TODO markers
make `spark-mail check` fail on purpose until the editor has replaced each one.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from spark_mail.config import Settings
from spark_mail.errors import IssueError
from spark_mail.files import issue_files
from spark_mail.issue import load_issue, slugify

STUB = """\
---
title: {title}
date: {date}
{number}subject: {title}
preheader: "TODO: one sentence (40-140 characters) the inbox shows after the subject"
# send_at: {date}T07:00:00   # when `spark-mail dispatch` sends it (timezone: {timezone})
tags: []
promo:
  label: PROMO CONTENT
  title: "TODO: promo title"
  body: |
    TODO: the promo text, in Markdown.
  cta_text: Find out more
  cta_url: https://example.com/TODO
poll:
  question: How would you rate today's newsletter?
  options: [Loved it, It was good, Could be better]
share:
  text: {share_text}   # default: the share_text setting
---

## TODO: first heading

TODO: write the issue here, in Markdown.

::: sponsor TODO sponsor name
TODO: the sponsor's text. [TODO: link text](https://example.com/TODO)
:::
"""


def next_number(issues_dir: Path) -> int | None:
    """One more than the highest `number` of the issues already there: 1 for the first issue
    of a newsletter, None when there are issues but none has a number (the editor does not
    number them)."""
    files = issue_files(issues_dir)
    if not files:
        return 1
    numbers: list[int] = []
    for path in files:
        try:
            number = load_issue(path).number
        except IssueError:
            continue  # a broken draft does not stop a new one
        if number is not None:
            numbers.append(number)
    return max(numbers) + 1 if numbers else None


def quoted(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(text, ensure_ascii=False)


def new_issue(settings: Settings, title: str, day: dt.date) -> Path:
    """Create issues/<date>-<slug>.md and return its path; never overwrites a file."""
    title = title.strip()
    if not title or "\n" in title or "\r" in title:
        raise IssueError(
            settings.issues_path, "the title must be one non-empty line", hint="pass it in quotes"
        )
    issues_dir = settings.issues_path
    path = issues_dir / f"{day.isoformat()}-{slugify(title)}.md"
    number = next_number(issues_dir)
    text = STUB.format(
        title=quoted(title),
        date=day.isoformat(),
        number="" if number is None else f"number: {number}\n",
        timezone=settings.timezone,
        share_text=quoted(settings.share_text),
    )
    issues_dir.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x", encoding="utf-8") as fh:  # "x": fails if it exists, no race
            fh.write(text)
    except FileExistsError:
        raise IssueError(
            path,
            "already exists; spark-mail never overwrites an issue",
            hint="edit that file, or pick another title or --date",
        ) from None
    except OSError as exc:
        raise IssueError(path, f"cannot create the file ({exc.strerror})") from None
    return path
