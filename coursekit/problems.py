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
    "too-long": Kind("Cut for length", "a written answer, cell or output over the size limits (coursekit.bounds) was cut"),
    "errors-in-answers": Kind("Errors in answers", "answer cells that raised errors (class report)", recorded=False),
    "not-autograded": Kind("Not autograded", "submitted, but no autograded notebook (class report)", recorded=False),
}


def label(kind: str) -> str:
    """The words for ``kind``; an unknown kind (from an older record) as it is."""
    return KINDS[kind].label if kind in KINDS else str(kind)


def path_for(autograded_submission: Path) -> Path:
    return Path(autograded_submission) / FILENAME


def load(autograded_submission: Path) -> list[dict]:
    try:
        return json.loads(path_for(autograded_submission).read_text())
    except (OSError, ValueError):
        return []


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
