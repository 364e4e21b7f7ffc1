"""Problems found in a submission while grading it, kept beside the autograded notebooks.

The submission repairs (coursekit.sanitize), the grading runner and the sandbox record what
they found or fixed here; the feedback tells the student, the class report lists it for TAs.
One JSON file per graded submission: ``autograded/<student>/<assignment>/grading-problems.json``,
a list of ``{"kind", "notebook", "cell", "message"}``. ``kind`` is one of KINDS, which also
holds the kinds the class report finds by itself, and every kind's label.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

FILENAME = "grading-problems.json"


@dataclass(frozen=True)
class Kind:
    label: str              # what students (feedback) and TAs read
    meaning: str
    recorded: bool = True   # False: found by the class report itself, never in grading-problems.json


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
                                              "the submission: the grader did not read it (coursekit.intake)"),
    "bad-timestamp": Kind("Submission time unreadable", "timestamp.txt could not be read strictly: graded as if it "
                                                        "had none (on time)"),
    "refused-id": Kind("Student folder refused", "a submitted folder whose name cannot be a student id, or that "
                                                 "is a link: not graded (class report and runner)", recorded=False),
    "unreadable-record": Kind("Problem record damaged", "grading-problems.json could not be read (class report)",
                              recorded=False),
    "too-long": Kind("Cut for length", "a written answer, cell or output over the size limits (coursekit.bounds) was cut"),
    "errors-in-answers": Kind("Errors in answers", "answer cells that raised errors (class report)", recorded=False),
    "not-autograded": Kind("Not autograded", "submitted, but no autograded notebook (class report)", recorded=False),
}


def label(kind: str) -> str:
    """The words for ``kind``; an unknown kind (from an older record) as it is."""
    return KINDS[kind].label if kind in KINDS else str(kind)


def path_for(autograded_submission: Path) -> Path:
    return Path(autograded_submission) / FILENAME


FIELDS = ("kind", "notebook", "cell", "message")
MAX_BYTES = 1 << 20  # a record the grader writes is a few kB


def load(autograded_submission: Path) -> list[dict]:
    """The recorded problems; entries that are not what ``record`` writes are left out (the
    file is the grader's, but a reader must never crash on it: ``load_checked`` says if it was
    damaged)."""
    return load_checked(autograded_submission)[0]


def load_checked(autograded_submission: Path) -> tuple[list[dict], bool]:
    """(well-formed entries, whether the file was damaged). Never follows a link."""
    path = path_for(autograded_submission)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return [], False
    except OSError:
        return [], True
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return [], True
        raw = os.read(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)
    try:
        data = json.loads(raw.decode("utf-8")) if len(raw) <= MAX_BYTES else None
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, list):
        return [], True
    entries = [e for e in data if _well_formed(e)]
    return [{k: e[k] for k in FIELDS} for e in entries], len(entries) != len(data)


def _well_formed(entry) -> bool:
    return isinstance(entry, dict) and set(FIELDS) <= set(entry) and isinstance(entry["kind"], str) \
        and isinstance(entry["message"], str) and all(entry[k] is None or isinstance(entry[k], str)
                                                       for k in ("notebook", "cell"))


def record(autograded_submission: Path, kind: str, notebook: str | None, cell: str | None, message: str) -> None:
    if kind not in KINDS or not KINDS[kind].recorded:
        raise ValueError(f"unknown problem kind {kind!r}; add it to coursekit.problems.KINDS")
    entries = load(autograded_submission)
    entry = {"kind": kind, "notebook": notebook, "cell": cell, "message": message}
    if entry in entries:
        return
    entries.append(entry)
    target = path_for(autograded_submission)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries, indent=1) + "\n")
    os.replace(tmp, target)
