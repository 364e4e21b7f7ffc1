"""The class runner (coursekit/grading/runner.py): parallel grading that leaves the gradebook exactly as
sequential `nbgrader autograde` would, isolates failures, and resumes after being killed."""

from __future__ import annotations

import glob
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import builder
import sandbox_attacks as attacks
from builder import ASSIGNMENT, Submission
from coursekit.core import problems
from coursekit.grading import runner, submission
from coursekit.core.course import Course, grading_env

MEMORY = "3G"  # the sandbox's memory limit in these courses: "zed" goes over it


def make_class(course: Course, students: dict) -> None:
    """students: id -> (notebooks, timestamp or None); a notebook is a node or None for untouched."""
    release = builder.release(course.layout)
    for student, (notebooks, timestamp) in students.items():
        nbs = {name: nb if nb is not None else release[name] for name, nb in notebooks.items()}
        Submission(nbs, timestamp).submit(course, student)


def run_runner(root: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "coursekit.grading.runner", ASSIGNMENT, "--no-progress", "--course", str(root), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=grading_env())


def gradebook_rows(course: Course, students: list[str] | None = None) -> dict:
    """Every field nbgrader's autograde writes, by natural key."""
    rows = {}
    with sqlite3.connect(course.layout.gradebook_path) as db:
        for student, nb, cell, table, auto, needs, comment in db.execute(
                "SELECT sa.student_id, n.name, c.name, 'grade', g.auto_score, g.needs_manual_grade, NULL "
                "FROM grade g JOIN base_cell c ON g.cell_id = c.id JOIN submitted_notebook sn ON g.notebook_id = sn.id "
                "JOIN notebook n ON sn.notebook_id = n.id JOIN submitted_assignment sa ON sn.assignment_id = sa.id "
                "UNION ALL SELECT sa.student_id, n.name, c.name, 'comment', NULL, NULL, m.auto_comment "
                "FROM comment m JOIN base_cell c ON m.cell_id = c.id JOIN submitted_notebook sn ON m.notebook_id = sn.id "
                "JOIN notebook n ON sn.notebook_id = n.id JOIN submitted_assignment sa ON sn.assignment_id = sa.id"):
            rows[(student, nb, cell, table)] = (auto, needs, comment)
        for student, nb, penalty, stamp in db.execute(
                "SELECT sa.student_id, n.name, sn.late_submission_penalty, sa.timestamp FROM submitted_notebook sn "
                "JOIN notebook n ON sn.notebook_id = n.id JOIN submitted_assignment sa ON sn.assignment_id = sa.id"):
            rows[(student, nb, "", "notebook")] = (penalty, stamp)
        for (student,) in db.execute("SELECT id FROM student"):
            rows[(student, "", "", "student")] = ()
    return {k: v for k, v in rows.items() if students is None or k[0] in students}


def fashion(*solved: str):
    """fashion_mnist with these answers solved, the others as released."""
    def build(course: Course):
        return builder.solve(builder.release(course.layout, ("fashion_mnist",)), set(solved))["fashion_mnist"]
    return build


# --- many at once --------------------------------------------------------------------------------

LATE_HOURS = 36  # "cy" hands in a day and a half after the due date
CLASS = {  # id -> (notebooks, hours late or None); a notebook left out is graded as missing
    "ada": ({"fashion_mnist": fashion("f4_functions")}, None),
    "cy": ({"fashion_mnist": fashion("f4_functions", "f1_load")}, LATE_HOURS),
    "dee": ({"fashion_mnist": None, "mnist": None}, None),
}


def build_class(course: Course, extra: dict | None = None) -> None:
    students = {s: ({n: (b(course) if callable(b) else b) for n, b in nbs.items()},
                    builder.late_by(course.layout, hours) if hours else None)
                for s, (nbs, hours) in {**CLASS, **(extra or {})}.items()}
    make_class(course, students)


def limited_course(tmp: Path) -> Course:
    """A generated course whose sandbox has the memory limit MEMORY."""
    course = Course.copy_of(tmp / "course")
    course.generate(ASSIGNMENT)
    attacks.configure(course.root, memory=MEMORY)
    return course


