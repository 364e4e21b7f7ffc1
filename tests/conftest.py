"""Shared fixtures: temporary course copies, and the graded reference class shared by tests.

The reference submissions (tests/fixtures/submissions) are graded in one course copy, in two
rounds of the real pipeline: the class runner (`python -m coursekit.grading.runner`, which runs the real
`nbgrader autograde` for each submission, in parallel, in the sandbox; tests/grading/test_runner.py shows
its gradebook equals sequential `nbgrader autograde`'s), then `generate_feedback` and `export`:

- ``fast_class``: every submission that trains no model, graded with a per-cell timeout of
  ``FAST_TIMEOUT`` s (the infinite-loop submission waits for it). Usable in `-m "not slow"`.
- ``graded_class``: the same course after a second round that adds the submissions that
  train (``@recipe(..., trains=True)`` in build_submissions.py), with the course's own
  timeout: every reference submission, graded once per session.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# The tests mirror the package (tests/<subpackage>/test_<module>.py) and some share helpers across
# folders (test_runner's class builder, test_release's secret lines): every folder is importable
# by module name, as tests/ itself is.
for _folder in sorted(p for p in Path(__file__).resolve().parent.iterdir() if p.is_dir() and list(p.glob("test_*.py"))):
    if str(_folder) not in sys.path:
        sys.path.append(str(_folder))

import xdist_groups  # noqa: E402
from builder import ASSIGNMENT  # noqa: E402
from coursekit.student import datapaths
from coursekit.core.course import Course, grading_env
from coursekit.core.notebook import strip_ansi
from coursekit.grading.pgserver import PostgresServer, PostgresUnavailable

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SUBMISSIONS = FIXTURES / "submissions"
EXPECTED_SCORES = FIXTURES / "expected_scores.csv"
LATE_PENALTY = "late_penalty"  # pseudo grade id of expected_scores.csv: a notebook's late penalty
FAST_TIMEOUT = 30  # s per cell in the fast round; its longest legitimate cell takes ~3 s idle

sys.path.insert(0, str(FIXTURES))
import build_submissions  # noqa: E402  (the recipes: which submissions train)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # as nbgrader's kernels run


def pytest_addoption(parser):
    parser.addoption("--update-expected-scores", action="store_true",
                     help="write the observed scores into tests/fixtures/expected_scores.csv instead of comparing")


def pytest_configure(config):
    xdist_groups.name_groups_file(config)
    if not any((folder / "mnist").is_dir() for folder in datapaths.data_dirs()):
        raise pytest.UsageError(f"no data in {', '.join(map(str, datapaths.data_dirs()))}: set "
                                f"{datapaths.DATA_DIR_ENV} (see README, 'Data')")


# --- running the suite on several workers (bin/test; tests/xdist_groups.py) -----------------------


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under --dist loadgroup: the tests that share a graded class run on one worker."""
    return xdist_groups.make_scheduler(config, log)


@pytest.hookimpl(tryfirst=True)  # before -k and -m deselect: the groups are those of the whole suite
def pytest_collection_modifyitems(config, items):
    xdist_groups.write_groups(config, items)


@pytest.fixture
def course(tmp_path) -> Course:
    """A fresh copy of the course with week2 generated (release and gradebook)."""
    c = Course.copy_of(tmp_path / "course")
    c.generate(ASSIGNMENT)
    return c


def read_expected_scores(path: Path = EXPECTED_SCORES) -> dict[tuple[str, str, str], str]:
    """(submission, notebook, grade_id) -> expected score, or 'manual' for a TA-graded cell.
    Rows with grade_id ``late_penalty`` give a notebook's expected late penalty instead."""
    with open(path, newline="") as f:
        return {(r["submission"], r["notebook"], r["grade_id"]): r["score"]
                for r in csv.DictReader(f) if not r["submission"].startswith("#")}


def submission_folders(slow: bool | None = None) -> list[Path]:
    """Every reference submission; only those that train (slow=True) or do not (slow=False)."""
    folders = sorted(p for p in SUBMISSIONS.iterdir() if p.is_dir())
    if slow is None:
        return folders
    return [p for p in folders if (p.name in build_submissions.TRAINS) == slow]


