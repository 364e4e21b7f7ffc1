"""One record of what happened to a graded submission (coursekit/core/problems.py, issue 26).

- grading: one small hostile class (a time-out, an output flood, a refused file, a late hand-in,
  a deleted check cell put back, a missing notebook) graded by plain `nbgrader autograde` and by
  the class runner gives the same sealed records, the same problems on each feedback page and
  the same class-report rows, and no entry twice (lists compared, never sets);
- reading: a record that is damaged, too large, a link, a FIFO or forged (another student's,
  an entry the grader never writes, an entry twice) reads as one "unreadable-record" entry,
  never a crash and never as the grader's words.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

import builder
from builder import ASSIGNMENT
from conftest import FAST_TIMEOUT, SUBMISSIONS, add_test_settings, course_copy
from coursekit.core import notebook, problems
from coursekit.term import report
from coursekit.core.course import Course, grading_env

STUDENT = "hostile"


# --- reading: strict, never raising ----------------------------------------------------------------


def sealed(tmp_path: Path) -> Path:
    problems.record(tmp_path, "timeout", "fashion_mnist", "f4_functions", notebook.STOPS["timeout"][1])
    problems.record(tmp_path, "refused-file", None, None, "'notes.txt' is a link")
    problems.seal(tmp_path, STUDENT, ASSIGNMENT, 3600.0)
    return tmp_path


def test_a_sealed_record_reads_back_whole(tmp_path):
    record = problems.read(sealed(tmp_path), STUDENT, ASSIGNMENT)
    assert record == problems.SubmissionRecord(STUDENT, ASSIGNMENT, (
        problems.Entry("refused-file", None, None, "'notes.txt' is a link"),
        problems.Entry("timeout", "fashion_mnist", "f4_functions", notebook.STOPS["timeout"][1])), 3600.0, True)
    assert record.entries[1].title("student") == "Time limit" and record.entries[1].title("ta") == \
        problems.KINDS["timeout"].meaning


def test_an_entry_is_its_kind_notebook_and_cell_once(tmp_path):
    problems.record(tmp_path, "timeout", "fashion_mnist", "f4_functions", "stopped")
    problems.record(tmp_path, "timeout", "fashion_mnist", "f4_functions", "stopped")
    problems.record(tmp_path, "timeout", "fashion_mnist", "f4_functions", "stopped, said again")
    problems.record(tmp_path, "stray-file", None, None, "a.ipynb")
    problems.record(tmp_path, "stray-file", None, None, "b.ipynb")
    problems.record(tmp_path, "stray-file", None, None, "a.ipynb")
    problems.record(tmp_path, "late", None, None, "late by 2 hours")
    problems.record(tmp_path, "late", None, None, "late by 2 hours (said again)")
    assert problems.load(tmp_path) == [
        {"kind": "late", "notebook": None, "cell": None, "message": "late by 2 hours\nlate by 2 hours (said again)"},
        {"kind": "stray-file", "notebook": None, "cell": None, "message": "a.ipynb"},  # one file, one entry
        {"kind": "stray-file", "notebook": None, "cell": None, "message": "b.ipynb"},
        {"kind": "timeout", "notebook": "fashion_mnist", "cell": "f4_functions", "message": "stopped\nstopped, said again"}]
    entry = problems.Entry("late", None, None, "x")
    with pytest.raises(ValueError):
        problems.SubmissionRecord(STUDENT, ASSIGNMENT, (entry, entry))


def test_the_order_is_the_records_whichever_entry_point_recorded_first(tmp_path):
    """Plain autograde records the intake's refusals before grading, the runner after it."""
    steps = [("late", None, None), ("refused-file", None, None), ("deleted-test-cell", "mnist", "m1"),
             ("timeout", "fashion_mnist", "f4"), ("too-long", "fashion_mnist", "f5"), ("refused-file", "mnist", None)]
    for name, order in (("before", steps), ("after", steps[2:] + steps[:2])):
        for kind, nb, cell in order:
            problems.record(tmp_path / name, kind, nb, cell, "x")
    before, after = (problems.load(tmp_path / name) for name in ("before", "after"))
    assert before == after
    assert [(e["kind"], e["notebook"]) for e in before] == [
        ("refused-file", None), ("late", None), ("timeout", "fashion_mnist"), ("too-long", "fashion_mnist"),
        ("refused-file", "mnist"), ("deleted-test-cell", "mnist")]


