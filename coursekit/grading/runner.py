"""Grade every submission of an assignment, several at a time, each in the sandbox: on this
machine, or on a Dask distributed cluster.

    python -m coursekit.grading.runner week2            # workers fitted to this machine
    python -m coursekit.grading.runner week2 -j 4       # four at a time
    python -m coursekit.grading.runner week2 --force    # grade again what is already graded
    python -m coursekit.grading.runner week2 --student alice --student bob
    python -m coursekit.grading.runner week2 --scheduler tls://HOST:8786   # on a Dask cluster (mutual TLS only)

Run it from the course's root (or pass ``--course``). How it works:

- Each submission is graded by the real ``nbgrader autograde <assignment> --student <id>`` in a
  private copy of the course (config, ``source/``, the release, a SQLite gradebook with the
  course's structure and that student's rows, that one submission), so that workers never share
  a gradebook: concurrent nbgrader processes on one SQLite file fail with "database is locked".
  ``grade_submission`` does it from data alone and returns data (the graded folder, the
  student's rows), so the same function runs in this machine's pool and on a Dask worker that
  shares no file with this one (coursekit.grading.cluster). Course files are shipped by this process,
  and each worker checks what it grades with: the sandbox starts, its grading code is this
  process's, and the course files and the submission it unpacked hash as they do here.
- Submissions are data, never paths (coursekit.submissions.intake): the class is listed without globbing or
  following links (folders whose names are not safe ids are refused and listed at the end), and
  each submission is read through the intake (regular files only, no link followed, limits,
  reserved names refused, timestamp parsed strictly) into this process's private work folder
  (0700, a fresh name) before it is packed and shipped, locally or to a Dask worker; what the
  intake refused is recorded in the student's grading-problems.json.
- This process alone writes the course's gradebook (any database nbgrader's db_url accepts; a
  damaged one stops the run before anything is changed), one submission per transaction (coursekit.core.gradebook): the automatic fields nbgrader sets
  (scores, auto comments, timestamps, late penalties) are copied; the TAs' fields (manual scores
  and comments, extra credit, flags, extensions) are kept. Then the autograded folder is moved
  into place: that move is the commit point.
- A submission counts as graded when ``autograded/<student>/<assignment>/`` holds its notebooks
  and is not older than the submission (nbgrader's own rule). Graded submissions are skipped
  unless ``--force``; a run that is killed loses at most the submissions in flight, and the
  next run grades exactly those that are not graded.
- NumPy's BLAS in each local worker gets ``cores // workers`` threads, so that workers do not
  fight; on a cluster one per submission (``--threads``), one worker thread per process.
  TensorFlow always trains with one thread (coursekit/execution/kernel.py): the weights, and so the grade,
  are the same whatever ``-j``.
- A submission that fails (nbgrader error, the sandbox's wall-time or memory limit) does not stop
  the others: it is recorded in ``autograded/<student>/<assignment>/grading-problems.json``
  (coursekit.core.problems), its log is kept under ``gradebook/runner-logs/`` (0700), and the failures are
  listed at the end (exit status 1). It is tried again on the next run. So does a submission
  whose files the worker unpacks differently from what this process read (``tree_members`` is
  the one listing both pack and hash): it fails alone. A worker that refuses (no sandbox, other
  code or course files: about the worker, never a submission) stops the run (exit status 2).
- gradebook/ may be the staff's to write (the hub): the lock and ``runner-logs/`` are opened
  relative to its descriptor, never through a link nor truncated, and a gradebook that is a link
  is refused (``staff_folder``, ``private_folder``, ``lock_file``, ``gradebook.planted``).
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

from coursekit.grading.submission import (  # noqa: F401 (the task vocabulary the runner hands out)
    GB,
    MEMORY_PER_WORKER,
    LOCK_NAME,
    LOG_DIR,
    RunnerError,
    cores,
    available_memory,
    default_jobs,
    threads_per_job,
    thread_env,
    is_graded,
    Refused,
    SubmissionMismatch,
    NOT_SHIPPED,
    tree_members,
    _ownerless,
    pack,
    _OwnTarFile,
    unpack,
    tree_digest,
    GRADING_PACKAGES,
    environment,
    environment_differences,
    CourseFiles,
    SubmissionTask,
    Graded,
    LOG_LIMIT,
    worker_preflight,
    check_worker,
    private_gradebook,
    Processes,
    grade_submission,
)


@dataclass
class Outcome:
    student: str
    ok: bool
    kind: str = ""        # for a failure: a coursekit.core.problems kind
    message: str = ""
    log: Path | None = None
    graded: Graded | None = None
    listing: intake.Listing | None = None  # what the intake accepted and refused of the submission


def _error_summary(log: str) -> str:
    """The lines of an nbgrader log that say what went wrong."""
    keep = [line.strip() for line in log.splitlines()
            if "coursekit sandbox:" in line or "Error" in line or "ERROR" in line]
    keep = [k for k in keep if not k.startswith("Traceback")][-6:]
    return "\n".join(keep) or log.strip()[-1500:]


def outcome_of(graded: Graded) -> Outcome:
    if graded.archive is not None:
        return Outcome(graded.student, True, graded=graded)
    kind = graded.events[-1]["kind"] if graded.events else "error"
    message = "; ".join(e["message"] for e in graded.events) if graded.events else _error_summary(graded.log)
    return Outcome(graded.student, False, kind, f"nbgrader autograde exited {graded.returncode}: {message}",
                   graded=graded)


def stopped_cells(folder: Path) -> list[tuple[str, notebook.Stopped]]:
    """(notebook name, stopped cell) for the cells the sandbox, the timeout or a dead kernel
    stopped in the graded notebooks of ``folder``."""
    import nbformat

    found = []
    for path in sorted(folder.glob("*.ipynb")):
        with contextlib.suppress(Exception):
            found += [(path.stem, stop) for stop in notebook.stopped_cells(nbformat.read(path, as_version=4))]
    return found


# --- where submissions are graded ----------------------------------------------------------------


class LocalPool:
    """``jobs`` submissions at a time in this machine's threads, each in its own nbgrader process."""

    def __init__(self, jobs: int, work: Path):
        self.jobs = jobs
        self.work = work
        self.processes = Processes()
        self.executor = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="grader")
        self.pending: dict = {}

    def describe(self) -> str:
        return f"{self.jobs} worker{'s' * (self.jobs > 1)}"

    def window(self) -> int:
        return self.jobs  # tasks are made when a worker is free: their gradebook rows are fresh

    def submit(self, course: CourseFiles, task: SubmissionTask) -> None:
        future = self.executor.submit(grade_submission, course, task, self.work / task.student, self.processes)
        self.pending[future] = task.student

    def in_flight(self) -> int:
        return len(self.pending)

    def next_done(self) -> tuple[str, Graded | BaseException]:
        done, _ = wait(self.pending, return_when=FIRST_COMPLETED)
        future = next(iter(done))
        student = self.pending.pop(future)
        try:
            return student, future.result()
        except Exception as err:  # noqa: BLE001 (a bug or a full disk: this submission only)
            return student, err

    def cancel(self) -> None:
        for future in list(self.pending):
            if future.cancel():
                self.pending.pop(future)

    def stop(self) -> None:
        self.processes.stop()

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


