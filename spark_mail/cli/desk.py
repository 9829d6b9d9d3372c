"""The reader desk: serve, poll results."""

from typing import Annotated, Any

import typer

from spark_mail.cli.app import JsonOpt, OptionalIssueArg, app, example, settings
from spark_mail.cli.output import console, err_console, escape, print_json


@app.command(epilog=example("spark-mail serve --port 8040 --workers 2"))
def serve(
    host: Annotated[
        str, typer.Option("--host", metavar="ADDRESS", help="Address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="Port to listen on.")] = 8040,
    workers: Annotated[int, typer.Option("--workers", metavar="N", help="Worker processes.")] = 1,
    proxy_headers: Annotated[
        bool,
        typer.Option(
            "--proxy-headers", help="Trust X-Forwarded-For/-Proto from a proxy on 127.0.0.1."
        ),
    ] = False,
) -> None:
    """Answer the unsubscribe and poll links of your emails (and serve the web archive)."""
    from spark_mail.clock import SYSTEM_CLOCK
    from spark_mail.desk.links import allowed_hosts, poll_route, unsubscribe_route
    from spark_mail.desk.server import serve as serve_desk
    from spark_mail.desk.webhooks import configured

    cfg = settings()

    def ready() -> None:
        hosts = ", ".join(sorted(allowed_hosts(cfg)))
        hooks = ", ".join(f"/webhooks/{name}" for name in configured(cfg, SYSTEM_CLOCK))
        err_console.print(
            f"Reader desk for {escape(cfg.name)} on http://{host}:{port} ({workers} worker"
            f"{'s' if workers > 1 else ''}) - unsubscribe at "
            f"{escape(unsubscribe_route(cfg).path)}, polls at {escape(poll_route(cfg).path)}"
            + (f", ESP events at {hooks}" if hooks else "")
            + f"; answers for {escape(hosts)} - Ctrl-C stops"
        )

    serve_desk(
        cfg, host=host, port=port, workers=workers, proxy_headers=proxy_headers, on_ready=ready
    )


poll_app = typer.Typer(help="Reader polls: the votes the reader desk took.", no_args_is_help=True)
app.add_typer(poll_app, name="poll")


@poll_app.command("results", epilog=example("spark-mail poll results --json"))
def poll_results(
    issue: OptionalIssueArg = None,
    as_json: JsonOpt = False,
) -> None:
    """Votes per option, the total and the comments of an issue's poll (or every poll).

    ISSUE (optional): an issue file or slug; without it, every poll's totals.
    """
    from spark_mail.desk.polls import poll_report

    found = poll_report(settings(), issue)
    if as_json:
        print_json(found[0].to_json() if issue else {"polls": [r.to_json() for r in found]})
        return
    if not found:
        console.print("No polls yet: add a `poll:` to an issue's front matter.")
    for results in found:
        print_poll(results, comments=issue is not None)


def print_poll(results: Any, *, comments: bool) -> None:  # results: desk.polls.Results
    from rich.bar import Bar
    from rich.table import Table

    console.print(f"[bold]{escape(results.slug)}[/]: {escape(results.question)}")
    table = Table(show_header=False, box=None, pad_edge=False)
    for _ in range(3):
        table.add_column()
    top = max(results.counts, default=0) or 1
    for label, votes, share in zip(results.options, results.counts, results.shares(), strict=True):
        bar = Bar(size=top, begin=0, end=votes, width=30, color="green")
        table.add_row(escape(label), bar, f"{votes:,} ({share}%)")
    console.print(table)
    console.print(f"{results.total:,} votes")
    if comments and results.comments:
        console.print("\n[bold]Comments[/]")
        for comment in results.comments:
            console.print(f"  {escape(comment['at'])}  {escape(comment['text'])}")
    console.print()
