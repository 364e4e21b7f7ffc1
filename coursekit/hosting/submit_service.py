"""Grading on submit: a service on the course hub that grades each hand-in as it arrives and
releases that student's feedback, with no staff action (issue 28).

    python -m coursekit.hosting.submit_service --course ROOT --exchange EXCHANGE [--assignment week2]

bin/hub starts it as a JupyterHub-managed service when ``c.SubmitGrading.enabled = True`` in the
course's nbgrader_config.py (section "Grading on submit"); JupyterHub stops it with the hub.
It runs as root (the sandbox needs root), like the runner. Every few seconds it:

1. lists the exchange's inbound folder without following links; a hand-in whose folder does not
   belong to the student it names is ignored (as ``VerifiedCollect`` skips it), the others are
   offered to the journal (coursekit.hosting.submit_queue: durable, fair between students, a
   resubmission replaces a queued hand-in, at most ``max_per_hour`` gradings per student);
2. takes the next hand-in and collects exactly that one with ``VerifiedCollect`` (owner
   checked, time from the file system, links refused, through the intake) into the service's
   own copy of the course;
3. grades it with the class runner (``coursekit.grading.runner.Runner``, one student, in the sandbox);
4. generates feedback with the course's ``CourseFeedback``: before the student's deadline with
   the hints of hidden checks withheld (unless ``show_hidden_hints_before_deadline``), after it
   the full feedback;
5. releases it with ``SafeReleaseFeedback`` (no link followed), never replacing a page the staff
   released (a page the service did not write).

What the staff own is never written: the service grades in ``<course>/.submit-service/course``
(root only, 0700: a copy of the course's config, source/ and release, and a gradebook with the
course's structure and no student data). The staff's gradebook is only read (the structure, the
due date, the student's extension); their autograded/, feedback/ and manual marks are untouched;
their collect, grading and release work as before, and their released page replaces the
service's (same file name in the exchange).

A student over the limit gets, in place of feedback, a page saying when the next grading is
possible (the hand-in stays queued and is graded then, unless replaced). While the service runs,
``<exchange>/<course>/submit-grading-status.txt`` says so; when it stops, it holds the
``down_message``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import html
import json
import os
import pwd
import shutil
import signal
import sys
import time
from pathlib import Path

from traitlets import Bool, Float, Integer, Unicode
from traitlets.config import Configurable

from coursekit.core import gradebook
from coursekit.submissions import intake
from coursekit.core.course import COURSE_FILES, Course
from coursekit.submissions.exchange import SafeReleaseFeedback, VerifiedCollect, owner, read_plain_file
from coursekit.core.layout import CourseLayout
from coursekit.hosting.submit_queue import Journal, private_folder

STATE = ".submit-service"  # in the course folder (root and the staff group may enter the course; this is root's)
STATUS = "submit-grading-status.txt"


class SubmitGrading(Configurable):
    """The instructor's policy for grading on submit (nbgrader_config.py)."""

    enabled = Bool(False, help="grade each hand-in as it arrives and release its feedback (bin/hub "
                               "starts the service); False: the hub behaves as without it").tag(config=True)
    max_per_hour = Integer(3, help="gradings per student in any sliding hour").tag(config=True)
    show_hidden_hints_before_deadline = Bool(False, help="show the hints of failed hidden checks before "
                                                         "the deadline").tag(config=True)
    poll_seconds = Float(3.0, help="how often the inbound folder is looked at").tag(config=True)
    limit_message = Unicode(
        "You have had {count} gradings in the last hour (the limit is {limit}). Your latest hand-in is "
        "kept and will be graded at {next} (or hand in again before then: the newest one is graded).",
        help="shown when a student is over the limit; {next}, {count}, {limit}").tag(config=True)
    down_message = Unicode(
        "Grading on submit is not running right now: your hand-in is safe in the exchange and will be "
        "graded when it is back, and by the staff as usual.").tag(config=True)


