"""What a process keeps of the issues it has built, dropped, so that a benchmark's next build
is of an issue new to a process whose libraries, templates and layout CSS are ready.

Used by bench/build.py, and by bench/run_checks.py in processes of a baseline tree, which
may predate some of what is kept (hence the getattr).
"""

from __future__ import annotations


def forget_the_issue() -> None:
    """Drop the issue's parse, its body's blocks, its wrapped paragraphs and its compiled and
    inlined HTML."""
    from spark_mail import issue, render
    from spark_mail.render import text, view

    view.parsed_body.cache_clear()
    text.wrap.cache_clear()
    getattr(render, "_KEPT_HTML", {}).clear()
    parsed_issue = getattr(issue, "parsed_issue", None)
    if parsed_issue is not None:
        parsed_issue.cache_clear()
