"""Shared fixtures: temporary course copies, and one graded class shared by the slow tests."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from coursekit.course import REPO_ROOT, Course, grading_env

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SUBMISSIONS = FIXTURES / "submissions"
EXPECTED_SCORES = FIXTURES / "expected_scores.csv"

# The tests read the offline data mirror the same way nbgrader's kernels do.
os.environ.update({k: v for k, v in grading_env().items() if k in ("COURSEKIT_DATA_DIR", "TF_CPP_MIN_LOG_LEVEL")})


def pytest_configure(config):
    if not os.environ.get("COURSEKIT_DATA_DIR") and not (REPO_ROOT / "data" / "mnist").is_dir():
        raise pytest.UsageError("no data: set COURSEKIT_DATA_DIR (see README, 'Data') or run bin/test")


@pytest.fixture
def course(tmp_path) -> Course:
    """A fresh copy of the course with week2 generated (release and gradebook)."""
    c = Course.copy_of(tmp_path / "course")
    c.generate()
    return c


def read_expected_scores(path: Path = EXPECTED_SCORES) -> dict[tuple[str, str, str], str]:
    """(submission, notebook, grade_id) -> expected score, or 'manual' for a TA-graded cell."""
    with open(path, newline="") as f:
        return {(r["submission"], r["notebook"], r["grade_id"]): r["score"]
                for r in csv.DictReader(f) if not r["submission"].startswith("#")}


@dataclass
class GradedClass:
    course: Course
    students: list[str]
    autograde_log: str
    scores: dict[tuple[str, str, str], float | None] = field(default_factory=dict)
    manual: set[tuple[str, str, str]] = field(default_factory=set)

    def read_gradebook(self) -> None:
        from nbgrader.api import Gradebook, MissingEntry

        with Gradebook(self.course.db_url) as gb:
            for student in self.students:
                try:
                    sub = gb.find_submission("week2", student)
                except MissingEntry:
                    continue
                for nb in sub.notebooks:
                    for grade in nb.grades:
                        key = (student, nb.name, grade.name)
                        self.scores[key] = grade.auto_score
                        if grade.needs_manual_grade:
                            self.manual.add(key)


def grade_class(root: Path, submissions: list[Path]) -> GradedClass:
    course = Course.copy_of(root)
    course.generate()
    for folder in submissions:
        course.submit(folder.name, folder / "week2")
    proc = course.nbgrader("autograde", "week2", check=False)
    graded = GradedClass(course, [f.name for f in submissions], proc.stdout + proc.stderr)
    graded.read_gradebook()
    return graded


@pytest.fixture(scope="session")
def graded_class(tmp_path_factory) -> GradedClass:
    """Every reference submission in tests/fixtures/submissions, autograded once per session."""
    folders = sorted(p for p in SUBMISSIONS.iterdir() if p.is_dir())
    return grade_class(tmp_path_factory.mktemp("graded") / "course", folders)