@dataclass
class GradedClass:
    course: Course
    students: list[str]
    autograde_log: str
    scores: dict[tuple[str, str, str], float | None] = field(default_factory=dict)
    manual: set[tuple[str, str, str]] = field(default_factory=set)
    # additions (issue 4), all optional for callers that build a GradedClass themselves:
    late_penalties: dict[tuple[str, str], float] = field(default_factory=dict)
    feedback_log: str = ""
    export_log: str = ""
    autograde_returncode: int | None = None
    assignment_rows: dict = field(default_factory=dict)  # the gradebook's week2 structure, after generate
    course_files: dict = field(default_factory=dict)  # path -> bytes of the course's own files, after generate

    def read_gradebook(self) -> None:
        from nbgrader.api import MissingEntry

        with self.course.layout.gradebook() as gb:
            for student in self.students:
                try:
                    sub = gb.find_submission(ASSIGNMENT, student)
                except MissingEntry:
                    continue
                for nb in sub.notebooks:
                    self.late_penalties[(student, nb.name)] = nb.late_submission_penalty or 0.0
                    for grade in nb.grades:
                        key = (student, nb.name, grade.name)
                        self.scores[key] = grade.auto_score
                        if grade.needs_manual_grade:
                            self.manual.add(key)

    # --- what the pipeline wrote, per student ---------------------------------------------

    def autograded_dir(self, student: str) -> Path:
        return self.course.layout.autograded(student, ASSIGNMENT)

    def submitted_dir(self, student: str) -> Path:
        return self.course.layout.submitted(student, ASSIGNMENT)

    def feedback_page(self, student: str, notebook: str) -> Path:
        return self.course.layout.feedback(student, ASSIGNMENT) / f"{notebook}.html"

    def problems(self, student: str) -> list[dict]:
        from coursekit.core import problems

        return problems.load(self.autograded_dir(student))

    def autograded_notebook(self, student: str, notebook: str):
        import nbformat

        return nbformat.read(self.autograded_dir(student) / f"{notebook}.ipynb", as_version=4)

    def feedback_html(self, student: str, notebook: str) -> str:
        return self.feedback_page(student, notebook).read_text()


def assignment_rows(course: Course) -> dict:
    """The gradebook's description of week2 (cells, sources, points), to check that grading
    submissions never changes it."""
    rows = {}
    with course.layout.gradebook() as gb:
        assignment = gb.find_assignment(ASSIGNMENT)
        rows["duedate"] = str(assignment.duedate)
        for nb in assignment.notebooks:
            for c in nb.source_cells:
                rows[(nb.name, "source", c.name)] = (c.cell_type, c.locked, c.checksum, c.source)
            for c in nb.grade_cells:
                rows[(nb.name, "grade", c.name)] = (c.max_score, c.cell_type)
    return rows


def course_files(course: Course) -> dict[str, bytes]:
    """The course's own files (config, source, release), to check that grading never changes them."""
    files = {"nbgrader_config.py": (course.root / "nbgrader_config.py").read_bytes()}
    for folder in ("source", "release"):
        for path in sorted((course.root / folder).rglob("*")):
            if path.is_file():
                files[str(path.relative_to(course.root))] = path.read_bytes()
    return files


@contextlib.contextmanager
def configured(course: Course, settings: dict | None):
    """``settings`` (e.g. ``{"Execute.timeout": 30}``) added to the course's nbgrader_config.py
    while the block runs: the runner's private course copies read that file."""
    if not settings:
        yield
        return
    config = course.root / "nbgrader_config.py"
    original = config.read_text()
    add_test_settings(course.root, [f"c.{name} = {value!r}  # for one round" for name, value in settings.items()])
    try:
        yield
    finally:
        config.write_text(original)


def grade_round(course: Course, submissions: list[Path], settings: dict | None = None) -> GradedClass:
    """Submit ``submissions`` into ``course``, grade them with the class runner (one real
    `nbgrader autograde` per submission, as many at once as the machine has cores), then run
    generate_feedback and export. Submissions graded in an earlier round are left alone."""
    for folder in submissions:
        course.submit(folder.name, folder / ASSIGNMENT, ASSIGNMENT)
    with configured(course, settings):
        proc = subprocess.run([sys.executable, "-m", "coursekit.grading.runner", ASSIGNMENT, "--course", str(course.root),
                               "--no-progress"], capture_output=True, text=True, env=grading_env())
    with open(course.root / "autograde.log", "a") as log:  # kept for a failing test's post-mortem
        log.write(proc.stdout + proc.stderr)
    feedback = course.nbgrader("generate_feedback", ASSIGNMENT, check=False)
    export = course.nbgrader("export", check=False)
    graded = GradedClass(course, course.students(ASSIGNMENT), proc.stdout + proc.stderr,
                         feedback_log=feedback.stdout + feedback.stderr, export_log=export.stdout + export.stderr,
                         autograde_returncode=proc.returncode)
    graded.read_gradebook()
    return graded


def grade_class(root: Path, submissions: list[Path], settings: dict | None = None) -> GradedClass:
    """A fresh course at ``root`` with ``submissions`` graded in one round."""
    course = Course.copy_of(root)
    course.generate(ASSIGNMENT)
    rows, files = assignment_rows(course), course_files(course)
    graded = grade_round(course, submissions, settings)
    graded.assignment_rows, graded.course_files = rows, files
    return graded


@pytest.fixture(scope="session")
def fast_class(tmp_path_factory) -> GradedClass:
    """The reference submissions that train no model, graded (no training: a few minutes)."""
    return grade_class(tmp_path_factory.mktemp("graded") / "course", submission_folders(slow=False),
                       {"Execute.timeout": FAST_TIMEOUT})


