"""The intake (coursekit/submissions/intake.py): submissions are data, never paths.

Hostile submission folders are built here in tmp_path (links, FIFOs, sockets, hard links and
/dev/zero cannot be committed as fixtures). Each attack is shown twice: what stock nbgrader
does with it (nbgrader's own code, or `nbgrader autograde` with ``c.Intake.enabled = False``)
and that it is harmless with the intake. The class-level runs grade without executing code
(``course_copy(execute=False)``): what they test happens to files before any kernel starts;
one executed run (``resumed``) shows real scores, and resuming a killed `nbgrader autograde`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

import builder
from builder import ASSIGNMENT
from conftest import SUBMISSIONS, course_copy, read_expected_scores
from coursekit.submissions import intake
from coursekit.core import problems
from coursekit.core.course import Course, grading_env
from coursekit.core.layout import CourseLayout
from coursekit.core.notebook import grade_id

SECRET = "ROOT-ONLY-3f9c1e"      # in a root-only file outside the course
ENV_SECRET = "ENV-SECRET-77ab20"  # in the grader's environment


@pytest.fixture(autouse=True)
def no_fifos_left(tmp_path):
    """FIFOs and sockets made here are removed afterwards: a walk of /tmp (the sandbox tests'
    snoop, or anyone's) must not block on them once the test is over."""
    yield
    for path in tmp_path.rglob("*"):
        with contextlib.suppress(OSError):
            if stat.S_ISFIFO(path.lstat().st_mode) or stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()


def secret_file(folder: Path) -> Path:
    path = folder / "root-only.txt"
    path.write_text(SECRET + "\n")
    os.chmod(path, 0o600)
    return path


def make_socket(path: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()


# --- student ids --------------------------------------------------------------------------------

REFUSED_IDS = {
    "zz\nx": "line break", "[ab]": "glob character", "a*": "glob character", "what?": "glob character",
    "-rf": "starts with '-'", "..": "starts with '.'", ".hidden": "starts with '.'",
    "=HYPERLINK(1)": "formula", "+1": "formula", "@cmd": "formula",
    "x" * 65: "65 characters", "\x1b[31mred": "control characters", "bi\u202edi": "invisible",
    "anne marie": "' '", "o'brien": "\"'\"", "josé": "'é'", "a/b": "'/'", "a,b": "','",
}


@pytest.mark.parametrize("student", sorted(REFUSED_IDS))
def test_unsafe_student_ids_are_refused_with_the_rule_they_break(student):
    why = intake.id_problem(student)
    assert why is not None and REFUSED_IDS[student] in why, why
    assert intake.ID_RULE in why and "rename the folder" in why
    assert "\n" not in why and "\x1b" not in why  # the message is safe to print


@pytest.mark.parametrize("student", ["alice", "s1234567", "jane.doe", "jane_doe", "jane-doe", "j.doe@uni.edu",
                                     "_x", "A" * 64])
def test_ordinary_student_ids_are_accepted(student):
    assert intake.id_problem(student) is None


# --- timestamps ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text, when", [
    ("2026-12-06 11:00:00.000000 UTC", "2026-12-06 11:00:00"),   # nbgrader's own format
    ("2026-12-06 11:00:00 UTC\n", "2026-12-06 11:00:00"),
    ("2026-12-06T11:00:00Z", "2026-12-06 11:00:00"),
    ("2026-12-06 12:30:00+01:30", "2026-12-06 11:00:00"),
    ("2026-12-06 11:00:00.5", "2026-12-06 11:00:00.500000"),
])
def test_timestamps_in_nbgraders_format_are_read(text, when):
    assert str(intake.parse_timestamp(text)) == when


@pytest.mark.parametrize("text, why", [
    ("garbage", "not a date"), ("99999999999999999999", "not a date"), ("", "not a date"),
    ("2026-12-06 11:00:00 UTC\nrm -rf /", "more than one line"), ("1899-01-01 00:00:00", "year 1899"),
    ("9999-12-31 23:59:59", "year 9999"), ("2026-02-30 11:00:00", "not a valid date"),
    ("2026-12-06 11:00:00+99:00", "does not exist"), ("２０２６-12-06 11:00:00", "not a date"),
])
def test_odd_timestamps_are_refused_with_a_reason(text, why):
    with pytest.raises(ValueError, match=why):
        intake.parse_timestamp(text)


@pytest.mark.parametrize("text, error", [("garbage", AttributeError), ("99999999999999999999", OverflowError)])
def test_stock_nbgrader_crashes_on_odd_timestamps(tmp_path, text, error):
    """nbgrader reads timestamp.txt with dateutil and calls a ``fail`` method CourseDirectory
    does not have: the submission's grading (or the old runner's start-up) crashes."""
    from nbgrader.coursedir import CourseDirectory

    (tmp_path / "timestamp.txt").write_text(text)
    with pytest.raises(error):
        CourseDirectory().get_existing_timestamp(str(tmp_path))
    listing = intake.scan(tmp_path)
    assert listing.timestamp is None and "could not be read" in listing.timestamp_problem
    assert intake.read_timestamp(tmp_path) is None


# --- one submission -----------------------------------------------------------------------------