def forge(folder: Path, **changes) -> None:
    data = json.loads(problems.path_for(folder).read_text())
    data.update(changes)
    problems.path_for(folder).write_text(json.dumps(data))


def entry_dict(kind="timeout", notebook_="fashion_mnist", cell="f4_functions", message="stopped"):
    return {"kind": kind, "notebook": notebook_, "cell": cell, "message": message}


DAMAGE = {
    "not JSON": lambda f: problems.path_for(f).write_text('{"kind": [[[['),
    "deeply nested": lambda f: problems.path_for(f).write_text("[" * 100_000 + "]" * 100_000),
    "the old list": lambda f: problems.path_for(f).write_text(json.dumps([entry_dict()])),
    "oversized": lambda f: forge(f, entries=[entry_dict(message="x" * 60_000, cell=str(i)) for i in range(20)]),
    "another student's": lambda f: forge(f, student="mallory"),
    "another assignment's": lambda f: forge(f, assignment="week3"),
    "a kind the report finds itself": lambda f: forge(f, entries=[entry_dict(kind="not-autograded")]),
    "an unknown kind": lambda f: forge(f, entries=[entry_dict(kind="extra-credit")]),
    "an entry twice": lambda f: forge(f, entries=[entry_dict(), entry_dict()]),
    "an extra field": lambda f: forge(f, entries=[{**entry_dict(), "points": 10}]),
    "a name that is not text": lambda f: forge(f, entries=[entry_dict(cell=["f4"])]),
    "negative lateness": lambda f: forge(f, seconds_late=-5),
    "lateness as text": lambda f: forge(f, seconds_late="0"),
    "a symlink": lambda f: (problems.path_for(f).unlink(), problems.path_for(f).symlink_to("/etc/passwd")),
    "a FIFO": lambda f: (problems.path_for(f).unlink(), os.mkfifo(problems.path_for(f))),
    "a folder": lambda f: (problems.path_for(f).unlink(), problems.path_for(f).mkdir()),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_or_forged_record_is_a_recorded_problem_never_a_crash(tmp_path, damage):
    folder = sealed(tmp_path)
    assert not problems.read(folder, STUDENT, ASSIGNMENT).damaged  # the record as written is read
    DAMAGE[damage](folder)
    record = problems.read(folder, STUDENT, ASSIGNMENT)
    assert [e.kind for e in record.entries] == ["unreadable-record"], damage
    assert record.damaged and record.student == STUDENT and record.seconds_late == 0.0
    if "another" not in damage:  # (who the record is for is checked by the readers that know it)
        assert problems.load(folder) == [] and problems.load_checked(folder) == ([], True)
    if damage != "a folder" and "another" not in damage:  # grading again writes a whole record in its place
        problems.record(folder, "late", None, None, "late")
        assert problems.load(folder) == [entry_dict("late", None, None, "late")]


# --- grading: the same record whichever way the class was graded ------------------------------------


def hostile_submission(course: Course) -> None:
    """fashion_mnist of tests/fixtures/submissions/print-50mb (an output flood), with
    infinite-loop's endless loop after F4's functions, F1's hidden check deleted; a link beside
    it; handed in 30 hours late; no mnist."""
    nb = builder.read(SUBMISSIONS / "print-50mb" / ASSIGNMENT / "fashion_mnist.ipynb")
    builder.append_to(nb, "f4_functions", "i = 0\nwhile i < 5:\n    relu(np.array([i - 2.0]))")
    nb.cells.remove(builder.cell(nb, "f1_load_hidden"))
    folder = builder.Submission({"fashion_mnist": nb}, builder.late_by(course.layout, 30)).submit(course, STUDENT)
    (folder / "notes.txt").symlink_to("/etc/passwd")


def graded_both_ways(generated_course, tmp_path) -> dict[str, Course]:
    courses = {}
    for way in ("nbgrader", "runner"):
        course = course_copy(generated_course, tmp_path / way)
        add_test_settings(course.root, [f"c.Execute.timeout = {FAST_TIMEOUT}"])
        hostile_submission(course)
        if way == "nbgrader":
            course.nbgrader("autograde", ASSIGNMENT, timeout=1800)
        else:
            proc = subprocess.run([sys.executable, "-m", "coursekit.grading.runner", ASSIGNMENT, "--no-progress", "-j", "1",
                                   "--course", str(course.root)], capture_output=True, text=True,
                                  env=grading_env(), timeout=1800)
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        course.nbgrader("generate_feedback", ASSIGNMENT, timeout=600)
        courses[way] = course
    return courses


def steady(text: str) -> str:
    """``text`` without the size of an output the sandbox's output budget cut: how much of a flood
    gets through before the cut depends on timing (6,615,824 characters one run, 6,620,554 the
    next), whichever entry point graded it."""
    return re.sub(r"printed [\d,]+ characters", "printed N characters", text)


def steady_record(record: problems.SubmissionRecord) -> problems.SubmissionRecord:
    return problems.SubmissionRecord(record.student, record.assignment, tuple(
        problems.Entry(e.kind, e.notebook, e.cell, steady(e.message)) for e in record.entries),
        record.seconds_late, record.sealed)


def feedback_problems(course: Course, name: str) -> list[str]:
    page = (course.layout.feedback(STUDENT, ASSIGNMENT) / f"{name}.html").read_text()
    return [steady(item) for item in re.findall(r'<li class="coursekit-problem">(.*?)</li>', page, re.S)]


def report_rows(course: Course) -> list[tuple]:
    data = report.collect(course.layout, ASSIGNMENT)
    return [(s.student, p["kind"], p["notebook"], p["cell"], steady(p["message"]), p["source"])
            for s in data.submissions for p in s.problems]


@pytest.mark.slow
def test_plain_autograde_and_the_runner_record_the_same_once(generated_course, tmp_path):
    courses = graded_both_ways(generated_course, tmp_path)
    records = {way: steady_record(problems.read(c.layout.autograded(STUDENT, ASSIGNMENT), STUDENT, ASSIGNMENT))
               for way, c in courses.items()}
    record = records["nbgrader"]
    assert record.sealed and record.seconds_late == 30 * 3600 and not record.damaged
    keys = [e.key for e in record.entries]
    assert len(keys) == len(set(keys))
    # every hostile thing, each once, where it happened
    assert ("timeout", "fashion_mnist", "f4_functions") in keys
    assert ("deleted-test-cell", "fashion_mnist", "f1_load_hidden") in keys
    assert [k for k in keys if k[0] == "sandbox"] and all(k[1] == "fashion_mnist" and k[2] for k in keys
                                                         if k[0] == "sandbox")  # the output budget, its cell
    assert [k for k in keys if k[0] == "refused-file"] and ("missing-notebook", "mnist", None) in keys
    assert ("late", None, None) in keys
    assert [e.message for e in record.entries if e.kind == "timeout"] == [notebook.STOPS["timeout"][1]]
    # the same record, the same feedback, the same report rows, whichever way it was graded
    assert records["runner"].problems() == record.problems()
    assert records["runner"] == record
    for name in builder.NOTEBOOKS:
        shown = feedback_problems(courses["nbgrader"], name)
        assert shown == feedback_problems(courses["runner"], name)
        assert len(shown) == len(set(shown)) == len(record.entries), shown
        assert sum("Time limit" in item for item in shown) == 1
    rows = report_rows(courses["nbgrader"])
    assert rows == report_rows(courses["runner"])
    recorded = [r for r in rows if r[5] == problems.FILENAME]
    assert [r[1:5] for r in recorded] == [(e.kind, e.notebook, e.cell, e.message) for e in record.entries]
