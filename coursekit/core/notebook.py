"""The notebook vocabulary: what a cell of a course notebook is, and what its outputs say.

The submission repairs (``sanitize``), the runner, the feedback and the class report all read
graded notebooks; they share these words, so that "a check cell", "question F8" or "a cell the
time limit stopped" mean the same everywhere.

Cells, as nbgrader marks them (``metadata.nbgrader``; the predicates are nbgrader's own,
``nbgrader.utils``, made safe for a submission whose metadata is not even a dict):

- an *answer cell* is where the student works (``solution``): code, or a written answer;
- a *check cell* is an autograded test: a code cell worth points (``grade``) that is not an
  answer; its hidden part, if any, lies between ``### BEGIN HIDDEN TESTS`` and ``### END ...``;
- a *read-only cell* is one nbgrader puts back if it was edited (``locked``; checks are too).

Questions. Every graded cell's ``grade_id`` starts with the question it belongs to, in lower
case, then ``_``: ``f8_predictions_public`` and ``f8_argmax`` belong to question **F8**,
``m3_train`` to **M3**. The question is the leading letters and digits, upper-cased
(``question_of``); a grade id that does not start that way is a question of its own. A markdown
heading ``## F8 · Predictions (3 points)`` gives the question's title (``question_titles``).

Check failures. ``coursekit.student.checks`` raises ``CheckFailed`` with the message
``<what>: expected <x>, found <y>`` and an optional last line ``Hint: <hint>``;
``cell_failure`` reads the first error (or stderr output) of a cell back into a ``Failure``.

Stopped cells. A cell can be stopped from outside: by nbgrader's per-cell timeout, by the
sandbox's memory limit, wall time or output budget, or by the kernel dying. The grader marks them
in the graded notebook (never read back from outputs, which the student controls: see
``mark_stops``); ``stopped_cells`` finds them; each has a problem kind (``coursekit.core.problems``)
and a description.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nbformat import NotebookNode
from nbgrader import utils as nbgrader_utils

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
CELL_FRAME = re.compile(r"Cell In\[\d*\], line (\d+)")
QUESTION = re.compile(r"([A-Za-z]+\d+)(?:_|$)")
HEADING = re.compile(r"^#{1,6}\s*([A-Z]\d+)\s*[·:.\-–]\s*(.+?)\s*(?:\([^()]*points?\))?\s*$", re.M)
CHECK_MESSAGE = re.compile(r"\A(?P<what>.*?): expected (?P<expected>.*), found (?P<found>.*)\Z", re.S)


# --- cells ---------------------------------------------------------------------------------------


def flags(cell) -> dict:
    """The cell's nbgrader metadata; {} when it has none, or none that is a dict."""
    metadata = cell.get("metadata")
    meta = metadata.get("nbgrader") if isinstance(metadata, dict) else None
    return meta if isinstance(meta, dict) else {}


def grade_id(cell) -> str | None:
    """The cell's grade id; None when it has none, or one that is not a text (hostile metadata)."""
    gid = flags(cell).get("grade_id")
    return gid if isinstance(gid, str) else None


def _marked(cell) -> NotebookNode:
    """A stand-in that nbgrader.utils can read without failing on hostile metadata."""
    return NotebookNode(metadata=NotebookNode(nbgrader=flags(cell)))


def is_graded(cell) -> bool:
    """Worth points: a check cell, or an answer that is autograded or marked by a TA."""
    return bool(nbgrader_utils.is_grade(_marked(cell)))


def is_answer_cell(cell) -> bool:
    """Where the student works: a code answer or a written answer."""
    return bool(nbgrader_utils.is_solution(_marked(cell)))


def is_check_cell(cell) -> bool:
    """An autograded test: a code cell worth points that is not the student's answer."""
    return cell.get("cell_type") == "code" and is_graded(cell) and not is_answer_cell(cell)