def hostile_folder(folder: Path, secret: Path) -> Path:
    """A submission with one of everything the intake refuses, and ordinary files around them."""
    folder.mkdir(parents=True)
    (folder / "fashion_mnist.ipynb").write_text("{}")
    (folder / "helper.py").write_text("x = 1\n")
    (folder / "pictures" / "deep").mkdir(parents=True)
    (folder / "pictures" / "deep" / "cat.png").write_bytes(b"\x89PNG")
    os.symlink(str(secret), folder / "shadow.txt")
    os.symlink("/proc/self/environ", folder / "env.txt")
    os.symlink("/dev/zero", folder / "zero.bin")
    os.symlink("../../..", folder / "up")
    os.symlink("missing", folder / "dangling")
    os.link(secret, folder / "hard.txt")
    os.mkfifo(folder / "pipe")
    make_socket(folder / "sock")
    (folder / "grading-problems.json").write_text('{"kind": 1}')
    (folder / "mnist.html").write_text("<script>forged feedback</script>")
    (folder / "x.ipynb").mkdir()
    (folder / "-rf").write_text("")
    (folder / "line\nbreak.txt").write_text("")
    (folder / os.fsdecode(b"latin\xe9.txt")).write_text("")
    return folder


def test_scan_refuses_links_devices_pipes_sockets_hard_links_and_grader_names(tmp_path):
    folder = hostile_folder(tmp_path / "alice" / ASSIGNMENT, secret_file(tmp_path))
    listing = intake.scan(folder, notebooks=("fashion_mnist", "mnist"))
    assert sorted(e.path for e in listing.entries) == ["fashion_mnist.ipynb", "helper.py", "pictures",
                                                        "pictures/deep", "pictures/deep/cat.png"]
    why = {r.path: r.reason for r in listing.refused}
    assert why["shadow.txt"].startswith("it is a symbolic link") and str(secret_file(tmp_path)) in why["shadow.txt"]
    for name in ("env.txt", "zero.bin", "up", "dangling"):
        assert why[name].startswith("it is a symbolic link"), name
    assert why["hard.txt"].startswith("it is a hard link")
    assert why["pipe"] == "it is a named pipe (FIFO)" and why["sock"] == "it is a socket"
    assert why["grading-problems.json"] == why["mnist.html"] == "this name is used by the grader for its own records"
    assert why["x.ipynb"] == "it is a folder named like a notebook"
    assert "starts with '-'" in why["-rf"] and "line breaks" in why["line\\nbreak.txt"]
    assert "not valid UTF-8" in why["latin\\udce9.txt"]
    # Every refusal can be shown to a student and a TA as it is.
    assert all(r.message.isprintable() for r in listing.refused)


def test_the_copy_is_made_from_the_listing(tmp_path):
    folder = hostile_folder(tmp_path / "alice" / ASSIGNMENT, secret_file(tmp_path))
    os.utime(folder / "helper.py", (1_700_000_000, 1_700_000_000))
    (folder / "timestamp.txt").write_text("2026-12-06 12:00:00 +01:00\n")
    listing = intake.take(folder, tmp_path / "copy", notebooks=("fashion_mnist", "mnist"))
    copied = sorted(str(p.relative_to(tmp_path / "copy")) for p in (tmp_path / "copy").rglob("*"))
    assert copied == ["fashion_mnist.ipynb", "helper.py", "pictures", "pictures/deep", "pictures/deep/cat.png",
                      "timestamp.txt"]
    assert not any(p.is_symlink() for p in (tmp_path / "copy").rglob("*"))
    assert all(p.stat().st_nlink == 1 for p in (tmp_path / "copy").rglob("*") if p.is_file())
    assert (tmp_path / "copy" / "helper.py").stat().st_mtime == 1_700_000_000
    assert (tmp_path / "copy" / "timestamp.txt").read_text() == "2026-12-06 11:00:00.000000 UTC\n"
    assert listing.timestamp_problem is None


COPY_AS_NBGRADER_DOES = """
import resource, shutil, sys
from nbgrader.utils import find_all_files
resource.setrlimit(resource.RLIMIT_FSIZE, (32 << 20, 32 << 20))  # 32 MB: the test's own bound
for path in find_all_files(sys.argv[1]):
    shutil.copy(path, sys.argv[2] + "/" + path[len(sys.argv[1]) + 1:])
"""


def test_stock_nbgrader_copies_what_links_point_to(tmp_path):
    """What nbgrader's converters do with a submission's other files (BaseConverter.init_assignment:
    find_all_files, then shutil.copy, which follows links): the root-only file and the grader's
    environment land in the student's autograded folder."""
    folder = tmp_path / "alice" / ASSIGNMENT
    folder.mkdir(parents=True)
    secret = secret_file(tmp_path)
    os.symlink(str(secret), folder / "shadow.txt")
    os.link(secret, folder / "hard.txt")
    os.symlink("/proc/self/environ", folder / "env.txt")
    dest = tmp_path / "autograded"
    dest.mkdir()
    subprocess.run([sys.executable, "-c", COPY_AS_NBGRADER_DOES, str(folder), str(dest)], check=True, timeout=120,
                   env=dict(os.environ, COURSEKIT_TEST_SECRET=ENV_SECRET))
    assert SECRET in (dest / "shadow.txt").read_text() and SECRET in (dest / "hard.txt").read_text()
    leaked = ENV_SECRET in (dest / "env.txt").read_text(errors="replace")  # (not shown: the grader's environment)
    assert leaked
    # The intake accepts none of them.
    assert intake.scan(folder).entries == []




