"""What happened to one graded submission: its ``SubmissionRecord``, kept beside the autograded
notebooks.

The intake (refused files), the submission repairs (coursekit.submissions.sanitize), the grader's stops
(coursekit.transfer.split_execute, handed on through coursekit.submissions.sanitize) and, for a submission whose
grading failed, the class runner add entries while the submission is graded
(:func:`record`); at the end of autograde, whichever way it was started (plain ``nbgrader
autograde``, ``python -m coursekit.grading.runner``, a Dask worker: all run the same
``coursekit.submissions.sanitize.SubmissionExporter``), the record is sealed with the student, the
assignment and the lateness (:func:`seal`). The runner moves it with the autograded folder.
The feedback and the class report only read it, through :func:`read`, which never raises: a
damaged, oversized, linked or forged record reads as an "unreadable-record" entry.

One JSON file per graded submission: ``autograded/<student>/<assignment>/grading-problems.json``::

    {"format": FORMAT, "student": ..., "assignment": ..., "sealed": true, "seconds_late": 0.0,
     "entries": [{"kind", "notebook", "cell", "message"}, ...]}

An entry is identified by (kind, notebook, cell): recording the same key again adds its message
to the entry's (never a second entry). ``kind`` is one of KINDS, which holds every kind's words
for each audience (students on the feedback page, TAs in the class report), the kinds the class
report finds by itself included.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

FILENAME = "grading-problems.json"
FORMAT = "coursekit.submission-record/1"


@dataclass(frozen=True)
class Kind:
    label: str              # what students read (feedback page), and the title of the TA's row
    meaning: str            # what TAs read (class report, README)
    recorded: bool = True   # False: found by the class report itself, never in a submission's record

    def words(self, audience: str) -> str:
        if audience not in AUDIENCES:
            raise ValueError(f"audience is one of {AUDIENCES}, not {audience!r}")
        return self.label if audience == "student" else self.meaning


AUDIENCES = ("student", "ta")

KINDS = {
    "invalid-notebook": Kind("Notebook could not be read", "not JSON / not a notebook: graded as missing"),
    "old-nbformat": Kind("Old notebook format", "upgraded before grading"),
    "renamed-notebook": Kind("Notebook under another name", "found under another name, graded as the expected one"),
    "missing-notebook": Kind("Notebook missing", "not submitted: scored 0"),
    "duplicate-cell": Kind("Copied cell", "a copied graded cell: the copy was ignored"),
    "deleted-test-cell": Kind("Deleted check cell", "a check cell was deleted: restored and run"),
    "tampered-cell": Kind("Edited read-only cell", "a read-only cell was edited: the original was restored"),
    "late": Kind("Late submission", "submitted after the due date"),
    "timeout": Kind("Time limit", "a cell ran past the per-cell time limit"),
    "error": Kind("Grading error", "the notebook failed to execute or autograde (or its kernel died)"),
    "sandbox": Kind("Stopped by the sandbox", "the sandbox stopped something (memory, processes, files)"),
    "stray-file": Kind("Extra file ignored", "an extra file in the submission that the grader ignored"),
    "refused-file": Kind("File not accepted", "a link, device, hard link, reserved name or a file over a limit in "
                                              "the submission: the grader did not read it (coursekit.submissions.intake)"),
    "bad-timestamp": Kind("Submission time unreadable", "timestamp.txt could not be read strictly: graded as if it "
                                                        "had none (on time)"),
    "refused-id": Kind("Student folder refused", "a submitted folder whose name cannot be a student id, or that "
                                                 "is a link: not graded (class report and runner)", recorded=False),
    "unreadable-record": Kind("Problem record damaged", f"{FILENAME} could not be read as the grader writes it "
                                                        "(damaged, too large, a link, or not this submission's): "
                                                        "grade the submission again", recorded=False),
    "too-long": Kind("Cut for length", "a written answer, cell or output over the size limits (coursekit.rendering.bounds) was cut"),
    "errors-in-answers": Kind("Errors in answers", "answer cells that raised errors (class report)", recorded=False),
    "not-autograded": Kind("Not autograded", "submitted, but no autograded notebook (class report)", recorded=False),
}


def label(kind: str) -> str:
    """The students' words for ``kind``; an unknown kind as it is."""
    return KINDS[kind].label if kind in KINDS else str(kind)


def path_for(autograded_submission: Path) -> Path:
    return Path(autograded_submission) / FILENAME


FIELDS = ("kind", "notebook", "cell", "message")
MAX_BYTES = 1 << 20      # a record the grader writes is a few kB
MAX_ENTRIES = 1000
MAX_NAME = 300           # a notebook or cell name (grade ids and file names are far shorter)
MAX_MESSAGE = 64 * 1024  # what one entry says (several merged messages included)


