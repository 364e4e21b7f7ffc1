"""The gradebook on a real PostgreSQL server (the session's `postgres` fixture): the class runner
merges into it through SQLAlchemy as it does into SQLite, and formgrader (through a real
`jupyter server`) and the class report work on it."""

from __future__ import annotations

import copy
import csv
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import sqlalchemy.exc

from builder import ASSIGNMENT
from conftest import postgres_course
from coursekit.core import gradebook
from coursekit.core.course import Course, grading_env
from coursekit.grading.pgserver import free_port
from gradebooks import gradebook_rows
from test_runner import CLASS, build_class


@pytest.fixture(scope="module")
def pg_class(postgres, tmp_path_factory) -> Course:
    """test_runner's class graded by the local runner, the gradebook on PostgreSQL."""
    course = postgres_course(tmp_path_factory.mktemp("pg") / "course", postgres, "runner_class")
    assert course.layout.gradebook_path is None and course.db_url.startswith("postgresql+psycopg://")
    build_class(course)
    proc = run_runner(course, "-j", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return course


def run_runner(course: Course, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "coursekit.grading.runner", ASSIGNMENT, "--no-progress", "--course", str(course.root), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=grading_env(), timeout=1800)


def test_the_runner_on_postgresql_gives_the_sqlite_gradebook(pg_class, runner_class):
    ours, theirs = gradebook_rows(pg_class, list(CLASS)), gradebook_rows(runner_class, list(CLASS))
    assert len(theirs) > 60
    assert ours == theirs
    # the runner's side files sit in <course>/gradebook/ when the gradebook is on a server
    assert (pg_class.root / "gradebook" / "runner-logs").is_dir()


def test_the_class_report_works_on_postgresql(pg_class, runner_class):
    def report(course: Course) -> list[dict]:
        proc = subprocess.run([sys.executable, "-m", "coursekit.term.report", ASSIGNMENT], cwd=course.root,
                              capture_output=True, text=True, env=grading_env(), timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        with open(course.root / "reports" / ASSIGNMENT / "report.csv", newline="") as f:
            return list(csv.DictReader(f))

    ours = report(pg_class)
    assert sorted(r["student"] for r in ours) == sorted(CLASS)
    assert ours == report(runner_class)
    assert "cy" in (pg_class.root / "reports" / ASSIGNMENT / "report.html").read_text()


def test_merging_the_same_submission_again_changes_nothing(pg_class):
    with gradebook.CourseGradebook(pg_class.db_url) as db:
        before = gradebook_rows(pg_class)
        db.merge(db.rows("ada", ASSIGNMENT), "ada", ASSIGNMENT)
        db.merge(db.rows("ada", ASSIGNMENT), "ada", ASSIGNMENT)
    assert gradebook_rows(pg_class) == before


def test_a_merge_that_fails_leaves_nothing_behind(pg_class):
    """One transaction per submission: a merge that fails half-way (here the last grade points to a
    cell that does not exist, which PostgreSQL's foreign keys reject) writes none of its rows."""
    with gradebook.CourseGradebook(pg_class.db_url) as db:
        rows = _as_new_student(db.rows("ada", ASSIGNMENT), "zoe")
        rows["grade"][-1]["cell_id"] = "no-such-cell"
        before = gradebook_rows(pg_class)
        with pytest.raises(sqlalchemy.exc.IntegrityError):
            db.merge(rows, "zoe", ASSIGNMENT)
    assert gradebook_rows(pg_class) == before
    with pg_class.layout.gradebook() as gb:
        assert "zoe" not in [s.id for s in gb.students]


def _as_new_student(rows: gradebook.Rows, student: str) -> gradebook.Rows:
    rows = copy.deepcopy(rows)
    new_id = {}
    for name in ("submitted_assignment", "submitted_notebook", "grade", "comment"):
        for row in rows[name]:
            new_id[row["id"]] = row["id"] = uuid.uuid4().hex
    rows["student"][0]["id"] = rows["submitted_assignment"][0]["student_id"] = student
    for row in rows["submitted_notebook"]:
        row["assignment_id"] = new_id[row["assignment_id"]]
    for name in ("grade", "comment"):
        for row in rows[name]:
            row["notebook_id"] = new_id[row["notebook_id"]]
    return rows


# --- formgrader, through a real Jupyter server ----------------------------------------------------


@pytest.fixture(scope="module")
def formgrader(pg_class, tmp_path_factory):
    """`jupyter server` with nbgrader's formgrader, in the PostgreSQL course, on 127.0.0.1."""
    port, token = free_port(), uuid.uuid4().hex
    log = tmp_path_factory.mktemp("formgrader") / "server.log"
    cmd = [str(Path(sys.executable).with_name("jupyter")), "server", "--no-browser", "--allow-root",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={pg_class.root}"]
    with open(log, "w") as out:
        server = subprocess.Popen(cmd, cwd=pg_class.root, stdout=out, stderr=subprocess.STDOUT, env=grading_env())
    api = FormgraderAPI(f"http://127.0.0.1:{port}", token)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                api.get("/formgrader/api/status")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"jupyter server did not start:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.5)
        yield api
    finally:
        server.terminate()
        server.wait(30)


class FormgraderAPI:
    def __init__(self, base: str, token: str):
        self.base, self.token = base, token

    def request(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as response:
            return json.loads(response.read() or b"null")

    def get(self, path: str):
        return self.request("GET", path)


def _grade(api: FormgraderAPI, student: str, notebook: str, cell: str) -> dict:
    submissions = api.get(f"/formgrader/api/submitted_notebooks/{ASSIGNMENT}/{notebook}")
    (submission,) = [s for s in submissions if s["student"] == student]
    (grade,) = [g for g in api.get(f"/formgrader/api/grades?submission_id={submission['id']}") if g["name"] == cell]
    return grade


def test_formgrader_reads_and_writes_the_postgresql_gradebook(formgrader, pg_class):
    """A TA's mark through formgrader's API lands in PostgreSQL; a regrade by the runner keeps it
    and flags it for review; so does a merge of rows graded before the TA's mark."""
    api = formgrader
    assert {a["name"] for a in api.get("/formgrader/api/assignments")} == {ASSIGNMENT}
    assert {s["student"] for s in api.get(f"/formgrader/api/submissions/{ASSIGNMENT}")} == set(CLASS)
    cell = "f4_functions_hidden"
    graded_before_the_mark = None
    with gradebook.CourseGradebook(pg_class.db_url) as db:
        graded_before_the_mark = db.rows("cy", ASSIGNMENT)
    for student in ("ada", "cy"):
        grade = _grade(api, student, "fashion_mnist", cell)
        saved = api.request("PUT", f"/formgrader/api/grade/{grade['id']}", {"manual_score": 1.5, "extra_credit": None})
        assert saved["manual_score"] == 1.5 and saved["needs_manual_grade"] is False
    with pg_class.layout.gradebook() as gb:
        assert gb.find_grade(cell, "fashion_mnist", ASSIGNMENT, "ada").manual_score == 1.5

    proc = run_runner(pg_class, "--force", "--student", "ada")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with gradebook.CourseGradebook(pg_class.db_url) as db:  # cy graded while the TA marked
        db.merge(graded_before_the_mark, "cy", ASSIGNMENT)
    for student in ("ada", "cy"):
        grade = _grade(api, student, "fashion_mnist", cell)
        assert (grade["manual_score"], grade["needs_manual_grade"]) == (1.5, True), student
