"""The groups of tests that share a per-process server (tests/process_groups.py) hold
every collected test that asks for that server, and no prefix names a test that is gone."""

from __future__ import annotations

from pathlib import Path

import pytest
from process_groups import GROUPS, group_of

SERVERS = {"chromium": {"browser", "browser_session"}, "moto_server": {"ses_moto", "moto_server"}}


def test_every_test_that_asks_for_a_shared_server_is_in_its_group(request: pytest.FixtureRequest):
    items = request.session.items
    assert len(items) > 1
    outside = [
        (item.nodeid, name)
        for item in items
        for name, fixtures in SERVERS.items()
        if fixtures & set(item.fixturenames) and group_of(item.nodeid) != name
    ]
    assert outside == [], "add these to tests/process_groups.py's GROUPS"


def test_each_prefix_names_a_collected_test(request: pytest.FixtureRequest):
    """(When the whole suite is collected, as `pytest -n auto` collects it.)"""
    nodeids = [item.nodeid for item in request.session.items]
    modules = {n.split("::")[0] for n in nodeids}
    on_disk = {f"tests/{path.name}" for path in Path(__file__).parent.glob("test_*.py")}
    config = request.config
    if modules != on_disk or config.getoption("-m") or config.getoption("-k"):
        pytest.skip("only a part of the suite is collected")
    stale = [
        prefix
        for prefixes in GROUPS.values()
        for prefix in prefixes
        if not any(nodeid.startswith(prefix) for nodeid in nodeids)
    ]
    assert stale == []
