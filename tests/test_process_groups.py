"""The groups of tests that share a per-process server (tests/process_groups.py) hold
every collected test that asks for that server, and no prefix names a test that is gone."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from process_groups import GROUPS, group_of

SERVERS = {"chromium": {"browser", "browser_session"}, "moto_server": {"ses_moto", "moto_server"}}


def test_every_test_that_asks_for_a_shared_server_is_in_its_group(request: pytest.FixtureRequest):
    items = request.session.items
    assert request.node in items  # (alone, by its node id, -k or --lf: nothing else to check)
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


class FakeNode:
    """A test process as the scheduler sees it: the tests sent to it, in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.gateway = SimpleNamespace(id=name)
        self.sent: list[int] = []
        self.shutting_down = False

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent.extend(indices)

    def shutdown(self) -> None:
        self.shutting_down = True

    def __repr__(self) -> str:
        return self.name


COLLECTION = [f"t.py::test_g{i}" for i in range(4)] + [f"t.py::test_s{i}" for i in range(20)]


@pytest.fixture
def scheduler(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The group scheduler for 2 processes, with one group: test_g0..3 of t.py."""
    import process_groups

    monkeypatch.setattr(process_groups, "GROUPS", {"g": ("t.py::test_g",)})
    config = SimpleNamespace(
        getvalue=lambda name: ["2*popen"], option=SimpleNamespace(loadscopereorder=True)
    )
    return process_groups.make_scheduler(config, None)


def start(scheduler: Any, *nodes: FakeNode) -> None:
    for node in nodes:
        scheduler.add_node(node)
    for node in nodes:
        scheduler.add_node_collection(node, COLLECTION)
        if scheduler.collection_is_completed:
            scheduler.schedule()


def sent(*nodes: FakeNode) -> list[str]:
    return [COLLECTION[i] for node in nodes for i in node.sent]


def test_a_test_that_crashes_its_process_is_not_run_again(scheduler: Any):
    """A test process dying in a test (os._exit, SIGKILL, a segfault): the scope scheduler
    sent the test again to the next process, which died too, 13 times on 3 processes, until
    pytest-xdist gave up and left the tests still queued unrun. The crashed test is reported
    once; the rest of its group and of the dead process's queue run elsewhere, once each."""
    first, second = FakeNode("gw0"), FakeNode("gw1")
    start(scheduler, first, second)
    assert sent(first)[:4] == COLLECTION[:4]  # the group, whole, to one process
    scheduler.mark_test_complete(first, 0)  # test_g0 passes, test_g1 kills the process
    assert scheduler.remove_node(first) == "t.py::test_g1"
    third = FakeNode("gw2")  # in place of the crashed one
    start(scheduler, third)
    done = {second: 0, third: 0}
    while scheduler.has_pending:  # the two run what they were sent, to the end
        for node in done:
            if done[node] < len(node.sent):
                done[node] += 1
                scheduler.mark_test_complete(node, node.sent[done[node] - 1])
    ran = [*sent(second, third), "t.py::test_g0"]
    assert "t.py::test_g1" not in ran
    assert sorted(ran) == sorted(set(COLLECTION) - {"t.py::test_g1"})  # each once
    assert sent(third)[:2] == ["t.py::test_g2", "t.py::test_g3"]  # the group's rest, together


def test_a_replacement_still_collecting_is_not_sent_tests(scheduler: Any):
    """Two processes crashed close together: the first replacement's collection came in
    while the second's had not, and the scheduler sent tests to the second by the index of
    a collection it did not have (KeyError, INTERNALERROR, the run ended there)."""
    first, second = FakeNode("gw0"), FakeNode("gw1")
    start(scheduler, first, second)
    scheduler.remove_node(first)
    scheduler.remove_node(second)
    third, fourth = FakeNode("gw2"), FakeNode("gw3")
    scheduler.add_node(third)
    scheduler.add_node(fourth)
    scheduler.add_node_collection(third, COLLECTION)
    scheduler.schedule()
    assert third.sent and not fourth.sent
    scheduler.add_node_collection(fourth, COLLECTION)
    scheduler.schedule()
    assert fourth.sent