@pytest.fixture(scope="module")
def parallel(tmp_path_factory):
    """The class graded by the runner with 3 workers, plus one submission that the sandbox stops."""
    tmp = tmp_path_factory.mktemp("parallel")
    course = limited_course(tmp)
    target = attacks.Target(course.layout.release(ASSIGNMENT), tmp / "unused")
    hog = attacks.combined(target, attacks.hog_many(target, 4, 800))
    build_class(course, {"zed": ({"fashion_mnist": hog}, None)})
    proc = run_runner(course.root, "-j", "3")
    return course, proc


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    """The same class (without the submission that fails) by plain `nbgrader autograde`."""
    course = limited_course(tmp_path_factory.mktemp("sequential"))
    build_class(course)
    course.nbgrader("autograde", ASSIGNMENT)
    return course


def test_parallel_gradebook_equals_sequential_nbgrader(parallel, sequential):
    course, proc = parallel
    ours, stock = gradebook_rows(course, list(CLASS)), gradebook_rows(sequential, list(CLASS))
    assert len(stock) > 60
    assert ours == stock, proc.stderr[-3000:]
    # The late submission lost points, so the late policy went through the merge too.
    assert ours[("cy", "fashion_mnist", "", "notebook")][0] > 0
    with sqlite3.connect(course.layout.gradebook_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT COUNT(*) FROM submitted_assignment").fetchone() == (len(CLASS),)


def test_parallel_autograded_folders_match_sequential(parallel, sequential):
    course, _ = parallel
    for student in CLASS:
        ours = sorted(p.name for p in course.layout.autograded(student, ASSIGNMENT).iterdir())
        stock = sorted(p.name for p in sequential.layout.autograded(student, ASSIGNMENT).iterdir())
        assert ours == stock


def test_a_failure_is_isolated_recorded_and_listed(parallel):
    course, proc = parallel
    assert proc.returncode == 1
    assert f"graded {len(CLASS)} of {len(CLASS) + 1} submissions" in proc.stdout
    assert "zed: sandbox:" in proc.stdout and f"more than the limit of {MEMORY}" in proc.stdout
    recorded = problems.load(course.layout.autograded("zed", ASSIGNMENT))
    assert [p["kind"] for p in recorded] == ["sandbox"]
    assert (course.layout.gradebook_path.parent / runner.LOG_DIR / f"{ASSIGNMENT}-zed.log").is_file()
    assert not runner.is_graded(course.layout, "zed", ASSIGNMENT)
    with sqlite3.connect(course.layout.gradebook_path) as db:
        assert db.execute("SELECT COUNT(*) FROM submitted_assignment WHERE student_id = 'zed'").fetchone() == (0,)


def test_nothing_left_behind(parallel):
    course, _ = parallel
    prefix = runner.Runner(course.root, ASSIGNMENT).work_prefix  # work folders are mkdtemp(prefix=...)
    assert glob.glob(str(Path(tempfile.gettempdir()) / f"{prefix}*")) == []
    assert glob.glob(str(course.layout.autograded("*", f".{ASSIGNMENT}.runner-*"))) == []  # staging folders


def test_regrading_keeps_the_tas_marks(parallel):
    """--force grades again like `nbgrader autograde --force`: manual scores stay, and are
    flagged for review."""
    course, _ = parallel
    db_path = course.layout.gradebook_path
    with sqlite3.connect(db_path) as db:
        (grade_id,) = db.execute(
            "SELECT g.id FROM grade g JOIN base_cell c ON g.cell_id = c.id JOIN submitted_notebook sn ON "
            "g.notebook_id = sn.id JOIN submitted_assignment sa ON sn.assignment_id = sa.id "
            "WHERE sa.student_id = 'ada' AND c.name = 'f4_functions_hidden'").fetchone()
        db.execute("UPDATE grade SET manual_score = 1.5, needs_manual_grade = 0 WHERE id = ?", (grade_id,))
    before = gradebook_rows(course, ["ada"])
    proc = run_runner(course.root, "--force", "--student", "ada")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT manual_score, needs_manual_grade FROM grade WHERE id = ?",
                          (grade_id,)).fetchone() == (1.5, 1)
    after = gradebook_rows(course, ["ada"])
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {("ada", "fashion_mnist", "f4_functions_hidden", "grade")}


