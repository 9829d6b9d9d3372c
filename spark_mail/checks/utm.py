"""`utm.tagged` (info): which links carry UTM tags, so the editor sees what analytics get."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from urllib.parse import parse_qs, urlsplit

from spark_mail.checks.html import Anchor
from spark_mail.checks.report import Finding, Severity


def utm_findings(anchors: Iterable[Anchor]) -> Iterator[Finding]:
    blocks: Counter[str] = Counter()
    sources: set[str] = set()
    campaigns: set[str] = set()
    for anchor in anchors:
        query = parse_qs(urlsplit(anchor.href).query)
        if "utm_source" in query:
            blocks[query.get("utm_content", ["(no utm_content)"])[0]] += 1
            sources.add(query["utm_source"][0])
            campaigns.update(query.get("utm_campaign", []))
    if blocks:
        per_block = ", ".join(f"{block} {n}" for block, n in sorted(blocks.items()))
        yield Finding(
            "utm.tagged",
            Severity.INFO,
            f"{sum(blocks.values())} links carry UTM tags (utm_source={', '.join(sorted(sources))}"
            f", utm_campaign={', '.join(sorted(campaigns))}): {per_block}",
            "the unsubscribe link and the reader desk's pages are never tagged; "
            "unset utm_source to turn tagging off",
        )
