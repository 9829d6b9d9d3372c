"""The web archive: `site build`."""

from pathlib import Path
from typing import Annotated

import typer

from spark_mail.cli.app import JsonOpt, app, example, settings
from spark_mail.cli.output import console, escape, log, print_json

site_app = typer.Typer(
    help="The web archive: every sent issue's web copy, an index, tag pages, RSS and Atom.",
    no_args_is_help=True,
)
app.add_typer(site_app, name="site")


@site_app.command("build", epilog=example("spark-mail site build --out public"))
def site_build(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Output folder (default: site_dir, else site/; a preview: site-preview/).",
        ),
    ] = None,
    include_unsent: Annotated[
        bool,
        typer.Option(
            "--include-unsent",
            help="A preview with the issues not sent yet, in site-preview/ (not the live site).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build the static site: pages, index, tags, feeds, sitemap (atomically replaced)."""
    from spark_mail.site import build_site

    result = build_site(settings(), out, include_unsent=include_unsent)
    if as_json:
        print_json(result.to_json())
        return
    for warning in result.warnings:
        log(f"[yellow]warning:[/] {escape(warning)}")
    drafts = f" and {result.drafts} not sent yet" if result.drafts else ""
    console.print(
        f"Built {escape(str(result.folder))}: {result.issues} sent issues{drafts}, "
        f"{result.tags} tags ({result.rendered} files rendered, {result.reused} unchanged) "
        f"in {result.seconds:.2f} s"
    )
    feeds = result.to_json()["feeds"]
    console.print(f"Feeds: {escape(feeds['rss'])} (RSS), {escape(feeds['atom'])} (Atom)")
