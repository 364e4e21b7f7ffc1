"""Every copy through nbgrader's exchange treats files as data (issue 25, coursekit/submissions/exchange.py).

Real `nbgrader collect` / `nbgrader release_feedback` commands, run as root here (as the instructor
runs them on the hub), on an exchange whose hand-ins belong to other accounts (bin, daemon,
nobody: system accounts every Debian machine has, so no account is made). Each attack is shown
twice: with stock nbgrader's exchange class it does damage, with the course's it is refused and
recorded, and the rest of the class is collected.
"""

from __future__ import annotations

import datetime
import json
import os
import pwd
import secrets
import subprocess
from pathlib import Path

import pytest

from builder import ASSIGNMENT
from conftest import course_copy
from coursekit.submissions import intake
from coursekit.core import nbgrader_command, problems
from coursekit.core.course import grading_env

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="hand-ins must belong to other accounts")

STUDENTS = ("bin", "daemon", "nobody")  # collected in this order
OURS = "--ExchangeFactory.collect=coursekit.submissions.exchange.VerifiedCollect"
# Stock nbgrader's collect, in a fixed order (stock takes the order glob gives): the class after
# the student with a dangling link is then known.
STOCK_SORTED = '''
from nbgrader.exchange.default import ExchangeCollect

class SortedStockCollect(ExchangeCollect):
    def init_src(self):
        super().init_src()
        self.src_records.sort(key=lambda r: r["username"])
'''
STOCK = "--ExchangeFactory.collect=stock_sorted.SortedStockCollect"
SOLUTION_MARK = "### BEGIN SOLUTION"


@pytest.fixture
def course(generated_course, tmp_path):
    return course_copy(generated_course, tmp_path / "course", execute=False)


@pytest.fixture
def exchange(course, tmp_path):
    root = tmp_path / "exchange"
    (root / course.layout.course_id / "inbound").mkdir(parents=True)
    os.chmod(root, 0o1777)
    (tmp_path / "helpers").mkdir()
    (tmp_path / "helpers" / "stock_sorted.py").write_text(STOCK_SORTED)
    return root


def nbgrader(course, exchange: Path, *args: str) -> subprocess.CompletedProcess:
    env = grading_env() | {"PYTHONPATH": str(exchange.parent / "helpers")}
    return subprocess.run([*nbgrader_command.command(), *args, f"--Exchange.root={exchange}"], cwd=course.root,
                          env=env, capture_output=True, text=True, timeout=300)


