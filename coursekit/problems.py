"""Problems found in a submission while grading it, kept beside the autograded notebooks.

The submission repairs (coursekit.sanitize), the grading runner and the sandbox record what
they found or fixed here; the feedback tells the student, the class report lists it for TAs.
One JSON file per graded submission: ``autograded/<student>/<assignment>/grading-problems.json``,
a list of ``{"kind", "notebook", "cell", "message"}``. ``kind`` is one of KINDS.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

FILENAME = "grading-problems.json"
KINDS = {
    "invalid-notebook",     # not JSON / not a notebook: graded as missing
    "old-nbformat",         # upgraded before grading
    "renamed-notebook",     # found under another name and graded as the expected one
    "missing-notebook",     # not submitted: scored 0
    "duplicate-cell",       # a copied graded cell: the copy was ignored
    "deleted-test-cell",    # a check cell was deleted: restored and run
    "tampered-cell",        # a read-only cell was edited: the original was restored
    "late",                 # submitted after the due date
    "timeout",              # a cell ran past the per-cell time limit
    "error",                # the notebook failed to execute or autograde
    "sandbox",              # the sandbox stopped something (memory, processes, files)
    "stray-file",           # an extra file in the submission that the grader ignored
}


def path_for(autograded_submission: Path) -> Path:
    return Path(autograded_submission) / FILENAME


def load(autograded_submission: Path) -> list[dict]:
    try:
        return json.loads(path_for(autograded_submission).read_text())
    except (OSError, ValueError):
        return []


def record(autograded_submission: Path, kind: str, notebook: str | None, cell: str | None, message: str) -> None:
    if kind not in KINDS:
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
