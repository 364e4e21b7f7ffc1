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

Check failures. ``coursekit.checks`` raises ``CheckFailed`` with the message
``<what>: expected <x>, found <y>`` and an optional last line ``Hint: <hint>``;
``cell_failure`` reads the first error (or stderr output) of a cell back into a ``Failure``.

Stopped cells. A cell can be stopped from outside: by nbgrader's per-cell timeout, by the
sandbox's memory or process limit or output budget, or by the kernel dying. ``stopped_cells`` finds them in a
graded notebook; each has a problem kind (``coursekit.problems``) and a description.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nbformat import NotebookNode
from nbgrader import utils as nbgrader_utils

from coursekit.sandbox import OUTPUT_NOTICE_MARK

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

# reason -> (coursekit.problems kind, what happened)
STOPS = {
    "timeout": ("timeout", "the cell ran past the per-cell time limit"),
    "memory": ("sandbox", "the cell ran out of memory (the sandbox's memory limit)"),
    "processes": ("sandbox", "the cell started too many processes (the sandbox's process limit)"),
    "dead-kernel": ("error", "the kernel died while the cell ran"),
    "output": ("sandbox", "the notebook printed more than the sandbox's output budget here; what it printed "
                          "after that was not kept (errors and stderr still counted)"),
}
# Errors that only come with a stop, as a consequence: how the kernel was interrupted at the time limit.
STOP_ECHOES = {"timeout": {"KeyboardInterrupt"}}


def stop_reason(output) -> str | None:
    """Which STOPS an output says stopped its cell, if any: an error, or the sandbox's notice
    that the notebook's output budget ran out."""
    if output.get("output_type") == "display_data":
        data = output.get("data")
        text = data.get("text/plain") if isinstance(data, dict) else None
        return "output" if isinstance(text, str) and text.startswith(OUTPUT_NOTICE_MARK) else None
    if output.get("output_type") != "error":
        return None
    name, value = output.get("ename", ""), output.get("evalue", "") or ""
    if name == "CellTimeoutError":
        return "timeout"
    if name == "MemoryError":
        return "memory"
    if name == "BlockingIOError" and "Resource temporarily unavailable" in value:
        return "processes"
    if name in ("DeadKernelError", "UnresponsiveKernelError"):
        return "dead-kernel"
    return None


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


def stopped_cells(nb) -> list[Stopped]:
    """Every cell of ``nb`` that a time limit, a sandbox limit or a dead kernel stopped, once
    per cell and reason, in notebook order."""
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        for out in cell.get("outputs", []):
            reason = stop_reason(out)
            stop = Stopped(index, cell_name(cell, index), reason) if reason else None
            if stop is not None and stop not in found:
                found.append(stop)
    return found


def own_errors(cell) -> set[str]:
    """Names of the errors a code cell raised itself: not those that say it was stopped from
    outside, nor the KeyboardInterrupt with which the time limit interrupts a cell."""
    outputs = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    names = {o.get("ename", "") or "Error" for o in outputs if stop_reason(o) is None}
    for reason in {stop_reason(o) for o in outputs} - {None}:
        names -= STOP_ECHOES.get(reason, set())
    return names