def test_a_link_to_dev_zero_is_an_endless_copy_for_stock_nbgrader(tmp_path):
    folder = tmp_path / "alice" / ASSIGNMENT
    folder.mkdir(parents=True)
    os.symlink("/dev/zero", folder / "data.bin")
    dest = tmp_path / "dest"
    dest.mkdir()
    proc = subprocess.run([sys.executable, "-c", COPY_AS_NBGRADER_DOES, str(folder), str(dest)],
                          capture_output=True, timeout=120)
    # The copy only stopped at the test's own file-size limit, from a "file" of 0 bytes on disk.
    assert proc.returncode == -signal.SIGXFSZ or b"File too large" in proc.stderr, proc
    assert (dest / "data.bin").stat().st_size == 32 << 20
    start = time.monotonic()
    listing = intake.scan(folder)
    assert time.monotonic() - start < 5 and [r.path for r in listing.refused] == ["data.bin"]


def test_a_fifo_fails_the_student_for_stock_nbgrader_and_is_never_opened_here(tmp_path):
    folder = tmp_path / "alice" / ASSIGNMENT
    folder.mkdir(parents=True)
    os.mkfifo(folder / "pipe")
    with pytest.raises(shutil.SpecialFileError):
        shutil.copy(folder / "pipe", tmp_path / "pipe-copy")  # what nbgrader does: the student's grading fails
    done = []
    worker = threading.Thread(target=lambda: done.append(intake.take(folder, tmp_path / "copy")), daemon=True)
    worker.start()
    worker.join(10)
    assert done and [r.path for r in done[0].refused] == ["pipe"] and not (tmp_path / "copy" / "pipe").exists()


def test_limits_on_size_count_and_depth_count_notebooks_first(tmp_path):
    folder = tmp_path / "s" / ASSIGNMENT
    folder.mkdir(parents=True)
    (folder / "aaa-junk.bin").write_bytes(b"x" * 3000)
    (folder / "big.bin").write_bytes(b"x" * 5000)
    (folder / "zz.ipynb").write_bytes(b"x" * 2000)  # sorted last, counted first
    deep = folder.joinpath(*["d"] * 5)
    deep.mkdir(parents=True)
    (deep / "f.txt").write_text("x")
    limits = intake.Intake(max_file_size=4000, max_total_size=4500, max_files=100, max_depth=3)
    listing = intake.scan(folder, limits)
    why = {r.path: r.reason for r in listing.refused}
    assert "zz.ipynb" in [e.path for e in listing.entries]
    assert why["big.bin"].startswith("it is larger than")
    assert "in total" in why["aaa-junk.bin"]
    assert why["d/d/d/d"] == "folders are nested more than 3 deep (the grader's limit c.Intake.max_depth)"


def test_sixty_thousand_files_are_not_read(tmp_path):
    folder = tmp_path / "s" / ASSIGNMENT
    (folder / "many").mkdir(parents=True)
    (folder / "fashion_mnist.ipynb").write_text("{}")
    for i in range(3000):
        (folder / "many" / f"{i:05}").write_text("")
    listing = intake.scan(folder, intake.Intake(max_files=500))
    assert len(listing.entries) == 500 and "fashion_mnist.ipynb" in [e.path for e in listing.entries]
    assert len(listing.refused) == 1 and "more than 500 files and folders" in listing.refused[0].reason
    dest = tmp_path / "autograded"
    intake.record(dest, listing)
    assert [p["kind"] for p in problems.load(dest)] == ["refused-file"]


@pytest.mark.parametrize("swap", ["symlink", "fifo", "grown", "hard link"])
def test_a_file_changed_after_the_listing_is_refused_at_the_copy(tmp_path, swap):
    folder = tmp_path / "s" / ASSIGNMENT
    folder.mkdir(parents=True)
    target = folder / "notes.txt"
    target.write_text("mine")
    secret = secret_file(tmp_path)
    listing = intake.scan(folder)
    if swap == "symlink":
        target.unlink()
        os.symlink(str(secret), target)
    elif swap == "fifo":
        target.unlink()
        os.mkfifo(target)
    elif swap == "grown":
        target.write_text("mine, and much more")
    else:
        os.link(target, tmp_path / "elsewhere")
    intake.copy(listing, tmp_path / "copy")
    assert not (tmp_path / "copy" / "notes.txt").exists()
    assert [r.path for r in listing.refused] == ["notes.txt"]
    assert listing.refused[0].reason in ("it changed while it was being read", "it became a symbolic link")
    assert listing.entries == []


def test_the_submission_folder_itself_may_not_be_a_link(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "s").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "s" / ASSIGNMENT)
    with pytest.raises(OSError):
        intake.scan(tmp_path / "s" / ASSIGNMENT)


# --- the class ----------------------------------------------------------------------------------


