"""The `coursekit` command: one group, every subcommand on a copy of the graded class
(tests/conftest.py's fast_class), through click's CliRunner and through the installed console
script; `--help` changes nothing anywhere; the course and the assignment are found from the
course's own configuration (never a name written in code); the old `python -m coursekit.<module>`
entry points still work, and their `--help` only prints.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder import ASSIGNMENT
from coursekit.term import cli
from coursekit.core.course import grading_env
from coursekit.core.layout import CourseLayout

SCRIPT = os.path.join(os.path.dirname(sys.executable), "coursekit")
SUBCOMMANDS = ["grade", "feedback", "report", "export", "extend", "similarity", "status", "schedule"]
OLD_ENTRY_POINTS = ["coursekit.term.summary", "coursekit.term.schedule", "coursekit.term.report", "coursekit.grading.runner"]
LMS = Path(__file__).resolve().parent.parent / "fixtures" / "lms"


@pytest.fixture
def course(fast_class, tmp_path) -> CourseLayout:
    root = tmp_path / "course"
    shutil.copytree(fast_class.course.root, root, symlinks=True)
    return CourseLayout.load(root)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and folder of the course: kind, size, mtime; the gradebook's bytes by hash."""
    found = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        found[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    gradebook = root / "gradebook" / "gradebook.db"
    found["<gradebook bytes>"] = hashlib.sha256(gradebook.read_bytes()).hexdigest()
    return found


def script(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, *args], cwd=cwd, capture_output=True, text=True, env=grading_env(), timeout=900)


def test_help_of_every_subcommand_and_old_entry_point_changes_nothing(course, monkeypatch):
    monkeypatch.chdir(course.root)
    before = snapshot(course.root)
    runner = CliRunner()
    for args in [[], *[[c] for c in SUBCOMMANDS]]:
        result = runner.invoke(cli.main, [*args, "--help"], catch_exceptions=False)
        assert result.exit_code == 0 and result.output.startswith("Usage: "), (args, result.output)
    for args in [[], *[[c] for c in SUBCOMMANDS]]:
        proc = script(*args, "--help", cwd=course.root)
        assert proc.returncode == 0 and proc.stdout.startswith("Usage: coursekit"), (args, proc.stderr)
    for module in OLD_ENTRY_POINTS:
        proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=course.root, capture_output=True,
                              text=True, env=grading_env(), timeout=300)
        assert proc.returncode == 0 and proc.stdout.startswith(f"usage: python -m {module}"), (module, proc.stdout,
                                                                                               proc.stderr)
        assert "no graded submissions" not in proc.stdout
    assert snapshot(course.root) == before, "--help changed the course"


def test_help_lists_exit_codes():
    text = CliRunner().invoke(cli.main, ["--help"]).output
    for code in ("0  done", "1  done, but not everything", "2  usage error", "3  the course cannot be used"):
        assert code in text


def test_course_found_upwards_and_assignment_from_the_config(course, monkeypatch):
    monkeypatch.chdir(course.root / "source" / ASSIGNMENT)
    result = CliRunner().invoke(cli.main, ["extend", "--list"], catch_exceptions=False)
    assert result.exit_code == 0 and f"no extensions for {ASSIGNMENT}" in result.output


