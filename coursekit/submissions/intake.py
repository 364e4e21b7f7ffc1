"""Submissions are data, never paths: the one step that reads a submission folder before
nbgrader or the runner touches a file.

A submission folder (``submitted/<student>/<assignment>/``) is hostile input read by a grader
that runs as root. Stock nbgrader finds students and notebooks with glob patterns and copies
submissions with ``shutil``, which follows symbolic links: a link to the instructor's
solution, a classmate's notebook, ``/etc/shadow`` or ``/dev/zero`` is read as if the student
had written it. Here every submission is first *listed* without following anything
(``os.scandir`` on directory descriptors, ``lstat``), checked against the rules below, and
*copied* from that listing (each file opened with ``O_NOFOLLOW`` relative to its folder's
descriptor, and checked to still be the very file that was listed). nbgrader and the runner
only ever read that copy.

What is refused, and why (each refusal is a recorded problem, kind ``refused-file``, that the
TA sees in the class report and the student in the feedback; the rest of the submission, and
the rest of the class, is graded):

==============================  =================================================================
entry                           why it is refused
==============================  =================================================================
symbolic link (any target)      reading it reads another file: a solution, a classmate's work, a
                                secret, a device
hard link (``st_nlink > 1``)    the same file is somewhere else on the disk (a root-only file)
FIFO, socket, device            opening one blocks, never ends (``/dev/zero``) or talks to a device
name the grader writes          ``grading-problems.json`` (and its ``.tmp``), the in-progress mark
                                ``.coursekit-grading``, ``<notebook>.html`` and ``<notebook>_files``
                                (feedback pages): a student could forge what the grader reports
folder named ``*.ipynb``        nbgrader would try to read it as a notebook
name not printable UTF-8,       a file name shown to TAs (HTML, CSV, logs) must be text, and not an
or starting with ``-``          option to a shell command
file over ``max_file_size``,    bounds the time and disk the grader spends on one submission (a
files over ``max_total_size``,  ``/dev/zero`` copy, 60,000 files); notebooks are counted first, so
over ``max_files`` entries,     junk cannot push them out
deeper than ``max_depth``
==============================  =================================================================

``.coursekit-collect.json`` is the course's collect's record of what it refused in nbgrader's
exchange (coursekit/submissions/exchange.py, which lists hand-ins with this same ``scan``): read here as more
refusals, never copied on; refused when a student hands it in to the exchange.

``timestamp.txt`` is parsed strictly (one line, ``YYYY-MM-DD HH:MM:SS[.ffffff]`` with an optional
``UTC``/``Z``/``±HH:MM``, years 2000-2099, at most 100 bytes) and written back in nbgrader's own
format; anything else is ignored with a ``bad-timestamp`` problem (the submission counts as
having no timestamp, as nbgrader treats a missing one: not late; the TA sees why).

Student ids. A student id becomes a folder name, an nbgrader ``--student`` argument (a glob),
part of a regular expression nbgrader matches paths with, and a cell of CSV files. An id is
accepted when it is 1-64 ASCII letters, digits, ``_``, ``.``, ``-`` or ``@``, starting with a
letter, digit or ``_`` (so never an option, a hidden folder, ``..``, a glob, a formula, a line
break, an invisible character). Other folders are *refused*, not renamed: a renamed id would
grade the work under a name no one recognises. The TA sees each refused folder and the rule it
breaks (runner output, class report) and renames it.

Wired into nbgrader by ``install()`` (called by ``coursekit.pipeline.install``, the one call in
``nbgrader_config.py``), which makes ``nbgrader autograde`` use ``IntakeAutograde``: nbgrader's own converter, whose list of submissions and
notebooks comes from the intake instead of globs, and which reads each submission from its
intake copy. The class runner calls ``class_list()`` once per run and ``take()`` once per
submission to make each worker's copy, which the worker's nbgrader grades as it is
(``Intake.taken``). ``c.Intake.enabled = False`` is the explicit opt-out (stock nbgrader behaviour, for comparisons).
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import unicodedata
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from nbgrader.converters import Autograde
from nbgrader.converters.base import NbGraderException
from traitlets import Bool, Integer
from traitlets.config import Configurable

from coursekit.core import problems

TIMESTAMP = "timestamp.txt"
GRADING_MARK = ".coursekit-grading"  # in autograded/<student>/<assignment>/ while it is being graded
AREA_PREFIX = ".coursekit-intake-"   # the course's private folder of intake copies, one per command
# Written by the course's collect (coursekit.submissions.exchange) into a collected submission: what it
# refused in the exchange. Read here (recorded as refused-file problems, never copied on); refused
# when a student hands it in (the exchange scans with exchange=True).
COLLECT_RECORD = ".coursekit-collect.json"
COLLECT_RECORD_MAX_BYTES = 1 << 18
# Names the grader writes into autograded/<student>/<assignment>/ or feedback/...: never accepted
# from a student. (Per notebook also <notebook>.html and <notebook>_files: see reserved_names.)
GRADER_NAMES = frozenset({problems.FILENAME, Path(problems.FILENAME).with_suffix(".tmp").name, GRADING_MARK})
DIRECTORY_STRUCTURE = os.path.join("{nbgrader_step}", "{student_id}", "{assignment_id}")

ID_RULE = ("1 to 64 ASCII letters, digits, '_', '.', '-' or '@', starting with a letter, a digit or '_'")
_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}\Z")
_TIMESTAMP = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[ T](?P<time>\d{2}:\d{2}:\d{2})(?P<fraction>\.\d{1,6})?"
    r"(?:\s*(?P<zone>UTC|Z|[+-]\d{2}:?\d{2}))?\Z", re.ASCII)
TIMESTAMP_MAX_BYTES = 100
TIMESTAMP_YEARS = (2000, 2099)

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in after the listing must not block the grader.
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CHUNK = 1 << 20
MAX_RECORDED = 20  # refusals recorded one by one; the rest as one line


class Intake(Configurable):
    """Limits of the intake (``c.Intake.*`` in nbgrader_config.py)."""

    enabled = Bool(True, help="False: stock nbgrader (submissions read as paths, links followed). "
                              "For comparisons only.").tag(config=True)
    max_file_size = Integer(50 * 2**20, help="Largest file accepted, in bytes").tag(config=True)
    max_total_size = Integer(100 * 2**20, help="Largest total size of a submission, in bytes").tag(config=True)
    max_files = Integer(500, help="Most files and folders in a submission").tag(config=True)
    max_depth = Integer(8, help="Deepest folder nesting in a submission").tag(config=True)
    taken = Bool(False, help="Set by the class runner (coursekit/grading/runner.py) on the nbgrader it starts in a "
                             "private course copy: each submission there is already the intake's copy, "
                             "listed and checked by the runner and verified by its digest, so it is graded "
                             "as it is, not listed and scanned again. Never set it on a course's own "
                             "submitted/ folder.").tag(config=True)


class IntakeError(RuntimeError):
    """The intake cannot work on this course (the message says why)."""


# --- small rules -------------------------------------------------------------------------------


def shown(name: str, limit: int = 80) -> str:
    """A name as people may read it: printable, control and undecodable characters escaped."""
    text = name.encode("utf-8", "backslashreplace").decode("utf-8")
    text = "".join(ch if _printable(ch) else ascii(ch)[1:-1] for ch in text)
    return text if len(text) <= limit else text[:limit] + "…"


def _printable(ch: str) -> bool:
    return not unicodedata.category(ch).startswith(("C", "Zl", "Zp"))


def id_problem(student: str) -> str | None:
    """Why ``student`` cannot be a student id (None: it can)."""
    if _ID.match(student):
        return None
    if "\n" in student or "\r" in student:
        why = "it contains a line break"
    elif not all(_printable(ch) for ch in student):
        why = "it contains invisible or control characters"
    elif student.startswith("-"):
        why = "it starts with '-' (it would be read as a command-line option)"
    elif student.startswith("."):
        why = "it starts with '.' (a hidden folder, or '..')"
    elif any(ch in student for ch in "*?[]"):
        why = "it contains a glob character (* ? [ ]): nbgrader would read it as a pattern"
    elif student[:1] in "=+@":
        why = f"it starts with '{student[0]}' (a spreadsheet would read it as a formula)"
    elif len(student) > 64:
        why = f"it is {len(student)} characters long"
    else:
        bad = sorted({ch for ch in student if not re.match(r"[A-Za-z0-9_.@-]", ch)})
        why = "it contains " + ", ".join(repr(ch) for ch in bad[:5])
    return f"the student id '{shown(student)}' was refused: {why}. A student id is {ID_RULE}; " \
           "rename the folder (and the student, if the gradebook knows them) to grade it"


def name_problem(name: str) -> str | None:
    """Why a file name in a submission is refused (None: accepted)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8"
    if not all(_printable(ch) for ch in name):
        return "its name contains line breaks, invisible or control characters"
    if name.startswith("-"):
        return "its name starts with '-'"
    return None


