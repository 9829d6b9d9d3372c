"""The groups of tests that share a per-process server (tests/process_groups.py) hold
every collected test that asks for that server, and no prefix names a test that is gone."""

from __future__ import annotations

import ast
import functools
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from process_groups import GROUPS, group_of

SERVERS = {"chromium": {"browser", "browser_session"}, "moto_server": {"ses_moto", "moto_server"}}
TESTS = Path(__file__).parent


@functools.cache
def defined_tests(path: Path) -> dict[str, ast.FunctionDef]:
    """A test module's test functions by name, read from its source (once per path)."""
    return {
        node.name: node
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test")
    }


def test_every_test_that_asks_for_a_shared_server_is_in_its_group(request: pytest.FixtureRequest):
    outside = [
        (item.nodeid, name)
        for item in request.session.items
        for name, fixtures in SERVERS.items()
        if fixtures & set(item.fixturenames) and group_of(item.nodeid) != name
    ]
    assert outside == [], "add these to tests/process_groups.py's GROUPS"


def test_tests_asking_for_a_shared_server_by_name_are_in_its_group():
    """A test asking at run time (request.getfixturevalue("ses_moto"), as test_faults'
    matrix does for its ses cases) is not seen by the check above (its fixturenames do not
    name the server): taking its prefix out of GROUPS passed both checks. The sources are
    read for such calls; a prefix of the group must name the function or some of its cases
    (read from GROUPS, not from what this run collected: -m "not slow" leaves the ses cases
    out and the others in)."""
    named = {fixture: name for name, fixtures in SERVERS.items() for fixture in fixtures}
    outside = []
    for path in sorted(TESTS.glob("test_*.py")):
        if "getfixturevalue" not in path.read_text(encoding="utf-8"):  # (parse only these)
            continue
        for function in defined_tests(path).values():
            asked = {
                call.args[0].value
                for call in ast.walk(function)
                if isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr == "getfixturevalue"
                and call.args
                and isinstance(call.args[0], ast.Constant)
                and call.args[0].value in named
            }
            test = f"tests/{path.name}::{function.name}"
            for fixture in asked:
                prefixes = GROUPS[named[fixture]]
                if not any(test.startswith(p) or p.startswith(f"{test}[") for p in prefixes):
                    outside.append((test, fixture))
    assert outside == [], "add these to tests/process_groups.py's GROUPS"


def test_each_prefix_names_a_test_module_or_function():
    """No prefix is stale: it names a test module, or a test function in it (the part
    before a case's `[`). Read from the sources, so any selection (-m, -k, --deselect,
    --lf) checks the same."""
    stale = []
    for prefix in (p for prefixes in GROUPS.values() for p in prefixes):
        module, _, function = prefix.partition("::")
        path = TESTS.parent / module
        if not path.is_file():
            stale.append(prefix)
            continue
        name, case, _ = function.partition("[")
        defined = defined_tests(path)
        if name and not (name in defined if case else any(d.startswith(name) for d in defined)):
            stale.append(prefix)
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


def test_pytest_xdist_auto_num_workers_still_says_how_many_processes_auto_starts(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
):
    """`PYTEST_XDIST_AUTO_NUM_WORKERS=1 pytest -n auto` (a small CI machine, a shared one)
    started 3 test processes: conftest's hook answered first and never looked."""
    hook = request.config.hook
    if not request.config.pluginmanager.hasplugin("xdist"):
        pytest.skip("pytest-xdist is not loaded (-p no:xdist)")
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "1")
    assert hook.pytest_xdist_auto_num_workers(config=request.config) == 1
    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS")
    assert (
        hook.pytest_xdist_auto_num_workers(config=request.config)
        == len(os.sched_getaffinity(0)) + 1
    )