def test_refuses_a_second_runner_on_the_same_course(parallel):
    course, _ = parallel
    import fcntl

    with open(course.layout.gradebook_path.parent / runner.LOCK_NAME, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = run_runner(course.root)
    assert proc.returncode == 2 and "another runner is grading this course" in proc.stderr


# --- killed and started again --------------------------------------------------------------------


def test_killed_run_resumes_with_nothing_lost_or_graded_twice(tmp_path):
    course = Course.copy_of(tmp_path / "course")
    course.generate(ASSIGNMENT)
    students = {s: ({"fashion_mnist": None}, None) for s in ("s1", "s2", "s3", "s4")}
    make_class(course, students)
    cmd = [sys.executable, "-m", "coursekit.grading.runner", ASSIGNMENT, "-j", "1", "--no-progress", "--course", str(course.root)]
    first = subprocess.Popen(cmd, env=grading_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    graded = []
    while len(graded) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        graded = [s for s in students if runner.is_graded(course.layout, s, ASSIGNMENT)]
    assert first.poll() is None, "the first run ended before it could be killed"
    first.kill()  # SIGKILL: no clean-up of any kind
    first.wait()
    graded = [s for s in students if runner.is_graded(course.layout, s, ASSIGNMENT)]
    assert 2 <= len(graded) < len(students)
    kept = {s: course.layout.autograded(s, ASSIGNMENT).stat().st_ino for s in graded}
    rows = gradebook_rows(course, graded)
    # The nbgrader process that was grading and its sandboxed kernel die with the runner.
    assert _wait_until(lambda: not _processes_in(course.root)), _processes_in(course.root)

    second = run_runner(course.root, "-j", "2")
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"{len(graded)} already graded" in second.stderr
    assert f"graded {len(students) - len(graded)} of {len(students) - len(graded)} submissions" in second.stdout
    assert all(runner.is_graded(course.layout, s, ASSIGNMENT) for s in students)
    # Graded once: the first run's results are untouched ...
    assert {s: course.layout.autograded(s, ASSIGNMENT).stat().st_ino for s in graded} == kept
    assert gradebook_rows(course, graded) == rows
    # ... and every submission has exactly one complete record.
    with sqlite3.connect(course.layout.gradebook_path) as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT student_id) FROM submitted_assignment").fetchone() == (4, 4)
        assert db.execute("SELECT COUNT(*) FROM grade WHERE auto_score IS NULL AND needs_manual_grade = 0").fetchone() == (0,)
    per_student = {s: len([k for k in gradebook_rows(course, [s]) if k[3] == "grade"]) for s in students}
    assert len(set(per_student.values())) == 1 and min(per_student.values()) > 20

    third = run_runner(course.root)
    assert third.returncode == 0 and "0 to grade" in third.stderr


def test_refuses_when_the_sandbox_cannot_start(tmp_path):
    course = Course.copy_of(tmp_path / "course")
    env = dict(grading_env(), PATH=str(Path(sys.executable).parent))  # no bwrap on PATH
    proc = subprocess.run([sys.executable, "-m", "coursekit.grading.runner", ASSIGNMENT, "--course", str(course.root)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "cannot start the sandbox" in proc.stderr and "bubblewrap" in proc.stderr


def test_default_workers_fit_the_machine():
    assert 1 <= runner.default_jobs() <= runner.cores()
    assert runner.thread_env(runner.threads_per_job(runner.cores()))["OPENBLAS_NUM_THREADS"] == "1"
    assert runner.thread_env(runner.threads_per_job(1))["OPENBLAS_NUM_THREADS"] == str(runner.cores())


@pytest.mark.parametrize("owners", ["kept", "archive's"])
def test_a_graded_folder_takes_the_group_of_the_course_folder(tmp_path, monkeypatch, owners):
    """On a hub the course's folders are setgid to the staff group, and root's runner unpacks each
    graded submission into autograded/: the TAs' formgrader reads it through that group. With the
    archive's owners (tarfile's way as root) it would belong to root's group, closed to the TAs."""
    if os.geteuid() != 0:
        pytest.skip("tarfile sets the archive's owners only when it runs as root")
    import grp
    import tarfile

    if owners == "archive's":
        monkeypatch.setattr(runner._OwnTarFile, "chown", tarfile.TarFile.chown)  # the defence off
    staff = grp.getgrnam("users").gr_gid  # a group other than root's
    graded = tmp_path / "graded"
    (graded / "fashion_mnist_files").mkdir(parents=True)
    (graded / "fashion_mnist.ipynb").write_text("{}")
    (graded / "fashion_mnist_files" / "figure.png").write_bytes(b"png")
    autograded = tmp_path / "autograded"
    autograded.mkdir()
    os.chown(autograded, 0, staff)
    os.chmod(autograded, 0o2750)
    runner.unpack(runner.pack(graded, ["."]), autograded / "ann")
    groups = {path.relative_to(autograded).as_posix(): path.stat().st_gid
              for path in [autograded / "ann", *(autograded / "ann").rglob("*")]}
    assert len(groups) == 4
    if owners == "kept":
        assert set(groups.values()) == {staff}, groups
    else:
        assert groups["ann"] == 0 and groups["ann/fashion_mnist.ipynb"] == 0, groups


def _processes_in(root: Path) -> list[int]:
    """Processes of a course's grading: nbgrader run for it, or a sandboxed kernel."""
    found = []
    import tempfile

    work = str(Path(tempfile.gettempdir()) / runner.Runner(root, ASSIGNMENT).work_prefix)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if cwd.startswith((str(root), work)):
            found.append(int(proc.name))
    return found


def _wait_until(condition, seconds: float = 30) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


# --- one submission fails alone (issue 25) -------------------------------------------------------


def _old_tree_digest(root: Path, names: list[str]) -> str:
    """The digest before issue 25: its own walk, which skipped only a *folder* named
    .ipynb_checkpoints while the packing dropped anything of that name."""
    import hashlib

    digest = hashlib.sha256()

    def add(path: Path) -> None:
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            digest.update(f"L {rel}\0{os.readlink(path)}\0".encode())
        elif path.is_dir():
            if path.name == ".ipynb_checkpoints":
                return
            digest.update(f"D {rel}\0".encode())
            for child in sorted(path.iterdir(), key=lambda p: p.name):
                add(child)
        elif path.is_file():
            digest.update(f"F {rel}\0".encode() + hashlib.sha256(path.read_bytes()).digest())

    for name in names:
        if os.path.lexists(root / name):
            add(root / name)
    return digest.hexdigest()


@pytest.fixture
def checkpoint_class(generated_course, tmp_path):
    """aa, bb, cc (graded in that order, one at a time, no code run); bb's submission holds a
    regular FILE named .ipynb_checkpoints (what a hostile corpus handed in)."""
    from conftest import course_copy

    course = course_copy(generated_course, tmp_path / "course", execute=False)
    make_class(course, {s: ({"fashion_mnist": None}, None) for s in ("aa", "bb", "cc")})
    (course.layout.submitted("bb", ASSIGNMENT) / ".ipynb_checkpoints").write_text("not a folder\n")
    return course


def _graded(course: Course) -> list[str]:
    return [s for s in ("aa", "bb", "cc") if runner.is_graded(course.layout, s, ASSIGNMENT)]


def test_a_packing_mismatch_stalled_the_class_with_the_old_code(checkpoint_class, monkeypatch):
    """The old code: digest and packing disagreed about bb's file, the worker "refused", and the
    runner stopped handing out work: cc is never graded, on this run or any other."""
    monkeypatch.setattr(submission, "tree_digest", _old_tree_digest)  # what a worker hashes
    monkeypatch.setattr(submission, "SubmissionMismatch", submission.Refused)  # the old worker-wide refusal
    with pytest.raises(runner.RunnerError, match="not the one the runner read"):
        runner.Runner(checkpoint_class.root, ASSIGNMENT, jobs=1, progress=False).run()
    assert _graded(checkpoint_class) == ["aa"]


def test_a_submission_that_arrives_different_fails_alone(checkpoint_class, monkeypatch):
    """Any mismatch between what the runner read and what the worker unpacked (here the old,
    disagreeing digest) fails that submission only: recorded, and the class goes on."""
    monkeypatch.setattr(submission, "tree_digest", _old_tree_digest)  # what a worker hashes
    outcomes = runner.Runner(checkpoint_class.root, ASSIGNMENT, jobs=1, progress=False).run()
    assert {o.student: o.ok for o in outcomes} == {"aa": True, "bb": False, "cc": True}
    assert _graded(checkpoint_class) == ["aa", "cc"]
    recorded = problems.load(checkpoint_class.layout.autograded("bb", ASSIGNMENT))
    assert [p["kind"] for p in recorded] == ["error"] and "not the one the runner read" in recorded[0]["message"]


def test_packing_and_digest_agree_by_construction(checkpoint_class, tmp_path):
    """One listing (tree_members) is packed and digested: the whole class is graded."""
    folder = checkpoint_class.layout.submitted("bb", ASSIGNMENT)
    unpacked = tmp_path / "unpacked"
    runner.unpack(runner.pack(folder, ["."]), unpacked)
    assert not (unpacked / ".ipynb_checkpoints").exists()
    assert runner.tree_digest(unpacked, ["."]) == runner.tree_digest(folder, ["."])
    outcomes = runner.Runner(checkpoint_class.root, ASSIGNMENT, jobs=1, progress=False).run()
    assert all(o.ok for o in outcomes) and len(outcomes) == 3
    assert _graded(checkpoint_class) == ["aa", "bb", "cc"]