def test_class_list_refuses_odd_ids_and_linked_folders_without_globbing(tmp_path, generated_course):
    course = course_copy(generated_course, tmp_path / "course")
    release = builder.release(course.layout)
    for student in ("alice", "b", "[ab]", "zz\nx", "-rf", ".hidden"):
        builder.Submission({"mnist": release["mnist"]}).submit(course, student)
    os.symlink("alice", course.layout.submitted("eve", ASSIGNMENT).parent)
    course.layout.submitted("frank", ASSIGNMENT).parent.mkdir(parents=True)
    os.symlink("../alice/week2", course.layout.submitted("frank", ASSIGNMENT))
    found, refused = intake.class_list(course.layout, ASSIGNMENT)
    assert [s.student for s in found] == ["alice", "b"]
    why = {r.name: r.reason for r in refused}
    assert sorted(why) == sorted(["[ab]", "zz\nx", "-rf", ".hidden", "eve", "frank"])
    assert "symbolic link" in why["eve"] and "symbolic link" in why["frank"]
    # nbgrader's own glob reads "[ab]" as a pattern: it finds b's notebooks, not its own.
    import glob

    assert glob.glob(str(course.layout.submitted("[ab]", ASSIGNMENT) / "*.ipynb")) == \
        [str(course.layout.submitted("b", ASSIGNMENT) / "mnist.ipynb")]
    assert intake.class_list(course.layout, ASSIGNMENT, student="b")[0][0].student == "b"


# --- nbgrader autograde: a hostile class, stock and with the intake -----------------------------
#
# One class, graded twice without running code (what is tested happens to files before any kernel
# starts): with ``c.Intake.enabled = False`` (stock nbgrader) and with the intake. "zzz" sorts
# after the id with a line break, which stops stock nbgrader for the rest of the class.

ALICE_MARK = "# alice's own answer 5a1e"
FORGED = "FORGED: the TA should see this"


def build_hostile_class(course: Course, secret: Path, stock: bool) -> None:
    release = builder.release(course.layout)
    alice = builder.release(course.layout)
    builder.set_answer(alice["mnist"], "m1_shapes", ALICE_MARK)
    builder.Submission(alice).submit(course, "alice")
    for student in ("zzz", "[ab]", "zz\nx", "tsbad"):
        builder.Submission(release).submit(course, student)
    (course.layout.submitted("tsbad", ASSIGNMENT) / "timestamp.txt").write_text("99999999999999999999")
    copycat = builder.Submission({"fashion_mnist": release["fashion_mnist"]}).submit(course, "copycat")
    os.symlink("../../alice/week2/mnist.ipynb", copycat / "mnist.ipynb")
    mallory = builder.Submission({"mnist": release["mnist"]}).submit(course, "mallory")
    os.symlink("../../../source/week2/fashion_mnist.ipynb", mallory / "fashion_mnist.ipynb")
    os.symlink(str(secret), mallory / "shadow.txt")
    os.link(secret, mallory / "hard.txt")
    os.symlink("../../../gradebook/gradebook.db", mallory / "gradebook.db")
    # A record as the grader writes it, forged by the student (stock nbgrader copies it and grades on).
    (mallory / problems.FILENAME).write_text(problems.SubmissionRecord(
        "mallory", ASSIGNMENT, (problems.Entry("error", None, None, FORGED),), 0.0, True).to_json())
    if not stock:  # stock nbgrader would copy it until the disk is full (shown in a test above)
        os.symlink("/dev/zero", mallory / "zero.bin")


def autograde_hostile_class(tmp: Path, generated: Course, stock: bool):
    course = course_copy(generated, tmp / "course", execute=False, intake=not stock)
    build_hostile_class(course, secret_file(tmp), stock)
    proc = course.nbgrader("autograde", ASSIGNMENT, check=False, timeout=600)
    return course, proc


@pytest.fixture(scope="module")
def stock_class(tmp_path_factory, generated_course):
    return autograde_hostile_class(tmp_path_factory.mktemp("stock"), generated_course, stock=True)


@pytest.fixture(scope="module")
def intake_class(tmp_path_factory, generated_course):
    return autograde_hostile_class(tmp_path_factory.mktemp("intake"), generated_course, stock=False)



def solution_lines(course: Course) -> list[str]:
    """Lines of the instructor's fashion_mnist solutions (never in the release)."""
    nb = builder.read(course.layout.source(ASSIGNMENT) / "fashion_mnist.ipynb")
    return [line.strip() for c in nb.cells if "### BEGIN SOLUTION" in c.source
            for line in c.source.split("### BEGIN SOLUTION")[1].split("### END SOLUTION")[0].splitlines()
            if len(line.strip()) > 20]


def sources_nb(path: Path) -> list:
    return nbformat.read(path, as_version=4).cells


def sources(path: Path) -> str:
    return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells) if path.is_file() else ""


