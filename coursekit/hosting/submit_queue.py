"""The grading-on-submit service's queue: a journal on disk that survives a crash.

One job: which hand-in to grade next, and what happened to each. Pure Python, no nbgrader.

- **Durable**: every state change is one JSON line appended to ``journal.jsonl`` in a private
  folder (0700, opened with ``O_NOFOLLOW``; a link planted in its place is refused), written
  with ``write`` + ``fsync`` before the change counts. Replaying the lines gives the state back
  after a crash or a restart; a line torn by a crash (no final newline, not JSON) is ignored, so
  the change it described did not happen.
- **States**: queued -> grading -> done (or queued -> replaced). A hand-in is identified by
  (student, timestamp): one that is done is never graded again, whatever is offered later.
  One found "grading" at restart was interrupted: it is queued again, once; found "grading"
  a second time, it is given up (done, not ok) rather than crash the service forever.
- **A resubmission replaces** the student's hand-in that is still queued (not one being graded).
- **Fair order**: a student has at most one queued hand-in (above), and the next one to grade is
  the oldest queued among students who are not being graded right now and are under their rate
  limit: a student who floods the queue delays another by at most the grading in progress.
- **Rate limit**: at most ``max_per_hour`` gradings started per student in any sliding hour
  (a retry after a crash is the same grading, not a new one); ``next_possible`` says when the
  next one may start.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field

JOURNAL = "journal.jsonl"
HOUR = 3600.0
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class QueueError(RuntimeError):
    pass


@dataclass
class Entry:
    student: str
    stamp: str        # the hand-in's timestamp as nbgrader wrote it into the folder's name
    name: str         # the inbound folder's name
    state: str        # queued, grading, done, replaced
    queued_at: float
    starts: list[float] = field(default_factory=list)  # when each grading attempt started
    ok: bool | None = None
    note: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.student, self.stamp)


def private_folder(path: str) -> int:
    """``path`` as a folder of this account only (made 0700 if missing); its descriptor. A link
    or a folder another account owns or others may enter is refused."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    fd = os.open(path, _DIR)  # O_NOFOLLOW: a link in its place raises ELOOP/ENOTDIR
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o077:
        os.close(fd)
        raise QueueError(f"{path} must be a folder of this account only (mode 0700): refusing to keep the journal there")
    return fd


class Journal:
    """The queue's state, read from and written to ``folder``/journal.jsonl."""

    def __init__(self, folder: str, max_per_hour: int = 4, clock=None):
        import time

        self.folder = folder
        self.max_per_hour = max_per_hour
        self.clock = clock or time.time
        self.entries: dict[tuple[str, str], Entry] = {}
        self.dir_fd = private_folder(folder)
        self._replay()
        self.fd = os.open(JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                          dir_fd=self.dir_fd)
        os.fsync(self.dir_fd)  # the journal's name itself is durable
        self._recover()

    def close(self) -> None:
        for fd in (self.fd, self.dir_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    # --- the file ---

    def _replay(self) -> None:
        try:
            fd = os.open(JOURNAL, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.dir_fd)
        except FileNotFoundError:
            return
        with open(fd, "rb") as f:
            data = f.read()
        for line in data.split(b"\n")[:-1]:  # the part after the last newline was torn by a crash
            try:
                record = json.loads(line)
            except ValueError:
                continue
            self._apply(record)

    def _append(self, record: dict) -> None:
        os.write(self.fd, (json.dumps(record, sort_keys=True) + "\n").encode())
        os.fsync(self.fd)
        self._apply(record)

    def _apply(self, r: dict) -> None:
        key = (r["student"], r["stamp"])
        op = r["op"]
        if op == "queued":
            self.entries[key] = Entry(r["student"], r["stamp"], r["name"], "queued", r["at"])
            return
        entry = self.entries.get(key)
        if entry is None:
            return
        if op == "grading":
            entry.state = "grading"
            entry.starts.append(r["at"])
        elif op == "requeued":
            entry.state = "queued"
        elif op == "replaced":
            entry.state, entry.note = "replaced", r.get("note", "")
        elif op == "done":
            entry.state, entry.ok, entry.note = "done", r.get("ok"), r.get("note", "")

    def _recover(self) -> None:
        """A hand-in found "grading" was interrupted (crash, kill, restart): queued again once."""
        for entry in list(self.entries.values()):
            if entry.state != "grading":
                continue
            if len(entry.starts) >= 2:
                self.finish(entry.key, False, "grading was interrupted twice: given up (the staff's grading is unaffected)")
            else:
                self._append({"op": "requeued", "student": entry.student, "stamp": entry.stamp, "at": self.clock()})

    # --- the queue ---

    def offer(self, student: str, stamp: str, name: str) -> bool:
        """A hand-in found in the exchange. Queued unless already known; a queued hand-in of the
        same student is replaced by it. True when it was queued."""
        if (student, stamp) in self.entries:
            return False
        newer_known = [e for e in self.entries.values() if e.student == student and e.stamp > stamp]
        if newer_known:  # an older hand-in seen late (e.g. after a restart): the newer one counts
            return False
        for entry in self.entries.values():
            if entry.student == student and entry.state == "queued":
                self._append({"op": "replaced", "student": student, "stamp": entry.stamp, "at": self.clock(),
                              "note": f"replaced by the hand-in of {stamp}"})
        self._append({"op": "queued", "student": student, "stamp": stamp, "name": name, "at": self.clock()})
        return True

    def state(self, student: str, stamp: str) -> str | None:
        entry = self.entries.get((student, stamp))
        return entry.state if entry else None

    def in_window(self, student: str, now: float) -> list[float]:
        """When the student's gradings of the last hour started (first attempts only)."""
        return sorted(e.starts[0] for e in self.entries.values()
                      if e.student == student and e.starts and now - e.starts[0] < HOUR)

    def next_possible(self, student: str, now: float | None = None) -> float:
        """The earliest time a new grading of ``student`` may start (``now`` if it may now)."""
        now = self.clock() if now is None else now
        starts = self.in_window(student, now)
        if len(starts) < self.max_per_hour:
            return now
        return starts[len(starts) - self.max_per_hour] + HOUR

    def waiting(self) -> list[Entry]:
        """The queued hand-ins, oldest first."""
        return sorted((e for e in self.entries.values() if e.state == "queued"), key=lambda e: (e.queued_at, e.student))

    def next(self, now: float | None = None) -> Entry | None:
        """The hand-in to grade now: the oldest queued one of a student who is not being graded
        and is under the limit (a retry after a crash is not limited: it was counted)."""
        now = self.clock() if now is None else now
        busy = {e.student for e in self.entries.values() if e.state == "grading"}
        for entry in self.waiting():
            if entry.student in busy:
                continue
            if entry.starts or self.next_possible(entry.student, now) <= now:
                return entry
        return None

    def start(self, key: tuple[str, str]) -> None:
        entry = self.entries[key]
        if entry.state != "queued":
            raise QueueError(f"{key} is {entry.state}, not queued")
        self._append({"op": "grading", "student": key[0], "stamp": key[1], "at": self.clock()})

    def finish(self, key: tuple[str, str], ok: bool, note: str = "") -> None:
        self._append({"op": "done", "student": key[0], "stamp": key[1], "ok": bool(ok), "note": note,
                      "at": self.clock()})
