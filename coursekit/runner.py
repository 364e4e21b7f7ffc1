"""Grade every submission of an assignment, several at a time, each in the sandbox.

    python -m coursekit.runner week2            # workers fitted to this machine
    python -m coursekit.runner week2 -j 4       # four at a time
    python -m coursekit.runner week2 --force    # grade again what is already graded
    python -m coursekit.runner week2 --student alice --student bob

Run it from the course's root (or pass ``--course``). How it works:

- Each submission is graded by the real ``nbgrader autograde <assignment> --student <id>`` in a
  private copy of the course (config, ``source/``, a snapshot of the gradebook, that one
  submission), so that workers never share a SQLite file: concurrent nbgrader processes on one
  gradebook fail with "database is locked".
- This process alone writes the course's gradebook, one submission at a time, in one
  transaction per submission: the automatic fields nbgrader sets (scores, auto comments,
  timestamps, late penalties) are copied; the TAs' fields (manual scores and comments, extra
  credit, flags, extensions) are kept. Then the autograded folder is moved into place: that
  move is the commit point.
- A submission counts as graded when ``autograded/<student>/<assignment>/`` holds its notebooks
  and is not older than the submission (nbgrader's own rule). Graded submissions are skipped
  unless ``--force``; a run that is killed loses at most the submissions in flight, and the
  next run grades exactly those that are not graded.
- TensorFlow in each worker gets ``cores // workers`` threads, so that workers do not fight.
- A submission that fails (nbgrader error, the sandbox's wall-time or memory limit) does not stop
  the others: it is recorded in ``autograded/<student>/<assignment>/grading-problems.json``
  (coursekit.problems), its log is kept under ``gradebook/runner-logs/``, and the failures are
  listed at the end (exit status 1). It is tried again on the next run.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import functools
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from coursekit import gradebook, intake, notebook, problems, sandbox
from coursekit.course import Course, grading_env
from coursekit.layout import CourseLayout, NotACourse

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


def thread_env(jobs: int) -> dict[str, str]:
    """TensorFlow and BLAS threads per worker: the cores shared among the workers."""
    threads = str(max(1, cores() // jobs))
    return {"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": "1",
            "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


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


# --- one submission ----------------------------------------------------------------------------


@dataclass
class Outcome:
    student: str
    ok: bool
    kind: str = ""        # for a failure: a coursekit.problems kind
    message: str = ""
    log: Path | None = None
    events: list[dict] = field(default_factory=list)
    graded_in: CourseLayout | None = None  # the private course copy that graded it
    listing: intake.Listing | None = None  # what the intake accepted and refused of the submission


def _die_with_parent() -> None:
    """In the nbgrader child: be killed if the runner dies, so that nothing grades on unseen."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _error_summary(log: str) -> str:
    """The lines of an nbgrader log that say what went wrong."""
    keep = [line.strip() for line in log.splitlines()
            if "coursekit sandbox:" in line or "Error" in line or "ERROR" in line]
    keep = [k for k in keep if not k.startswith("Traceback")][-6:]
    return "\n".join(keep) or log.strip()[-1500:]


def stopped_cells(folder: Path) -> list[tuple[str, notebook.Stopped]]:
    """(notebook name, stopped cell) for the cells the sandbox, the timeout or a dead kernel
    stopped in the graded notebooks of ``folder``."""
    import nbformat

    found = []
    for path in sorted(folder.glob("*.ipynb")):
        with contextlib.suppress(Exception):
            found += [(path.stem, stop) for stop in notebook.stopped_cells(nbformat.read(path, as_version=4))]
    return found