def test_stock_nbgrader_grades_links_copies_secrets_and_trusts_forged_records(stock_class):
    course, proc = stock_class
    auto = lambda s: course.layout.autograded(s, ASSIGNMENT)  # noqa: E731
    # The instructor's solution is graded as mallory's own work; copycat hands in alice's notebook.
    assert set(solution_lines(course)) & set(sources(auto("mallory") / "fashion_mnist.ipynb").splitlines())
    assert ALICE_MARK in sources(auto("copycat") / "mnist.ipynb")
    # A root-only file, through a symbolic link and a hard link, is copied into the autograded folder.
    assert SECRET in (auto("mallory") / "shadow.txt").read_text()
    assert SECRET in (auto("mallory") / "hard.txt").read_text()
    # The forged record is copied as the grader's own.
    assert FORGED in (auto("mallory") / problems.FILENAME).read_text()
    # The timestamp crashes tsbad's grading; the line break stops the class before "zzz"; "[ab]" is lost.
    assert "OverflowError" in proc.stderr and not auto("tsbad").exists()
    assert "Could not match" in proc.stderr
    assert not auto("zzz").exists() and not auto("[ab]").exists()


def test_with_the_intake_links_are_refused_recorded_and_the_class_is_graded(intake_class):
    course, proc = intake_class
    auto = lambda s: course.layout.autograded(s, ASSIGNMENT)  # noqa: E731
    graded = sorted(p.name for p in (course.root / "autograded").iterdir())
    assert graded == ["alice", "copycat", "mallory", "tsbad", "zzz"], proc.stderr[-3000:]
    # Nothing the links pointed to is in the autograded folders: no solution, no classmate's work, no secret.
    assert not set(solution_lines(course)) & set(sources(auto("mallory") / "fashion_mnist.ipynb").splitlines())
    assert ALICE_MARK not in sources(auto("copycat") / "mnist.ipynb")
    for folder in (course.root / "autograded").rglob("*"):
        assert not folder.is_symlink()
        if folder.is_file():
            assert SECRET.encode() not in folder.read_bytes(), folder
            assert folder.stat().st_nlink == 1, folder
    assert sorted(p.name for p in auto("mallory").iterdir()) == ["fashion_mnist.ipynb", problems.FILENAME,
                                                                 "mnist.ipynb"]
    # Each refusal is a recorded problem (the TA's report, the student's feedback); the forged one is not there.
    found = problems.load(auto("mallory"))
    assert FORGED not in json.dumps(found)
    refused = {p["message"].split("'")[1] for p in found if p["kind"] == "refused-file"}
    assert {"fashion_mnist.ipynb", "shadow.txt", "hard.txt", "gradebook.db", problems.FILENAME,
            "zero.bin"} <= refused, found
    assert any(p["kind"] == "refused-file" and p["notebook"] == "mnist" for p in problems.load(auto("copycat")))
    assert [p["kind"] for p in problems.load(auto("tsbad"))] == ["bad-timestamp"]
    # Graded all the same (a refused notebook from the release's placeholder: what it scores is
    # tested where code runs, test_runner_grades_a_hostile_class).
    with course.layout.gradebook() as gb:
        for student in ("alice", "copycat", "mallory", "tsbad", "zzz"):
            assert len(gb.find_submission(ASSIGNMENT, student).notebooks) == 2, student
    # The refused ids are named, with the rule, and the command says it is not done.
    assert proc.returncode == 1
    assert "submitted/[ab]/week2 is not graded" in proc.stderr and "glob character" in proc.stderr
    assert "2 submitted folder(s) were not graded" in proc.stderr
    assert not list(course.root.glob(intake.AREA_PREFIX + "*"))  # its copies are cleaned up


# --- the class runner: one hostile class, graded in parallel with code running ------------------

RUNNER_REFUSED = ["-rf", "=HYPERLINK(\"x\")", "[ab]", "zz\nx"]


@pytest.fixture(scope="module")
def runner_class(tmp_path_factory, generated_course):
    """A class with every kind of hostile folder, graded by the runner with 2 workers (code runs)."""
    tmp = tmp_path_factory.mktemp("runner")
    course = course_copy(generated_course, tmp / "course")
    release = builder.release(course.layout)
    secret = secret_file(tmp)
    for student in ["alice", "tsbad", "zzz", *RUNNER_REFUSED]:
        builder.Submission(release).submit(course, student)
    (course.layout.submitted("tsbad", ASSIGNMENT) / "timestamp.txt").write_text("garbage")
    mallory = builder.Submission({"mnist": release["mnist"]}).submit(course, "mallory")
    os.symlink("../../../source/week2/fashion_mnist.ipynb", mallory / "fashion_mnist.ipynb")
    os.symlink(str(secret), mallory / "shadow.txt")
    os.symlink("/proc/self/environ", mallory / "environ.txt")
    os.symlink("../../../gradebook/gradebook.db", mallory / "gradebook.db")
    os.symlink("/dev/zero", mallory / "zero.bin")
    (mallory / problems.FILENAME).write_text('{"kind": [[[[')  # malformed: crashed the report and the old runner
    cmd = [sys.executable, "-m", "coursekit.grading.runner", ASSIGNMENT, "-j", "2", "--no-progress", "--course", str(course.root)]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=grading_env())
    seconds = time.monotonic() - start
    report = subprocess.run([sys.executable, "-m", "coursekit.term.report", ASSIGNMENT], cwd=course.root,
                            capture_output=True, text=True, timeout=300, env=grading_env())
    return course, proc, report, seconds