# --- files the runner (root) writes in folders the staff can write -----------------------------
#
# On the hub the staff group may write gradebook/ (bin/hub), and root runs the runner: a TA could
# leave a link there named like the runner's lock or log folder, to make root truncate, chmod or
# write whatever it points to. So these are opened relative to the folder's descriptor, without
# following a link, never truncated, and the log folder must be the runner's own.

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _what_is(parent: int, name: str) -> str:
    try:
        st = os.lstat(name, dir_fd=parent)
    except OSError:
        return "missing"
    if stat.S_ISLNK(st.st_mode):
        return f"a symbolic link (to '{intake.shown(os.readlink(name, dir_fd=parent), 120)}')"
    return intake._kind(st.st_mode) if not stat.S_ISDIR(st.st_mode) else "a folder"


def _staff_refusal(where: Path, what: str) -> RunnerError:
    return RunnerError(f"{where} is {what}. The runner runs as root and does not follow links or use files it "
                       "did not make in folders the staff can write; remove it, then run again")


def staff_folder(path: Path) -> int:
    """A descriptor of a course folder the staff may write (gradebook/), refusing a link."""
    try:
        return os.open(path, _DIR)
    except OSError as err:
        raise _staff_refusal(path, "not a folder the runner can open" if err.errno != errno.ELOOP
                             else "a symbolic link") from None