@pytest.fixture(scope="session")
def graded_class(fast_class) -> GradedClass:
    """Every reference submission in tests/fixtures/submissions, autograded once per session:
    ``fast_class``'s course with the submissions that train graded in a second round."""
    graded = grade_round(fast_class.course, submission_folders(slow=True))
    graded.autograde_log = fast_class.autograde_log + graded.autograde_log
    graded.feedback_log = fast_class.feedback_log + graded.feedback_log
    graded.assignment_rows, graded.course_files = fast_class.assignment_rows, fast_class.course_files
    return graded


# The regions of a source notebook's cells that students never see, by their nbgrader markers.
REGIONS = {
    "solution": ("### BEGIN SOLUTION", "### END SOLUTION"),
    "hidden test": ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"),
    "mark scheme": ("### BEGIN MARK SCHEME", "### END MARK SCHEME"),
}


def region_lines(source: str, begin: str, end: str) -> list[str]:
    """The lines of ``source`` between the markers ``begin`` and ``end`` (markers excluded)."""
    lines, inside = [], False
    for line in source.split("\n"):
        if begin in line:
            inside = True
        elif end in line:
            inside = False
        elif inside:
            lines.append(line)
    return lines


def error_text(cell) -> str:
    """The tracebacks of a graded cell, without colours."""
    return strip_ansi("\n".join("\n".join(o.get("traceback", [])) for o in cell.outputs if o.output_type == "error"))


def dump(graded: GradedClass, student: str) -> str:
    """A student's scores and problems, for assertion messages."""
    scores = {f"{k[1]}:{k[2]}": v for k, v in graded.scores.items() if k[0] == student}
    return json.dumps({"scores": scores, "problems": graded.problems(student)}, indent=1)


# --- courses for the intake, runner and sandbox tests (issue 11) -------------------------------


@pytest.fixture(scope="session")
def generated_course(tmp_path_factory) -> Course:
    """A course copy with week2 generated, once per session: copy it with ``course_copy``, never
    change it."""
    course = Course.copy_of(tmp_path_factory.mktemp("generated") / "course")
    course.generate(ASSIGNMENT)
    return course


# --- a real PostgreSQL server and courses whose gradebook is on it ---------------------------------


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL server for the session: Debian's binaries, a cluster made by initdb in a
    temporary folder, on 127.0.0.1 and a free port (coursekit/grading/pgserver.py); removed afterwards."""
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="coursekit-postgres-")))
    try:
        server.start()
    except PostgresUnavailable as err:
        server.remove()
        pytest.fail(f"no PostgreSQL server: {err}")
    yield server
    server.remove()


def postgres_course(root: Path, server: PostgresServer, database: str) -> Course:
    """A fresh course whose gradebook is a new database on ``server``, with week2 generated."""
    course = Course.copy_of(root)
    url = server.create_database(database)
    with open(course.root / "nbgrader_config.py", "a") as f:
        f.write(f"\n# test: the gradebook on PostgreSQL\nc.CourseDirectory.db_url = {url!r}\n")
    course.generate(ASSIGNMENT)
    return course


INTAKE_OFF = "c.Intake.enabled = False  # tests: stock nbgrader's reading of submissions"


def add_test_settings(course_root: Path, lines: list[str]) -> None:
    """Append ``lines`` (Python, ``c.Class.trait = value``) to a course copy's nbgrader_config.py."""
    with open(course_root / "nbgrader_config.py", "a") as f:
        f.write("\n# test settings\n" + "\n".join(lines) + "\n")


def turn_intake_off(course: Course) -> None:
    """Let a course copy read submissions as stock nbgrader does (no coursekit.submissions.intake)."""
    add_test_settings(course.root, [INTAKE_OFF])


def course_copy(generated: Course, target: Path, execute: bool = True, intake: bool = True) -> Course:
    """A copy of a generated course. ``execute=False``: autograde runs no code (no kernel, every
    check scores its points): for tests of what happens to files and folders around grading,
    which do not depend on scores. ``intake=False``: stock nbgrader's reading of submissions."""
    shutil.copytree(generated.root, target, symlinks=True)
    lines = []
    if not execute:
        lines += ["from nbconvert.preprocessors import ClearMetadataPreprocessor as _Clear",
                  "from nbgrader.preprocessors import SaveAutoGrades as _Save, AssignLatePenalties as _Late, "
                  "CheckCellMetadata as _Check",
                  "c.Autograde.autograde_preprocessors = [_Clear, _Save, _Late, _Check]  # tests: no code runs"]
    if not intake:
        lines += [INTAKE_OFF]
    if lines:
        add_test_settings(target, lines)
    return Course(target)


@pytest.fixture(scope="session")
def runner_class(tmp_path_factory) -> Course:
    """test_runner's small class (CLASS) graded by the local runner on a SQLite gradebook: the
    reference for the cluster and PostgreSQL tests."""
    import subprocess

    from coursekit.core.course import grading_env
    from test_runner import build_class

    course = Course.copy_of(tmp_path_factory.mktemp("runner-class") / "course")
    course.generate(ASSIGNMENT)
    build_class(course)
    cmd = [sys.executable, "-m", "coursekit.grading.runner", ASSIGNMENT, "--no-progress", "-j", "2", "--course", str(course.root)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=grading_env(), timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return course