def test_runner_grades_a_hostile_class(runner_class):
    course, proc, report, _ = runner_class
    out = proc.stdout + proc.stderr
    graded = sorted(p.name for p in (course.root / "autograded").iterdir() if not p.name.startswith("."))
    assert graded == ["alice", "mallory", "tsbad", "zzz"], out
    assert "graded 4 of 4 submissions" in out and "4 submitted folders not graded" in out, out
    for student in ("-rf", "[ab]"):
        assert f"  {student}: " in out
    assert "zz\\nx" in out and "rename the folder" in out
    # alice's scores are those of the untouched release in expected_scores.csv: the intake changes no grade.
    expected = {(nb, gid): float(score) for (sub, nb, gid), score in read_expected_scores().items()
                if sub == "untouched-release" and score not in ("manual", "") and gid != "late_penalty"}
    with course.layout.gradebook() as gb:
        def scores(student):
            return {(nb.name, g.name): g.auto_score for nb in gb.find_submission(ASSIGNMENT, student).notebooks
                    for g in nb.grades if (nb.name, g.name) in expected}
        assert scores("alice") == expected
        # mallory's linked "solution" is refused: her fashion_mnist is graded as the release's placeholder.
        assert scores("mallory") == expected
        assert scores("zzz") == expected and scores("tsbad") == expected
    found = problems.load(course.layout.autograded("mallory", ASSIGNMENT))
    refused = {p["message"].split("'")[1] for p in found if p["kind"] == "refused-file"}
    assert {"fashion_mnist.ipynb", "shadow.txt", "environ.txt", "gradebook.db", "zero.bin",
            problems.FILENAME} <= refused
    assert "bad-timestamp" in [p["kind"] for p in problems.load(course.layout.autograded("tsbad", ASSIGNMENT))]
    for path in (course.root / "autograded").rglob("*"):
        assert not path.is_symlink()
        assert not path.is_file() or SECRET.encode() not in path.read_bytes()