def hand_in(course, exchange: Path, student: str, links: dict[str, str] | None = None) -> Path:
    """A hand-in as `nbgrader submit` leaves it, owned by ``student``'s account, with the released
    notebooks; ``links``: name -> target, symbolic links put in afterwards (by the student)."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f UTC")
    folder = exchange / course.layout.course_id / "inbound" / f"{student}+{ASSIGNMENT}+{now}+{secrets.token_hex(4)}"
    folder.mkdir()
    for nb in course.layout.release(ASSIGNMENT).glob("*.ipynb"):
        (folder / nb.name).write_bytes(nb.read_bytes())
    (folder / "timestamp.txt").write_text(now)
    for name, target in (links or {}).items():
        (folder / name).unlink(missing_ok=True)
        os.symlink(target, folder / name)
    uid = pwd.getpwnam(student).pw_uid
    for path in [folder, *folder.iterdir()]:
        os.lchown(path, uid, uid)
    return folder


def the_attack(course, exchange: Path) -> Path:
    """bin replaces a handed-in notebook with a link to the course's source notebook (solution,
    hidden tests, mark schemes) and leaves a dangling link; daemon and nobody hand in as usual."""
    solution = course.layout.source(ASSIGNMENT) / "fashion_mnist.ipynb"
    assert SOLUTION_MARK in solution.read_text()
    hand_in(course, exchange, "bin", {"fashion_mnist.ipynb": str(solution), "notes.txt": "/nonexistent/notes"})
    for student in STUDENTS[1:]:
        hand_in(course, exchange, student)
    return solution


def collected(course) -> list[str]:
    return [s for s in STUDENTS if course.layout.submitted(s, ASSIGNMENT).is_dir()]


def test_stock_collect_copies_the_linked_solution_and_stops_at_a_dangling_link(course, exchange):
    the_attack(course, exchange)
    proc = nbgrader(course, exchange, "collect", ASSIGNMENT, STOCK)
    assert proc.returncode != 0  # copytree raised at bin's dangling link
    assert collected(course) == ["bin"]  # daemon and nobody were not collected
    taken = course.layout.submitted("bin", ASSIGNMENT) / "fashion_mnist.ipynb"
    assert not taken.is_symlink() and SOLUTION_MARK in taken.read_text()  # an ordinary file, the solution


def test_the_course_collect_refuses_links_records_them_and_collects_the_class(course, exchange):
    the_attack(course, exchange)
    proc = nbgrader(course, exchange, "collect", ASSIGNMENT, OURS)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert collected(course) == list(STUDENTS)
    bins = course.layout.submitted("bin", ASSIGNMENT)
    assert not (bins / "fashion_mnist.ipynb").exists() and not (bins / "notes.txt").exists()
    assert (bins / "mnist.ipynb").is_file()
    assert not any(SOLUTION_MARK in p.read_text() for p in bins.iterdir() if p.is_file())
    assert "'fashion_mnist.ipynb' in your submission was not accepted: it is a symbolic link" in log
    for student in STUDENTS[1:]:
        assert sorted(p.name for p in course.layout.submitted(student, ASSIGNMENT).iterdir()) == \
            ["fashion_mnist.ipynb", "mnist.ipynb", "timestamp.txt"]
    # Grading reads collect's record: each refusal is a refused-file problem (feedback, report).
    course.nbgrader("autograde", ASSIGNMENT, "--student=bin")
    recorded = problems.load(course.layout.autograded("bin", ASSIGNMENT))
    refused = {p["message"].split("'")[1]: p for p in recorded if p["kind"] == "refused-file"}
    assert set(refused) == {"fashion_mnist.ipynb", "notes.txt"}, recorded
    assert "symbolic link" in refused["fashion_mnist.ipynb"]["message"]
    assert "collected from the exchange" in refused["fashion_mnist.ipynb"]["message"]
    assert refused["fashion_mnist.ipynb"]["notebook"] == "fashion_mnist"


@pytest.mark.parametrize("odd", ["fifo", "hard link", "record"])
def test_the_course_collect_refuses_other_odd_entries(course, exchange, odd, tmp_path):
    """A FIFO (stock copytree blocks on it), a hard link, and a forged collect record."""
    folder = hand_in(course, exchange, "daemon")
    hand_in(course, exchange, "nobody")
    if odd == "fifo":
        os.mkfifo(folder / "pipe")
    elif odd == "hard link":
        os.link(folder / "mnist.ipynb", folder / "copy.ipynb")
    else:
        (folder / intake.COLLECT_RECORD).write_text(json.dumps({"refused": [{"path": "x", "reason": "forged"}]}))
    proc = nbgrader(course, exchange, "collect", ASSIGNMENT, OURS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert collected(course) == ["daemon", "nobody"]
    record = json.loads((course.layout.submitted("daemon", ASSIGNMENT) / intake.COLLECT_RECORD).read_text())
    reasons = {r["path"]: r["reason"] for r in record["refused"]}
    if odd == "fifo":
        assert "named pipe" in reasons["pipe"]
    elif odd == "hard link":
        assert "hard link" in reasons["mnist.ipynb"] and "hard link" in reasons["copy.ipynb"]
    else:
        assert set(reasons) == {intake.COLLECT_RECORD} and "used by the grader" in reasons[intake.COLLECT_RECORD]
    assert not (course.layout.submitted("nobody", ASSIGNMENT) / intake.COLLECT_RECORD).exists()


def test_a_submission_that_cannot_be_collected_fails_alone(course, exchange):
    """bin's whole hand-in is unreadable as a folder (replaced by a link to the course's source
    folder): named and skipped, the others collected, and the command says it is not done."""
    folder = hand_in(course, exchange, "bin")
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    os.symlink(course.layout.source(ASSIGNMENT), folder)
    os.lchown(folder, pwd.getpwnam("bin").pw_uid, 0)
    for student in STUDENTS[1:]:
        hand_in(course, exchange, student)
    proc = nbgrader(course, exchange, "collect", ASSIGNMENT, OURS)
    assert proc.returncode != 0 and "1 submission(s) could not be collected: bin" in proc.stdout + proc.stderr
    assert collected(course) == ["daemon", "nobody"]


# --- release_feedback: feedback/ is the staff's to write -------------------------------------------


def feedback_for(course, student: str, pages: dict[str, str | Path]) -> None:
    folder = course.layout.feedback(student, ASSIGNMENT)
    folder.mkdir(parents=True)
    (folder / "timestamp.txt").write_text("2026-12-04 10:00:00.000000 UTC")
    (folder / "submission_secret.txt").write_text(secrets.token_hex(16))
    for name, page in pages.items():
        if isinstance(page, Path):
            os.symlink(page, folder / f"{name}.html")
        else:
            (folder / f"{name}.html").write_text(page)


@pytest.mark.parametrize("release_class", ["stock", "ours"])
def test_a_link_planted_in_feedback_is_not_released(course, exchange, tmp_path, release_class):
    """A TA links a feedback page to a file only the instructor can read: stock release_feedback
    copies it into the exchange, where the student fetches it; the course's refuses it."""
    secret = tmp_path / "instructor-only.txt"
    secret.write_text("the instructor's private key\n")
    os.chmod(secret, 0o600)
    feedback_for(course, "daemon", {"fashion_mnist": secret})
    feedback_for(course, "nobody", {"fashion_mnist": "<p>your feedback</p>"})
    option = [] if release_class == "stock" else ["--ExchangeFactory.release_feedback=coursekit.submissions.exchange.SafeReleaseFeedback"]
    proc = nbgrader(course, exchange, "release_feedback", ASSIGNMENT, *option)
    released = [p.read_text() for p in (exchange / course.layout.course_id / "feedback").iterdir()]
    assert "<p>your feedback</p>" in released
    if release_class == "stock":
        assert proc.returncode == 0 and "the instructor's private key\n" in released
    else:
        assert proc.returncode != 0 and "feedback of 1 student(s) not released: daemon" in proc.stdout + proc.stderr
        assert not any("private key" in text for text in released)
