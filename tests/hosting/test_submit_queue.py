"""coursekit.hosting.submit_queue: the grading-on-submit journal (durable, fair, rate-limited)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from coursekit.hosting.submit_queue import HOUR, Journal, QueueError


class Clock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def stamp(n: int) -> str:
    return f"2026-12-07 10:{n // 60:02d}:{n % 60:02d}.000000 UTC"


def journal(tmp_path, **kw) -> Journal:
    return Journal(str(tmp_path / "q"), **kw)


def test_states_survive_a_restart_and_done_is_never_redone(tmp_path):
    clock = Clock()
    q = journal(tmp_path, clock=clock)
    assert q.offer("ann", stamp(1), "ann+week2+x")
    entry = q.next()
    q.start(entry.key)
    q.finish(entry.key, True)
    q.close()
    again = journal(tmp_path, clock=clock)
    assert again.state("ann", stamp(1)) == "done"
    assert not again.offer("ann", stamp(1), "ann+week2+x")  # seen again in the inbound folder: not queued
    assert again.next() is None


def test_interrupted_grading_is_redone_once_then_given_up(tmp_path):
    q = journal(tmp_path)
    q.offer("ann", stamp(1), "n")
    q.start(("ann", stamp(1)))
    q.close()
    q = journal(tmp_path)  # "crash" while grading
    assert q.state("ann", stamp(1)) == "queued"
    q.start(q.next().key)
    q.close()
    q = journal(tmp_path)  # interrupted a second time
    assert q.state("ann", stamp(1)) == "done" and q.entries[("ann", stamp(1))].ok is False
    assert q.next() is None


def test_torn_last_line_is_ignored(tmp_path):
    q = journal(tmp_path)
    q.offer("ann", stamp(1), "n")
    q.close()
    with open(tmp_path / "q" / "journal.jsonl", "ab") as f:
        f.write(b'{"op": "done", "student": "ann", "st')  # a crash mid-write
    q = journal(tmp_path)
    assert q.state("ann", stamp(1)) == "queued"


def test_resubmission_replaces_the_queued_one_not_the_one_being_graded(tmp_path):
    q = journal(tmp_path)
    q.offer("ann", stamp(1), "a1")
    q.start(("ann", stamp(1)))
    q.offer("ann", stamp(2), "a2")
    q.offer("ann", stamp(3), "a3")
    assert q.state("ann", stamp(1)) == "grading"
    assert q.state("ann", stamp(2)) == "replaced"
    assert q.state("ann", stamp(3)) == "queued"
    assert not q.offer("ann", stamp(2), "a2")  # an older hand-in seen again is not queued again


def test_a_flood_delays_another_student_by_at_most_one_grading(tmp_path):
    clock = Clock()
    q = journal(tmp_path, clock=clock, max_per_hour=100)
    order = []
    for n in range(10):  # ann floods; bob hands in once, after her first
        clock.t += 1
        q.offer("ann", stamp(n), f"a{n}")
        if n == 1:
            q.offer("bob", stamp(n), "b")
    while (entry := q.next()) is not None:
        q.start(entry.key)
        order.append(entry.student)
        clock.t += 1
        q.offer("ann", stamp(100 + len(order)), "more")  # ann keeps handing in while each grading runs
        q.finish(entry.key, True)
        if len(order) > 5:
            break
    assert order.index("bob") <= 1


def test_rate_limit_sliding_window_and_next_possible(tmp_path):
    clock = Clock()
    q = journal(tmp_path, clock=clock, max_per_hour=2)
    for n in range(2):
        q.offer("ann", stamp(n), "a")
        q.start(q.next().key)
        q.finish(("ann", stamp(n)), True)
        clock.t += 600
    first = q.entries[("ann", stamp(0))].starts[0]
    q.offer("ann", stamp(5), "a")
    assert q.next() is None
    assert q.next_possible("ann") == first + HOUR
    q.offer("bob", stamp(6), "b")  # the limit is per student
    assert q.next().student == "bob"
    clock.t = first + HOUR
    q.start(("bob", stamp(6)))
    assert q.next().student == "ann"


def test_journal_folder_refuses_a_link_and_open_modes(tmp_path):
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    os.symlink(tmp_path / "elsewhere", tmp_path / "q")
    with pytest.raises(OSError):
        journal(tmp_path)
    os.unlink(tmp_path / "q")
    (tmp_path / "q").mkdir(mode=0o755)
    os.chmod(tmp_path / "q", 0o755)
    with pytest.raises(QueueError):
        journal(tmp_path)
    os.chmod(tmp_path / "q", 0o700)
    q = journal(tmp_path)
    assert os.stat(tmp_path / "q" / "journal.jsonl").st_mode & 0o077 == 0
    q.close()


WORKER = textwrap.dedent("""
    import os, sys, time
    from coursekit.hosting.submit_queue import Journal
    folder, log, slow = sys.argv[1], sys.argv[2], sys.argv[3]
    q = Journal(folder, max_per_hour=100)
    while (entry := q.next()) is not None:
        q.start(entry.key)
        with open(log, "a") as f:
            f.write(f"begin {entry.student}\\n")
        if entry.student == slow and not os.path.exists(log + ".resumed"):
            print("grading", entry.student, flush=True)
            time.sleep(60)  # killed here
        with open(log, "a") as f:
            f.write(f"graded {entry.student}\\n")
            f.flush()
            os.fsync(f.fileno())
        q.finish(entry.key, True)
    print("idle", flush=True)
""")


def test_kill_9_mid_grading_then_restart_grades_each_exactly_once(tmp_path):
    folder, log = str(tmp_path / "q"), str(tmp_path / "graded.log")
    q = Journal(folder)
    for n, student in enumerate(["ann", "bob", "cem", "dan"]):
        q.offer(student, stamp(n), student)
    q.close()
    proc = subprocess.Popen([sys.executable, "-c", WORKER, folder, log, "cem"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().split() == ["grading", "cem"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    open(log + ".resumed", "w").close()
    again = subprocess.run([sys.executable, "-c", WORKER, folder, log, "cem"], capture_output=True, text=True, timeout=60)
    assert again.stdout.strip() == "idle", again.stderr
    lines = open(log).read().split()
    graded = [lines[i + 1] for i in range(0, len(lines), 2) if lines[i] == "graded"]
    assert sorted(graded) == ["ann", "bob", "cem", "dan"]  # each exactly once
    begun = [lines[i + 1] for i in range(0, len(lines), 2) if lines[i] == "begin"]
    assert begun.count("cem") == 2 and len(begun) == 5  # cem begun twice: the killed grading and its one retry
    assert all(Journal(folder).state(s, stamp(n)) == "done" for n, s in enumerate(["ann", "bob", "cem", "dan"]))