def utc(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def parse_name(name: str) -> tuple[str, str, str] | None:
    """(student, assignment, timestamp) of an inbound folder's name, nbgrader's way."""
    parts = name.rsplit("+", 3)
    if len(parts) != 4 or not all(parts[:3]):
        return None
    return parts[0], parts[1], parts[2]


class OneHandIn(VerifiedCollect):
    """VerifiedCollect of the one hand-in the service queued (its folder name), if it passes the
    same checks (owner, time from the file system)."""

    filename = Unicode("").tag(config=False)

    def choose(self, by_student):
        return [r for records in by_student.values() for r in records if r["filename"] == self.filename]


class ServiceRelease(SafeReleaseFeedback):
    """SafeReleaseFeedback that never replaces a page someone else (the staff) released."""

    def init_dest(self):
        # nbgrader's refuses a feedback folder its process does not own: this one is the
        # instructor's (Service._feedback_folder), so that their own release keeps working.
        self.course_path = os.path.join(self.root, self.coursedir.course_id)
        self.outbound_feedback_path = self.dest_path = os.path.join(self.course_path, "feedback")

    def may_replace(self, name, page):
        try:
            st = os.lstat(os.path.join(self.dest_path, name))
        except FileNotFoundError:
            return True
        if st.st_uid != os.geteuid():
            self.log.info("%s: the staff's released feedback is kept", name)
            return False
        return True


def copy_course_files(course: Path, shadow: Path, assignment: str) -> None:
    """The course's config, source/ and release of ``assignment`` into the service's copy, afresh."""
    for name in (*COURSE_FILES, f"release/{assignment}"):
        src, dest = course / name, shadow / name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif dest.exists() or dest.is_symlink():
            dest.unlink()
        if src.is_dir():
            shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        elif src.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)