def test_no_course_is_exit_3(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for command in ("status", "report", "extend"):
        result = CliRunner().invoke(cli.main, [command, "--list"] if command == "extend" else [command])
        assert result.exit_code == 3 and "nbgrader_config.py" in result.output, result.output
    proc = script("status", cwd=tmp_path)
    assert proc.returncode == 3 and "no nbgrader_config.py" in proc.stderr


def test_several_assignments_must_be_chosen(course):
    config = course.root / "nbgrader_config.py"
    config.write_text(config.read_text() + '\nc.CourseSchedule.due_dates = {"week2": "2026-12-04 23:59:00 UTC", '
                                           '"week3": "2026-12-11 23:59:00 UTC"}\n')
    result = CliRunner().invoke(cli.main, ["status", "--course", str(course.root)])
    assert result.exit_code == 2 and "week2, week3" in result.output and "--assignment" in result.output
    result = CliRunner().invoke(cli.main, ["status", "--course", str(course.root), "--assignment", "week3"])
    assert result.exit_code == 3 and "does not know assignment 'week3'" in result.output
    result = CliRunner().invoke(cli.main, ["status", "--course", str(course.root), "-a", ASSIGNMENT])
    assert result.exit_code == 1, result.output  # written answers wait for a TA


def test_status(course):
    result = CliRunner().invoke(cli.main, ["status", "--course", str(course.root)], catch_exceptions=False)
    assert result.exit_code == 1, result.output  # the written answers are not marked
    lines = {l.split()[0]: l for l in result.output.splitlines()[3:] if l.strip()}
    with course.gradebook() as gb:
        students = {s.id for s in gb.students}
    assert students <= set(lines)
    assert "2026-12-06 11:00" in lines["late-submission"] and " yes " in lines["late-submission"]
    assert " 2/2 " in lines["all-but-training"]  # feedback pages generated by the fixture
    proc = script("status", cwd=course.root)
    assert proc.returncode == 1 and proc.stdout == result.output


def test_report_and_the_old_entry_point_write_the_same(course, tmp_path):
    result = CliRunner().invoke(cli.main, ["report", "--course", str(course.root), "--out", str(tmp_path / "a")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    proc = subprocess.run([sys.executable, "-m", "coursekit.term.report", "--course", str(course.root), "--out",
                           str(tmp_path / "b")], capture_output=True, text=True, env=grading_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = script("report", "--out", str(tmp_path / "c"), cwd=course.root)
    assert proc.returncode == 0, proc.stderr
    tables = [list(csv.reader(open(tmp_path / d / "report.csv", newline=""))) for d in "abc"]
    assert tables[0] == tables[1] == tables[2] and tables[0][0][11] == "due_date"


def test_summary_old_entry_point_finds_the_assignment(course):
    proc = subprocess.run([sys.executable, "-m", "coursekit.term.summary"], cwd=course.root / "source",
                          capture_output=True, text=True, env=grading_env())
    assert proc.returncode == 0 and proc.stdout.startswith(f"{ASSIGNMENT}: "), proc.stdout + proc.stderr


def test_schedule_writes_the_due_dates(course, tmp_path):
    with course.gradebook() as gb:
        gb.update_or_create_assignment(ASSIGNMENT, duedate="2030-01-01 00:00:00")
    result = CliRunner().invoke(cli.main, ["schedule", "--course", str(course.root)], catch_exceptions=False)
    assert result.exit_code == 0 and "week2: due 2026-12-04 23:59:00 UTC" in result.output
    with course.gradebook() as gb:
        assert str(gb.find_assignment(ASSIGNMENT).duedate) == "2026-12-04 23:59:00"
    assert CliRunner().invoke(cli.main, ["schedule", "--course", str(course.root), "-a", "week9"]).exit_code == 2
    proc = subprocess.run([sys.executable, "-m", "coursekit.term.schedule"], cwd=course.root, capture_output=True,
                          text=True, env=grading_env())
    assert proc.returncode == 0 and "week2: due" in proc.stdout
    proc = script("schedule", cwd=course.root)
    assert proc.returncode == 0 and "week2: due" in proc.stdout


def test_export_through_the_console_script(course, tmp_path):
    out = tmp_path / "canvas.csv"
    proc = script("export", "--lms", "canvas", "--roster", str(LMS / "canvas_gradebook.csv"), "--out", str(out),
                  cwd=course.root)
    assert proc.returncode == 1 and "not matched: ghost.student" in proc.stderr
    header = next(csv.reader(open(out, newline="", encoding="utf-8-sig")))
    assert header[-1] == ASSIGNMENT
    assert script("export", "--lms", "canvas", cwd=course.root).returncode == 2  # no roster: usage error


def test_grade_with_nothing_left_to_grade(course):
    before = course.gradebook_path.read_bytes()
    result = CliRunner().invoke(cli.main, ["grade", "--course", str(course.root), "--no-progress",
                                           "--student", "all-but-training"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "1 submissions, 1 already graded (skipped" in result.stderr and "graded 0 of 0" in result.stdout
    proc = script("grade", "--no-progress", "--student", "all-but-training", cwd=course.root)
    assert proc.returncode == 0 and "already graded" in proc.stderr and "graded 0 of 0" in proc.stdout, proc.stderr
    assert course.gradebook_path.read_bytes() == before


def test_feedback_and_release(course, tmp_path):
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    os.chmod(exchange, 0o777)
    config = course.root / "nbgrader_config.py"
    config.write_text(config.read_text() + f"\nc.Exchange.root = {str(exchange)!r}\n")
    shutil.rmtree(course.feedback("all-but-training", ASSIGNMENT))
    # what nbgrader's exchange leaves with a collected submission (the fixture's were copied in):
    # release_feedback names each page by a hash of the submission's secret
    graded = course.autograded("all-but-training", ASSIGNMENT)
    (graded / "timestamp.txt").write_text("2026-12-04 20:00:00.000000 UTC")
    (graded / "submission_secret.txt").write_text("5ec7e7" * 20)
    result = CliRunner().invoke(cli.main, ["feedback", "--course", str(course.root), "--student", "all-but-training",
                                           "--release"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (course.feedback("all-but-training", ASSIGNMENT) / "fashion_mnist.html").is_file()
    status = CliRunner().invoke(cli.main, ["status", "--course", str(course.root)])
    line = next(l for l in status.output.splitlines() if l.startswith("all-but-training"))
    assert line.rstrip().endswith("2/2      2/2") or line.split()[-2:] == ["2/2", "2/2"], line
    other = next(l for l in status.output.splitlines() if l.startswith("late-submission"))
    assert other.split()[-1] == "0/2", other
    proc = script("feedback", "--student", "late-submission", cwd=course.root)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_similarity(course, tmp_path):
    pytest.importorskip("coursekit.term.similarity")
    result = CliRunner().invoke(cli.main, ["similarity", "--course", str(course.root), "--out", str(tmp_path / "s")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "similarity report of week2" in result.output
    proc = script("similarity", "--out", str(tmp_path / "t"), cwd=course.root)
    assert proc.returncode == 0, proc.stderr
