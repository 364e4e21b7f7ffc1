"""Root never follows a path the staff planted (issue 25).

On the course hub the staff group may write gradebook/ (coursekit/hosting/hub.py), and root runs the
runner there. A TA who leaves a link named like the runner's lock (``.runner.lock``), its log
folder (``runner-logs``) or the gradebook itself made root truncate, chmod or create whatever the
link points to. Each test shows the old open doing that damage to a canary file outside the
course, then the runner refusing with a clear message and the canary untouched.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from builder import ASSIGNMENT
from conftest import course_copy
from coursekit.core import gradebook
from coursekit.grading import runner

CANARY = "precious: root must not touch this\n"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the runner (and the attack) run as root")


@pytest.fixture
def course(generated_course, tmp_path):
    return course_copy(generated_course, tmp_path / "course", execute=False)


def canary_file(tmp_path: Path) -> Path:
    canary = tmp_path / "outside" / "canary.txt"
    canary.parent.mkdir()
    canary.write_text(CANARY)
    os.chmod(canary, 0o644)
    return canary


def run_refused(course) -> str:
    with pytest.raises(runner.RunnerError) as refused:
        runner.Runner(course.root, ASSIGNMENT, jobs=1, progress=False).run()
    return str(refused.value)


def test_a_link_planted_as_the_runner_lock(course, tmp_path):
    canary = canary_file(tmp_path)
    lock = course.layout.gradebook_folder / runner.LOCK_NAME
    os.symlink(canary, lock)
    # The old code: open(gradebook/.runner.lock, "w") follows the link and truncates its target.
    old = tmp_path / "old-canary.txt"
    old.write_text(CANARY)
    lock.unlink()
    os.symlink(old, lock)
    open(course.layout.gradebook_folder / runner.LOCK_NAME, "w").close()
    assert old.read_text() == ""
    lock.unlink()
    os.symlink(canary, lock)
    # Now: refused, with what it is and what to do; the canary is untouched.
    message = run_refused(course)
    assert f"{lock} is a symbolic link (to '{canary}')" in message and "remove it" in message
    assert canary.read_text() == CANARY and stat.S_IMODE(canary.stat().st_mode) == 0o644


def test_a_link_planted_as_the_runner_log_folder(course, tmp_path):
    canary = canary_file(tmp_path).parent  # a folder of someone else's, mode 0755
    os.chmod(canary, 0o755)
    logs = course.layout.gradebook_folder / runner.LOG_DIR
    os.symlink(canary, logs)
    # The old code: mkdir(exist_ok=True) accepts the link and chmod follows it.
    old = tmp_path / "old-folder"
    old.mkdir(mode=0o755)
    logs.unlink()
    os.symlink(old, logs)
    logs.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(logs, 0o700)
    assert stat.S_IMODE(old.stat().st_mode) == 0o700
    logs.unlink()
    os.symlink(canary, logs)
    message = run_refused(course)
    assert f"{logs} is a symbolic link (to '{canary}')" in message
    assert stat.S_IMODE(canary.stat().st_mode) == 0o755 and (canary / "canary.txt").read_text() == CANARY


def test_a_log_folder_the_staff_made_is_refused(course, tmp_path):
    """A folder named runner-logs that a TA made: its links and hard links would be theirs to
    swap; the runner keeps its logs only in a folder of its own."""
    logs = course.layout.gradebook_folder / runner.LOG_DIR
    logs.mkdir()
    os.chown(logs, 65534, 65534)  # nobody's
    message = run_refused(course)
    assert f"{logs} is a folder that belongs to nobody, not to the runner" in message


def test_a_hard_linked_lock_is_neither_written_nor_used(course, tmp_path):
    canary = canary_file(tmp_path)
    os.link(canary, course.layout.gradebook_folder / runner.LOCK_NAME)
    assert "not a plain file (a hard link" in run_refused(course)
    assert canary.read_text() == CANARY


def test_a_link_planted_as_the_gradebook(course, tmp_path):
    """SQLite follows a link at the database's name: root would create (or write) a database
    wherever it points. The runner refuses before opening it."""
    db = course.layout.gradebook_path
    target = tmp_path / "outside" / "made-by-root"
    target.parent.mkdir()
    db.unlink()
    os.symlink(target, db)
    assert gradebook.damage(course.layout.db_url) is None  # the old check: a dangling link is "no gradebook yet"
    with sqlite3.connect(db) as old:  # what opening it did
        old.execute("CREATE TABLE t (x)")
    assert target.is_file()
    target.unlink()
    message = run_refused(course)
    assert "is a symbolic link" in message and "Nothing was graded or changed" in message
    assert not target.exists()


def test_the_runner_makes_its_own_lock_and_log_folder(course):
    """Without anything planted the runner makes both, private, and never writes to the lock."""
    folder = course.layout.gradebook_folder
    outcomes = runner.Runner(course.root, ASSIGNMENT, jobs=1, progress=False).run()
    assert outcomes == []
    logs, lock = os.lstat(folder / runner.LOG_DIR), os.lstat(folder / runner.LOCK_NAME)
    assert stat.S_ISDIR(logs.st_mode) and stat.S_IMODE(logs.st_mode) == 0o700 and logs.st_uid == os.geteuid()
    assert stat.S_ISREG(lock.st_mode) and lock.st_size == 0