class Service:
    def __init__(self, course: Path, exchange: Path, assignment: str, log=print):
        self.course = Path(course).resolve()
        self.exchange = Path(exchange)
        self.assignment = assignment
        self.log = log
        self.layout = CourseLayout.load(self.course)
        self.policy = SubmitGrading(config=self.layout.config)
        self.course_id = self.layout.course_id
        self.inbound = self.exchange / self.course_id / "inbound"
        self.feedback_out = self.exchange / self.course_id / "feedback"
        self.state = self.course / STATE
        os.close(private_folder(str(self.state)))
        self.shadow = self.state / "course"
        self.journal = Journal(str(self.state / f"journal-{assignment}"), self.policy.max_per_hour)
        self.notified: set[tuple[str, str]] = set()
        self.stopping = False
        self.runner = None

    # --- the exchange ---

    def scan(self) -> int:
        """Offer every hand-in of the assignment in the inbound folder; returns how many were queued."""
        try:
            names = sorted(e.name for e in os.scandir(self.inbound) if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return 0
        queued = 0
        for name in sorted(names, key=lambda n: (parse_name(n) or ("", "", ""))[2]):
            parsed = parse_name(name)
            if parsed is None or parsed[1] != self.assignment:
                continue
            student, _, stamp = parsed
            with contextlib.suppress(OSError):
                if owner(str(self.inbound / name)) != student:  # handed in under someone else's name
                    continue
                queued += self.journal.offer(student, stamp, name)
        return queued

    def _config(self, student: str):
        config = self.layout.config.copy()
        config.CourseDirectory.root = str(self.shadow)
        config.CourseDirectory.assignment_id = self.assignment
        config.CourseDirectory.student_id = student
        config.Exchange.root = str(self.exchange)
        return config

    def _exchange_app(self, cls, student: str, **traits):
        from nbgrader.auth import Authenticator
        from nbgrader.coursedir import CourseDirectory

        config = self._config(student)
        coursedir = CourseDirectory(config=config)
        return cls(coursedir=coursedir, authenticator=Authenticator(config=config), config=config, **traits)

    # --- deadline ---

    def due(self, student: str) -> datetime.datetime | None:
        """The student's due date (the staff's gradebook, read only: assignment and extension)."""
        with gradebook.CourseGradebook(self.layout.db_url) as db:
            structure = db.structure()
            rows = db.rows(student, self.assignment)
        due = next((a.get("duedate") for a in structure.get("assignment", []) if a.get("name") == self.assignment), None)
        extension = next((s.get("extension") for s in rows.get("submitted_assignment", []) or []), None)
        if due is not None and extension is not None:
            due = due + extension
        return due

    # --- one hand-in ---

    def prepare_shadow(self, student: str) -> None:
        self.shadow.mkdir(mode=0o700, exist_ok=True)
        copy_course_files(self.course, self.shadow, self.assignment)
        (self.shadow / "gradebook").mkdir(mode=0o700, exist_ok=True)
        # The service's gradebook: the course's structure (made once; then each graded student's
        # rows, for their feedback), with the staff's current due date.
        db_path = self.shadow / "gradebook" / "gradebook.db"
        with gradebook.CourseGradebook(self.layout.db_url) as db:
            structure = db.structure()
        if not db_path.is_file():
            gradebook.template(structure, db_path)
        from sqlalchemy import update

        engine = gradebook.connect(f"sqlite:///{db_path}")
        try:
            with engine.begin() as conn:
                for row in structure.get("assignment", []):
                    conn.execute(update(gradebook.tables()["assignment"])
                                 .where(gradebook.tables()["assignment"].c.name == row["name"])
                                 .values(duedate=row.get("duedate")))
        finally:
            engine.dispose()
        for step in ("submitted", "autograded", "feedback"):
            shutil.rmtree(self.shadow / step / student, ignore_errors=True)

    def grade(self, student: str, name: str) -> tuple[bool, str]:
        from coursekit.grading.runner import Runner

        self.prepare_shadow(student)
        collect = self._exchange_app(OneHandIn, student, filename=name, update=True)
        collect.start()
        shadow_layout = CourseLayout.load(self.shadow)
        if not shadow_layout.submitted(student, self.assignment).is_dir():
            return False, "not collected (refused by VerifiedCollect)"
        self.runner = Runner(self.shadow, self.assignment, jobs=1, force=True, students=[student], progress=False)
        try:
            outcomes = self.runner.run()
        finally:
            self.runner = None
        if self.stopping:
            raise InterruptedError("stopped while grading")
        ok = all(o.ok for o in outcomes)
        due = self.due(student)
        before = due is not None and datetime.datetime.utcnow() < due
        hints = not before or self.policy.show_hidden_hints_before_deadline
        if shadow_layout.autograded(student, self.assignment).is_dir():
            Course(self.shadow).nbgrader("generate_feedback", self.assignment, f"--student={student}", "--force",
                                         f"--CourseFeedback.hidden_hints={hints}", timeout=1800)
            self.release(student)
        return ok, ("before" if before else "after") + " the deadline" + ("" if ok else f": {outcomes[0].message[:300]}")

    def _feedback_folder(self) -> None:
        """The exchange's feedback folder, made as the instructor's release would make it (owned by
        the course's exchange folder's owner), so that the staff's release can still write it."""
        if not self.feedback_out.exists():
            self.feedback_out.mkdir(mode=0o755)
            st = os.stat(self.feedback_out.parent)
            os.chown(self.feedback_out, st.st_uid, st.st_gid)
            os.chmod(self.feedback_out, 0o755)

    def release(self, student: str) -> None:
        self._feedback_folder()
        self._exchange_app(ServiceRelease, student).start()

    def notify_limit(self, student: str, stamp: str, name: str, when: float) -> None:
        """A page per notebook, in place of feedback, saying when the next grading is possible."""
        from nbgrader.utils import notebook_hash

        count = len(self.journal.in_window(student, time.time()))
        text = self.policy.limit_message.format(next=utc(when), count=count, limit=self.policy.max_per_hour)
        page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Not graded yet</title></head><body>"
                f"<h1>Not graded yet</h1><p>{html.escape(text)}</p><p>Next grading possible at: "
                f"<strong>{utc(when)}</strong></p></body></html>").encode()
        fd = os.open(self.inbound / name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            secret = read_plain_file("submission_secret.txt", 1000, fd).decode()
            notebooks = [n[:-len(".ipynb")] for n in os.listdir(fd) if n.endswith(".ipynb")]
        finally:
            os.close(fd)
        self._feedback_folder()
        for notebook in notebooks:
            target = f"{notebook_hash(secret=secret, notebook_id=notebook)}.html"
            path = self.feedback_out / target
            if path.is_symlink() or (path.exists() and path.stat().st_uid != os.geteuid()):
                continue
            tmp = self.feedback_out / f".{target}.service-tmp"
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), "wb") as f:
                f.write(page)
            os.replace(tmp, path)
        self.log(f"submit-service: {student} is over the limit; next grading at {utc(when)}")

    def status(self, text: str) -> None:
        with contextlib.suppress(OSError):
            path = self.exchange / self.course_id / STATUS
            tmp = path.with_name(f".{STATUS}.tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), "w") as f:
                f.write(text + "\n")
            os.replace(tmp, path)

    # --- the loop ---

    def step(self) -> bool:
        """Look at the exchange once and grade at most one hand-in; True if one was graded."""
        self.scan()
        now = time.time()
        entry = self.journal.next(now)
        for waiting in self.journal.waiting():
            if waiting is not entry and waiting.key not in self.notified and not waiting.starts:
                when = self.journal.next_possible(waiting.student, now)
                if when > now:
                    self.notified.add(waiting.key)
                    with contextlib.suppress(OSError, UnicodeDecodeError):
                        self.notify_limit(waiting.student, waiting.stamp, waiting.name, when)
        if entry is None:
            return False
        self.journal.start(entry.key)
        started = time.monotonic()
        self.log(f"submit-service: grading {entry.student} ({entry.stamp})")
        try:
            ok, note = self.grade(entry.student, entry.name)
        except InterruptedError:
            raise
        except Exception as err:  # noqa: BLE001 (this hand-in only: the service goes on)
            ok, note = False, f"{type(err).__name__}: {str(err)[-500:]}"
        self.journal.finish(entry.key, ok, note)
        self.log(f"submit-service: {entry.student} ({entry.stamp}) done in {time.monotonic() - started:.0f} s: "
                 f"{'ok' if ok else 'failed'}; {note}")
        return True

    def stop(self, *_):
        self.stopping = True
        if self.runner is not None:
            self.runner.stop()

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self.status("Grading on submit is running: feedback appears a few minutes after you submit "
                    f"(at most {self.policy.max_per_hour} gradings per hour).")
        self.log(f"submit-service: watching {self.inbound} for {self.assignment}")
        try:
            while not self.stopping:
                try:
                    if self.step():
                        continue
                except InterruptedError:
                    break
                for _ in range(int(self.policy.poll_seconds * 10)):
                    if self.stopping:
                        break
                    time.sleep(0.1)
        finally:
            self.status(self.policy.down_message)
            self.journal.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coursekit.hosting.submit_service", description=__doc__.splitlines()[0])
    parser.add_argument("--course", type=Path, required=True, help="the course folder")
    parser.add_argument("--exchange", type=Path, default=os.environ.get("COURSEKIT_EXCHANGE"),
                        help="nbgrader's exchange root (default: $COURSEKIT_EXCHANGE)")
    parser.add_argument("--assignment", default="week2")
    args = parser.parse_args(argv)
    if args.exchange is None:
        parser.error("--exchange (or $COURSEKIT_EXCHANGE) is needed")
    service = Service(args.course, args.exchange, args.assignment, log=lambda m: print(m, file=sys.stderr, flush=True))
    if not service.policy.enabled:
        print("submit-service: c.SubmitGrading.enabled is False in nbgrader_config.py: not running", file=sys.stderr)
        return 0
    service.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