def test_the_class_report_lists_refused_folders_and_starts_no_formula(runner_class):
    course, _, report, _ = runner_class
    assert report.returncode == 0, report.stderr[-3000:]
    with open(course.root / "reports" / ASSIGNMENT / "report.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert sorted(r[0] for r in rows[1:]) == ["alice", "mallory", "tsbad", "zzz"]
    assert not [c for r in rows for c in r if c.startswith(("=", "+", "@", "\t", "\r"))
                or (c.startswith("-") and not c.lstrip("-").replace(".", "").isdigit())]
    page = (course.root / "reports" / ASSIGNMENT / "report.html").read_text()
    assert "refused-file" in page or "not accepted" in page
    assert "[ab]" in page and "glob character" in page


def test_runner_work_folder_and_snapshot_are_private(tmp_path, generated_course):
    """The runner's work folder holds the submissions the intake read and the gradebook's template:
    0700 folder, 0600 file, a fresh name."""
    from coursekit.grading import runner

    course = course_copy(generated_course, tmp_path / "course")
    old_umask = os.umask(0o022)
    try:
        r = runner.Runner(course.root, ASSIGNMENT)
        work = r.make_work()
        try:
            snapshot = r.snapshot()
            assert work.stat().st_mode & 0o777 == 0o700 and snapshot.stat().st_mode & 0o777 == 0o600
            again = runner.Runner(course.root, ASSIGNMENT).make_work()
            assert again != work  # not predictable
            shutil.rmtree(again)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        os.umask(old_umask)


# --- faults: a damaged gradebook, a killed `nbgrader autograde` ---------------------------------


def damage_gradebook(course: Course) -> None:
    path = course.layout.gradebook_path
    data = bytearray(path.read_bytes())
    data[100:4096 * 3] = b"\xff" * (4096 * 3 - 100)  # the header's tail and the first pages
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("stock", [True, False], ids=["stock", "intake"])
def test_a_damaged_gradebook_stops_autograde_force_before_anything_is_deleted(tmp_path, generated_course, stock):
    course = course_copy(generated_course, tmp_path / "course", execute=False, intake=not stock)
    builder.Submission(builder.release(course.layout)).submit(course, "alice")
    course.nbgrader("autograde", ASSIGNMENT, timeout=600)
    graded = course.layout.autograded("alice", ASSIGNMENT)
    before = sorted(p.name for p in graded.iterdir())
    damage_gradebook(course)
    proc = course.nbgrader("autograde", ASSIGNMENT, "--force", check=False, timeout=600)
    assert proc.returncode != 0
    if stock:  # nbgrader deletes the autograded notebooks, then fails on the gradebook
        assert not graded.exists() or sorted(p.name for p in graded.iterdir()) != before
        return
    assert sorted(p.name for p in graded.iterdir()) == before
    assert "is damaged" in proc.stderr and "Nothing was graded, changed or deleted" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_runner_refuses_a_damaged_gradebook_with_a_message(tmp_path, generated_course):
    from coursekit.grading import runner

    course = course_copy(generated_course, tmp_path / "course", execute=False)
    damage_gradebook(course)
    with pytest.raises(runner.RunnerError, match="is damaged"):
        runner.Runner(course.root, ASSIGNMENT).check()


def kill_mid_student(course: Course) -> None:
    """Start `nbgrader autograde`, SIGKILL it (and its kernel) while "slow" is being graded."""
    cmd = [str(Path(sys.executable).with_name("nbgrader")), "autograde", ASSIGNMENT, "--Execute.timeout=8"]
    proc = subprocess.Popen(cmd, cwd=course.root, env=grading_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    notebook = course.layout.autograded("slow", ASSIGNMENT) / "fashion_mnist.ipynb"
    deadline = time.monotonic() + 300
    while not notebook.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2)  # its kernel starts, nothing is graded yet
    assert proc.poll() is None, "autograde ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for pid in Path("/proc").iterdir():  # a kernel in a session of its own
        if pid.name.isdigit():
            try:
                if os.readlink(pid / "cwd").startswith(str(course.root)):
                    os.kill(int(pid.name), signal.SIGKILL)
            except OSError:
                pass


@pytest.mark.parametrize("stock", [True, False], ids=["stock", "intake"])
def test_a_killed_autograde_is_resumed_by_the_same_command(tmp_path, generated_course, stock):
    course = course_copy(generated_course, tmp_path / "course", intake=not stock)
    release = builder.release(course.layout)
    slow = builder.release(course.layout)
    builder.set_answer(slow["fashion_mnist"], "f1_load", "import time\ntime.sleep(60)")
    builder.Submission({"fashion_mnist": slow["fashion_mnist"]}).submit(course, "slow")
    kill_mid_student(course)
    builder.Submission({"fashion_mnist": release["fashion_mnist"]}).submit(course, "later")
    proc = course.nbgrader("autograde", ASSIGNMENT, "--Execute.timeout=8", check=False, timeout=900)
    from nbgrader.api import MissingEntry

    with course.layout.gradebook() as gb:
        try:
            notebook = gb.find_submission_notebook("fashion_mnist", ASSIGNMENT, "slow")
            unscored = [g.name for g in notebook.grades if g.cell.cell_type == "code" and g.auto_score is None]
            unscored = unscored or ([] if notebook.grades else ["(no grades)"])
        except MissingEntry:
            unscored = ["(no submission)"]
    executed = [c.execution_count for c in sources_nb(course.layout.autograded("slow", ASSIGNMENT) / "fashion_mnist.ipynb")
                if c.cell_type == "code"]
    if stock:  # "Skipping existing assignment": half-executed, scoreless for good
        assert "Skipping existing assignment" in proc.stderr
        assert unscored or not all(executed), (unscored, executed)
        return
    assert all(executed)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "left half-graded" in proc.stderr and not unscored
    assert not intake.unfinished(course.layout.autograded("slow", ASSIGNMENT))
    assert course.layout.autograded("later", ASSIGNMENT).is_dir()


# --- what the class runner ships to a worker (local thread or Dask) ------------------------------


@pytest.mark.parametrize("stock", [True, False], ids=["intake-off", "intake"])
def test_the_submission_shipped_to_a_worker_is_the_intakes_copy(tmp_path, generated_course, stock):
    """The runner packs a submission for its workers (coursekit.grading.runner.SubmissionTask): with the
    intake, the archive is the intake's copy (no link, no secret, no forged problems file, the
    timestamp rewritten) and what was refused stays with the runner, which records it; without
    it, the links travel to the worker, which (as root) would follow them."""
    import io
    import tarfile

    from coursekit.grading import runner

    course = course_copy(generated_course, tmp_path / "course", execute=False, intake=not stock)
    release = builder.release(course.layout)
    folder = builder.Submission({"mnist": release["mnist"]}).submit(course, "mallory")
    os.symlink("../../../source/week2/fashion_mnist.ipynb", folder / "fashion_mnist.ipynb")
    os.symlink(str(secret_file(tmp_path)), folder / "shadow.txt")
    (folder / problems.FILENAME).write_text('{"kind": [[[[')
    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o700)
    task, listing = runner.SubmissionTask.of_listing(course.layout, "mallory", ASSIGNMENT, {}, 1, scratch)
    with tarfile.open(fileobj=io.BytesIO(task.archive), mode="r:gz") as tar:
        members = {Path(m.name).name: m for m in tar.getmembers()}
        links = [name for name, m in members.items() if m.issym() or m.islnk()]
        if stock:
            assert {"fashion_mnist.ipynb", "shadow.txt"} <= set(links) and listing is None
            return
        assert links == [] and "mnist.ipynb" in members
        assert not {"fashion_mnist.ipynb", "shadow.txt", problems.FILENAME} & set(members)
        assert all(SECRET.encode() not in tar.extractfile(m).read() for m in members.values() if m.isfile())
    assert {r.path for r in listing.refused} >= {"fashion_mnist.ipynb", "shadow.txt", problems.FILENAME}
    assert list(scratch.iterdir()) == []  # the intake's copy is gone once packed
    graded = course.layout.autograded("mallory", ASSIGNMENT)
    intake.record(graded, listing)  # as Runner.commit does, for a graded or a failed submission
    assert {"fashion_mnist.ipynb", "shadow.txt"} <= {p["message"].split("'")[1] for p in problems.load(graded)}


# --- near-miss names and notebooks among junk (issue 25) ------------------------------------------


