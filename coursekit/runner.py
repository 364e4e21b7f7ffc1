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
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from coursekit import problems, sandbox
from coursekit.course import Course, grading_env

GB = 2**30
MEMORY_PER_WORKER = 3 * GB  # a training notebook's kernel peaks at ~2.5 GB resident
LOCK_NAME = ".runner.lock"
# What a worker's private course copy takes from the course besides nbgrader_config.py and source/
# (coursekit.sanitize grades a missing notebook from its release).
COPIED = ("release",)
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


def _timestamp(folder: Path):
    from nbgrader.utils import parse_utc

    with contextlib.suppress(OSError, ValueError):
        return parse_utc((folder / "timestamp.txt").read_text().strip())
    return None


def is_graded(root: Path, student: str, assignment: str) -> bool:
    """nbgrader's rule (autograded folder exists and is not older than the submission), and the
    folder holds graded notebooks, not only the record of a failed attempt."""
    dest = root / "autograded" / student / assignment
    if not dest.is_dir() or not any(p.suffix == ".ipynb" for p in dest.iterdir()):
        return False
    new, old = _timestamp(root / "submitted" / student / assignment), _timestamp(dest)
    return not (new is not None and old is not None and new > old)


# --- the gradebook -----------------------------------------------------------------------------

# Fields `nbgrader autograde` writes, by table; every other field belongs to instructors and TAs.
AUTO_FIELDS = {
    "submitted_assignment": ("timestamp",),
    "submitted_notebook": ("late_submission_penalty",),
    "grade": ("auto_score", "needs_manual_grade"),
    "comment": ("auto_comment",),
}


