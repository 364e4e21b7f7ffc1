"""nbgrader's collect, with the checks a machine shared by the whole class needs (the course hub).

Stock ``nbgrader collect`` believes what the submitting student wrote:

- the student id in the name of the submission folder (``<student>+<assignment>+<time>+<random>``):
  ``nbgrader submit week2 --student=<someone else>`` hands work in under another student's
  name, and stock collect takes it as that student's newest submission (it only logs
  "cheating attempt?");
- the time, which the student's own process writes into that name and into timestamp.txt,
  and the files, which stay the student's: a student can submit before the deadline and
  replace the notebooks in the exchange afterwards (or write an earlier time), and the late
  work is graded as on time.

``VerifiedCollect`` (the staff's nbgrader setting on the hub, hub/staff/nbgrader_config.py)
skips a submission whose folder does not belong to the student it names, and dates every
submission no earlier than the last change the file system recorded in it: the inode change
time, which no user can set back. A submission changed after its stated time is collected as
handed in at that change, and the collected timestamp.txt says so (the late policy then
applies as usual).

Stock collect also copies each submission with ``shutil.copytree``, running as the instructor,
from a folder the student still owns: a student who replaces a handed-in file with a symbolic link
to the course's source notebook has the solution, hidden tests and mark schemes copied into their
submission (where the grader sees an ordinary file), and one dangling link makes copytree raise,
which stops collect for every student after them. ``VerifiedCollect`` copies through the intake
(coursekit/submissions/intake.py: the one place that says what a submission may contain): listed without
following anything, each file opened with ``O_NOFOLLOW`` relative to its folder's descriptor;
links, devices, FIFOs, sockets, hard links, odd and reserved names are refused and written into
the collected copy (``intake.COLLECT_RECORD``), from which grading records them as
``refused-file`` problems (feedback, class report). A submission that cannot be collected at all
is logged and the rest of the class is collected; the command then fails, naming it.

``SafeReleaseFeedback`` does the same for release_feedback, which the instructor runs on
feedback/ (the staff group may write it): a link planted there would copy a file only the
instructor can read into the exchange, for the student to fetch.
"""

from __future__ import annotations

import contextlib
import datetime
import fnmatch
import glob
import os
import pwd
import shutil
import stat
from collections import defaultdict

from nbgrader.exchange.default import ExchangeCollect, ExchangeReleaseFeedback
from nbgrader.utils import notebook_hash

from coursekit.submissions import intake

# nbgrader stamps a submission when `submit` starts and finishes writing it a moment later.
SLACK = datetime.timedelta(seconds=60)


def owner(path: str) -> str:
    uid = os.lstat(path).st_uid  # a link's own owner: the account that handed it in
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def last_change(path: str) -> datetime.datetime:
    """The latest inode change time of ``path`` and everything in it, as naive UTC (nbgrader's)."""
    latest = os.lstat(path).st_ctime
    for folder, dirs, files in os.walk(path) if not os.path.islink(path) else ():  # walk never follows a link below
        for name in dirs + files:
            latest = max(latest, os.lstat(os.path.join(folder, name)).st_ctime)
    return datetime.datetime.fromtimestamp(latest, datetime.timezone.utc).replace(tzinfo=None)


class VerifiedCollect(ExchangeCollect):
    def _notebooks(self) -> list[str]:
        release = self.coursedir.format_path(self.coursedir.release_directory, ".", self.coursedir.assignment_id)
        return sorted(os.path.basename(p)[:-len(".ipynb")] for p in glob.glob(os.path.join(glob.escape(release), "*.ipynb")))

    def init_src(self):
        super().init_src()  # nbgrader's checks and the due date; which submission to take is redone here
        student = self.coursedir.student_id if self.coursedir.student_id else "*"
        pattern = os.path.join(self.inbound_path, f"{student}+{self.coursedir.assignment_id}+*")
        by_student = defaultdict(list)
        for path in sorted(glob.glob(pattern)):
            record = self._path_to_record(path)
            handed_in_by = owner(path)
            if handed_in_by != record["username"]:
                self.log.warning("Skipping %s: it is handed in under the name %s by the account %s",
                                 record["filename"], record["username"], handed_in_by)
                continue
            changed = last_change(path)
            if changed > record["timestamp"] + SLACK:
                self.log.warning("%s was changed at %s UTC, after the time it states (%s UTC): collected as handed in then",
                                 record["filename"], changed, record["timestamp"])
                record["timestamp"], record["changed"] = changed, True
            by_student[record["username"]].append(record)
        self.src_records = self.choose(by_student)

    def choose(self, by_student: dict) -> list[dict]:
        """Which verified hand-in of each student to collect (the grading-on-submit service
        takes the one it queued: coursekit.hosting.submit_service)."""
        chosen = []
        for records in by_student.values():
            records = self._sort_by_timestamp(records)
            on_time = [r for r in records if self.duedate is not None and r["timestamp"] <= self.duedate]
            chosen.append(on_time[0] if self.before_duedate and self.duedate is not None and on_time else records[0])
        return chosen

    def copy_files(self):
        """nbgrader's collect loop, one student at a time: a submission that cannot be collected
        is logged and the others are collected all the same."""
        if not self.src_records:
            self.log.warning("No submissions of '%s' for course '%s' to collect", self.coursedir.assignment_id,
                             self.coursedir.course_id)
        self.notebooks = self._notebooks()
        failed = []
        for record in self.src_records:
            try:
                self._collect(record)
            except Exception as err:  # noqa: BLE001 (this student only)
                self.log.error("Could not collect %s (%s): %s. The rest of the class is collected.",
                               intake.shown(record["filename"]), record["username"], err)
                failed.append(record["username"])
        if failed:
            self.fail(f"{len(failed)} submission(s) could not be collected: {', '.join(map(intake.shown, failed))} "
                      "(the others were; see the log above)")

    def _collect(self, record: dict) -> None:
        student = record["username"]
        src = os.path.join(self.inbound_path, record["filename"])
        dest = self.coursedir.format_path(self.coursedir.submitted_directory, student, self.coursedir.assignment_id)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        updating = os.path.lexists(dest)
        if updating:
            existing = self.coursedir.get_existing_timestamp(dest)
            newer = self.update and (existing is None or record["timestamp"] > existing)
            if not (newer or (self.before_duedate and existing != record["timestamp"])):
                self.log.info("%s: %s %s", "No newer submission to collect" if self.update else
                              "Submission already exists, use --update to update", student, self.coursedir.assignment_id)
                return
            self.log.info("Updating submission: %s %s", student, self.coursedir.assignment_id)
            shutil.rmtree(dest)  # never follows a link (and refuses to remove one)
        else:
            self.log.info("Collecting submission: %s %s", student, self.coursedir.assignment_id)
        self.do_copy(src, dest, record=record)

    def do_copy(self, src, dest, log=None, record=None):
        """The submission at ``src`` as data, into ``dest`` (made here): the intake's listing and
        copy, never a path followed. What it refused is logged and recorded in the copy."""
        listing = intake.scan(src, intake.Intake(parent=self), self.notebooks, exchange=True)
        intake.copy(listing, dest)
        for refusal in listing.refused:
            self.log.warning("%s: %s", intake.shown(os.path.basename(src)), refusal.message)
        intake.write_collect_record(dest, listing.refused)
        stamp = record and record["timestamp"]
        if stamp is not None and (listing.timestamp is None or record.get("changed")):
            # the time collect decided (the folder's stated time, or when it last changed)
            with open(os.open(os.path.join(dest, intake.TIMESTAMP), os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                              | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644), "w") as f:
                f.write(intake.format_timestamp(stamp) + "\n")