def test_a_notebook_among_thousands_of_junk_files_is_still_read(tmp_path):
    """All of a folder's names are looked at (names only), notebooks first: the old scan read the
    first max_files + 1 names in directory order and sorted only those."""
    folder = tmp_path / "s" / ASSIGNMENT
    folder.mkdir(parents=True)
    for i in range(20000):
        (folder / f"junk{i:05}").write_bytes(b"")
    (folder / "fashion_mnist.ipynb").write_text("{}")
    limits = intake.Intake(max_files=10)
    with os.scandir(folder) as it:  # what the old scan read of this folder
        old_batch = [e.name for _, e in zip(range(limits.max_files + 1), it)]
    assert "fashion_mnist.ipynb" not in old_batch
    listing = intake.scan(folder, limits)
    assert listing.notebooks == ["fashion_mnist.ipynb"]
    assert len(listing.refused) == 1
    assert "(the grader's limit c.Intake.max_files)" in listing.refused[0].reason
    assert intake.NOTEBOOKS_FIRST in listing.refused[0].reason


def test_a_notebook_past_the_file_limit_is_named_with_why(tmp_path):
    folder = tmp_path / "s" / ASSIGNMENT
    (folder / "junk").mkdir(parents=True)
    (folder / "work" / "deep").mkdir(parents=True)
    for i in range(600):
        (folder / "junk" / f"{i:04}").write_bytes(b"")
    (folder / "work" / "deep" / "mnist.ipynb").write_text("{}")
    listing = intake.scan(folder, intake.Intake(max_files=500))
    why = {r.path: r.reason for r in listing.refused}
    assert why["work/deep/mnist.ipynb"].startswith("it was not read: the submission has more than 500 files")
    assert "c.Intake.max_files" in why["work/deep/mnist.ipynb"]
    assert len(listing.entries) == 500


@pytest.fixture(scope="module")
def near_miss_class(generated_course, tmp_path_factory):
    """Notebooks handed in under near-miss names, in sub-folders, or behind junk; graded without
    running code."""
    tmp = tmp_path_factory.mktemp("near-miss")
    course = course_copy(generated_course, tmp / "course", execute=False)
    release = course.layout.release(ASSIGNMENT)

    def hand_in(student: str, files: dict[str, str], junk: int = 0) -> None:
        folder = course.layout.submitted(student, ASSIGNMENT)
        folder.mkdir(parents=True)
        for name, notebook in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(release / f"{notebook}.ipynb", folder / name)
        if junk:
            (folder / "junk").mkdir()
            for i in range(junk):
                (folder / "junk" / f"{i:04}").write_bytes(b"")

    hand_in("space", {"fashion_mnist.ipynb ": "fashion_mnist", "mnist.ipynb": "mnist"})
    hand_in("folder", {"week2/fashion_mnist.ipynb": "fashion_mnist", "week2/mnist.ipynb": "mnist"})
    hand_in("twice", {"fashion_mnist.ipynb ": "fashion_mnist", "old/Fashion_MNIST.ipynb": "fashion_mnist",
                      "mnist.ipynb": "mnist"})
    hand_in("junk", {"fashion_mnist.ipynb": "fashion_mnist", "zz/mnist.ipynb": "mnist"}, junk=600)
    course.nbgrader("autograde", ASSIGNMENT)
    return course


def _notes(course, student: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for p in problems.load(course.layout.autograded(student, ASSIGNMENT)):
        found.setdefault(p["kind"], []).append(p["message"])
    return found


def test_a_near_miss_name_is_graded_and_named(near_miss_class):
    notes = _notes(near_miss_class, "space")
    assert "missing-notebook" not in notes, notes
    assert notes["renamed-notebook"] == [
        "There was no fashion_mnist.ipynb at the top of your submission; found 'fashion_mnist.ipynb ' (a near-miss "
        "of fashion_mnist.ipynb) and graded it as fashion_mnist.ipynb. Rename it to exactly fashion_mnist.ipynb, "
        "at the top of your submission."]
    assert (near_miss_class.layout.autograded("space", ASSIGNMENT) / "fashion_mnist.ipynb").is_file()


def test_notebooks_in_a_sub_folder_are_graded_and_named(near_miss_class):
    notes = _notes(near_miss_class, "folder")
    assert "missing-notebook" not in notes, notes
    assert sorted(m.split("'")[1] for m in notes["renamed-notebook"]) == ["week2/fashion_mnist.ipynb", "week2/mnist.ipynb"]
    assert all("(in a sub-folder)" in m for m in notes["renamed-notebook"])


def test_several_candidates_are_all_named_and_none_guessed(near_miss_class):
    (missing,) = _notes(near_miss_class, "twice")["missing-notebook"]
    assert missing.startswith("fashion_mnist.ipynb was not in your submission: 0 points")
    assert "Found 'fashion_mnist.ipynb ', 'old/Fashion_MNIST.ipynb'" in missing and "none was graded" in missing


def test_a_notebook_cut_by_the_file_limit_says_which_limit(near_miss_class):
    notes = _notes(near_miss_class, "junk")
    (missing,) = notes["missing-notebook"]
    assert missing.startswith("mnist.ipynb was not in your submission") and "over the grader's limits" in missing
    refused = " ".join(notes["refused-file"])
    assert "'zz/mnist.ipynb' in your submission was not accepted: it was not read" in refused
    assert "c.Intake.max_files" in refused and intake.NOTEBOOKS_FIRST in refused