@dataclass(frozen=True)
class Entry:
    """One thing that happened to a submission: (kind, notebook, cell) is its identity. An entry
    about one file of the submission (FILE_KINDS, outside any notebook's cells) is about the file
    its message names, so its message is part of its identity: two refused files are two entries,
    the same refusal recorded twice is one."""

    kind: str
    notebook: str | None
    cell: str | None
    message: str

    @property
    def key(self) -> tuple:
        if self.kind in FILE_KINDS and self.cell is None:
            return (self.kind, self.notebook, None, self.message)
        return (self.kind, self.notebook, self.cell)

    def title(self, audience: str) -> str:
        """The kind in the words of ``audience`` ("student" or "ta"), from KINDS."""
        return KINDS[self.kind].words(audience) if self.kind in KINDS else self.kind

    def as_dict(self) -> dict:
        return {"kind": self.kind, "notebook": self.notebook, "cell": self.cell, "message": self.message}


# Entries about one file of the submission (the message names it).
FILE_KINDS = ("refused-file", "stray-file")
# What the intake records (before any notebook is read): first, wherever it was recorded from.
INTAKE_KINDS = ("refused-file", "bad-timestamp")
_KIND_ORDER = {kind: i for i, kind in enumerate(KINDS)}


def _order(entry: Entry) -> tuple:
    """The record's order, the same whichever entry point recorded what when (the runner adds
    the intake's refusals after autograde, plain autograde before): the whole submission's
    entries first, by kind; then each notebook's, the intake's first, then as grading met them."""
    whole = entry.notebook is None
    return (not whole, entry.notebook or "", entry.kind not in INTAKE_KINDS,
            _KIND_ORDER.get(entry.kind, len(_KIND_ORDER)) if whole else 0)


def _merged(entries) -> tuple[Entry, ...]:
    """``entries`` with one entry per key (the messages of repeated keys joined), in the
    record's order (``_order``; a stable sort keeps the order grading met a notebook's cells)."""
    by_key: dict[tuple, Entry] = {}
    for entry in entries:
        old = by_key.get(entry.key)
        if old is None:
            by_key[entry.key] = entry
        elif entry.message and entry.message not in old.message.split("\n"):
            by_key[entry.key] = Entry(entry.kind, entry.notebook, entry.cell, f"{old.message}\n{entry.message}" if old.message else entry.message)
    return tuple(sorted(by_key.values(), key=_order))


@dataclass(frozen=True)
class SubmissionRecord:
    """What happened to one graded submission. No two entries have the same (kind, notebook,
    cell): building one with a repeated key raises ValueError (use ``with_entries``)."""

    student: str | None
    assignment: str | None
    entries: tuple[Entry, ...] = ()
    seconds_late: float = 0.0
    sealed: bool = False  # written at the end of autograde (False: still being graded, or older)

    def __post_init__(self):
        keys = [e.key for e in self.entries]
        if len(set(keys)) != len(keys):
            raise ValueError("a submission record lists each (kind, notebook, cell) once")

    def with_entries(self, entries) -> SubmissionRecord:
        return SubmissionRecord(self.student, self.assignment, _merged([*self.entries, *entries]),
                                self.seconds_late, self.sealed)

    @property
    def damaged(self) -> bool:
        return any(e.kind == "unreadable-record" for e in self.entries)

    def problems(self) -> list[dict]:
        """The entries as ``{"kind", "notebook", "cell", "message"}`` dicts, in order."""
        return [e.as_dict() for e in self.entries]

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "student": self.student, "assignment": self.assignment,
                           "sealed": self.sealed, "seconds_late": self.seconds_late,
                           "entries": self.problems()}, indent=1) + "\n"


# --- reading: strict, never raising ------------------------------------------------------------


class Damaged(ValueError):
    """The record file is not one the grader wrote."""


def _text(value, limit: int, what: str, optional: bool = True):
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise Damaged(f"{what} is not a string of at most {limit} characters")
    return value