def private_folder(parent: int, name: str, where: Path) -> int:
    """The runner's own folder ``name`` in ``parent`` (made 0700 here when missing), as a
    descriptor; refused when it is a link, not a folder, or someone else's."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o700, dir_fd=parent)
    try:
        fd = os.open(name, _DIR, dir_fd=parent)
    except OSError:
        raise _staff_refusal(where, _what_is(parent, name)) from None
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():
        os.close(fd)
        raise _staff_refusal(where, f"a folder that belongs to {account_name(st.st_uid)}, not to the runner")
    os.fchmod(fd, 0o700)  # the descriptor's folder: never a path that could have been swapped
    return fd


def lock_file(parent: int, name: str, where: Path) -> int:
    """The lock file ``name`` in ``parent``, opened (made 0600 when missing) without writing to it:
    never truncated, never through a link; refused when it is not a plain file of its own."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600,
                     dir_fd=parent)
    except OSError:
        raise _staff_refusal(where, _what_is(parent, name)) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise _staff_refusal(where, "not a plain file (a hard link, a pipe or a device)")
    return fd


def account_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


class Runner:
    def __init__(self, root: Path, assignment: str, jobs: int | None = None, force: bool = False,
                 students: list[str] | None = None, progress: bool = True, scheduler: str | None = None,
                 threads: int | None = None):
        self.root = Path(root).resolve()
        self.assignment = assignment
        self.scheduler = scheduler
        self.jobs = jobs or default_jobs()
        self.threads = threads
        self.force = force
        self.only = students
        self.progress = progress
        key = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        # The work folder holds the submissions the intake read and the gradebook's template:
        # made private (0700) and unpredictable by mkdtemp when the run starts (make_work), named
        # <prefix><pid>-<random>; this
        # prefix finds those of killed runs.
        self.work_prefix = f"coursekit-runner-{key}-"
        self.work: Path | None = None
        self.template: Path | None = None
        self.course_files: CourseFiles | None = None
        self.pool = None
        self.refusal: str | None = None
        self.logs_fd: int | None = None  # gradebook/runner-logs/ while a run holds it (run)

    # -- set-up --

    @functools.cached_property
    def layout(self) -> CourseLayout:
        try:
            return CourseLayout.load(self.root)
        except NotACourse as err:
            raise RunnerError(f"{err}; run from the course root or pass --course") from None

    @property
    def logs(self) -> Path:
        return self.layout.gradebook_folder / LOG_DIR

    @functools.cached_property
    def intake(self) -> intake.Intake:
        return intake.Intake(config=self.layout.config)

    def class_list(self) -> tuple[list[str], list[intake.RefusedFolder]]:
        """The students to grade, and the folders the intake refuses (ids that are not safe as file
        names, options and globs; links). Listed without globbing or following links."""
        if not self.intake.enabled:
            return self.layout.students(self.assignment), []
        try:
            found, refused = intake.class_list(self.layout, self.assignment)
        except intake.IntakeError as err:
            raise RunnerError(str(err)) from None
        return [sub.student for sub in found], refused

    def students(self, found: list[str] | None = None) -> list[str]:
        """The students to grade (``--student`` ones only), from ``found`` (a class list) if given."""
        if found is None:
            found, _ = self.class_list()
        if self.only:
            missing = sorted(set(self.only) - set(found))
            if missing:
                raise RunnerError(f"no submission of {self.assignment} that can be graded for: "
                                  f"{', '.join(intake.shown(m) for m in missing)} "
                                  f"(looked in {self.layout.submitted('*', self.assignment)})")
            found = [s for s in found if s in self.only]
        return found

    def check(self) -> None:
        settings = sandbox.course_settings(self.layout)  # first: refuse before anything else is looked at
        if self.scheduler is not None:
            pass  # student code runs on the workers only: each worker is checked (cluster.DaskPool)
        elif settings.enabled:
            try:
                sandbox.check(settings)
            except sandbox.SandboxUnavailable as err:
                raise RunnerError(sandbox.refusal(str(err))) from None
        else:
            print("coursekit runner: the sandbox is OFF in nbgrader_config.py: student code runs with your rights",
                  file=sys.stderr)
        planted = gradebook.planted(self.layout.db_url)  # first: nothing is opened through a planted link
        if planted:
            raise RunnerError(planted)
        path = self.layout.gradebook_path
        if path is not None and not path.is_file():
            raise RunnerError(f"no gradebook at {path}: run `nbgrader generate_assignment {self.assignment}` first")
        damage = gradebook.damage(self.layout.db_url)  # read-only, before the gradebook is opened to write
        if damage:
            raise RunnerError(damage)
        if not self.db.knows_assignment(self.assignment):
            raise RunnerError(f"the gradebook does not know assignment '{self.assignment}': "
                              f"run `nbgrader generate_assignment {self.assignment}` first")

    @functools.cached_property
    def db(self) -> gradebook.CourseGradebook:
        """The course's gradebook: only this process writes it."""
        return gradebook.CourseGradebook(self.layout.db_url)

    # -- running --

    def run(self) -> list[Outcome]:
        # gradebook/ is the staff's to write (bin/hub): its lock and the log folder are opened
        # relative to the folder, never through a link, never truncated (staff_folder below).
        folder = lock = None
        try:
            self.check()
            folder = staff_folder(self.layout.gradebook_folder)
            self.logs_fd = private_folder(folder, LOG_DIR, self.logs)  # logs hold what student code printed
            lock = lock_file(folder, LOCK_NAME, self.layout.gradebook_folder / LOCK_NAME)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunnerError(f"another runner is grading this course (lock "
                                  f"{self.layout.gradebook_folder / LOCK_NAME}); wait for it to finish") from None
            try:
                return self._run()
            finally:
                if self.work is not None:
                    shutil.rmtree(self.work, ignore_errors=True)
        finally:
            for fd in (lock, self.logs_fd, folder):
                if fd is not None:
                    os.close(fd)
            self.logs_fd = None
            if "db" in self.__dict__:
                self.db.close()

    def make_work(self) -> Path:
        """The run's private work folder (0700, a fresh name), after removing what killed runs left."""
        sandbox.sweep_leftovers(Path(tempfile.gettempdir()), self.work_prefix)
        self.work = Path(tempfile.mkdtemp(prefix=f"{self.work_prefix}{os.getpid()}-"))
        return self.work

    def snapshot(self) -> Path:
        """The course files every worker gets (``self.course_files``), with the gradebook's
        template: the course's structure, no student data, a private file (0600) in the work folder."""
        self.course_files = CourseFiles.of(self.layout, self.assignment, self.db.structure(), self.work)
        self.template = self.work / "template.db"
        return self.template

    def _make_pool(self):
        if self.scheduler is None:
            return LocalPool(self.jobs, self.work)
        from coursekit.grading.cluster import DaskPool

        try:
            return DaskPool(self.scheduler)
        except OSError as err:
            raise RunnerError(f"cannot reach the Dask scheduler at {self.scheduler}: {err}") from None

    def _task(self, student: str, threads: int) -> SubmissionTask | Outcome:
        """The task that grades ``student``'s submission, read through the intake now (into the
        private work folder), or the failure if the folder cannot be read."""
        rows = self.db.rows(student, self.assignment)
        try:
            task, listing = SubmissionTask.of_listing(self.layout, student, self.assignment, rows, threads, self.work)
        except OSError as err:  # e.g. the folder was replaced by a link after the class was listed
            return Outcome(student, False, "error", f"the submission could not be read ({err.strerror or err})")
        except Exception as err:  # noqa: BLE001 (whatever reading one submission meets: it fails alone)
            return Outcome(student, False, "error", f"the submission could not be read ({type(err).__name__}: {err})")
        self.listings[student] = listing
        return task

    def _run(self) -> list[Outcome]:
        from tqdm import tqdm

        self.make_work()
        for stale in glob.glob(str(self._stage("*", "*"))):
            shutil.rmtree(stale, ignore_errors=True)
        students, refused = self.class_list()  # once per run: the tasks and their listings come from it
        if self.only:
            students = self.students(students)
            refused = [r for r in refused if r.name in self.only]
        todo = [s for s in students if self.force or not is_graded(self.layout, s, self.assignment)]
        skipped = len(students) - len(todo)
        self.snapshot()
        course = self.course_files
        self.listings: dict[str, intake.Listing | None] = {}
        self.pool = pool = self._make_pool()
        threads = self.threads or (1 if self.scheduler else threads_per_job(self.jobs))
        outcomes: list[Outcome] = [Outcome(r.student, False, "refused-id", r.reason) for r in refused]
        bar = None
        try:
            if todo and hasattr(pool, "check"):
                pool.check(course)  # every worker of the cluster, before anything is graded
            print(f"{self.assignment}: {len(students)} submissions, {skipped} already graded (skipped"
                  f"{'' if not skipped else '; --force grades them again'}), {len(todo)} to grade with "
                  f"{pool.describe()}"
                  + (f"; {len(refused)} folder{'s' * (len(refused) > 1)} refused (listed at the end)" if refused else ""),
                  file=sys.stderr, flush=True)
            bar = tqdm(total=len(todo), unit="submission", desc=f"grading {self.assignment}",
                       disable=not self.progress or not todo, file=sys.stderr)
            queue = deque(todo)
            while True:
                while queue and self.refusal is None and pool.in_flight() < pool.window():
                    student = queue.popleft()
                    task = self._task(student, threads)
                    if isinstance(task, Outcome):  # not readable: this submission only
                        outcomes.append(self._commit_safely(task, course))
                        bar.update(1)
                        continue
                    pool.submit(course, task)
                if not pool.in_flight():
                    break
                student, result = pool.next_done()
                if isinstance(result, Refused):
                    self.refusal = self.refusal or str(result)
                    pool.cancel()  # what has not started; what is grading elsewhere is kept
                    outcome = Outcome(student, False, "sandbox", str(result))
                elif isinstance(result, SubmissionMismatch):
                    outcome = Outcome(student, False, "error", str(result))
                elif isinstance(result, BaseException):  # this submission only: the class goes on
                    outcome = Outcome(student, False, "error", f"{type(result).__name__}: {result}")
                else:
                    outcome = outcome_of(result)
                outcome.listing = self.listings.pop(student, None)
                outcomes.append(self._commit_safely(outcome, course))
                bar.update(1)
                bar.set_postfix(failed=sum(not o.ok for o in outcomes))
        except BaseException:
            pool.stop()
            raise
        finally:
            pool.close()
            if bar is not None:
                bar.close()
        if self.refusal is not None:
            graded = sum(o.ok for o in outcomes)
            raise RunnerError(f"{self.refusal}\n(graded {graded} submissions before a worker refused; "
                              f"{len(todo) - graded} left: run again when every worker has the sandbox)")
        return outcomes

    def stop(self) -> None:
        """Ctrl-C: kill the nbgrader processes in flight (their kernels and sandboxes go with them)."""
        if self.pool is not None:
            self.pool.stop()

    def _stage(self, student: str, pid: int | str) -> Path:
        """Where a graded submission is put together before it is moved into place."""
        dest = self.layout.autograded(student, self.assignment)
        return dest.parent / f".{dest.name}.runner-{pid}"

    def _commit_safely(self, outcome: Outcome, course: CourseFiles) -> Outcome:
        try:
            return self.commit(outcome, course)
        except Exception as err:  # this submission only: the others are graded all the same
            return self._commit_failed(outcome, err)

    def commit(self, outcome: Outcome, course: CourseFiles) -> Outcome:
        """Write one outcome into the course (main thread only: one writer for the gradebook)."""
        student = outcome.student
        dest = self.layout.autograded(student, self.assignment)
        graded = outcome.graded
        if outcome.ok and graded.course_digest != course.digest:  # check_worker refuses this already
            outcome = Outcome(student, False, "error", f"graded on {graded.host} with other course files",
                              graded=graded, listing=outcome.listing)
        if not outcome.ok:
            if outcome.kind == "refused-id":  # no folder of its own can be written: listed at the end
                return outcome
            if graded is not None and graded.log:
                name = f"{self.assignment}-{student}.log"
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=self.logs_fd)  # a link is removed, never followed
                with open(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                                  dir_fd=self.logs_fd), "w") as f:
                    f.write(graded.log)
                outcome.log = self.logs / name
            note = " (the previous grading is kept)" if is_graded(self.layout, student, self.assignment) else ""
            problems.record(dest, outcome.kind, None, None, outcome.message + note)
            if outcome.listing is not None:
                intake.record(dest, outcome.listing)
            return outcome
        stage = self._stage(student, os.getpid())
        shutil.rmtree(stage, ignore_errors=True)
        unpack(graded.archive, stage)
        # The stops the notebooks mark are in the record autograde wrote (coursekit.core.problems), with
        # their cells. A sandbox stop outside every cell (grading went on) is added here; a marked
        # one would be recorded twice.
        marked = {stop.reason for _, stop in stopped_cells(stage)}
        for event in graded.events:
            if event.get("reason") not in marked:
                problems.record(stage, event["kind"], None, None, event["message"])
        if outcome.listing is not None:  # what the intake refused when it read the submission
            intake.record(stage, outcome.listing)
        self.db.merge(graded.rows, student, self.assignment)
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(stage, dest)  # the commit point: from here on the submission counts as graded
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self.assignment}-{student}.log", dir_fd=self.logs_fd)
        return outcome

    def _commit_failed(self, outcome: Outcome, err: Exception) -> Outcome:
        """A submission whose results could not be put in place: recorded, the others go on."""
        message = f"its grading could not be saved ({type(err).__name__}: {err})"
        with contextlib.suppress(Exception):
            problems.record(self.layout.autograded(outcome.student, self.assignment), "error", None, None, message)
        with contextlib.suppress(Exception):
            shutil.rmtree(self._stage(outcome.student, os.getpid()), ignore_errors=True)
        return Outcome(outcome.student, False, "error", message, outcome.log)


