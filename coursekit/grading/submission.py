"""One submission graded in the sandbox: what a worker of the runner's pool (local or Dask) does.

The task as data (``SubmissionTask``: the submission packed from the intake's listing, its digest),
the course files a worker gets (``CourseFiles``), the worker's checks (``worker_preflight``,
``check_worker``), and ``grade_submission``, which unpacks, checks the digest, runs nbgrader
autograde in a private course copy and returns the graded folder and the gradebook rows
(``Graded``). coursekit.grading.runner hands these tasks to its pool (coursekit.grading.cluster for
Dask) and merges what comes back.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import functools
import glob
import hashlib
import io
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from coursekit.core import gradebook, nbgrader_command, notebook, problems
from coursekit.submissions import intake
from coursekit.execution import sandbox
from coursekit.core.course import COURSE_FILES, grading_env
from coursekit.core.layout import CourseLayout, NotACourse


GB = 2**30
MEMORY_PER_WORKER = 3 * GB  # a training notebook's kernel peaks at ~2.5 GB resident
LOCK_NAME = ".runner.lock"
LOG_DIR = "runner-logs"


class RunnerError(RuntimeError):
    """The run cannot start; the message says why."""


# --- how many workers --------------------------------------------------------------------------


def cores() -> int:
    return len(os.sched_getaffinity(0))


def available_memory() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def default_jobs() -> int:
    """One worker per core, as long as each has MEMORY_PER_WORKER of free memory."""
    return max(1, min(cores(), available_memory() // MEMORY_PER_WORKER))


def threads_per_job(jobs: int) -> int:
    """TensorFlow and BLAS threads per submission when ``jobs`` share this machine's cores."""
    return max(1, cores() // jobs)


def thread_env(threads: int) -> dict[str, str]:
    """The environment that gives a submission's BLAS ``threads`` threads (the checks' NumPy).
    TensorFlow's are not the worker's share: the grading kernel always trains with one
    (coursekit/execution/kernel.py, KERNEL_ENV), so that the weights do not depend on ``-j``."""
    n = str(max(1, threads))
    return {"OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n}


# --- what is graded ----------------------------------------------------------------------------


def is_graded(layout: CourseLayout, student: str, assignment: str) -> bool:
    """nbgrader's rule (autograded folder exists and is not older than the submission), and the
    folder holds graded notebooks, not only the record of a failed attempt nor what a grading
    stopped half-way left. Timestamps are read strictly (a hostile one is no timestamp)."""
    dest = layout.autograded(student, assignment)
    if not dest.is_dir() or dest.is_symlink() or intake.unfinished(dest) \
            or not any(p.suffix == ".ipynb" for p in dest.iterdir()):
        return False
    new, old = intake.read_timestamp(layout.submitted(student, assignment)), intake.read_timestamp(dest)
    return not (new is not None and old is not None and new > old)


# --- what a worker needs, as data ---------------------------------------------------------------
#
# One submission is graded by ``grade_submission`` from data alone (the course files, the
# submission, the student's gradebook rows) and gives data back (the graded folder, the rows
# nbgrader wrote): the same function runs in this process's pool and on a Dask worker on another
# machine, which shares no file with this one.


class Refused(RuntimeError):
    """A worker will not grade: it has no sandbox, other grading code, or course files that are
    not the client's. The message says why; nothing is graded there. It is about the worker, not
    a submission: the runner stops handing out work (a submission never causes one)."""


class SubmissionMismatch(RuntimeError):
    """What a worker unpacked of one submission is not what the client read and packed. That
    submission fails alone (recorded, tried again on the next run); the class goes on."""


# Jupyter's checkpoints are never part of what is graded or shipped, whatever their type.
NOT_SHIPPED = frozenset({".ipynb_checkpoints"})


def tree_members(root: Path, names: list[str]) -> list[tuple[str, os.stat_result]]:
    """What is shipped of ``names`` (paths relative to ``root``), in order: (relative path as it
    is named in the archive, lstat). The ONE listing that ``pack`` archives and ``tree_digest``
    hashes, on the client and, after unpacking, on the worker: they agree by construction.
    Folders, regular files and links (never followed); no devices, pipes or sockets; nothing
    named like Jupyter's checkpoints."""
    members: list[tuple[str, os.stat_result]] = []

    def visit(rel: str) -> None:
        st = os.lstat(root / rel)
        if Path(rel).name in NOT_SHIPPED or not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)
                                                 or stat.S_ISLNK(st.st_mode)):
            return
        members.append((rel, st))
        if stat.S_ISDIR(st.st_mode):
            for child in sorted(os.listdir(root / rel)):
                visit(os.path.join(rel, child))

    for name in names:
        if os.path.lexists(root / name):
            visit(name)
    return members