class Runner:
    def __init__(self, root: Path, assignment: str, jobs: int | None = None, force: bool = False,
                 students: list[str] | None = None, progress: bool = True):
        self.root = Path(root).resolve()
        self.assignment = assignment
        self.jobs = jobs or default_jobs()
        self.force = force
        self.only = students
        self.progress = progress
        key = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        # The work folder holds a snapshot of every student's scores: made private (0700) and
        # unpredictable by mkdtemp when the run starts (make_work); this prefix finds those of killed runs.
        self.work_prefix = f"coursekit-runner-{key}-"
        self.work: Path | None = None
        self.children: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.stopping = False

    # -- set-up --

    @functools.cached_property
    def layout(self) -> CourseLayout:
        try:
            return CourseLayout.load(self.root)
        except NotACourse as err:
            raise RunnerError(f"{err}; run from the course root or pass --course") from None

    @property
    def master_db(self) -> Path:
        """The course's gradebook: only this process writes it."""
        if self.layout.gradebook_path is None:
            raise RunnerError(f"the gradebook {self.layout.db_url} is not a SQLite file: the runner merges SQLite only")
        return self.layout.gradebook_path

    @property
    def logs(self) -> Path:
        return self.master_db.parent / LOG_DIR

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

    def students(self) -> list[str]:
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
        settings = self.layout.sandbox_settings()  # first: refuse before anything else is looked at
        if settings.enabled:
            try:
                sandbox.check(settings)
            except sandbox.SandboxUnavailable as err:
                raise RunnerError(sandbox.refusal(str(err))) from None
        else:
            print("coursekit runner: the sandbox is OFF in nbgrader_config.py: student code runs with your rights",
                  file=sys.stderr)
        if not self.master_db.is_file():
            raise RunnerError(f"no gradebook at {self.master_db}: run `nbgrader generate_assignment {self.assignment}` first")
        damage = gradebook.damage(self.layout.db_url)
        if damage:
            raise RunnerError(damage)
        if not gradebook.knows_assignment(self.master_db, self.assignment):
            raise RunnerError(f"the gradebook does not know assignment '{self.assignment}': "
                              f"run `nbgrader generate_assignment {self.assignment}` first")

    # -- running --

    def run(self) -> list[Outcome]:
        self.check()
        self.logs.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.logs, 0o700)  # logs hold what student code printed
        lock = open(self.master_db.parent / LOCK_NAME, "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunnerError(f"another runner is grading this course (lock {lock.name}); wait for it to finish") from None
        try:
            return self._run()
        finally:
            if self.work is not None:
                shutil.rmtree(self.work, ignore_errors=True)
            lock.close()

    def make_work(self) -> Path:
        """The run's private work folder (0700, a fresh name), after removing what killed runs left."""
        for stale in Path(tempfile.gettempdir()).glob(self.work_prefix + "*"):
            with contextlib.suppress(OSError):
                if stale.is_dir() and not stale.is_symlink() and stale.stat().st_uid == os.geteuid():
                    shutil.rmtree(stale, ignore_errors=True)
        self.work = Path(tempfile.mkdtemp(prefix=self.work_prefix))
        return self.work

    def snapshot(self) -> Path:
        """A private copy (0600) of the course's gradebook, from which every worker's copy is made."""
        self.template = self.work / "gradebook.db"
        with open(os.open(self.template, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "w"):
            pass
        gradebook.snapshot(self.master_db, self.template)
        os.chmod(self.template, 0o600)
        return self.template

    def _run(self) -> list[Outcome]:
        from tqdm import tqdm

        self.make_work()
        for stale in glob.glob(str(self._stage("*", "*"))):
            shutil.rmtree(stale, ignore_errors=True)
        students, refused = self.class_list()
        if self.only:
            students = self.students()
            refused = [r for r in refused if r.name in self.only]
        todo = [s for s in students if self.force or not is_graded(self.layout, s, self.assignment)]
        skipped = len(students) - len(todo)
        print(f"{self.assignment}: {len(students)} submissions, {skipped} already graded (skipped"
              f"{'' if not skipped else '; --force grades them again'}), {len(todo)} to grade with "
              f"{self.jobs} worker{'s' * (self.jobs > 1)}"
              + (f"; {len(refused)} folder{'s' * (len(refused) > 1)} refused (listed at the end)" if refused else ""),
              file=sys.stderr, flush=True)
        self.snapshot()
        outcomes: list[Outcome] = [Outcome(r.student, False, "refused-id", r.reason) for r in refused]
        bar = tqdm(total=len(todo), unit="submission", desc=f"grading {self.assignment}",
                   disable=not self.progress or not todo, file=sys.stderr)
        pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="grader")
        try:
            pending = {pool.submit(self.grade_one, s): s for s in todo}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    student = pending.pop(future)
                    try:
                        outcome = future.result()
                    except Exception as err:  # a bug or a full disk: this submission only
                        outcome = Outcome(student, False, "error", f"{type(err).__name__}: {err}")
                    try:
                        outcome = self.commit(outcome)
                    except Exception as err:  # this submission only: the others are graded all the same
                        outcome = self._commit_failed(outcome, err)
                    outcomes.append(outcome)
                    bar.update(1)
                    bar.set_postfix(failed=sum(not o.ok for o in outcomes))
        except BaseException:
            self.stop()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
        return outcomes

    def stop(self) -> None:
        """Ctrl-C: kill the nbgrader processes in flight (their kernels and sandboxes go with them)."""
        with self.lock:
            self.stopping = True
            for child in self.children:
                with contextlib.suppress(OSError):
                    child.kill()

    def _stage(self, student: str, pid: int | str) -> Path:
        """Where a graded submission is put together before it is moved into place."""
        dest = self.layout.autograded(student, self.assignment)
        return dest.parent / f".{dest.name}.runner-{pid}"

    def _private_course(self, student: str) -> tuple[CourseLayout, intake.Listing | None]:
        """A private course copy for one submission: config, source/, release/, a snapshot of the
        gradebook, and that submission only, copied by the intake (what it refused, with why)."""
        work = self.work / student
        shutil.rmtree(work, ignore_errors=True)
        private = Course.copy_of(work / "course", repo=self.root).layout  # nbgrader_config.py, source/
        # coursekit.sanitize grades a missing notebook from its release
        if self.layout.release(self.assignment).is_dir():
            shutil.copytree(self.layout.release(self.assignment), private.release(self.assignment), symlinks=True)
        shutil.copy2(self.template, private.gradebook_path)
        source, dest = self.layout.submitted(student, self.assignment), private.submitted(student, self.assignment)
        if not self.intake.enabled:  # the explicit opt-out: as stock nbgrader, links and all
            shutil.copytree(source, dest, symlinks=True)
            return private, None
        dest.parent.mkdir(parents=True, exist_ok=True)
        notebooks = [p.stem for p in self.layout.release(self.assignment).glob("*.ipynb")]
        return private, intake.take(source, dest, self.intake, notebooks)

    def grade_one(self, student: str) -> Outcome:
        """Grade one submission in a private course copy (runs in a worker thread)."""
        if self.stopping:
            raise RuntimeError("stopped")
        private, listing = self._private_course(student)
        work = self.work / student
        events = work / "events.jsonl"
        env = grading_env() | thread_env(self.jobs) | {sandbox.EVENTS_ENV: str(events)}
        log = work / "nbgrader.log"
        # '--student=<id>': an id is never read as an option (and the intake's ids are no globs).
        cmd = [str(Path(sys.executable).with_name("nbgrader")), "autograde", self.assignment, f"--student={student}"]
        with open(log, "w") as out:
            with self.lock:
                if self.stopping:
                    raise RuntimeError("stopped")
                proc = subprocess.Popen(cmd, cwd=private.root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
                self.children.add(proc)
            try:
                proc.wait()
            finally:
                with self.lock:
                    self.children.discard(proc)
        found = [json.loads(line) for line in events.read_text().splitlines()] if events.is_file() else []
        if proc.returncode == 0 and private.autograded(student, self.assignment).is_dir():
            return Outcome(student, True, log=log, events=found, graded_in=private, listing=listing)
        text = log.read_text(errors="replace")
        kind = found[-1]["kind"] if found else "error"
        message = "; ".join(e["message"] for e in found) if found else _error_summary(text)
        return Outcome(student, False, kind, f"nbgrader autograde exited {proc.returncode}: {message}", log, found,
                       listing=listing)

    def commit(self, outcome: Outcome) -> Outcome:
        """Write one outcome into the course (main thread only: one writer for the gradebook)."""
        student = outcome.student
        dest = self.layout.autograded(student, self.assignment)
        work = self.work / student
        if not outcome.ok:
            if outcome.kind == "refused-id":  # no folder of its own can be written: listed at the end
                return outcome
            if outcome.log is not None and outcome.log.is_file():
                kept = self.logs / f"{self.assignment}-{student}.log"
                shutil.copyfile(outcome.log, kept)
                os.chmod(kept, 0o600)
                outcome.log = kept
            note = " (the previous grading is kept)" if is_graded(self.layout, student, self.assignment) else ""
            problems.record(dest, outcome.kind, None, None, outcome.message + note)
            if outcome.listing is not None:
                intake.record(dest, outcome.listing)
            shutil.rmtree(work, ignore_errors=True)
            return outcome
        private = outcome.graded_in
        stage = self._stage(student, os.getpid())
        shutil.rmtree(stage, ignore_errors=True)
        shutil.copytree(private.autograded(student, self.assignment), stage, symlinks=True)
        stops = stopped_cells(stage)
        for name, stop in stops:
            problems.record(stage, stop.kind, name, stop.where, stop.message)
        # The sandbox stopped something but grading went on. A stop the notebook marks (the output
        # budget's notice) is recorded above with its cell; the event would repeat it without it.
        marked = {stop.reason for _, stop in stops}
        for event in outcome.events:
            if event.get("reason") not in marked:
                problems.record(stage, event["kind"], None, None, event["message"])
        if outcome.listing is not None:  # what the intake refused when it copied the submission
            intake.record(stage, outcome.listing)
        gradebook.merge_submission(self.master_db, private.gradebook_path, student, self.assignment)
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(stage, dest)  # the commit point: from here on the submission counts as graded
        shutil.rmtree(work, ignore_errors=True)
        (self.logs / f"{self.assignment}-{student}.log").unlink(missing_ok=True)
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
    parser = argparse.ArgumentParser(prog="python -m coursekit.runner",
                                     description="Grade every submission of an assignment in parallel, each in the sandbox.")
    parser.add_argument("assignment", help="e.g. week2")
    parser.add_argument("-j", "--jobs", type=int, default=None,
                        help=f"parallel workers (default: one per core, {MEMORY_PER_WORKER // GB} GB of free memory "
                             f"each; here {default_jobs()})")
    parser.add_argument("--force", action="store_true", help="grade again submissions that are already graded")
    parser.add_argument("--student", action="append", help="grade only this student (repeatable)")
    parser.add_argument("--course", default=".", help="the course's root folder (default: the current folder)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error("--jobs must be at least 1")
    runner = Runner(Path(args.course), args.assignment, args.jobs, args.force, args.student, not args.no_progress)
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
    sys.exit(main())
