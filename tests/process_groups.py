"""Tests that share a per-process server run in one test process together.

Each test process (pytest-xdist worker) starts its own headless Chromium (with Playwright's
node driver) and its own moto_server the first time one of its tests asks for them: with
the browser tests spread over three processes, the suite paid for three of each (~3 s of
CPU a Chromium and driver, ~1.3 s a moto_server). conftest's pytest_xdist_make_scheduler
sends each group below to one process as one unit, and every other test on its own, as
pytest-xdist's `load` does.

A group is a list of node id prefixes. A test that needs one of these servers and is not
listed still runs and passes: it only starts the server once more in its own process.
(pytest-xdist's own `--dist loadgroup` marks groups by rewriting node ids, which pytest 9
no longer lets it do: its groups are spread like any test.)
"""

from __future__ import annotations

from typing import Any

GROUPS: dict[str, tuple[str, ...]] = {
    "chromium": (
        "tests/test_a11y.py::",
        "tests/test_browser.py::",
        "tests/test_desk_browser.py::",
        "tests/test_outlook.py::",
        "tests/test_site_browser.py::",
        "tests/test_snapshot.py::",
        "tests/test_attack_site.py::test_long_unbroken_words_still_fit_a_phone",
    ),
    "moto_server": (
        "tests/test_providers_ses.py::",
        "tests/test_faults.py::test_no_reader_twice_and_nobody_silently_skipped[ses-",
        "tests/test_attack_esps.py::test_ses_",
        "tests/test_attack_esps.py::test_an_ses_",
        "tests/test_attack_esps.py::test_an_aws_session_token_",
    ),
}


PENDING = 8


def group_of(nodeid: str) -> str | None:
    for name, prefixes in GROUPS.items():
        if nodeid.startswith(prefixes):
            return name
    return None


def make_scheduler(config: Any, log: Any) -> Any:
    """pytest-xdist's scope scheduler with a test's scope being its group, else itself.
    Scopes go out largest first (the groups), then in collection order, PENDING tests
    queued per process."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid) or nodeid

        def _reschedule(self, node: Any) -> None:
            # PENDING tests queued in each process, not the scope scheduler's 2 (it had
            # modules in mind): with one test a unit, a process waited on the controller,
            # itself short of CPU beside 3 test processes, for each next test.
            if node.shutting_down:
                return
            if node not in self.registered_collections:
                # a process started in place of a crashed one, still collecting: its work
                # comes when its collection does (schedule()); sending now was a KeyError
                # (INTERNALERROR) when two processes crashed close together
                return
            if not self.workqueue:
                node.shutdown()
                return
            while self.workqueue and self._pending_of(self.assigned_work[node]) < PENDING:
                self._assign_work_unit(node)

        def remove_node(self, node: Any) -> str | None:
            # The scope scheduler put the test a process crashed in back in the queue with
            # the rest of its unit: the next process ran it and crashed too, until
            # --max-worker-restart (4 a process) was used up, the test reported failed that
            # many times and the tests still queued never run. As `load` does: the crashed
            # test is reported once (by pytest-xdist, with the id returned) and not run
            # again; the rest of its unit and of the process's queue go back, first in the queue.
            workload = self.assigned_work.pop(node)
            crashed = next(
                (
                    (scope, nodeid)
                    for scope, unit in workload.items()
                    for nodeid, done in unit.items()
                    if not done
                ),
                None,
            )
            if crashed is None:
                return None
            scope, crashitem = crashed
            workload[scope][crashitem] = True
            for scope, unit in reversed(workload.items()):  # ahead of the queue, in order
                if not all(unit.values()):
                    self.workqueue[scope] = unit
                    self.workqueue.move_to_end(scope, last=False)
            for other in self.assigned_work:
                self._reschedule(other)
            return crashitem

    return GroupScheduling(config, log)