def _ownerless(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def pack(root: Path, names: list[str]) -> bytes:
    """A tar archive (gzip) of ``tree_members(root, names)``; links are kept as links."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for rel, _ in tree_members(root, names):
            tar.add(root / rel, arcname=rel, recursive=False, filter=_ownerless)
    return buffer.getvalue()


class _OwnTarFile(tarfile.TarFile):
    """Extracts as a copy does: files belong to the process that unpacks them, in the group the
    folder gives them. tarfile run as root would hand them to the archive's owner and group
    (root, see ``_ownerless``): in a hub course, whose setgid folders give the staff group, the
    autograded folders would then be closed to the TAs' formgrader."""

    def chown(self, tarinfo, targetpath, numeric_owner):
        pass


def unpack(data: bytes, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with _OwnTarFile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(root, filter="tar")  # no absolute names, nothing outside root


def tree_digest(root: Path, names: list[str]) -> str:
    """SHA-256 of ``tree_members(root, names)``: paths, kinds, contents, link targets. Computed
    from what is on disk, where the client packs it and where the worker grades it."""
    digest = hashlib.sha256()
    for rel, st in tree_members(root, names):
        if stat.S_ISLNK(st.st_mode):
            digest.update(f"L {rel}\0{os.readlink(root / rel)}\0".encode())
        elif stat.S_ISDIR(st.st_mode):
            digest.update(f"D {rel}\0".encode())
        else:
            fd = os.open(root / rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with open(fd, "rb") as f:
                content = hashlib.sha256()
                while chunk := f.read(1 << 20):
                    content.update(chunk)
            digest.update(f"F {rel}\0".encode() + content.digest())
    return digest.hexdigest()


GRADING_PACKAGES = ("nbgrader", "nbconvert", "nbclient", "nbformat", "ipykernel", "jupyter-client",
                    "tensorflow-cpu", "keras", "numpy", "matplotlib")


@functools.cache
def environment() -> dict[str, str]:
    """What grades here: Python, the grading packages' versions, and a hash of coursekit's code
    (the kernel, the checks, the repairs, the sandbox). Workers must match the client."""
    from importlib.metadata import PackageNotFoundError, version

    package = Path(__file__).resolve().parent.parent
    code = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if path.suffix in (".py", ".j2") and "__pycache__" not in path.parts:
            code.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    found = {"python": platform.python_version(), "coursekit": code.hexdigest()[:16]}
    for name in GRADING_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def environment_differences(theirs: dict[str, str], ours: dict[str, str]) -> str:
    return ", ".join(f"{k} {ours.get(k)} here, {theirs.get(k)} on the client"
                     for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k))


@dataclass(frozen=True)
class CourseFiles:
    """Everything every submission of an assignment is graded with, shipped by the client: the
    config, ``source/`` and the release (as a tar archive), the gradebook's structure (a SQLite
    file without student data), the sandbox settings, and the client's grading environment."""

    assignment: str
    names: tuple[str, ...]   # what the archive holds, relative to the course root
    archive: bytes
    gradebook: bytes
    digest: str              # of the client's files on disk, and of the gradebook template
    environment: dict
    sandbox: sandbox.Settings

    @classmethod
    def of(cls, layout: CourseLayout, assignment: str, structure: gradebook.Rows, scratch: Path) -> "CourseFiles":
        release = layout.release(assignment)
        names = [*COURSE_FILES]
        if release.is_dir():  # coursekit.submissions.sanitize grades a missing notebook from its release
            names.append(release.relative_to(layout.root).as_posix())
        template = gradebook.template(structure, scratch / "template.db")
        return cls(assignment, tuple(names), pack(layout.root, names), template,
                   cls.digest_of(layout.root, names, template), environment(), sandbox.course_settings(layout))

    @staticmethod
    def digest_of(root: Path, names, template: bytes) -> str:
        return hashlib.sha256((tree_digest(root, list(names)) + hashlib.sha256(template).hexdigest()).encode()).hexdigest()


@dataclass(frozen=True)
class SubmissionTask:
    """One submission to grade: its folder (a tar archive of what the intake accepted), its
    digest, and what the gradebook holds about it (a regrade keeps the TAs' marks)."""

    student: str
    archive: bytes
    digest: str
    rows: gradebook.Rows
    threads: int  # TensorFlow and BLAS threads for this submission
    # The archive is the intake's copy (the runner listed and scanned the submission, and records
    # what it refused): the worker's nbgrader grades it as it is (``Intake.taken``), not again.
    taken: bool = False

    @classmethod
    def of(cls, layout: CourseLayout, student: str, assignment: str, rows: gradebook.Rows, threads: int,
           scratch: Path | None = None) -> "SubmissionTask":
        """The submission as the intake reads it (``taken``), or, with the intake off
        (``c.Intake.enabled = False``, for comparisons), the folder as it is, links and all."""
        return cls.of_listing(layout, student, assignment, rows, threads, scratch)[0]

    @classmethod
    def of_listing(cls, layout: CourseLayout, student: str, assignment: str, rows: gradebook.Rows, threads: int,
                   scratch: Path | None = None) -> tuple["SubmissionTask", intake.Listing | None]:
        folder = layout.submitted(student, assignment)
        limits = intake.Intake(config=layout.config)
        if not limits.enabled:  # the explicit opt-out: as stock nbgrader, links and all
            return cls(student, pack(folder, ["."]), tree_digest(folder, ["."]), rows, threads), None
        with tempfile.TemporaryDirectory(prefix="coursekit-intake-", dir=scratch) as tmp:  # 0700
            taken = Path(tmp) / "submission"
            notebooks = [p.stem for p in layout.release(assignment).glob("*.ipynb")]
            listing = intake.take(folder, taken, limits, notebooks)
            return cls(student, pack(taken, ["."]), tree_digest(taken, ["."]), rows, threads, taken=True), listing


@dataclass
class Graded:
    """What a worker sends back: nbgrader's exit status and log, the sandbox's events and, when
    grading succeeded, the autograded folder (a tar archive) and the student's gradebook rows."""

    student: str
    returncode: int
    log: str
    events: list[dict]
    archive: bytes | None = None
    rows: gradebook.Rows | None = None
    course_digest: str = ""   # of the course files the worker graded with, read from its disk
    host: str = ""
    seconds: float = 0.0


LOG_LIMIT = 2 * 2**20  # the end of a longer nbgrader log is kept


def worker_preflight(settings: sandbox.Settings, client_environment: dict) -> str | None:
    """The one preflight of a process that grades (this machine's pool, a Dask worker): why it
    cannot grade as the client would, or None. The sandbox is probed once per process and run
    (``sandbox.check``; ``grade_submission`` hands the probe on to nbgrader and its kernels), the
    grading environment read once per process (``environment``)."""
    if settings.enabled:
        try:
            sandbox.check(settings)
        except sandbox.SandboxUnavailable as err:
            return f"on {platform.node()}: {sandbox.refusal(str(err))}"
    if (ours := environment()) != client_environment:
        return (f"on {platform.node()}: the grading environment differs from the client's "
                f"({environment_differences(client_environment, ours)}); install the same "
                f"requirements.lock and coursekit on every worker")
    return None


def check_worker(course: CourseFiles, private_root: Path) -> CourseLayout:
    """Refuse unless this machine grades as the client would: the preflight (the sandbox starts
    unless the course opts out, the grading code is the client's), and the course files unpacked
    at ``private_root`` are the client's files."""
    settings = course.sandbox
    refusal = worker_preflight(settings, course.environment)
    if refusal is not None:
        raise Refused(refusal)
    if not settings.enabled:
        print("coursekit runner: the sandbox is OFF in nbgrader_config.py: student code runs with the worker's rights",
              file=sys.stderr)
    unpack(course.archive, private_root)
    private = CourseLayout.load(private_root)
    private_db = private_gradebook(private_root)
    private_db.parent.mkdir(parents=True, exist_ok=True)
    private_db.write_bytes(course.gradebook)
    found = CourseFiles.digest_of(private_root, course.names, private_db.read_bytes())
    if found != course.digest:
        raise Refused(f"on {platform.node()}: the course files unpacked here (sha256 {found[:12]}) are not the "
                      f"client's (sha256 {course.digest[:12]})")
    if sandbox.course_settings(private) != settings:
        raise Refused(f"on {platform.node()}: the course's sandbox settings read here differ from the client's")
    return private


def private_gradebook(private_root: Path) -> Path:
    """The SQLite gradebook of a private course copy (whatever the course's own db_url is)."""
    return private_root / "gradebook" / "gradebook.db"


class Processes:
    """The nbgrader processes this process started, so that Ctrl-C can stop them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running: set[subprocess.Popen] = set()
        self.stopping = False

    def start(self, *args, **kwargs) -> subprocess.Popen:
        with self.lock:
            if self.stopping:
                raise RuntimeError("stopped")
            proc = subprocess.Popen(*args, **kwargs)
            self.running.add(proc)
            return proc

    def done(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.running.discard(proc)

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            for proc in self.running:
                with contextlib.suppress(OSError):
                    proc.kill()


def grade_submission(course: CourseFiles, task: SubmissionTask, work: Path,
                     processes: Processes | None = None) -> Graded:
    """Grade one submission in a private course copy at ``work`` with the real ``nbgrader
    autograde``, in the sandbox; ``work`` is removed afterwards. Runs in a thread of the local
    pool or on a Dask worker: everything in and out is data."""
    started = time.monotonic()
    processes = processes or Processes()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        private_root = work / "course"
        private = check_worker(course, private_root)
        private_db = private_gradebook(private_root)
        gradebook.add_rows(private_db, task.rows)
        submission = private.submitted(task.student, course.assignment)
        unpack(task.archive, submission)
        if tree_digest(submission, ["."]) != task.digest:
            raise SubmissionMismatch(f"on {platform.node()}: the submission unpacked there is not the one the "
                                     "runner read (its files differ); it was not graded")
        events = work / "events.jsonl"
        # probed_environment: check_worker's probe serves this nbgrader and its kernels' wrappers.
        env = (grading_env() | thread_env(task.threads) | {sandbox.EVENTS_ENV: str(events)}
               | sandbox.probed_environment(course.sandbox))
        log = work / "nbgrader.log"
        # '--student=<id>': an id is never read as an option (and the intake's ids are no globs).
        cmd = [*nbgrader_command.command(), "autograde", course.assignment,
               f"--student={task.student}", f"--course-dir={private_root}", f"--db=sqlite:///{private_db}",
               *(["--Intake.taken=True"] if task.taken else [])]
        with open(log, "w") as out:
            proc = processes.start(cmd, cwd=private_root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   # killed if the runner (or the Dask worker) dies: nothing grades on unseen
                                   stdin=subprocess.DEVNULL, preexec_fn=sandbox.killed_with_parent)
            try:
                proc.wait()
            finally:
                processes.done(proc)
        with open(log, "rb") as f:
            f.seek(max(0, log.stat().st_size - LOG_LIMIT))
            text = f.read().decode(errors="replace")
        found = [json.loads(line) for line in events.read_text().splitlines()] if events.is_file() else []
        graded = Graded(task.student, proc.returncode, text, found, host=platform.node(),
                        course_digest=CourseFiles.digest_of(private_root, course.names, course.gradebook))
        autograded = private.autograded(task.student, course.assignment)
        if proc.returncode == 0 and autograded.is_dir():
            graded.archive = pack(autograded, ["."])
            graded.rows = gradebook.read_rows(private_db, task.student, course.assignment)
        graded.seconds = time.monotonic() - started
        return graded
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- one submission, back in the course --------------------------------------------------------
