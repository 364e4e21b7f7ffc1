"""The sandbox around student code (coursekit/execution/sandbox.py), proven by submissions that attack it.

Each attack (tests/sandbox_attacks.py) is graded twice by the real `nbgrader autograde`: once
with the sandbox explicitly turned off, where it must succeed (else the test proves nothing),
and once with the sandbox, where it must fail, while a normal submission graded alongside
gets exactly the scores of tests/fixtures/expected_scores.csv.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

import sandbox_attacks as attacks
from builder import ASSIGNMENT
from conftest import LATE_PENALTY, SUBMISSIONS, read_expected_scores
from coursekit.student import datapaths
from coursekit.execution import sandbox
from coursekit.core.course import REPO_ROOT, Course, grading_env

# Limits of the sandboxed attack course: small, so that the attacks hit them quickly.
LIMITS = dict(memory="3G", processes=64, wall_time=45, disk="200M", files=2000, output="8M")
FORKS = 200
FILL_MB, FILL_FILES, PRINT_MB = 100, 3000, 40  # beyond LIMITS' disk, files and output, by the filler
ENV_SECRET = "grader-token-5be0c1"
GRADER_SECRETS = {"TF_TOKEN_app_terraform_io": ENV_SECRET, "NBGRADER_DB_PASSWORD": ENV_SECRET,
                  "COURSEKIT_TEST_TOKEN": ENV_SECRET}


class Listener:
    """A TCP server on the grader's loopback that records whatever reaches it."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    self.received.append(conn.recv(100))
                except OSError:
                    self.received.append(b"<connected>")

    def close(self):
        self.server.close()


@dataclass
class Graded:
    course: Course
    home: Path
    returncode: int
    log: str
    events: list[dict] = field(default_factory=list)
    listener: Listener | None = None
    source: dict[str, bytes] = field(default_factory=dict)  # source/week2 before grading

    def autograded(self, student: str) -> Path:
        return self.course.layout.autograded(student, ASSIGNMENT)

    def report(self, student: str, attack: str | None = None) -> dict | None:
        """What an attack reported: from the autograded notebook, else from the file it wrote."""
        attack = attack or student
        # Without the sandbox the snoop overwrites the other students' autograded notebooks.
        found = attacks.reports_left_in(self.course.root.parent / f"report-{student}")
        found = found or attacks.reports(self.autograded(student) / "fashion_mnist.ipynb")
        return found.get(attack)

    def reported(self, student: str, attack: str | None = None) -> dict:
        """The report of an attack that must have finished, or nbgrader's log to say why not."""
        report = self.report(student, attack)
        assert report is not None, f"no report from {attack or student!r}; nbgrader said:\n{self.log[-4000:]}"
        return report

    def scores(self, student: str) -> dict[tuple[str, str], float | None]:
        with sqlite3.connect(self.course.layout.gradebook_path) as db:
            rows = db.execute(
                "SELECT n.name, c.name, g.auto_score FROM grade g JOIN base_cell c ON g.cell_id = c.id "
                "JOIN submitted_notebook sn ON g.notebook_id = sn.id JOIN notebook n ON sn.notebook_id = n.id "
                "JOIN submitted_assignment sa ON sn.assignment_id = sa.id WHERE sa.student_id = ?", (student,))
            return {(nb, cell): score for nb, cell, score in rows}


def probes() -> list[Path]:
    """Shared files student code must never be able to change (opened for append only)."""
    cache = sorted(datapaths.cache_dir().rglob("*.npy"))
    data = sorted(datapaths.data_dirs()[0].rglob("*.gz"))
    return [REPO_ROOT / "coursekit" / "checks.py", Path(sys.prefix) / "pyvenv.cfg", *cache[:1], *data[:1]]


