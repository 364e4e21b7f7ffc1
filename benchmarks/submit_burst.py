"""Grading on submit under a burst (issue 28, item 4): N hand-ins within a window through the
exchange of the real course hub; per hand-in, submit -> feedback visible to the student, and the
service's throughput. results/submit_burst.txt holds a recorded run.

    .venv/bin/python benchmarks/submit_burst.py [--submissions 20] [--window 120] [--out FILE]

As root (the hub makes Unix accounts). bin/hub's program starts on 127.0.0.1 with its own course
copy, exchange and accounts (tests/hub_session.py), one student account per hand-in (so that no
hand-in replaces another and each gets its own feedback), ``c.SubmitGrading.enabled = True`` and no
practical rate limit. The instructor releases week2; each student fetches it and hands in the
``all-but-training`` reference answers with ``nbgrader submit``, at evenly spaced times within the
window. "Visible" is when every notebook's feedback page of that hand-in is in the exchange under
the name ``nbgrader fetch_feedback`` looks for (the hash of its submission_secret.txt and the
notebook), checked by root every second, so that polling costs the graded machine nothing; one
student's fetch_feedback is run at the end to confirm. The service grades one hand-in at a time.
It is not a test; on the shared 2-core machine a grading takes ~2 minutes, so 20 take ~40.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import hub_session  # noqa: E402
from coursekit.hosting import hub as hubmod  # noqa: E402
from nbgrader.utils import notebook_hash  # noqa: E402

SETTINGS = ('\n# benchmarks/submit_burst.py\n'
            'c.SubmitGrading.enabled = True\n'
            'c.SubmitGrading.max_per_hour = 1000\n'
            'c.SubmitGrading.poll_seconds = 1\n'
            'c.CourseSchedule.due_dates = {"week2": "2030-01-01 00:00:00 UTC"}\n')


def use_students(count: int) -> list[str]:
    """hub_session's roster with ``count`` students (w2-s01...)."""
    students = tuple(f"w2-s{i:02d}" for i in range(1, count + 1))
    hub_session.STUDENTS = students
    hub_session.ROSTER = hubmod.Roster(hub_session.INSTRUCTOR, (hub_session.TA,), students, hub_session.GROUP)
    return list(students)


def visible_at(hub, student: str, notebooks: list[str]) -> float | None:
    """When every feedback page of ``student``'s hand-in is in the exchange (None: not yet)."""
    course_id = hub.hub.course_id()
    inbound = hub.hub.exchange / course_id / "inbound"
    feedback = hub.hub.exchange / course_id / "feedback"
    folders = [p for p in inbound.glob(f"{student}+week2+*")]
    if not folders:
        return None
    secret = (folders[0] / "submission_secret.txt").read_text()
    pages = [feedback / f"{notebook_hash(secret=secret, notebook_id=nb)}.html" for nb in notebooks]
    if all(p.exists() for p in pages):
        return max(p.stat().st_mtime for p in pages)
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=20)
    parser.add_argument("--window", type=float, default=120.0, help="seconds over which the hand-ins are spread")
    parser.add_argument("--timeout", type=float, default=4 * 3600)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "submit_burst.txt")
    args = parser.parse_args(argv)
    from builder import NOTEBOOKS
    from test_submit_service import feedback_pages, hand_in, start_hub  # before the roster changes

    students = use_students(args.submissions)

    base = Path(tempfile.mkdtemp(prefix="coursekit-submit-burst-", dir="/tmp"))  # the accounts reach it
    started_hub = time.monotonic()
    hub = start_hub(base, SETTINGS)
    hub_seconds = time.monotonic() - started_hub
    try:
        for student in students:  # fetched beforehand: the burst is the hand-ins
            proc = hub.run_as(student, "nbgrader", "fetch_assignment", "week2")
            assert proc.returncode == 0, proc.stderr[-2000:]
        submitted: dict[str, float] = {}
        gap = args.window / max(1, len(students) - 1) if len(students) > 1 else 0.0
        first = time.time()

        def submit_all():
            for i, student in enumerate(students):
                delay = first + i * gap - time.time()
                if delay > 0:
                    time.sleep(delay)
                submitted[student] = hand_in(hub, student)

        thread = threading.Thread(target=submit_all)
        thread.start()
        visible: dict[str, float] = {}
        deadline = time.time() + args.timeout
        while len(visible) < len(students) and time.time() < deadline:
            for student in students:
                if student in submitted and student not in visible:
                    at = visible_at(hub, student, list(NOTEBOOKS))
                    if at is not None:
                        visible[student] = at
                        print(f"{student}: feedback visible {at - submitted[student]:.0f} s after submit", flush=True)
            time.sleep(1)
        thread.join()
        confirm = feedback_pages(hub, students[0])
        assert any(len(p) == len(NOTEBOOKS) for p in confirm.values()), "the student's fetch_feedback found no feedback"
    finally:
        hub.stop()
    latencies = [visible[s] - submitted[s] for s in students if s in visible]
    span = max(visible.values()) - min(submitted.values()) if visible else float("nan")
    lines = [
        f"# benchmarks/submit_burst.py, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.node()}, {os.cpu_count()} cores; load average at the end {os.getloadavg()[0]:.1f}",
        f"# {args.submissions} hand-ins through the exchange within {args.window:.0f} s (all-but-training answers, "
        f"one student each); the service grades one at a time; hub start {hub_seconds:.0f} s (not counted)",
        f"hand-ins: {len(students)}, feedback visible: {len(latencies)}"
        + ("" if len(latencies) == len(students) else f" (the others not within {args.timeout:.0f} s)"),
    ]
    if latencies:
        lines += [
            f"submit -> feedback visible: median {statistics.median(latencies):.0f} s, "
            f"p95 {percentile(latencies, 0.95):.0f} s, max {max(latencies):.0f} s, min {min(latencies):.0f} s",
            f"throughput: {len(latencies) / span * 3600:.1f} hand-ins per hour "
            f"({span / len(latencies):.0f} s per hand-in, first submit to last feedback {span:.0f} s)",
            "per hand-in (s): " + ", ".join(f"{s} {visible[s] - submitted[s]:.0f}" for s in students if s in visible),
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0 if len(latencies) == len(students) else 1


if __name__ == "__main__":
    raise SystemExit(main())