def report(outcomes: list[Outcome], root: Path) -> str:
    failed = [o for o in outcomes if not o.ok]
    refused = [o for o in failed if o.kind == "refused-id"]
    failed = [o for o in failed if o.kind != "refused-id"]
    lines = [f"graded {sum(o.ok for o in outcomes)} of {len(outcomes) - len(refused)} submissions"]
    if failed:
        lines.append(f"{len(failed)} could not be graded (tried again on the next run; details in "
                     f"autograded/<student>/<assignment>/{problems.FILENAME}):")
        for o in sorted(failed, key=lambda o: o.student):
            first = o.message.splitlines()[0] if o.message else ""
            log = f" [log: {o.log.relative_to(root) if o.log and o.log.is_relative_to(root) else o.log}]" if o.log else ""
            lines.append(f"  {intake.shown(o.student)}: {o.kind}: {first[:300]}{log}")
    if refused:
        lines.append(f"{len(refused)} submitted folder{'s' * (len(refused) > 1)} not graded (rename the folder "
                     "to a valid student id, then run again):")
        lines += [f"  {o.student}: {o.message}" for o in sorted(refused, key=lambda o: o.student)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coursekit.grading.runner",
                                     description="Grade every submission of an assignment in parallel, each in the sandbox.")
    parser.add_argument("assignment", help="e.g. week2")
    parser.add_argument("-j", "--jobs", type=int, default=None,
                        help=f"parallel workers (default: one per core, {MEMORY_PER_WORKER // GB} GB of free memory "
                             f"each; here {default_jobs()})")
    parser.add_argument("--force", action="store_true", help="grade again submissions that are already graded")
    parser.add_argument("--student", action="append", help="grade only this student (repeatable)")
    parser.add_argument("--course", default=".", help="the course's root folder (default: the current folder)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="grade on the Dask cluster of this scheduler (tls://HOST:8786: plain tcp:// is refused) instead of here")
    parser.add_argument("--threads", type=int, default=None,
                        help="NumPy (BLAS) threads per submission for the checks (default: cores / jobs here, "
                             "1 on a cluster); TensorFlow always trains with one")
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.scheduler and args.jobs:
        parser.error("--jobs is for grading here; on a cluster the workers' threads decide")
    runner = Runner(Path(args.course), args.assignment, args.jobs, args.force, args.student, not args.no_progress,
                    scheduler=args.scheduler, threads=args.threads)
    try:
        outcomes = runner.run()
    except RunnerError as err:
        print(f"coursekit runner: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ncoursekit runner: interrupted; what was graded is kept: run the same command again to finish",
              file=sys.stderr)
        return 130
    print(report(outcomes, runner.root))
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    # Run the module imported under its own name, not __main__: Dask pickles its classes and
    # functions by name, and workers import coursekit.grading.runner.
    from coursekit.grading import runner as _runner

    sys.exit(_runner.main())
