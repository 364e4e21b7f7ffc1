"""Running the suite on several pytest-xdist workers without grading a class twice (bin/test).

A graded class is a session or module fixture that takes minutes to build, and each xdist worker
builds its own copy of every such fixture its tests ask for. So the tests that share one, directly
or through another fixture, must run on one worker: tests are joined into one group when they
share any fixture wider than a function (except the cheap ones below); the tests of a module that
share none form one group more, so they run on one worker, in order.

xdist's own ``--dist loadgroup`` reads ``xdist_group`` marks into the node ids, which pytest 9 no
longer lets it change (``Item._nodeid`` is gone), so every test would be a group of its own. Here
the workers, which collect, write each test's group to a file named by the controller
(``GROUPS_FILE_ENV``), and the controller's scheduler (``GroupScheduling``) reads it. Groups with
slow tests are handed out first, so the longest ones do not start last.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

GROUPS_FILE_ENV = "COURSEKIT_TEST_GROUPS_FILE"
CHEAP_SHARED_FIXTURES = {"tmp_path_factory", "tmpdir_factory", "worker_id", "testrun_uid", "generated_course"}


def grouping(config) -> bool:
    """Whether this run distributes by group: ``--dist loadgroup`` (a worker sees ``loadgroup``)."""
    return bool(getattr(config.option, "loadgroup", False)) or config.getoption("dist", "no") == "loadgroup"


def name_groups_file(config) -> None:
    """In the controller, before the workers start (they inherit the environment): the file they
    write the groups to."""
    if hasattr(config, "workerinput") or not grouping(config) or os.environ.get(GROUPS_FILE_ENV):
        return
    fd, path = tempfile.mkstemp(prefix="coursekit-test-groups-", suffix=".json")
    os.close(fd)
    os.environ[GROUPS_FILE_ENV] = path
    config.add_cleanup(lambda: Path(path).unlink(missing_ok=True))


def shared_fixture_keys(item) -> set[tuple]:
    """What ``item`` shares with other tests: one key per instance of a fixture wider than a
    function (a module fixture is made once per module, a session fixture once per session)."""
    keys = set()
    info = getattr(item, "_fixtureinfo", None)
    for name in getattr(info, "names_closure", ()):
        definitions = info.name2fixturedefs.get(name)
        if not definitions or name in CHEAP_SHARED_FIXTURES:
            continue
        definition = definitions[-1]
        scope = getattr(definition.scope, "value", definition.scope)
        instance = {"session": "", "package": str(item.path.parent), "module": str(item.path),
                    "class": f"{item.path}::{getattr(item.cls, '__qualname__', '')}"}.get(scope)
        if instance is not None:
            keys.add((name, definition.baseid, instance))
    return keys


def groups(items) -> dict[str, dict]:
    """node id -> {"group": the id of its group's first test, "slow": marked slow}."""
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_user: dict = {}
    for index, item in enumerate(items):
        for key in shared_fixture_keys(item) or {("module", str(item.path))}:
            if key in first_user:
                parent[find(index)] = find(first_user[key])
            else:
                first_user[key] = index
    return {item.nodeid: {"group": items[find(index)].nodeid, "slow": item.get_closest_marker("slow") is not None}
            for index, item in enumerate(items)}


def write_groups(config, items) -> None:
    """In a worker, after collection: every test's group, for the controller's scheduler."""
    path = os.environ.get(GROUPS_FILE_ENV)
    if not path or not hasattr(config, "workerinput") or not grouping(config):
        return
    partial = f"{path}.{os.getpid()}"
    Path(partial).write_text(json.dumps(groups(items)))
    os.replace(partial, path)  # the workers write the same groups; the scheduler reads a whole file


def make_scheduler(config, log):
    """The controller's scheduler under ``--dist loadgroup``: xdist's scope scheduling with our
    groups as the scopes (a test the file does not name goes with its module)."""
    if not grouping(config):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        _groups: dict | None = None

        def _read_groups(self) -> dict:
            if self._groups is None:
                try:
                    self._groups = json.loads(Path(os.environ[GROUPS_FILE_ENV]).read_text())
                except (KeyError, OSError, ValueError):
                    self._groups = {}
            return self._groups

        def _split_scope(self, nodeid: str) -> str:
            entry = self._read_groups().get(nodeid)
            return entry["group"] if entry else nodeid.split("::", 1)[0]

        def schedule(self) -> None:
            # xdist's LoadScopeScheduling.schedule, but the groups are handed out longest first:
            # by how many slow tests they hold (the graded class, the hub), then by size (xdist
            # orders by size alone, which would start the hub's 9 tests last).
            assert self.collection_is_completed
            if self.collection is not None:
                for node in self.nodes:
                    self._reschedule(node)
                return
            if not self._check_nodes_have_same_collection():
                self.log("**Different tests collected, aborting run**")
                return
            self.collection = list(next(iter(self.registered_collections.values())))
            if not self.collection:
                return
            units: dict[str, dict[str, bool]] = {}
            for nodeid in self.collection:
                units.setdefault(self._split_scope(nodeid), {})[nodeid] = False
            entries = self._read_groups()

            def longest_first(scope: str) -> tuple[int, int]:
                ids = units[scope]
                return -sum(bool(entries.get(n, {}).get("slow")) for n in ids), -len(ids)

            for scope in sorted(units, key=longest_first):
                self.workqueue[scope] = units[scope]
            for _ in range(max(0, len(self.nodes) - len(self.workqueue))):
                unused_node, _assigned = self.assigned_work.popitem()
                unused_node.shutdown()
            for node in self.nodes:
                self._assign_work_unit(node)
            for node in self.nodes:
                self._reschedule(node)
            if not self.workqueue:
                for node in self.nodes:
                    node.shutdown()

    return GroupScheduling(config, log)
