"""The caniemail.com support data, vendored in spark_mail/checks/data/caniemail.json.

Source: https://www.caniemail.com/api/data.json (the caniemail project by Rémi Parmentier,
https://github.com/hteumeuleu/caniemail, MIT licence: data/LICENSE-caniemail). The vendored
file keeps, for every feature, its title and page and the newest test result of the clients
spark-mail checks; `last_update_date` says how fresh it is.

Refresh it (needs the network; `--file` takes a data.json you downloaded):

    python -m spark_mail.checks.caniemail [--url URL | --file data.json] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

SOURCE_URL = "https://www.caniemail.com/api/data.json"
DATA_FILE = Path(__file__).resolve().parent / "data" / "caniemail.json"


@dataclass(frozen=True)
class Client:
    id: str
    name: str
    family: str  # caniemail's family and platform
    platform: str


CLIENTS = (
    Client("gmail-web", "Gmail (web)", "gmail", "desktop-webmail"),
    Client("gmail-ios", "Gmail app (iOS)", "gmail", "ios"),
    Client("gmail-android", "Gmail app (Android)", "gmail", "android"),
    Client("outlook-windows", "Outlook for Windows", "outlook", "windows"),
    Client("outlook-new", "new Outlook / Outlook.com", "outlook", "outlook-com"),
    Client("apple-mail-macos", "Apple Mail (macOS)", "apple-mail", "macos"),
    Client("apple-mail-ios", "Apple Mail (iOS)", "apple-mail", "ios"),
    Client("yahoo-web", "Yahoo Mail (web)", "yahoo", "desktop-webmail"),
    Client("yahoo-ios", "Yahoo Mail app (iOS)", "yahoo", "ios"),
    Client("yahoo-android", "Yahoo Mail app (Android)", "yahoo", "android"),
)
# What `check --clients NAME,...` accepts: a group of clients, or one client by its id.
GROUPS = {
    "gmail": ("gmail-web", "gmail-ios", "gmail-android"),
    "outlook": ("outlook-windows", "outlook-new"),
    "apple-mail": ("apple-mail-macos", "apple-mail-ios"),
    "yahoo": ("yahoo-web", "yahoo-ios", "yahoo-android"),
}


@dataclass(frozen=True)
class Support:
    value: str  # "y" yes, "n" no, "a" partial, "u" unknown
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Feature:
    slug: str
    title: str
    url: str
    support: dict[str, Support]  # client id -> newest result


def reduce_data(raw: dict[str, Any]) -> dict[str, Any]:
    """caniemail's data.json -> the vendored form: the newest result per checked client."""
    features = {}
    for item in raw["data"]:
        support = {}
        for client in CLIENTS:
            versions = item.get("stats", {}).get(client.family, {}).get(client.platform)
            if not versions:
                continue
            value = str(list(versions.values())[-1])  # caniemail lists versions oldest first
            flag, *marks = value.split()
            by_number = item.get("notes_by_num") or {}
            notes = [str(by_number[m.lstrip("#")]) for m in marks if m.lstrip("#") in by_number]
            support[client.id] = [flag, *notes] if notes else flag
        features[item["slug"]] = {"title": item["title"], "url": item["url"], "support": support}
    return {
        "source": SOURCE_URL,
        "licence": "MIT, (c) 2019 HTeuMeuLeu (Rémi Parmentier): see LICENSE-caniemail",
        "last_update_date": raw.get("last_update_date", ""),
        "features": features,
    }


def support_of(stored: str | list[str]) -> Support:
    """The vendored form: "n", or ["a", "note", ...] when caniemail has notes."""
    if isinstance(stored, str):
        return Support(stored)
    return Support(stored[0], tuple(stored[1:]))


@lru_cache(maxsize=1)
def features() -> dict[str, Feature]:
    data = json.loads(DATA_FILE.read_text(encoding="utf-8"))
    return {
        slug: Feature(
            slug,
            item["title"],
            item["url"],
            {c: support_of(s) for c, s in item["support"].items()},
        )
        for slug, item in data["features"].items()
    }


def last_update() -> str:
    return str(json.loads(DATA_FILE.read_text(encoding="utf-8"))["last_update_date"])


def resolve_clients(names: str | None) -> tuple[Client, ...]:
    """`gmail,outlook-windows` -> those clients; None or "" -> all. ValueError names the
    unknown ones and what is known, or says that only commas and spaces were given."""
    if not names:
        return CLIENTS
    by_id = {c.id: c for c in CLIENTS}
    chosen: list[str] = []
    for name in (n.strip().lower() for n in names.split(",") if n.strip()):
        if name in GROUPS:
            chosen.extend(GROUPS[name])
        elif name in by_id:
            chosen.append(name)
        else:
            known = ", ".join([*GROUPS, *by_id])
            raise ValueError(f"unknown mail client {name!r} (known: {known})")
    if not chosen:  # ',' or ' , ': checking no client at all would always say "clean"
        known = ", ".join(GROUPS)
        raise ValueError(f"{names!r} names no mail client (e.g. {known})")
    return tuple(c for c in CLIENTS if c.id in chosen)


def refresh(raw: dict[str, Any], out: Path) -> int:
    """Write the vendored file from caniemail's data; returns the number of features."""
    reduced = reduce_data(raw)
    out.write_text(json.dumps(reduced, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    features.cache_clear()
    return len(reduced["features"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Refresh the vendored caniemail.com data.")
    parser.add_argument("--url", default=SOURCE_URL, help="where to download data.json from")
    parser.add_argument("--file", type=Path, help="a data.json already downloaded")
    parser.add_argument("--out", type=Path, default=DATA_FILE, help="the file to write")
    opts = parser.parse_args(argv)
    import httpx

    from spark_mail.tls import https_context

    try:
        if opts.file:
            raw = json.loads(opts.file.read_text(encoding="utf-8"))
        else:
            response = httpx.get(
                opts.url, timeout=30, follow_redirects=True, verify=https_context()
            )
            response.raise_for_status()
            raw = response.json()
        count = refresh(raw, opts.out)
    except (OSError, ValueError, KeyError, TypeError, httpx.HTTPError) as exc:
        where = opts.file or opts.url
        print(f"error: cannot refresh the caniemail data from {where}: {exc}", file=sys.stderr)
        return 1
    print(f"{opts.out}: {count} features, caniemail data of {reduce_data(raw)['last_update_date']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
