"""Submissions for tests: what a student hands in, made from the released notebooks.

Every test that needs a submission builds it here (the reference submissions of
tests/fixtures/build_submissions.py too), so that "the release with these answers, handed in
late" means the same thing in every test file:

    nbs = builder.release()                              # {notebook name: notebook}
    builder.set_answer(nbs["fashion_mnist"], "f1_load", "x = 1")
    sub = builder.Submission(nbs, timestamp=builder.late_by(course.layout, hours=30))
    sub.submit(course, "alice")                          # into submitted/alice/week2/

Where things are comes from ``coursekit.core.layout``: ``REPO`` is this repository read as a course
(its source/ and release/), a course copy's own layout is ``course.layout``.
"""

from __future__ import annotations

import shutil
import textwrap
from datetime import datetime, timedelta
from pathlib import Path

import nbformat
from dateutil.parser import parse as parse_date

from coursekit.core.course import REPO_ROOT
from coursekit.core.layout import CourseLayout
from coursekit.core.notebook import grade_id

ASSIGNMENT = "week2"
NOTEBOOKS = ("fashion_mnist", "mnist")
REPO = CourseLayout.load(REPO_ROOT)

Notebooks = dict  # notebook name -> NotebookNode (a missing key means "not submitted")


# --- notebooks -------------------------------------------------------------------------------


def read(path: Path):
    return nbformat.read(path, as_version=4)


def release(layout: CourseLayout = REPO, names=NOTEBOOKS) -> Notebooks:
    """The released notebooks, as a student fetches them."""
    return {name: read(layout.release(ASSIGNMENT) / f"{name}.ipynb") for name in names}


def source(layout: CourseLayout = REPO, names=NOTEBOOKS) -> Notebooks:
    """The instructor's notebooks (solutions, hidden checks, mark schemes)."""
    return {name: read(layout.source(ASSIGNMENT) / f"{name}.ipynb") for name in names}


def cell(nb, gid: str):
    for c in nb.cells:
        if grade_id(c) == gid:
            return c
    raise KeyError(gid)


def index_of(nb, gid: str) -> int:
    return nb.cells.index(cell(nb, gid))


def set_answer(nb, gid: str, code: str) -> None:
    """Replace the source of cell ``gid`` (fails loudly if the notebook has no such cell)."""
    cell(nb, gid).source = code


def set_answers(nb, answers: dict[str, str]) -> None:
    """Several answers at once, each dedented (code written inside a Python string)."""
    for gid, code in answers.items():
        set_answer(nb, gid, textwrap.dedent(code).strip() + "\n")


def strip_markers(text: str) -> str:
    """A solution as a student would type it: the source's solution without the markers."""
    lines = [l for l in text.split("\n") if "### BEGIN SOLUTION" not in l and "### END SOLUTION" not in l]
    return "\n".join(lines)


def solve(nbs: Notebooks, gids: set[str] | None = None) -> Notebooks:
    """Fill the answer cells (only ``gids``, when given) with the instructor's solution."""
    src = source(names=tuple(nbs))
    for name, nb in nbs.items():
        for c in nb.cells:
            if c.metadata.get("nbgrader", {}).get("solution") and (gids is None or grade_id(c) in gids):
                c.source = strip_markers(cell(src[name], grade_id(c)).source)
    return nbs


def solved() -> Notebooks:
    """The release with every answer cell filled in from the instructor's solution."""
    return solve(release())


def unanswer(nbs: Notebooks, name: str, *gids: str) -> None:
    """Put the released (unanswered) text back into answer cells ``gids``."""
    rel = release(names=(name,))[name]
    for gid in gids:
        cell(nbs[name], gid).source = cell(rel, gid).source


def replace_in(nb, gid: str, old: str, new: str) -> None:
    """Edit one cell; fail loudly if the text to replace is not there."""
    c = cell(nb, gid)
    if old not in c.source:
        raise ValueError(f"recipe is stale: {old!r} not in cell {gid}")
    c.source = c.source.replace(old, new)


def append_to(nb, gid: str, text: str) -> None:
    c = cell(nb, gid)
    c.source = c.source.rstrip("\n") + "\n\n" + text.strip("\n")


# --- when it was handed in ---------------------------------------------------------------------


def due_date(layout: CourseLayout, assignment: str = ASSIGNMENT) -> datetime:
    return parse_date(layout.due_dates[assignment])


def late_by(layout: CourseLayout, hours: float, assignment: str = ASSIGNMENT) -> str:
    """A timestamp.txt line ``hours`` after the course's due date."""
    return f"{(due_date(layout, assignment) + timedelta(hours=hours)).strftime('%Y-%m-%d %H:%M:%S')} UTC"


# --- the submission ----------------------------------------------------------------------------


class Submission:
    """What a student hands in: notebooks (as nodes or raw text), other files, a timestamp."""

    def __init__(self, notebooks: Notebooks, timestamp: str | None = None):
        self.notebooks = notebooks
        self.raw: dict[str, str] = {}  # file name -> exact text (for broken JSON and the like)
        self.extra: dict[str, str] = {}  # other files in the submission folder (may be in subfolders)
        self.timestamp = timestamp

    def write_files(self, dest: Path) -> Path:
        """Write the submission's files into ``dest``, the assignment folder itself."""
        dest.mkdir(parents=True, exist_ok=True)
        for name, nb in self.notebooks.items():
            (dest / f"{name}.ipynb").write_text(nbformat.writes(nb) + "\n")
        for name, text in {**self.raw, **self.extra}.items():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_text(text)
        if self.timestamp:
            (dest / "timestamp.txt").write_text(self.timestamp + "\n")
        return dest

    def write(self, folder: Path, assignment: str = ASSIGNMENT) -> Path:
        """``folder/<assignment>/...``: a submission folder as students hand it in."""
        return self.write_files(folder / assignment)

    def submit(self, course, student: str, assignment: str = ASSIGNMENT) -> Path:
        """Put it in ``course`` (a coursekit.core.course.Course) as ``student``'s submission."""
        dest = course.layout.submitted(student, assignment)
        if dest.exists():
            shutil.rmtree(dest)
        return self.write_files(dest)
