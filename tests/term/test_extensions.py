"""`coursekit extend`: a student's own due date, kept where nbgrader keeps it (the submission's
``extension``), the reason beside the gradebook, and the late policy applied again without
grading again; on a copy of the graded class (tests/conftest.py's fast_class).

The fixture's `late-submission` was handed in 2026-12-06 11:00 UTC, 35 h after the due date
(2026-12-04 23:59 UTC): 2 started days, 20 % off each notebook (coursekit.core.late).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
from click.testing import CliRunner

from builder import ASSIGNMENT
from coursekit.term import cli, extensions
from coursekit.core.course import grading_env
from coursekit.core.layout import CourseLayout

LATE = "late-submission"


@pytest.fixture
def course(fast_class, tmp_path) -> CourseLayout:
    root = tmp_path / "course"
    shutil.copytree(fast_class.course.root, root, symlinks=True)
    return CourseLayout.load(root)


def invoke(layout, *args):
    return CliRunner().invoke(cli.main, [args[0], "--course", str(layout.root), *args[1:]], catch_exceptions=False)


def penalties(layout, student=LATE) -> dict[str, float | None]:
    with layout.gradebook() as gb:
        return {nb.name: nb.late_submission_penalty for nb in gb.find_submission(ASSIGNMENT, student).notebooks}


def submission(layout, student=LATE):
    with layout.gradebook() as gb:
        sub = gb.find_submission(ASSIGNMENT, student)
        return sub.duedate, sub.extension, sub.score, sub.late_submission_penalty, sub.total_seconds_late


def test_extension_after_grading_reapplies_the_late_policy_without_grading(course):
    graded_before = graded_cells(course)
    autograde_penalties = penalties(course)
    _, _, score, penalty, seconds_late = submission(course)
    assert penalty > 0 and seconds_late == 35 * 3600 + 60
    assert all(p == pytest.approx(0.2 * nb_score, abs=1e-3) for p, nb_score in
               zip(autograde_penalties.values(), _notebook_scores(course).values()))

    result = invoke(course, "extend", LATE, "--until", "2026-12-07 00:00", "--reason", "medical, with a note")
    assert result.exit_code == 0, result.output
    due, extension, score_after, penalty_after, late_after = submission(course)
    assert str(due) == "2026-12-07 00:00:00" and extension is not None
    assert penalty_after == 0 and late_after == 0 and score_after == score
    assert set(penalties(course).values()) == {None}
    assert late_records(course) == [], "the feedback page and the report no longer say late"
    assert graded_cells(course) == graded_before, "nothing was graded again"

    listed = invoke(course, "extend", "--list")
    assert f"{LATE}: due 2026-12-07 00:00:00 UTC (in the gradebook) — medical, with a note" in listed.output
    store = extensions.store_path(course)
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert json.loads(store.read_text())[ASSIGNMENT][LATE]["reason"] == "medical, with a note"

    # a shorter extension: 23 h late, one started day, 10 %
    invoke(course, "extend", LATE, "--hours", "12")
    assert all(p == pytest.approx(0.1 * s, abs=1e-3) for p, s in
               zip(penalties(course).values(), _notebook_scores(course).values()))
    (record,) = late_records(course)
    assert "1 started day(s) late, so the late policy takes 10 %" in record and "an extension" in record

    # taken back: the penalty autograde computed, exactly
    result = invoke(course, "extend", LATE, "--remove")
    assert result.exit_code == 0 and "the class's again" in result.output
    assert penalties(course) == autograde_penalties
    assert submission(course)[1] is None
    (record,) = late_records(course)
    assert "2 started day(s) late, so the late policy takes 20 %" in record


def graded_cells(layout, student=LATE) -> dict:
    """Every cell of the autograded notebooks but the grader's notes, and the gradebook's scores."""
    import nbformat

    from coursekit.submissions.sanitize import NOTES_MARK

    cells = {}
    for path in sorted(layout.autograded(student, ASSIGNMENT).glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        cells[path.name] = [c for c in nb.cells if not c.source.startswith(NOTES_MARK)]
    with layout.gradebook() as gb:
        cells["scores"] = sorted((g.notebook.name, g.name, g.auto_score, g.manual_score)
                                 for nb in gb.find_submission(ASSIGNMENT, student).notebooks for g in nb.grades)
    return cells


def late_records(layout, student=LATE) -> list[str]:
    from coursekit.core import problems

    return [p["message"] for p in problems.load(layout.autograded(student, ASSIGNMENT)) if p["kind"] == "late"]
    assert LATE not in json.loads(store.read_text()).get(ASSIGNMENT, {})


def _notebook_scores(layout, student=LATE):
    with layout.gradebook() as gb:
        return {nb.name: nb.score for nb in gb.find_submission(ASSIGNMENT, student).notebooks}


def test_status_report_export_and_feedback_use_the_students_own_due_date(course, tmp_path):
    status = invoke(course, "status")
    line = next(l for l in status.output.splitlines() if l.startswith(LATE))
    assert " yes " in line.split("2026-12-06 11:00", 1)[1][:12], line  # late
    invoke(course, "extend", LATE, "--until", "2026-12-07 00:00 UTC")
    status = invoke(course, "status")
    line = next(l for l in status.output.splitlines() if l.startswith(LATE))
    assert "2026-12-07 00:00*" in line and " yes " not in line.split("2026-12-06 11:00", 1)[1][:12], line

    invoke(course, "report")
    import csv
    with open(course.root / "reports" / ASSIGNMENT / "report.csv", newline="") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert rows[LATE]["due_date"] == "2026-12-07T00:00:00"
    assert rows["all-but-training"]["due_date"] == "2026-12-04T23:59:00"
    assert float(rows[LATE]["late_penalty"]) == 0

    result = invoke(course, "feedback", "--student", LATE)
    assert result.exit_code == 0, result.output
    page = (course.feedback(LATE, ASSIGNMENT) / "fashion_mnist.html").read_text()
    assert "Due: 2026-12-07 00:00 UTC (your extended due date)" in page
    assert "after the due date" not in page, "no longer reported late"


def test_extension_before_the_submission_is_graded_applies_at_grading(course):
    """Granted before the student submitted (no submission row yet): recorded, then applied when
    `coursekit grade` grades the submission; the same late folder without it is penalised."""
    for student in ("early-ask", "no-ask"):
        shutil.copytree(course.submitted(LATE, ASSIGNMENT), course.submitted(student, ASSIGNMENT))
    result = invoke(course, "extend", "early-ask", "--hours", "48", "--reason", "asked in advance")
    assert result.exit_code == 0 and "applied when the submission is graded" in result.output
    assert "not in the gradebook and has not submitted" not in result.output  # the folder is there
    listed = invoke(course, "extend", "--list")
    assert "early-ask: due 2026-12-06 23:59:00 UTC (applied when the submission is graded)" in listed.output
    result = invoke(course, "grade", "--student", "early-ask", "--student", "no-ask", "--no-progress", "-j", "2")
    assert result.exit_code == 0, result.output
    assert "extensions applied" in result.output
    assert set(penalties(course, "early-ask").values()) == {None}
    assert all(p > 0 for p in penalties(course, "no-ask").values()), "without the extension it is late"
    assert penalties(course, "no-ask") == penalties(course, LATE)


@pytest.mark.parametrize("student", ["../alice", "-rf", "=1+1", "a b", "bob\n", "*"])
def test_student_ids_are_validated_as_the_intake_does(course, student):
    result = invoke(course, "extend", "--hours", "5", "--", student)
    assert result.exit_code == 2 and "was refused" in result.output
    assert not extensions.store_path(course).exists()


def test_bad_requests_are_usage_errors_and_change_nothing(course):
    before = course.gradebook_path.read_bytes()
    for args in (["--until", "2026-12-01"], ["--until", "someday"], ["--hours", "-3"], [],
                 ["--until", "2026-12-09", "--hours", "3"]):
        result = invoke(course, "extend", LATE, *args)
        assert result.exit_code == 2, (args, result.output)
    assert invoke(course, "extend", "--list", LATE).exit_code == 2
    assert course.gradebook_path.read_bytes() == before
    assert not extensions.store_path(course).exists()
    unknown = invoke(course, "extend", "nobody-here", "--hours", "5")
    assert unknown.exit_code == 0 and "check the spelling" in unknown.stderr


def test_extend_through_the_console_script(course):
    script = os.path.join(os.path.dirname(sys.executable), "coursekit")
    proc = subprocess.run([script, "extend", LATE, "--hours", "36", "--reason", "flu"], cwd=course.root / "source",
                          capture_output=True, text=True, env=grading_env())
    assert proc.returncode == 0, proc.stderr
    assert "late-submission: week2 due 2026-12-06 11:59:00 UTC" in proc.stdout
    assert set(penalties(course).values()) == {None}