def _parse(raw: bytes, student: str | None, assignment: str | None) -> SubmissionRecord:
    if len(raw) > MAX_BYTES:
        raise Damaged(f"larger than {MAX_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as err:
        raise Damaged(f"not JSON ({type(err).__name__})") from None
    if not isinstance(data, dict) or set(data) != {"format", "student", "assignment", "sealed", "seconds_late",
                                                   "entries"} or data["format"] != FORMAT:
        raise Damaged("not a submission record of this grader")
    for name, expected in (("student", student), ("assignment", assignment)):
        found = _text(data[name], MAX_NAME, name)
        if expected is not None and found is not None and found != expected:
            raise Damaged(f"it is the record of another {name} ({found!r}), not of {expected!r}")
    late = data["seconds_late"]
    if isinstance(late, bool) or not isinstance(late, (int, float)) or not math.isfinite(late) or late < 0:
        raise Damaged("seconds_late is not a number of seconds")
    if not isinstance(data["sealed"], bool) or not isinstance(data["entries"], list) \
            or len(data["entries"]) > MAX_ENTRIES:
        raise Damaged(f"entries are not a list of at most {MAX_ENTRIES}")
    entries = []
    for item in data["entries"]:
        if not isinstance(item, dict) or set(item) != set(FIELDS):
            raise Damaged("an entry is not {kind, notebook, cell, message}")
        kind = _text(item["kind"], MAX_NAME, "kind", optional=False)
        if kind not in KINDS or not KINDS[kind].recorded:
            raise Damaged(f"an entry has a kind the grader does not record ({kind[:40]!r})")
        entries.append(Entry(kind, _text(item["notebook"], MAX_NAME, "notebook"), _text(item["cell"], MAX_NAME, "cell"),
                             _text(item["message"], MAX_MESSAGE, "message", optional=False)))
    try:
        return SubmissionRecord(data["student"], data["assignment"], tuple(entries), float(late), data["sealed"])
    except ValueError:
        raise Damaged("an entry is listed twice") from None


def _read_bytes(path: Path) -> bytes | None:
    """The file's bytes; None when there is none. Never follows a link, never blocks on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise Damaged(f"cannot be opened ({type(err).__name__}: a link?)") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Damaged("not a regular file")
        return os.read(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)


def read(autograded_submission: Path, student: str | None = None, assignment: str | None = None) -> SubmissionRecord:
    """The submission's record, for the feedback and the class report (the one way to read it).

    Never raises for what is in the folder: a record that is damaged, too large, a link or not a
    regular file, or that names another ``student``/``assignment`` than given, reads as a record
    with a single "unreadable-record" entry saying why (nothing of it is shown as the grader's).
    No file: an empty record."""
    folder = Path(autograded_submission)
    try:
        raw = _read_bytes(path_for(folder))
        if raw is None:
            return SubmissionRecord(student, assignment)
        return _parse(raw, student, assignment)
    except Damaged as why:
        return SubmissionRecord(student, assignment, (Entry(
            "unreadable-record", None, None,
            f"{FILENAME} is damaged ({why}): what it says is not shown; grade this submission again"),))


def load(autograded_submission: Path) -> list[dict]:
    """The recorded entries as dicts (an empty list when the record is damaged: ``read`` says so)."""
    record_ = read(autograded_submission)
    return [] if record_.damaged else record_.problems()


def load_checked(autograded_submission: Path) -> tuple[list[dict], bool]:
    """(recorded entries, whether the file was damaged)."""
    record_ = read(autograded_submission)
    return ([], True) if record_.damaged else (record_.problems(), False)


# --- writing: the grader's only -----------------------------------------------------------------


def _write(autograded_submission: Path, record_: SubmissionRecord) -> None:
    target = path_for(autograded_submission)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with open(fd, "w") as f:
        f.write(record_.to_json())
    os.replace(tmp, target)


def _current(autograded_submission: Path) -> SubmissionRecord:
    """The record to add to: a damaged one is started again (the grader writes it whole)."""
    found = read(autograded_submission)
    return found if not found.damaged else SubmissionRecord(None, None)


def record(autograded_submission: Path, kind: str, notebook: str | None, cell: str | None, message: str) -> None:
    """Add an entry while the submission is graded (or, by the runner, when its grading failed)."""
    if kind not in KINDS or not KINDS[kind].recorded:
        raise ValueError(f"unknown problem kind {kind!r}; add it to coursekit.core.problems.KINDS")
    current = _current(autograded_submission)
    updated = current.with_entries([Entry(kind, notebook, cell, message)])
    if updated != current:
        _write(autograded_submission, updated)


def replace(autograded_submission: Path, kind: str, entries: list[Entry], seconds_late: float | None = None) -> None:
    """Put ``entries`` in place of the record's entries of ``kind`` (a new due date's "late")."""
    current = _current(autograded_submission)
    kept = [e for e in current.entries if e.kind != kind]
    late = current.seconds_late if seconds_late is None else float(seconds_late)
    _write(autograded_submission, SubmissionRecord(current.student, current.assignment, _merged([*kept, *entries]),
                                                   late, current.sealed))


def seal(autograded_submission: Path, student: str, assignment: str, seconds_late: float = 0.0) -> SubmissionRecord:
    """End of autograde: write the submission's record whole, with who and how late."""
    current = _current(autograded_submission)
    sealed = SubmissionRecord(student, assignment, current.entries, float(seconds_late or 0), True)
    _write(autograded_submission, sealed)
    return sealed