def grade(base: Path, settings: dict, submissions: dict, *args: str) -> Graded:
    """A fresh course copy under ``base`` with these submissions, autograded once."""
    course = Course.copy_of(base / "course")
    course.generate(ASSIGNMENT)
    attacks.configure(course.root, **settings)
    home = base / "home"
    home.mkdir(exist_ok=True)
    (home / "secret.txt").write_text("grader secret")
    events = base / "events.jsonl"
    listener = Listener()
    for student, make in submissions.items():
        if make is None:  # a normal submission
            course.submit(student, SUBMISSIONS / "untouched-release" / ASSIGNMENT, ASSIGNMENT)
            continue
        target = attacks.Target(course.layout.release(ASSIGNMENT), base / f"report-{student}",
                                course.root, listener.port, home, tuple(probes()))
        attacks.submission(target, *make(target)).submit(course, student)
    source = {p.name: p.read_bytes() for p in course.layout.source(ASSIGNMENT).iterdir()}
    env = dict(grading_env(), HOME=str(home), **GRADER_SECRETS, **{sandbox.EVENTS_ENV: str(events)})
    cmd = [str(Path(sys.executable).with_name("nbgrader")), "autograde", ASSIGNMENT, *args]
    proc = subprocess.run(cmd, cwd=course.root, env=env, capture_output=True, text=True, timeout=900)
    listener.close()
    graded = Graded(course, home, proc.returncode, proc.stdout + proc.stderr, listener=listener, source=source)
    if events.is_file():
        graded.events = [json.loads(line) for line in events.read_text().splitlines()]
    return graded


def daemon_mark(course_root: Path) -> str:
    """The daemon's `sleep` argument: unique to its course copy."""
    return f"86400.{zlib.crc32(str(course_root).encode())}"


# student -> attacks, each in its own answer cell, in order. An attack that gets the kernel
# stopped has a student of its own; the snoop also does, since without the sandbox it destroys
# the gradebook (it is graded last: nbgrader goes in alphabetical order).
ATTACKS = {
    "hog-many": lambda t: [attacks.hog_many(t, 4, 800)],
    # The daemon first: the forker's processes use up the process limit for a while.
    "multi": lambda t: [attacks.daemon(t, daemon_mark(t.blast)), attacks.hog(t, 30), attacks.forker(t, FORKS)],
    "snoop": lambda t: [attacks.snoop(t)],
    # The shouter last: with the sandbox, what it prints after its output budget is dropped.
    "filler": lambda t: [attacks.environ(t, ("TF_", "NBGRADER_", "COURSEKIT_"), ENV_SECRET),
                         attacks.filler(t, FILL_MB, FILL_FILES), attacks.shouter(t, PRINT_MB)],
}


@pytest.fixture(scope="module")
def unsandboxed(tmp_path_factory):
    """The attacks with the sandbox explicitly off (stock nbgrader behaviour)."""
    graded = grade(tmp_path_factory.mktemp("unsandboxed"), {"enabled": False}, ATTACKS)
    yield graded
    for pid in attacks.processes_with_argument(daemon_mark(graded.course.root)):
        os.kill(pid, 9)  # whatever the test said


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory):
    return grade(tmp_path_factory.mktemp("sandboxed"), LIMITS,
                 {**ATTACKS, "normal": None, "sleeper": lambda t: [attacks.sleeper(t)]})


# --- network ------------------------------------------------------------------------------------


def test_network_attack_works_without_the_sandbox(unsandboxed):
    assert unsandboxed.reported("snoop")["network"] == "sent"
    assert unsandboxed.listener.received == [b"pwned"]


def test_sandbox_has_no_network(sandboxed):
    report = sandboxed.reported("snoop")
    assert report["network"].startswith(("ConnectionRefusedError", "OSError")), report["network"]
    assert sandboxed.listener.received == []


# --- reading --------------------------------------------------------------------------------------


def test_read_attack_finds_hidden_tests_and_gradebook_without_the_sandbox(unsandboxed):
    report, layout = unsandboxed.reported("snoop"), unsandboxed.course.layout
    own = layout.autograded("snoop", ASSIGNMENT) / "fashion_mnist.ipynb"
    assert str(own) in report["hidden"], "its own autograded notebook, hidden tests included"
    assert str(layout.gradebook_path) in report["sqlite"]
    assert str(layout.source(ASSIGNMENT) / "mnist.ipynb") in report["hidden"]
    assert report["home_secret"] == "grader secret"
    assert {"gradebook", "source", "submitted", "release"} <= set(report["course_listing"]["."])
    assert report["course_listing"]["autograded"] == ["filler", "hog-many", "multi", "snoop"]