def is_readonly(cell) -> bool:
    """A cell the student may not change (nbgrader restores its source): locked, or a check."""
    return bool(nbgrader_utils.is_locked(_marked(cell)))


def cell_name(cell, index: int) -> str:
    """How problem records and notes name a cell: its grade id, else 'cell <n>' (n from 1)."""
    return grade_id(cell) or f"cell {index + 1}"


def question_of(grade_id: str | None) -> str:
    """'f3_scale_hidden' -> 'F3'; a grade id without that pattern is its own question."""
    m = QUESTION.match(grade_id or "")
    return m.group(1).upper() if m else (grade_id or "?")


def question_titles(nb) -> dict[str, str]:
    """'F1' -> 'Load the data and split it', from the '## F1 · ...' headings."""
    titles = {}
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for m in HEADING.finditer(cell.source):
                titles.setdefault(m.group(1), m.group(2).strip())
    return titles


# --- check failures ------------------------------------------------------------------------------


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


@dataclass
class Failure:
    """Why a check cell lost its points, read from its outputs."""

    ename: str
    message: str      # the exception's message, hint line excluded
    hint: str         # the CheckFailed "Hint:" line ("" when none)
    line: int | None  # line of the check cell that raised, when the traceback tells
    what: str         # the CheckFailed "what" (message without expected/found)
    stderr: bool = False

    @property
    def key(self) -> str:
        """The failure without student-specific numbers, for counting alike failures."""
        base = f"{self.ename}: {self.what}" if self.ename != "CheckFailed" else self.what
        if base.startswith("not defined: "):  # checks.expect_names: which names varies
            return "not defined: ..."
        return re.sub(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?", "N", base)


def split_hint(evalue: str) -> tuple[str, str]:
    if "\nHint: " in evalue:
        message, _, hint = evalue.partition("\nHint: ")
        return message, hint.strip()
    if evalue.startswith("Hint: "):
        return "", evalue[len("Hint: "):].strip()
    return evalue, ""


def cell_failure(cell) -> Failure | None:
    """The first error of a code cell (or its stderr, when it has no error), else None."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            ename = out.get("ename", "") or "Error"
            message, hint = split_hint(out.get("evalue", "") or "")
            line = None
            for chunk in out.get("traceback", []) or []:
                m = CELL_FRAME.search(strip_ansi(chunk))
                if m:
                    line = int(m.group(1))
                    break
            m = CHECK_MESSAGE.match(message)
            what = m.group("what") if (m and ename == "CheckFailed") else message
            return Failure(ename, message.strip(), hint, line, what.strip().split("\n")[0][:300])
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream" and out.get("name") == "stderr" and out.get("text", "").strip():
            first = out["text"].strip().split("\n")[0][:300]
            return Failure("stderr", first, "", None, "wrote to stderr", stderr=True)
    return None


# --- cells stopped from outside ------------------------------------------------------------------
#
# A stop is the grader's knowledge, never a reading of the cell's outputs: a student can raise any
# exception and print any text, "CellTimeoutError" and the sandbox's notice included. The grader
# notes its stops where they happen (coursekit/transfer/split_execute.py: the time limit it enforced, a
# checker it lost, the sandbox wrappers' events) and hands them on in ``resources[STOPS_RESOURCE]``;
# coursekit.submissions.sanitize then marks each stopped cell with ``metadata[STOP_MARK]`` once every
# preprocessor has run (``mark_stops`` first removes every mark from every cell: a mark a student
# wrote into their notebook never survives grading).

STOPS_RESOURCE = "coursekit_stops"  # resources: [[cell index, reason], ...] noted by the grader
STOP_MARK = "coursekit_stops"       # a graded code cell's metadata: [reason, ...] written by the grader

# reason -> (coursekit.core.problems kind, what happened): the one wording of a stop, which the
# submission's record (coursekit.core.problems), the notebook's "Grading notes", the feedback page and
# the class report all show.
STOPS = {
    "timeout": ("timeout", "the cell was still running after the per-cell time limit and was stopped "
                           "(CellTimeoutError); the cells after it were run and graded as usual. Look for a "
                           "loop that never ends."),
    "wall-time": ("timeout", "the notebook's kernel ran past the sandbox's wall-time limit and was stopped"),
    "memory": ("sandbox", "the notebook's processes and files used more memory than the sandbox's limit; its "
                          "kernel was stopped"),
    "dead-kernel": ("error", "the kernel died while the cell ran"),
    "output": ("sandbox", "the notebook printed more than the sandbox's output budget here; what it printed "
                          "after that was not kept (errors and stderr still counted)"),
    "protocol": ("sandbox", "the kernel broke the Jupyter protocol and the sandbox stopped it"),
}
# Stops that end the kernel: a cell with one of them needs no "dead-kernel" besides.
KILLING_STOPS = {"wall-time", "memory", "protocol"}
# Errors that come with a stop, as its consequence (how the kernel was interrupted, or nbgrader's
# note of the time limit): not the cell's own. A student's error of the same name in a cell the
# grader did not stop is theirs.
STOP_ECHOES = {"timeout": {"KeyboardInterrupt", "CellTimeoutError"}, "dead-kernel": {"DeadKernelError"},
               **{reason: {"DeadKernelError"} for reason in KILLING_STOPS}}


@dataclass(frozen=True)
class Stopped:
    """A code cell of a graded notebook that was stopped from outside."""

    index: int      # position in the notebook, from 0
    where: str      # cell_name() of the cell
    reason: str     # a key of STOPS

    @property
    def kind(self) -> str:
        return STOPS[self.reason][0]

    @property
    def message(self) -> str:
        return STOPS[self.reason][1]


def stop_marks(cell) -> list[str]:
    """The grader's stop reasons on a code cell (see STOP_MARK), in the order they came."""
    if cell.get("cell_type") != "code":
        return []
    metadata = cell.get("metadata")
    marks = metadata.get(STOP_MARK) if isinstance(metadata, dict) else None
    if not isinstance(marks, list):
        return []
    return list(dict.fromkeys(r for r in marks if isinstance(r, str) and r in STOPS))


def mark_stops(nb, noted) -> list[Stopped]:
    """Mark the cells of ``nb`` the grader stopped, from ``noted`` (``resources[STOPS_RESOURCE]``:
    [cell index, reason] pairs); every other mark is removed. The stops, in notebook order."""
    for cell in nb.cells:
        metadata = cell.get("metadata")
        if isinstance(metadata, dict):
            metadata.pop(STOP_MARK, None)
    for entry in noted or []:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2):
            continue
        index, reason = entry
        if isinstance(index, int) and 0 <= index < len(nb.cells) and reason in STOPS \
                and nb.cells[index].get("cell_type") == "code":
            marks = nb.cells[index].setdefault("metadata", {}).setdefault(STOP_MARK, [])
            if reason not in marks:
                marks.append(reason)
    return stopped_cells(nb)


def stopped_cells(nb) -> list[Stopped]:
    """Every cell of a graded notebook that the grader stopped (a time limit, a sandbox limit, a
    dead kernel), once per cell and reason, in notebook order: read from the grader's marks."""
    return [Stopped(index, cell_name(cell, index), reason)
            for index, cell in enumerate(nb.cells) for reason in stop_marks(cell)]


def own_errors(cell) -> set[str]:
    """Names of the errors a code cell raised itself: not those that came with a stop of the
    grader's (the KeyboardInterrupt and CellTimeoutError of the time limit, a DeadKernelError)."""
    names = {o.get("ename", "") or "Error" for o in cell.get("outputs", []) if o.get("output_type") == "error"}
    for reason in stop_marks(cell):
        names -= STOP_ECHOES.get(reason, set())
    return names


def natural_key(name: str):
    """'F10' after 'F9'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