# --- release_feedback --------------------------------------------------------------------------------

_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FEEDBACK_MAX_BYTES = 64 * 2**20


def read_plain_file(name: str, limit: int, dir_fd: int) -> bytes:
    """The bytes of ``name`` in the folder ``dir_fd`` if it is a plain file (not a link, a hard
    link, a pipe or a device) of at most ``limit`` bytes; OSError otherwise."""
    fd = os.open(name, _READ, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size > limit:
            raise OSError(f"{intake.shown(name)} is not a plain file of at most {limit} bytes (a link, a hard "
                          "link, a pipe or a device?)")
        os.set_blocking(fd, True)
        with open(os.dup(fd), "rb") as f:
            return f.read(limit + 1)[:limit]
    finally:
        os.close(fd)


class SafeReleaseFeedback(ExchangeReleaseFeedback):
    """nbgrader's release_feedback without following links: ``feedback/<student>/<assignment>/``
    is opened folder by folder with ``O_NOFOLLOW``, each feedback page, timestamp.txt and
    submission_secret.txt read as a plain file (``read_plain_file``) relative to it, and written
    under a fresh name in the exchange, then renamed. A student whose files are refused is
    skipped and named; the others' feedback is released."""

    def copy_files(self):
        exclude = set(self.coursedir.student_id_exclude.split(",")) if self.coursedir.student_id_exclude else set()
        top = self.coursedir.format_path(self.coursedir.feedback_directory, ".", ".")
        try:
            top_fd = os.open(os.path.normpath(top), _DIR)
        except FileNotFoundError:
            return
        failed = []
        try:
            for student in sorted(os.listdir(top_fd)):
                if student in exclude or not fnmatch.fnmatchcase(student, self.coursedir.student_id or "*"):
                    continue
                try:
                    self._release(top_fd, student)
                except (OSError, UnicodeDecodeError) as err:
                    self.log.error("Feedback of %s not released: %s", intake.shown(student), err)
                    failed.append(student)
        finally:
            os.close(top_fd)
        if failed:
            self.fail(f"feedback of {len(failed)} student(s) not released: {', '.join(map(intake.shown, failed))} "
                      "(a link, or not plain files: see above); the others' was")

    def may_replace(self, name: str, page: bytes) -> bool:
        """Whether to write ``page`` as ``name`` in the exchange's feedback folder (the staff: always;
        the grading-on-submit service never replaces what the staff released)."""
        return True

    def _release(self, top_fd: int, student: str) -> None:
        fds = []
        try:
            fds.append(os.open(student, _DIR, dir_fd=top_fd))
            try:
                fds.append(os.open(self.coursedir.assignment_id, _DIR, dir_fd=fds[0]))
            except FileNotFoundError:
                return  # no feedback for this assignment
            folder = fds[-1]
            pages = sorted(n for n in os.listdir(folder) if n.endswith(".html"))
            if not pages:
                return
            timestamp = read_plain_file("timestamp.txt", 1000, folder).decode()
            secret = read_plain_file("submission_secret.txt", 1000, folder).decode()
            for name in pages:
                page = read_plain_file(name, FEEDBACK_MAX_BYTES, folder)
                notebook_id = name[:-len(".html")]
                checksum = notebook_hash(secret=secret, notebook_id=notebook_id)
                tmp = os.path.join(self.dest_path, f"{checksum}-tmp.html")
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                if not self.may_replace(f"{checksum}.html", page):
                    continue
                with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644),
                          "wb") as f:
                    f.write(page)
                os.replace(tmp, os.path.join(self.dest_path, f"{checksum}.html"))
                self.log.info("Releasing feedback for student '%s' on assignment '%s/%s/%s' (%s)", student,
                              self.coursedir.course_id, self.coursedir.assignment_id, notebook_id, timestamp)
        finally:
            for fd in fds:
                os.close(fd)