def test_sandbox_hides_hidden_tests_gradebook_course_and_home(sandboxed):
    report = sandboxed.reported("snoop")
    assert report["hidden"] == []
    # The only database it finds is IPython's history of its own session, in its private home.
    assert [p for p in report["sqlite"] if not p.startswith(sandbox.INNER_HOME + "/")] == []
    assert report["notebooks_seen"] == 0
    assert report["home_secret"] in ("FileNotFoundError", "PermissionError")
    # Nothing of the course is there but the way to its own folder: no source/, gradebook/,
    # submitted/, release/, other students' autograded/ folders.
    assert report["course_listing"] == {".": ["autograded"], "autograded": ["snoop"]}


# --- writing ------------------------------------------------------------------------------------


def test_write_attack_destroys_the_gradebook_without_the_sandbox(unsandboxed):
    report, layout = unsandboxed.reported("snoop"), unsandboxed.course.layout
    assert str(layout.gradebook_path) in report["written"]
    assert str(layout.source(ASSIGNMENT) / "fashion_mnist.ipynb") in report["written"]
    assert layout.gradebook_path.read_text() == "pwned"
    assert sorted(report["appendable"]) == sorted(str(p) for p in probes())


def test_sandbox_writes_only_its_scratch_copy(sandboxed):
    report, layout = sandboxed.reported("snoop"), sandboxed.course.layout
    assert report["written"] == [] and report["appendable"] == []
    assert report["uid"] >= sandbox.UID_BASE
    # The course is intact: gradebook readable, source notebooks unchanged ...
    with sqlite3.connect(layout.gradebook_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert {p.name: p.read_bytes() for p in layout.source(ASSIGNMENT).iterdir()} == sandboxed.source
    # ... and what it wrote in its own folder stayed in the scratch copy.
    graded = sandboxed.autograded("snoop")
    assert not (graded / "pwned.txt").exists()
    assert nbformat.read(graded / "fashion_mnist.ipynb", as_version=4).cells


# --- resources ----------------------------------------------------------------------------------


def test_fork_attack_works_without_the_sandbox(unsandboxed):
    assert unsandboxed.reported("multi", "forker") == {"forked": FORKS, "error": None}


def test_sandbox_bounds_the_number_of_processes(sandboxed):
    report = sandboxed.reported("multi", "forker")
    assert report["forked"] < LIMITS["processes"]
    assert "Resource temporarily unavailable" in report["error"]


def test_allocation_attack_works_without_the_sandbox(unsandboxed):
    assert unsandboxed.reported("multi", "hog") == {"error": None, "allocated_gb": 30}


def test_sandbox_bounds_the_memory_of_a_process(sandboxed):
    report = sandboxed.reported("multi", "hog")
    assert report["error"] == "MemoryError"
    assert report["allocated_gb"] < 3


def test_memory_spread_over_processes_works_without_the_sandbox(unsandboxed):
    assert unsandboxed.reported("hog-many") == {"exits": [0, 0, 0, 0]}


def test_sandbox_bounds_the_memory_of_all_its_processes(sandboxed):
    assert sandboxed.report("hog-many") is None, "the kernel should have been stopped"
    stopped = [e for e in sandboxed.events if Path(e["cwd"]) == sandboxed.autograded("hog-many").resolve()]
    assert [e["kind"] for e in stopped] == ["sandbox"]
    assert "memory" in stopped[0]["message"]
    assert "There was an error processing assignment" in sandboxed.log


def test_daemon_outlives_grading_without_the_sandbox(unsandboxed):
    """nbgrader kills the kernel's process group when it is done; a detached process stays."""
    assert unsandboxed.reported("multi", "daemon") == {"started": True}
    assert len(attacks.processes_with_argument(daemon_mark(unsandboxed.course.root))) == 1


def test_sandbox_takes_every_process_down_with_the_kernel(sandboxed):
    assert sandboxed.reported("multi", "daemon") == {"started": True}
    assert attacks.processes_with_argument(daemon_mark(sandboxed.course.root)) == []


def test_sandbox_bounds_wall_time(sandboxed):
    """Its cell ignores nbgrader's interrupt; the per-cell timeout (240 s here) would come after
    the sandbox's wall-time limit, which stops the kernel and everything in it."""
    stopped = [e for e in sandboxed.events if Path(e["cwd"]) == sandboxed.autograded("sleeper").resolve()]
    assert [e["kind"] for e in stopped] == ["timeout"]
    assert f"wall-time limit of {LIMITS['wall_time']} s" in sandboxed.log


# --- disk, files, output, environment (issue 11) -------------------------------------------------


def test_the_benchmarks_switches_reach_the_sandboxed_kernel_and_nothing_else_does(monkeypatch):
    """benchmarks/ turn the training speed-up and the checker's memo off through the kernel's
    environment; the sandbox keeps those two names and still drops a secret."""
    from coursekit.student import checks
    from coursekit.execution import fastfit

    monkeypatch.setenv(fastfit.ENV, "0")
    monkeypatch.setenv(checks.CACHE_ENV, "0")
    monkeypatch.setenv("NBGRADER_SECRET", "do-not-pass")
    env = sandbox.Sandbox([sys.executable, "-m", "ipykernel_launcher"], sandbox.Settings(), cwd=None).environment()
    assert env.get(fastfit.ENV) == "0" and env.get(checks.CACHE_ENV) == "0"
    assert "NBGRADER_SECRET" not in env


def test_disk_files_output_and_environment_are_unbounded_without_the_sandbox(unsandboxed):
    environ = unsandboxed.reported("filler", "environ")
    assert environ["secret"] and {"TF_TOKEN_app_terraform_io", "NBGRADER_DB_PASSWORD"} <= set(environ["seen"])
    fill = unsandboxed.reported("filler", "filler")
    assert fill == {"written_mb": 4 * FILL_MB, "files": FILL_FILES}  # 400 MB on the grader's disks, 3000 files
    assert unsandboxed.reported("filler", "shouter") == {"printed_mb": PRINT_MB}  # every byte reached nbgrader


def test_sandbox_bounds_disk_and_files_together_and_passes_no_secret(sandboxed):
    environ = sandboxed.reported("filler", "environ")
    assert environ is not None, sandboxed.log[-3000:]
    # Only exact names of the allow-list: nothing of the grader's TF_* / NBGRADER_* secrets.
    assert not environ["secret"]
    assert set(environ["seen"]) <= sandbox.ENV_ALLOW
    fill = sandboxed.reported("filler", "filler")
    assert fill["written_mb"] <= 200 and fill["disk_error"] == "No space left on device"
    assert fill["files"] < 2000 and fill["files_error"] == "No space left on device"


def test_sandbox_output_budget_stops_what_nbgrader_would_buffer(sandboxed):
    cut = [e for e in sandboxed.events if Path(e["cwd"]) == sandboxed.autograded("filler").resolve()]
    assert [e for e in cut if e["kind"] == "sandbox" and "output budget" in e["message"]], sandboxed.events
    assert sandboxed.report("filler", "shouter") is None  # its last line was past the budget
    notebook = sandboxed.autograded("filler") / "fashion_mnist.ipynb"
    assert notebook.stat().st_size < 16 * 2**20  # 40 MB printed
    assert sandbox.OUTPUT_NOTICE_MARK in notebook.read_text()


# --- a normal submission ------------------------------------------------------------------------


def test_normal_submission_graded_exactly_as_the_table_says(sandboxed):
    """tests/fixtures/expected_scores.csv holds the scores stock nbgrader gives the reference
    submissions; the sandbox changes none of them (the slow tests compare every reference
    submission, the one that trains included, the same way)."""
    expected = {(nb, gid): float(score) for (sub, nb, gid), score in read_expected_scores().items()
                if sub == "untouched-release" and score not in ("manual", "") and gid != LATE_PENALTY}
    ours = sandboxed.scores("normal")
    assert len(expected) > 20
    assert {k: ours.get(k) for k in expected} == expected


def test_no_sandbox_process_or_scratch_is_left_behind(sandboxed):
    leftover = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _uid(p) >= sandbox.UID_BASE
                and _cwd(p).startswith(str(sandboxed.course.root))]
    assert leftover == []