def _columns(db: sqlite3.Connection, schema: str, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA {schema}.table_info({table})")]


def merge_submission(master: Path, worker: Path, student: str, assignment: str) -> None:
    """Copy one graded submission from a worker's gradebook into the course's, in one transaction.

    Rows are matched by their natural keys (student and assignment; notebook; cell), so the
    merge is idempotent: merging the same submission twice leaves the same gradebook.
    """
    db = sqlite3.connect(master, timeout=120, isolation_level=None)
    try:
        db.execute("ATTACH DATABASE ? AS w", (str(worker),))
        db.execute("BEGIN IMMEDIATE")
        cols = {t: _columns(db, "main", t) for t in ("student", *AUTO_FIELDS)}

        def copy_row(table: str, row: dict) -> None:
            names = [c for c in cols[table] if c in row]
            db.execute(f"INSERT INTO main.{table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                       [row[c] for c in names])

        def rows(sql: str, *args) -> list[dict]:
            cur = db.execute(sql, args)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

        def update(table: str, target_id: str, row: dict, extra: dict | None = None) -> None:
            values = {f: row[f] for f in AUTO_FIELDS[table]} | (extra or {})
            db.execute(f"UPDATE main.{table} SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?",
                       [*values.values(), target_id])

        (assignment_id,) = db.execute("SELECT id FROM main.assignment WHERE name = ?", (assignment,)).fetchone()
        if not db.execute("SELECT 1 FROM main.student WHERE id = ?", (student,)).fetchone():
            for row in rows("SELECT * FROM w.student WHERE id = ?", student):
                copy_row("student", row)
        (w_sub,) = rows("SELECT * FROM w.submitted_assignment WHERE assignment_id = ? AND student_id = ?",
                        assignment_id, student)
        m_sub = rows("SELECT * FROM main.submitted_assignment WHERE assignment_id = ? AND student_id = ?",
                     assignment_id, student)
        if m_sub:
            sub_id = m_sub[0]["id"]
            update("submitted_assignment", sub_id, w_sub)
        else:
            sub_id = w_sub["id"]
            copy_row("submitted_assignment", w_sub)
        for w_nb in rows("SELECT * FROM w.submitted_notebook WHERE assignment_id = ?", w_sub["id"]):
            m_nb = rows("SELECT * FROM main.submitted_notebook WHERE assignment_id = ? AND notebook_id = ?",
                        sub_id, w_nb["notebook_id"])
            if m_nb:
                nb_id = m_nb[0]["id"]
                update("submitted_notebook", nb_id, w_nb)
            else:
                nb_id = w_nb["id"]
                copy_row("submitted_notebook", dict(w_nb, assignment_id=sub_id))
            for table in ("grade", "comment"):
                for w_row in rows(f"SELECT * FROM w.{table} WHERE notebook_id = ?", w_nb["id"]):
                    m_row = rows(f"SELECT * FROM main.{table} WHERE notebook_id = ? AND cell_id = ?",
                                 nb_id, w_row["cell_id"])
                    if not m_row:
                        copy_row(table, dict(w_row, notebook_id=nb_id))
                    elif table == "grade":
                        # nbgrader flags a grade for review when a TA has scored it; a TA may have
                        # done so in the course's gradebook while this submission was graded.
                        review = bool(w_row["needs_manual_grade"]) or (
                            m_row[0]["manual_score"] is not None and w_row["manual_score"] is None)
                        update(table, m_row[0]["id"], w_row, {"needs_manual_grade": review})
                    else:
                        update(table, m_row[0]["id"], w_row)
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    finally:
        db.close()


def snapshot(master: Path, target: Path) -> None:
    """A consistent copy of a SQLite file, even while it is in use."""
    src, dst = sqlite3.connect(master, timeout=120), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


# --- one submission ----------------------------------------------------------------------------


@dataclass
class Outcome:
    student: str
    ok: bool
    kind: str = ""        # for a failure: a coursekit.problems kind
    message: str = ""
    log: Path | None = None
    events: list[dict] = field(default_factory=list)


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


def scan_notebooks(folder: Path) -> list[tuple[str, str, str, str]]:
    """(kind, notebook, cell, message) for cells the sandbox or the timeout stopped."""
    import nbformat

    found = []
    for path in sorted(folder.glob("*.ipynb")):
        with contextlib.suppress(Exception):
            nb = nbformat.read(path, as_version=4)
            for index, cell in enumerate(nb.cells):
                cell_id = cell.metadata.get("nbgrader", {}).get("grade_id") or f"cell {index + 1}"
                for out in cell.get("outputs", []):
                    if out.get("output_type") != "error":
                        continue
                    name, value = out.get("ename", ""), out.get("evalue", "")
                    if name == "MemoryError":
                        found.append(("sandbox", path.stem, cell_id, "the cell ran out of memory (the sandbox's memory limit)"))
                    elif name == "BlockingIOError" and "Resource temporarily unavailable" in value:
                        found.append(("sandbox", path.stem, cell_id, "the cell started too many processes (the sandbox's process limit)"))
                    elif name == "CellTimeoutError":
                        found.append(("timeout", path.stem, cell_id, "the cell ran past the per-cell time limit"))
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
        self.master_db = self.root / "gradebook" / "gradebook.db"
        key = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        self.work = Path(tempfile.gettempdir()) / f"coursekit-runner-{key}"
        self.logs = self.root / "gradebook" / LOG_DIR
        self.children: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.stopping = False

    # -- set-up --

    def students(self) -> list[str]:
        found = sorted(p.parent.name for p in (self.root / "submitted").glob(f"*/{self.assignment}") if p.is_dir())
        if self.only:
            missing = sorted(set(self.only) - set(found))
            if missing:
                raise RunnerError(f"no submission of {self.assignment} for: {', '.join(missing)} "
                                  f"(looked in {self.root / 'submitted'})")
            found = [s for s in found if s in self.only]
        return found

    def check(self) -> None:
        if not (self.root / "nbgrader_config.py").is_file():
            raise RunnerError(f"{self.root} is not a course (no nbgrader_config.py); run from the course root or pass --course")
        settings = sandbox_settings(self.root)  # first: refuse before anything else is looked at
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
        with contextlib.closing(sqlite3.connect(self.master_db)) as db:
            if not db.execute("SELECT 1 FROM assignment WHERE name = ?", (self.assignment,)).fetchone():
                raise RunnerError(f"the gradebook does not know assignment '{self.assignment}': "
                                  f"run `nbgrader generate_assignment {self.assignment}` first")

    # -- running --

    def run(self) -> list[Outcome]:
        self.check()
        self.logs.mkdir(parents=True, exist_ok=True)
        lock = open(self.root / "gradebook" / LOCK_NAME, "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunnerError(f"another runner is grading this course (lock {lock.name}); wait for it to finish") from None
        try:
            return self._run()
        finally:
            shutil.rmtree(self.work, ignore_errors=True)
            lock.close()

    def _run(self) -> list[Outcome]:
        from tqdm import tqdm

        shutil.rmtree(self.work, ignore_errors=True)  # what a killed run left
        self.work.mkdir(parents=True)
        for stale in (self.root / "autograded").glob(f"*/.{self.assignment}.runner-*"):
            shutil.rmtree(stale, ignore_errors=True)
        students = self.students()
        todo = [s for s in students if self.force or not is_graded(self.root, s, self.assignment)]
        skipped = len(students) - len(todo)
        print(f"{self.assignment}: {len(students)} submissions, {skipped} already graded (skipped"
              f"{'' if not skipped else '; --force grades them again'}), {len(todo)} to grade with "
              f"{self.jobs} worker{'s' * (self.jobs > 1)}", file=sys.stderr, flush=True)
        self.template = self.work / "gradebook.db"
        snapshot(self.master_db, self.template)
        outcomes: list[Outcome] = []
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
                    outcome = self.commit(outcome)
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

    def grade_one(self, student: str) -> Outcome:
        """Grade one submission in a private course copy (runs in a worker thread)."""
        if self.stopping:
            raise RuntimeError("stopped")
        work = self.work / student
        shutil.rmtree(work, ignore_errors=True)
        course = Course.copy_of(work / "course", repo=self.root)  # nbgrader_config.py, source/
        for name in COPIED:
            if (self.root / name).is_dir():
                shutil.copytree(self.root / name, course.root / name, symlinks=True)
        shutil.copy2(self.template, course.root / "gradebook" / "gradebook.db")
        shutil.copytree(self.root / "submitted" / student / self.assignment,
                        course.root / "submitted" / student / self.assignment, symlinks=True)
        events = work / "events.jsonl"
        env = grading_env() | thread_env(self.jobs) | {sandbox.EVENTS_ENV: str(events)}
        log = work / "nbgrader.log"
        cmd = [str(Path(sys.executable).with_name("nbgrader")), "autograde", self.assignment, "--student", student]
        with open(log, "w") as out:
            with self.lock:
                if self.stopping:
                    raise RuntimeError("stopped")
                proc = subprocess.Popen(cmd, cwd=course.root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
                self.children.add(proc)
            try:
                proc.wait()
            finally:
                with self.lock:
                    self.children.discard(proc)
        found = [json.loads(line) for line in events.read_text().splitlines()] if events.is_file() else []
        graded = course.root / "autograded" / student / self.assignment
        if proc.returncode == 0 and graded.is_dir():
            return Outcome(student, True, log=log, events=found)
        text = log.read_text(errors="replace")
        kind = found[-1]["kind"] if found else "error"
        message = "; ".join(e["message"] for e in found) if found else _error_summary(text)
        return Outcome(student, False, kind, f"nbgrader autograde exited {proc.returncode}: {message}", log, found)

    def commit(self, outcome: Outcome) -> Outcome:
        """Write one outcome into the course (main thread only: one writer for the gradebook)."""
        student = outcome.student
        dest = self.root / "autograded" / student / self.assignment
        work = self.work / student
        if not outcome.ok:
            if outcome.log is not None and outcome.log.is_file():
                kept = self.logs / f"{self.assignment}-{student}.log"
                shutil.copy2(outcome.log, kept)
                outcome.log = kept
            note = " (the previous grading is kept)" if is_graded(self.root, student, self.assignment) else ""
            problems.record(dest, outcome.kind, None, None, outcome.message + note)
            shutil.rmtree(work, ignore_errors=True)
            return outcome
        graded = work / "course" / "autograded" / student / self.assignment
        stage = dest.parent / f".{self.assignment}.runner-{os.getpid()}"
        shutil.rmtree(stage, ignore_errors=True)
        shutil.copytree(graded, stage, symlinks=True)
        for kind, notebook, cell, message in scan_notebooks(stage):
            problems.record(stage, kind, notebook, cell, message)
        for event in outcome.events:  # the sandbox stopped something but grading went on
            problems.record(stage, event["kind"], None, None, event["message"])
        merge_submission(self.master_db, work / "course" / "gradebook" / "gradebook.db", student, self.assignment)
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(stage, dest)  # the commit point: from here on the submission counts as graded
        shutil.rmtree(work, ignore_errors=True)
        (self.logs / f"{self.assignment}-{student}.log").unlink(missing_ok=True)
        return outcome


def sandbox_settings(root: Path) -> sandbox.Settings:
    """The sandbox settings the course's nbgrader_config.py gives its kernels."""
    from traitlets.config.loader import PyFileConfigLoader

    cwd = os.getcwd()
    try:
        os.chdir(root)  # the config may use paths relative to the course
        config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    finally:
        os.chdir(cwd)
    args = list(config.Execute.get("extra_arguments", []) or [])
    return sandbox.Settings.from_arguments([a for a in args if a.startswith(sandbox.OPTION)])


def report(outcomes: list[Outcome], root: Path) -> str:
    failed = [o for o in outcomes if not o.ok]
    lines = [f"graded {sum(o.ok for o in outcomes)} of {len(outcomes)} submissions"]
    if failed:
        lines.append(f"{len(failed)} could not be graded (tried again on the next run; details in "
                     f"autograded/<student>/<assignment>/{problems.FILENAME}):")
        for o in sorted(failed, key=lambda o: o.student):
            first = o.message.splitlines()[0] if o.message else ""
            log = f" [log: {o.log.relative_to(root) if o.log and o.log.is_relative_to(root) else o.log}]" if o.log else ""
            lines.append(f"  {o.student}: {o.kind}: {first[:300]}{log}")
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