def reserved_names(notebooks) -> frozenset[str]:
    """Top-level names of a submission that the grader writes itself."""
    names = set(GRADER_NAMES)
    for nb in notebooks:
        names |= {f"{nb}.html", f"{nb}_files"}
    return frozenset(names)


def parse_timestamp(text: str) -> datetime:
    """A submission time as nbgrader's exchange writes it, strictly; naive UTC. ValueError if not."""
    line = text.strip()
    if "\n" in line or "\r" in line:
        raise ValueError("it has more than one line")
    m = _TIMESTAMP.match(line)
    if not m:
        raise ValueError("it is not a date and time like '2026-12-04 23:59:00 UTC'")
    year = int(m["date"][:4])
    if not TIMESTAMP_YEARS[0] <= year <= TIMESTAMP_YEARS[1]:
        raise ValueError(f"the year {year} is outside {TIMESTAMP_YEARS[0]}-{TIMESTAMP_YEARS[1]}")
    try:
        when = datetime.strptime(f"{m['date']} {m['time']}", "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise ValueError(f"{m['date']} {m['time']} is not a valid date and time") from None
    if m["fraction"]:
        when = when.replace(microsecond=int(m["fraction"][1:].ljust(6, "0")))
    zone = m["zone"]
    if zone and zone not in ("UTC", "Z"):
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = int(zone[1:3]), int(zone[-2:])
        if hours > 14 or minutes > 59:
            raise ValueError(f"the time zone {zone} does not exist")
        when -= sign * timedelta(hours=hours, minutes=minutes)
    return when


def format_timestamp(when: datetime) -> str:
    """nbgrader's own timestamp.txt format (``Exchange.timestamp_format``), in UTC."""
    return when.strftime("%Y-%m-%d %H:%M:%S.%f") + " UTC"


def read_timestamp(folder: Path) -> datetime | None:
    """The strict timestamp of a folder's timestamp.txt (never follows a link, never raises)."""
    try:
        fd = os.open(Path(folder) / TIMESTAMP, _OPEN_FILE)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        return parse_timestamp(os.read(fd, TIMESTAMP_MAX_BYTES + 1)[:TIMESTAMP_MAX_BYTES + 1].decode("utf-8"))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


# --- one submission: listing ----------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A file or folder of a submission that the intake accepted."""

    path: str            # relative, '/'-separated
    is_dir: bool
    dev: int
    ino: int
    size: int = 0


@dataclass(frozen=True)
class Refusal:
    path: str            # relative, as the student named it (escaped for reading)
    reason: str

    @property
    def notebook(self) -> str | None:
        """The notebook this refusal is about, if it is a top-level notebook."""
        return self.path[:-len(".ipynb")] if "/" not in self.path and self.path.endswith(".ipynb") else None

    @property
    def message(self) -> str:
        return f"'{self.path}' in your submission was not accepted: {self.reason}. The grader did not read it."


@dataclass
class Listing:
    """What the intake found in one submission folder."""

    folder: Path
    entries: list[Entry] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    timestamp: datetime | None = None
    timestamp_problem: str | None = None

    @property
    def notebooks(self) -> list[str]:
        """Top-level notebook files accepted (file names)."""
        return sorted(e.path for e in self.entries if not e.is_dir and "/" not in e.path and e.path.endswith(".ipynb"))

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _mb(n: int) -> str:
    return f"{n / 2**20:g} MB"


def _open_submission(folder: Path) -> int:
    """A descriptor of ``folder``, refusing a link at its last two components (the student's
    folder and the assignment folder: the parts a submission names)."""
    parent = os.open(folder.parent, _OPEN_DIR)
    try:
        return os.open(folder.name, _OPEN_DIR, dir_fd=parent)
    finally:
        os.close(parent)


def scan(folder: str | Path, intake: Intake | None = None, notebooks=(), exchange: bool = False) -> Listing:
    """List ``folder`` (a submission's assignment folder) without following anything, and
    decide what is accepted. ``notebooks``: the assignment's notebook names (for the reserved
    names). ``exchange``: the folder is the student's own hand-in in nbgrader's exchange (read by
    collect), where the collect record is the student's forgery, not the course's record.
    Raises OSError only if ``folder`` itself cannot be opened as a real folder."""
    intake = intake or Intake()
    folder = Path(folder)
    listing = Listing(folder)
    reserved = reserved_names(notebooks) | ({COLLECT_RECORD} if exchange else set())
    root = _open_submission(folder)
    seen = total = looked = 0
    cut = False  # past max_files: folders are still read, to name the notebooks that were not
    queue = deque([("", root, 0)])
    try:
        while queue:
            rel, fd, depth = queue.popleft()
            try:
                batch = []
                with os.scandir(fd) as it:  # names only (no stat): cheap, bounded by NAMES_LIMIT in all
                    for entry in it:
                        looked += 1
                        if looked > NAMES_LIMIT:
                            listing.refused.append(Refusal(rel or ".", f"the submission has more than {NAMES_LIMIT} "
                                                                       "names in all; the rest were not looked at"))
                            queue.clear()
                            break
                        batch.append(entry)
                # Notebooks first (the top folder's first of all), so that junk cannot crowd them out of the
                # limits, however many names come before them in the folder.
                batch.sort(key=lambda e: (not looks_like_notebook(e.name), e.name))
                for entry in batch:
                    if not cut and seen >= intake.max_files:
                        cut = True
                        listing.refused.append(Refusal(rel or ".", f"the submission has more than {intake.max_files} "
                                                                   f"files and folders (the grader's limit "
                                                                   f"c.Intake.max_files); the rest were not read. "
                                                                   f"{NOTEBOOKS_FIRST}"))
                    if cut:
                        _look_past_the_limit(fd, entry, rel, depth, intake, queue, listing)
                        continue
                    seen += 1
                    accepted = _check_entry(fd, entry, rel, depth, intake, reserved, total, listing)
                    if isinstance(accepted, Entry):
                        total += accepted.size
                        listing.entries.append(accepted)
                    elif isinstance(accepted, tuple):  # a folder to read next
                        listing.entries.append(accepted[0])
                        queue.append((accepted[0].path + "/", accepted[1], depth + 1))
            finally:
                os.close(fd)
    finally:
        for _, fd, _ in queue:  # folders left unread by an exception or the names limit
            with contextlib.suppress(OSError):
                os.close(fd)
    return listing


NAMES_LIMIT = 100_000  # names of one submission looked at in all (past max_files only to find notebooks)
NOTEBOOKS_FIRST = "Notebooks at the top of the submission are counted first."
MAX_NAMED_PAST_LIMIT = 20


def looks_like_notebook(name: str) -> bool:
    """A name that may be meant as a notebook ('x.ipynb', 'X.IPYNB ', 'x.ipynb.txt')."""
    return ".ipynb" in name.casefold()


def _look_past_the_limit(fd: int, entry: os.DirEntry, rel: str, depth: int, intake: Intake, queue: deque,
                         listing: Listing) -> None:
    """Past max_files nothing more is accepted; folders are still read (never through a link) so
    that a notebook among the junk is named, with why it was not graded."""
    try:
        is_dir = entry.is_dir(follow_symlinks=False)
    except OSError:
        return
    if is_dir and depth + 1 <= intake.max_depth and entry.name != ".ipynb_checkpoints":
        with contextlib.suppress(OSError):
            queue.append((f"{rel}{entry.name}/", os.open(entry.name, _OPEN_DIR, dir_fd=fd), depth + 1))
    elif not is_dir and looks_like_notebook(entry.name) and \
            sum(r.reason.startswith("it was not read") for r in listing.refused) < MAX_NAMED_PAST_LIMIT:
        listing.refused.append(Refusal(f"{rel}{shown(entry.name, 200)}", (
            f"it was not read: the submission has more than {intake.max_files} files and folders (the grader's "
            f"limit c.Intake.max_files) and it came after them. {NOTEBOOKS_FIRST} Hand in your notebooks at the "
            "top of the submission, without the extra files")))


def _check_entry(fd: int, entry: os.DirEntry, rel: str, depth: int, intake: Intake, reserved, total: int,
                 listing: Listing):
    """An Entry (a file accepted), (Entry, descriptor) for a folder accepted, or None (refused
    or handled: the refusal is in ``listing``)."""
    path = f"{rel}{shown(entry.name, 200)}"

    def refuse(why: str):
        listing.refused.append(Refusal(path, why))

    why = name_problem(entry.name)
    if why is None and rel == "" and entry.name in reserved:
        why = "this name is used by the grader for its own records"
    if why:
        return refuse(why)
    if rel == "" and entry.name == TIMESTAMP:
        return _read_timestamp_entry(fd, entry, listing)
    if rel == "" and entry.name == COLLECT_RECORD:
        return _read_collect_record(fd, entry, listing)
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError as err:
        return refuse(f"it could not be read ({err.strerror})")
    if stat.S_ISDIR(st.st_mode):
        if rel == "" and entry.name.endswith(".ipynb"):
            return refuse("it is a folder named like a notebook")
        if depth + 1 > intake.max_depth:
            return refuse(f"folders are nested more than {intake.max_depth} deep (the grader's limit c.Intake.max_depth)")
        try:
            sub = os.open(entry.name, _OPEN_DIR, dir_fd=fd)
        except OSError as err:
            return refuse("it became a symbolic link" if err.errno == errno.ELOOP else
                          f"it could not be opened ({err.strerror})")
        sst = os.fstat(sub)
        if (sst.st_dev, sst.st_ino) != (st.st_dev, st.st_ino):
            os.close(sub)
            return refuse("it changed while it was being read")
        return Entry(path, True, st.st_dev, st.st_ino), sub
    if not stat.S_ISREG(st.st_mode):
        why = f"it is {_kind(st.st_mode)}"
        if stat.S_ISLNK(st.st_mode):
            with contextlib.suppress(OSError):
                why += f" (to '{shown(os.readlink(entry.name, dir_fd=fd), 120)}')"
        return refuse(why)
    if st.st_nlink > 1:
        return refuse("it is a hard link (the same file is elsewhere on the disk)")
    if st.st_size > intake.max_file_size:
        return refuse(f"it is larger than {_mb(intake.max_file_size)} ({_mb(st.st_size)}; the grader's limit "
                      "c.Intake.max_file_size)")
    if total + st.st_size > intake.max_total_size:
        return refuse(f"the submission is larger than {_mb(intake.max_total_size)} in total (the grader's limit "
                      f"c.Intake.max_total_size). {NOTEBOOKS_FIRST}")
    return Entry(path, False, st.st_dev, st.st_ino, st.st_size)


def _read_timestamp_entry(dir_fd: int, entry: os.DirEntry, listing: Listing) -> None:
    """timestamp.txt: parsed here, never copied as it is (the copy gets the canonical form)."""
    problem = None
    try:
        st = entry.stat(follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            problem = f"it is {_kind(st.st_mode) if not stat.S_ISREG(st.st_mode) else 'a hard link'}"
        elif st.st_size > TIMESTAMP_MAX_BYTES:
            problem = f"it is longer than {TIMESTAMP_MAX_BYTES} bytes"
        else:
            fd = os.open(entry.name, _OPEN_FILE, dir_fd=dir_fd)
            try:
                if (os.fstat(fd).st_ino, os.fstat(fd).st_dev) != (st.st_ino, st.st_dev):
                    problem = "it changed while it was being read"
                else:
                    listing.timestamp = parse_timestamp(os.read(fd, TIMESTAMP_MAX_BYTES + 1).decode("utf-8"))
            finally:
                os.close(fd)
    except UnicodeDecodeError:
        problem = "it is not text"
    except ValueError as err:
        problem = str(err)
    except OSError as err:
        problem = f"it could not be read ({err.strerror})"
    if problem:
        listing.timestamp = None
        listing.timestamp_problem = (
            f"The submission time in {TIMESTAMP} could not be read: {problem}. The submission is graded "
            "as if it had no time stamp (on time); the TA can set the right time.")


def _read_collect_record(dir_fd: int, entry: os.DirEntry, listing: Listing) -> None:
    """The course collect's record of what it refused in the exchange: each becomes a refusal of
    this listing (so it is recorded for the student, as the intake's own are)."""
    data = None
    with contextlib.suppress(OSError, ValueError, RecursionError):
        fd = os.open(entry.name, _OPEN_FILE, dir_fd=dir_fd)
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_size <= COLLECT_RECORD_MAX_BYTES:
                data = json.loads(os.read(fd, COLLECT_RECORD_MAX_BYTES + 1).decode("utf-8"))
        finally:
            os.close(fd)
    items = data.get("refused") if isinstance(data, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("path"), str)
                                              and isinstance(i.get("reason"), str) for i in items):
        listing.refused.append(Refusal(COLLECT_RECORD, "the exchange's record of what collect refused could not "
                                                       "be read"))
        return
    for item in items[:MAX_RECORDED * 2]:
        listing.refused.append(Refusal(shown(item["path"], 200),
                                       f"{shown(item['reason'], 400)} (found when it was collected from the exchange)"))


def write_collect_record(dest: Path, refused: list[Refusal]) -> None:
    """What collect refused of a submission, into the collected copy at ``dest`` (which collect
    has just made): read back by ``scan`` when the submission is graded."""
    if not refused:
        return
    data = json.dumps({"refused": [{"path": r.path, "reason": r.reason} for r in refused[:MAX_RECORDED * 2]]},
                      indent=1).encode()
    fd = os.open(Path(dest) / COLLECT_RECORD, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with open(fd, "wb") as f:
        f.write(data)


# --- one submission: the copy -----------------------------------------------------------------------


def copy(listing: Listing, dest: str | Path) -> None:
    """Copy what ``listing`` accepted into ``dest`` (made here, must not exist), opening every
    file without following links and checking that it is still the file that was listed; a
    file that changed is moved to ``listing.refused``. Writes the canonical timestamp.txt."""
    dest = Path(dest)
    dest.mkdir(mode=0o755, parents=False)
    root = os.open(listing.folder, _OPEN_DIR)
    folders = {"": root}
    try:
        kept = []
        for entry in listing.entries:
            parent, _, name = entry.path.rpartition("/")
            parent_fd = folders.get(parent)
            if parent_fd is None:  # its folder was dropped below
                continue
            target = dest / entry.path
            if entry.is_dir:
                try:
                    fd = os.open(name, _OPEN_DIR, dir_fd=parent_fd)
                except OSError as err:
                    listing.refused.append(Refusal(entry.path, f"it could not be opened ({err.strerror})"))
                    continue
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != (entry.dev, entry.ino):
                    os.close(fd)
                    listing.refused.append(Refusal(entry.path, "it changed while it was being read"))
                    continue
                folders[entry.path] = fd
                target.mkdir(mode=0o755)
                kept.append(entry)
                continue
            why = _copy_file(parent_fd, name, entry, target)
            if why:
                listing.refused.append(Refusal(entry.path, why))
            else:
                kept.append(entry)
        listing.entries = kept
        if listing.timestamp is not None:
            (dest / TIMESTAMP).write_text(format_timestamp(listing.timestamp) + "\n")
    finally:
        for fd in folders.values():
            os.close(fd)


def _copy_file(parent_fd: int, name: str, entry: Entry, target: Path) -> str | None:
    """Copy one listed file; the reason if it is refused after all (nothing left at ``target``)."""
    try:
        fd = os.open(name, _OPEN_FILE, dir_fd=parent_fd)
    except OSError as err:
        return "it became a symbolic link" if err.errno == errno.ELOOP else f"it could not be opened ({err.strerror})"
    why = None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (entry.dev, entry.ino) \
                or st.st_nlink > 1 or st.st_size != entry.size:
            return "it changed while it was being read"
        os.set_blocking(fd, True)
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            left = entry.size
            while left > 0 and why is None:
                chunk = os.read(fd, min(_CHUNK, left))
                if not chunk:
                    why = "it changed while it was being read"
                os.write(out, chunk)
                left -= len(chunk)
            if why is None and os.read(fd, 1):
                why = "it changed while it was being read"
        finally:
            os.close(out)
        if why is None:
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    except OSError as err:
        why = f"it could not be read ({err.strerror})"
    finally:
        os.close(fd)
    if why is not None:
        target.unlink(missing_ok=True)
    return why


def take(source: str | Path, dest: str | Path, intake: Intake | None = None, notebooks=()) -> Listing:
    """``scan`` then ``copy``: the submission at ``source`` as data, into ``dest``."""
    listing = scan(source, intake, notebooks)
    copy(listing, dest)
    return listing




def record(autograded: Path, listing: Listing) -> None:
    """Record what the intake refused in ``autograded``'s grading-problems.json."""
    for refusal in listing.refused[:MAX_RECORDED]:
        problems.record(autograded, "refused-file", refusal.notebook, None, refusal.message)
    if len(listing.refused) > MAX_RECORDED:
        problems.record(autograded, "refused-file", None, None,
                        f"{len(listing.refused) - MAX_RECORDED} more files or folders of your submission were "
                        "not accepted either")
    if listing.timestamp_problem:
        problems.record(autograded, "bad-timestamp", None, None, listing.timestamp_problem)


# --- the class ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    student: str
    assignment: str
    folder: Path


@dataclass(frozen=True)
class RefusedFolder:
    name: str            # the folder's name as it is (may hold anything but '/' and NUL)
    assignment: str
    reason: str

    @property
    def student(self) -> str:
        """The name, escaped for people to read."""
        return shown(self.name)


def class_list(layout, assignment: str = "*", student: str = "*") -> tuple[list[Submission], list[RefusedFolder]]:
    """The submissions of ``assignment`` (a name, or a glob as nbgrader's argument may be) in
    the submitted folder, listed without globbing paths or following links, and the folders
    that cannot be graded, with why. ``student`` filters ids as nbgrader's ``--student`` does."""
    coursedir = layout.coursedir
    if os.path.normpath(coursedir.directory_structure) != os.path.normpath(DIRECTORY_STRUCTURE):
        raise IntakeError(f"coursekit.submissions.intake reads the course's folders as {DIRECTORY_STRUCTURE!r}; this course's "
                          f"CourseDirectory.directory_structure is {coursedir.directory_structure!r}")
    top = Path(coursedir.root) / coursedir.submitted_directory
    found: list[Submission] = []
    refused: list[RefusedFolder] = []
    try:
        entries = sorted(os.scandir(top), key=lambda e: e.name)
    except FileNotFoundError:
        return found, refused
    for entry in entries:
        if not fnmatch.fnmatchcase(entry.name, student):
            continue
        if entry.is_symlink():
            refused.append(RefusedFolder(entry.name, assignment, f"submitted/{shown(entry.name)} is a symbolic link"))
            continue
        if not entry.is_dir(follow_symlinks=False):
            continue  # a stray file beside the students' folders
        try:
            fd = os.open(Path(top, entry.name), _OPEN_DIR)  # O_NOFOLLOW: a link swapped in is not followed
            try:
                inside = sorted((e.name, e.stat(follow_symlinks=False).st_mode) for e in os.scandir(fd)
                                if fnmatch.fnmatchcase(e.name, assignment))
            finally:
                os.close(fd)
        except OSError:
            continue
        why = id_problem(entry.name)
        for name, mode in inside:
            if why is not None:
                refused.append(RefusedFolder(entry.name, name, why))
            elif not stat.S_ISDIR(mode):
                refused.append(RefusedFolder(entry.name, name, f"submitted/{entry.name}/{shown(name)} is "
                                                               f"{_kind(mode)}, not a folder"))
            else:
                found.append(Submission(entry.name, name, Path(top, entry.name, name)))
    return found, refused


def unfinished(autograded: Path) -> bool:
    """Whether ``autograded`` is what a grading that was stopped half-way left."""
    return os.path.lexists(Path(autograded) / GRADING_MARK)


# --- nbgrader autograde -------------------------------------------------------------------------------


class IntakeAutograde(Autograde):
    """nbgrader's Autograde, reading submissions only through the intake.

    - which submissions and notebooks exist comes from ``class_list`` and ``scan`` (no glob of
      student paths; a refused folder is logged and reported, never an abort);
    - the "sanitize" pass reads each submission from its intake copy (in a private folder of the
      course, ``.coursekit-intake-<pid>-*/``), made when nbgrader decides to grade it;
    - before anything is deleted (``--force``), the gradebook is checked: a damaged one stops the
      command with a clear message;
    - while a submission is graded its autograded folder holds ``.coursekit-grading``; a folder
      that still has it was left by a killed run, and is graded again by the same command;
    - under the class runner (``Intake.taken``), the one submission of its private course copy is
      the runner's intake copy: the runner listed the class and scanned the submission (and
      records what it refused), so it is graded from that copy as it is, without a second
      listing, scan or copy.
    """

    area: Path | None = None

    def start(self) -> None:
        self.intake = Intake(parent=self)
        if not self.intake.enabled:
            self.log.warning("coursekit intake: OFF (c.Intake.enabled = False): submissions are read as paths and "
                             "links followed, as stock nbgrader does")
            return super().start()
        from coursekit.core import gradebook
        from coursekit.core.layout import CourseLayout

        self.layout = CourseLayout.of(self.coursedir)
        damage = gradebook.planted(self.layout.db_url) or gradebook.damage(self.layout.db_url)
        if damage:
            self.log.error(damage)
            raise NbGraderException(damage)
        root = Path(self.coursedir.root)
        if self.intake.taken:
            self.listings, self.refused = {}, []
            return super().start()
        from coursekit.execution.sandbox import sweep_leftovers

        sweep_leftovers(root, AREA_PREFIX)  # the intake copies of nbgrader commands that were killed
        self.area = Path(tempfile.mkdtemp(prefix=f"{AREA_PREFIX}{os.getpid()}-", dir=root))
        self.listings: dict[tuple[str, str], Listing] = {}
        self.refused: list[RefusedFolder] = []
        try:
            super().start()
        finally:
            shutil.rmtree(self.area, ignore_errors=True)
            self.area = None
        if self.refused:  # the rest of the class is graded; the command still says it is not done
            msg = (f"{len(self.refused)} submitted folder(s) were not graded (see 'coursekit intake' above): "
                   + ", ".join(f"'{f.student}'" for f in self.refused))
            self.log.error(msg)
            raise NbGraderException(msg)

    @property
    def _input_directory(self) -> str:
        if self._sanitizing and self.area is not None:
            return os.path.relpath(self.area, self.coursedir.root)
        return super()._input_directory

    def _expected(self, assignment: str) -> list[str]:
        from nbgrader.api import MissingEntry

        with self.layout.gradebook() as gb:
            try:
                return sorted(nb.name for nb in gb.find_assignment(assignment).notebooks)
            except MissingEntry:
                return []

    def _init_taken_notebooks(self) -> None:
        """``Intake.taken``: the notebooks of the runner's copy of one submission, read as they are."""
        self.assignments = {}
        self.notebooks = []
        assignment, student = self.coursedir.assignment_id, self.coursedir.student_id
        folder = Path(self.coursedir.format_path(self.coursedir.submitted_directory, student, assignment))
        if id_problem(student) is not None or not folder.is_dir() or folder.is_symlink():
            msg = f"coursekit intake: Intake.taken is for the class runner's copy of one submission, not {folder}"
            self.log.error(msg)
            raise NbGraderException(msg)
        wanted = self.coursedir.notebook_id
        present = sorted(e.name[:-len(".ipynb")] for e in os.scandir(folder)
                         if e.name.endswith(".ipynb") and e.is_file(follow_symlinks=False))  # as Listing.notebooks
        names = [n for n in present if fnmatch.fnmatchcase(n, wanted)]
        if not names:  # graded all the same (from placeholders), so that the student learns why
            names = [n for n in self._expected(assignment) if fnmatch.fnmatchcase(n, wanted)]
        if names:
            self.assignments[str(folder)] = [str(folder / f"{n}.ipynb") for n in names]
        else:
            msg = f"No submissions of '{assignment}' to grade in {self.coursedir.submitted_directory}/"
            self.log.error(msg)
            raise NbGraderException(msg)

    def init_notebooks(self) -> None:
        intake = getattr(self, "intake", None)
        if intake is not None and intake.enabled and intake.taken:
            return self._init_taken_notebooks()
        if self.area is None:
            return super().init_notebooks()
        self.assignments = {}
        self.notebooks = []
        try:
            found, self.refused = class_list(self.layout, self.coursedir.assignment_id, self.coursedir.student_id)
        except IntakeError as err:
            raise NbGraderException(str(err)) from None
        for folder in self.refused:
            self.log.error("coursekit intake: submitted/%s/%s is not graded: %s", folder.student,
                           shown(folder.assignment), folder.reason)
        expected: dict[str, list[str]] = {}
        for sub in found:
            if sub.assignment not in expected:
                expected[sub.assignment] = self._expected(sub.assignment)
            try:
                listing = scan(sub.folder, self.intake, expected[sub.assignment])
            except OSError as err:
                self.log.error("coursekit intake: %s is not graded: %s", sub.folder, err)
                continue
            self.listings[(sub.assignment, sub.student)] = listing
            copy_at = Path(self.coursedir.format_path(self._input_directory, sub.student, sub.assignment))
            wanted = self.coursedir.notebook_id
            names = [n[:-len(".ipynb")] for n in listing.notebooks if fnmatch.fnmatchcase(n[:-len(".ipynb")], wanted)]
            if not names:  # graded all the same (from placeholders), so that the student learns why
                names = [n for n in expected[sub.assignment] if fnmatch.fnmatchcase(n, wanted)]
            if names:
                self.assignments[str(copy_at)] = [str(copy_at / f"{n}.ipynb") for n in names]
        if not self.assignments:
            msg = f"No submissions of '{self.coursedir.assignment_id}' to grade in {self.coursedir.submitted_directory}/"
            self.log.error(msg)
            raise NbGraderException(msg)

    def init_destination(self, assignment_id: str, student_id: str) -> bool:
        listing = self.listings.get((assignment_id, student_id)) if self.area is not None else None
        if listing is None:
            return super().init_destination(assignment_id, student_id)
        for old in self.area.iterdir():  # the previous submission's copy
            shutil.rmtree(old, ignore_errors=True)
        copy_at = Path(self._format_source(assignment_id, student_id))
        copy_at.parent.mkdir(parents=True, exist_ok=True)
        copy_at.mkdir()
        if listing.timestamp is not None:  # nbgrader compares it with the autograded one
            (copy_at / TIMESTAMP).write_text(format_timestamp(listing.timestamp) + "\n")
        dest = Path(self._format_dest(assignment_id, student_id))
        if unfinished(dest):
            self.log.warning("coursekit intake: %s was left half-graded by a grading that was stopped; "
                             "grading it again", dest)
            shutil.rmtree(dest)
        if not super().init_destination(assignment_id, student_id):
            return False
        shutil.rmtree(copy_at)
        copy(listing, copy_at)
        return True

    def init_assignment(self, assignment_id: str, student_id: str) -> None:
        listing = self.listings.get((assignment_id, student_id)) if self.area is not None else None
        dest = Path(self._format_dest(assignment_id, student_id))
        if listing is not None:
            dest.mkdir(parents=True, exist_ok=True)
            (dest / GRADING_MARK).write_text(f"being graded by nbgrader autograde (pid {os.getpid()})\n")
        super().init_assignment(assignment_id, student_id)
        if listing is not None:
            record(dest, listing)

    def set_permissions(self, assignment_id: str, student_id: str) -> None:
        super().set_permissions(assignment_id, student_id)
        if self.area is not None:
            Path(self._format_dest(assignment_id, student_id), GRADING_MARK).unlink(missing_ok=True)


def install() -> None:
    """Make ``nbgrader autograde`` (and formgrader's autograde button) use ``IntakeAutograde``.

    nbgrader 0.9.6's AutogradeApp makes its converter from a module-level name, with no option
    to choose the class; ``nbgrader_config.py`` is loaded by every nbgrader command before it
    starts, so replacing that name there is the earliest point at which the course decides how
    submissions are found (the pre-convert hook runs after nbgrader has globbed the students).
    ``coursekit.submissions.sanitize.SubmissionExporter`` refuses to grade when the converter is not an
    ``IntakeAutograde`` and the intake is on, so a future nbgrader that stops reading this name
    cannot silently grade without the intake."""
    from nbgrader.apps import autogradeapp

    autogradeapp.Autograde = IntakeAutograde


if __name__ == "__main__":  # pragma: no cover - a look at one folder: python -m coursekit.submissions.intake <folder>
    result = scan(sys.argv[1])
    for e in result.entries:
        print("ok     ", e.path)
    for r in result.refused:
        print("refused", r.path, "-", r.reason)
    if result.timestamp_problem:
        print(result.timestamp_problem)