def _uid(proc: Path) -> int:
    try:
        return proc.stat().st_uid
    except OSError:
        return -1


def _cwd(proc: Path) -> str:
    try:
        return os.readlink(proc / "cwd")
    except OSError:
        return ""


# --- refusing, settings, what is mounted --------------------------------------------------------


def test_autograde_refuses_when_the_sandbox_cannot_start(course):
    course.submit("normal", SUBMISSIONS / "untouched-release" / ASSIGNMENT, ASSIGNMENT)
    env = dict(grading_env(), PATH=str(Path(sys.executable).parent))  # no bwrap on PATH
    proc = subprocess.run([str(Path(sys.executable).with_name("nbgrader")), "autograde", ASSIGNMENT],
                          cwd=course.root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "cannot start the sandbox" in proc.stderr and "bubblewrap" in proc.stderr
    assert "Settings(enabled=False)" in proc.stderr  # how to opt out
    assert not course.layout.autograded("normal", ASSIGNMENT).exists()
    with sqlite3.connect(course.layout.gradebook_path) as db:
        assert db.execute("SELECT COUNT(*) FROM submitted_assignment").fetchone() == (0,)


def test_kernel_wrapper_refuses_when_the_sandbox_cannot_start(tmp_path):
    (tmp_path / "kernel.json").write_text(json.dumps({"transport": "tcp", "ip": "127.0.0.1"}))
    env = dict(os.environ, PATH=str(Path(sys.executable).parent))
    proc = subprocess.run([sys.executable, "-I", "-m", "coursekit.execution.sandbox", "--", sys.executable, "-m",
                           "ipykernel_launcher", "-f", str(tmp_path / "kernel.json")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78
    assert "cannot start the sandbox" in proc.stderr and "bubblewrap" in proc.stderr


def test_settings_travel_through_the_kernel_command_line():
    settings = sandbox.Settings(memory="2G", wall_time=30, processes=99, file_size="10M")
    found, command = sandbox.split_arguments(["--", "python", "-f", "k.json", *settings.kernel_arguments(),
                                              "--HistoryManager.hist_file=:memory:"])
    assert found == settings
    assert command == ["python", "-f", "k.json", "--HistoryManager.hist_file=:memory:"]
    assert sandbox.split_arguments(["--", "python", "--coursekit-sandbox=off"])[0].enabled is False
    with pytest.raises(ValueError, match="unknown sandbox option"):
        sandbox.split_arguments(["--", "python", "--coursekit-sandbox-memroy=2G"])
    assert sandbox.parse_size("1.5G") == 3 * 2**29 and sandbox.parse_size("512M") == 2**29


def test_the_sandbox_shows_student_code_the_data_coursekit_datasets_reads(tmp_path, monkeypatch):
    """Every data folder datasets searches, and its cache, is mounted read-only at the same path."""
    chosen = tmp_path / "data"
    chosen.mkdir()
    monkeypatch.setenv(datapaths.DATA_DIR_ENV, str(chosen))
    box = sandbox.Sandbox([sys.executable, "-m", "ipykernel_launcher"], sandbox.Settings(), cwd=None)
    try:
        box.prepare()
        readonly = {Path(src): Path(dest) for kind, src, dest in box.mounts() if kind == "ro"}
    finally:
        box.cleanup()
    wanted = [p for p in datapaths.readable() if p.exists()]
    assert chosen in wanted and datapaths.cache_dir() in wanted
    assert all(readonly.get(p) == p for p in wanted), (wanted, readonly)


def test_shared_folders_travel_through_the_kernel_command_line_and_are_checked(tmp_path):
    private = tmp_path / "transfer"
    private.mkdir(mode=0o700)
    (private / "student").mkdir()
    args = [sandbox.bind_argument("rw", private / "student"), "--coursekit-sandbox=on"]
    found, command = sandbox.split_arguments(["--", "python", "-f", "k.json", *args])
    assert found.enabled and command == ["python", "-f", "k.json"]
    assert sandbox.bind_arguments(args) == [("rw", private / "student")]
    (private / "link").symlink_to(private / "student")
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    (shared / "student").mkdir()
    for bad in (sandbox.bind_argument("ro", private / "link"), sandbox.bind_argument("rw", shared / "student"),
                "--coursekit-sandbox-bind-rw=relative/path", f"--coursekit-sandbox-bind-xx={private / 'student'}"):
        with pytest.raises(ValueError):
            sandbox.bind_arguments([bad])
    box = sandbox.Sandbox([sys.executable], sandbox.Settings(), cwd=None, binds=[("ro", private / "student")])
    try:
        box.prepare()
        assert ("ro", str(private / "student"), str(private / "student")) in box.mounts()
    finally:
        box.cleanup()
    home = sandbox.Sandbox([sys.executable], sandbox.Settings(), cwd=None, binds=[("ro", Path.home().parent)])
    try:
        with pytest.raises(sandbox.SandboxUnavailable, match="would be visible"):
            home.prepare()
    finally:
        home.cleanup()


def test_student_code_in_the_sandbox_searches_the_folders_the_grader_searches(capfd, monkeypatch):
    """With no $COURSEKIT_DATA_DIR the loaders search the mirror beside the repository, and so
    must they inside the sandbox, where only the package and the data folders are mounted."""
    monkeypatch.delenv(datapaths.DATA_DIR_ENV, raising=False)
    script = ("import json; from coursekit.student import datapaths; "
              "print('SEARCHED ' + json.dumps([str(p) for p in datapaths.readable()]))")
    box = sandbox.Sandbox([sys.executable, "-P", "-c", script], sandbox.Settings(), cwd=None)
    assert box.run(box.prepare()) == 0
    out = capfd.readouterr().out
    line = next((l for l in out.splitlines() if l.startswith("SEARCHED ")), None)
    assert line is not None, out
    assert json.loads(line[len("SEARCHED "):]) == [str(p) for p in datapaths.readable()]
    assert datapaths.MIRROR in datapaths.data_dirs()


def test_nothing_of_the_course_or_home_is_mounted(tmp_path):
    course = tmp_path / "course"
    cwd = course / "autograded" / "alice" / "week2"
    cwd.mkdir(parents=True)
    (cwd / "fashion_mnist.ipynb").write_text("{}")  # an autograded copy: hidden tests
    (cwd / "picture.png").write_text("x")
    box = sandbox.Sandbox([sys.executable, "-m", "ipykernel_launcher"], sandbox.Settings(), cwd=cwd)
    try:
        box.prepare()
        mounts = box.mounts()
        sources = [Path(src) for kind, src, _ in mounts if kind != "symlink"]
        for src in sources:
            assert not (course == src or src in course.parents or course in src.parents), src
            assert src != Path.home() and src not in Path.home().parents
        writable = [Path(src) for kind, src, _ in mounts if kind == "rw"]
        assert all(box.scratch in w.parents for w in writable)
        assert sorted(os.listdir(box.scratch / "work")) == ["picture.png"]
    finally:
        box.cleanup()
    assert not box.scratch.exists()


def test_a_submission_cannot_stand_in_for_the_wrapper(tmp_path):
    """The wrapper runs as the grader, from the submission's folder: a coursekit/execution/sandbox.py
    there must not be what runs (the kernel spec starts it with python -I)."""
    from coursekit.execution.kernel import kernel_spec

    argv = kernel_spec()["argv"]
    wrapper = argv[:argv.index("--")]
    fake = tmp_path / "coursekit" / "execution"
    fake.mkdir(parents=True)
    (fake.parent / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "sandbox.py").write_text(f"open({str(tmp_path / 'pwned')!r}, 'w').write('root')\n")
    proc = subprocess.run([*wrapper, "--", sys.executable, "-c", "print('kernel')", "--coursekit-sandbox=off"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "kernel" and not (tmp_path / "pwned").exists()
    # Without -I the same command would run the student's file: the test can fail.
    unsafe = [a for a in wrapper if a != "-I"]
    subprocess.run([*unsafe, "--", sys.executable, "-c", "pass"], cwd=tmp_path, capture_output=True, timeout=60)
    assert (tmp_path / "pwned").exists()
