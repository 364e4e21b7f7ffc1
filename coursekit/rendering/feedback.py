"""Student feedback that teaches without giving away the hidden checks.

``nbgrader generate_feedback week2`` runs ``CourseFeedback`` after nbgrader's ``GetGrades``
(``nbgrader_config.py``, section "Feedback"). Stock nbgrader renders the autograded notebook
as it is: hidden test code (restored at autograde), its tracebacks and their expected values
and thresholds, and the TAs' mark schemes (jupyter/nbgrader#917, #1363). This preprocessor
turns it into what a student should read:

- at the top: problems recorded while grading the submission (``coursekit.core.problems``), the
  late penalty, and the score per question (F1, F2, ... M5);
- under each check cell, instead of its raw output: passed / failed and the points;
  for a *public* check the whole message ("what: expected X, found Y" and its hint), for a
  *hidden* check only the ``Hint:`` line of a ``CheckFailed`` (or a generic hint by error
  type, e.g. for a ``NameError``);
- the hidden test regions of check cells and the mark-scheme regions of prompt cells are
  removed from the cell sources;
- a last guard redacts any output line that quotes a line of hidden test code or of a mark
  scheme (a student's own cell could print IPython's input history, for example).

The summary and the verdicts are HTML from autoescaped templates (``coursekit.rendering.pages``). The page
itself is rendered by ``coursekit.rendering.pages.FeedbackExporter``, which sanitises everything the
student wrote; what this preprocessor wrote carries the page's one-time token
(``resources["coursekit"]["trusted"]``) in its metadata, so that the exporter shows it as it is.

Whether a failure comes from the public or the hidden part of a check cell is read from the
traceback's "Cell In[n], line L": the public part (e.g. ``checks.expect_names``) says nothing
secret, so its message is shown in full. When the line cannot be told, the failure counts as
hidden.

What a check cell is, which question a cell belongs to and why a check failed are read with
``coursekit.core.notebook``, as the class report reads them.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from pathlib import Path

from nbformat.v4 import new_markdown_cell, new_output
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Bool, List, Unicode

from coursekit.rendering import pages
from coursekit.core import problems
from coursekit.core.notebook import cell_failure, flags, grade_id, is_answer_cell, is_check_cell, is_graded, question_of, \
    question_titles, strip_ansi

GENERIC_HINTS = {
    "CheckFailed": "re-read the question: your answer does not yet do exactly what it asks for",
    "NameError": "the check needs a name your notebook does not define (or only defines in a cell "
                 "that failed): run all cells in order (Kernel > Restart & Run All) and keep the "
                 "names the question asks for",
    "NotImplementedError": "a function or cell still raises NotImplementedError: replace that line "
                           "with your code",
    "CellTimeoutError": "the cell ran longer than the time limit: look for an endless loop, or "
                        "training on more data or for more epochs than the question asks",
    "DeadKernelError": "the notebook stopped while this cell ran (for example, it used too much "
                       "memory)",
    "ModuleNotFoundError": "use only the libraries the course provides (NumPy, Matplotlib, "
                           "TensorFlow)",
    "ImportError": "use only the libraries the course provides (NumPy, Matplotlib, TensorFlow)",
}
TYPE_HINT = ("your code raised {ename} when the check used it: compare the type and shape of "
             "your answer with what the question asks for (an array, a tuple, a number, a figure)")
STDERR_HINT = "the check cell wrote to the error stream (stderr); a check cell must run cleanly"

HINT_WITHHELD = "hints of hidden checks are shown in the feedback after the deadline"
REDACTED = "[line removed from feedback: it quoted hidden check code]"


# --- reading notebooks ---------------------------------------------------------------


def region_line_numbers(source: str, begin: str, end: str) -> set[int]:
    """1-based numbers of the lines of ``source`` inside begin..end, markers included."""
    inside, numbers = False, set()
    for number, line in enumerate(source.split("\n"), start=1):
        if begin in line:
            inside = True
        if inside:
            numbers.add(number)
        if end in line:
            inside = False
    return numbers


def remove_region(source: str, begin: str, end: str, replacement: str | None = None) -> str:
    kept, inside = [], False
    for line in source.split("\n"):
        if begin in line:
            inside = True
            if replacement is not None:
                indent = line[: len(line) - len(line.lstrip())]
                kept.append(indent + replacement)
            continue
        if inside:
            if end in line:
                inside = False
            continue
        kept.append(line)
    return "\n".join(kept)


def output_texts(out) -> list[tuple[object, str]]:
    """(container, key) pairs of every text field of an output, for scanning or redacting."""
    fields = []
    if out.get("output_type") == "stream":
        fields.append((out, "text"))
    elif out.get("output_type") == "error":
        fields.append((out, "evalue"))
        tb = out.get("traceback") or []
        fields.extend((tb, i) for i in range(len(tb)))
    else:
        data = out.get("data", {})
        for mime, value in data.items():
            if isinstance(value, str) and (mime.startswith("text/") or mime.endswith("json") or
                                            mime.endswith("javascript") or mime == "image/svg+xml"):
                fields.append((data, mime))
            elif isinstance(value, list):
                fields.append((data, mime))
    return fields


# --- secrets -------------------------------------------------------------------------


def _norm(text: str) -> str:
    return " ".join(text.split())


def secret_lines(nb, hidden=("BEGIN HIDDEN TESTS", "END HIDDEN TESTS"),
                 scheme=("BEGIN MARK SCHEME", "END MARK SCHEME"), min_length: int = 12) -> set[str]:
    """Lines of hidden test code and of mark schemes in ``nb`` that appear nowhere a student
    sees (read-only cells outside those regions), whitespace-collapsed."""
    public, secret = set(), set()
    for cell in nb.cells:
        lines = cell.source.split("\n")
        inside = set()
        for begin, end in (hidden, scheme):
            inside |= region_line_numbers(cell.source, begin, end)
        for number, line in enumerate(lines, start=1):
            text = _norm(line)
            if number in inside:
                if len(text) >= min_length and not begin_or_end(text, hidden, scheme):
                    secret.add(text)
            elif not is_answer_cell(cell):
                public.add(text)
    return {s for s in secret if s not in public}


def begin_or_end(text: str, *pairs) -> bool:
    return any(marker in text for pair in pairs for marker in pair)


def _readings(text: str) -> tuple[str, str]:
    """How a reader may see ``text``: as it is, and as HTML (tags dropped, entities decoded),
    both without ANSI colours and with whitespace collapsed."""
    plain = strip_ansi(text)
    return _norm(plain), _norm(html.unescape(re.sub(r"<[^>]*>", "", plain)))


def _quotes(text: str, secrets: set[str]) -> bool:
    return any(s in reading for reading in _readings(text) for s in secrets)


def redact(text: str, secrets: set[str]) -> tuple[str, int]:
    """``text`` with every line that quotes a secret replaced; and how many were."""
    if not secrets or not text or not _quotes(text, secrets):
        return text, 0
    out, count = [], 0
    for line in text.split("\n"):
        if _quotes(line, secrets):
            out.append(REDACTED)
            count += 1
        else:
            out.append(line)
    result = "\n".join(out)
    if _quotes(result, secrets):  # a secret spread over lines
        return REDACTED, count + 1
    return result, count


# --- what the pages show (templates/feedback_*.html.j2) -----------------------------------


def _late_text(seconds: float) -> str:
    days = math.ceil(seconds / 86400)
    return f"{days} day{'s' if days != 1 else ''}" if seconds > 3600 else f"{max(1, round(seconds / 60))} min"


def _points(value) -> str:
    return pages.points(value)


@dataclass
class Verdict:
    """What a student reads under a check cell, instead of its raw output."""

    grade_id: str
    status: str           # passed, failed, partial
    kind: str             # hidden (the cell has a hidden part) or public
    score: float
    points: float
    stopped_with: str = ""  # for a hidden failure that is not a failed check: only the error's name
    message: str = ""       # for a public failure: the whole message
    hint: str = ""

    @property
    def label(self) -> str:
        if self.status == "passed":
            return "Check passed, hidden part included" if self.kind == "hidden" else "Check passed"
        return "Hidden check" if self.kind == "hidden" else "Check"

    @property
    def verb(self) -> str:
        return {"failed": "did not pass", "partial": "passed in part"}.get(self.status, "")


@dataclass
class QuestionRow:
    """One question's line in the summary's score table."""

    question: str
    title: str = ""
    score: float = 0.0
    points: float = 0.0
    checks: int = 0
    failed: int = 0
    pending: int = 0     # written answers (or manually graded cells) waiting for a TA
    written: int = 0

    @property
    def shown_score(self) -> str:
        return "–" if self.pending and not self.checks else _points(self.score)

    @property
    def status(self) -> str:
        if self.pending:
            status = "waiting for a TA to mark the written answer" + ("s" if self.pending > 1 else "")
            if self.failed:
                status = f"{self.failed} check{'s' if self.failed > 1 else ''} not passed; " + status
            return status
        if self.failed:
            return f"{self.failed} of {self.checks} checks not passed"
        if self.checks:
            return "all checks passed" + (", written answer marked" if self.written else "")
        return "marked by a TA"


@dataclass
class ProblemItem:
    label: str
    notebook: str | None  # another notebook of the submission, or None for this one / the whole submission
    message: str


@dataclass
class Summary:
    """The box at the top of a feedback page."""

    notebook: str
    rows: list[QuestionRow]
    problems: list[ProblemItem]
    penalty: float = 0.0
    due: str = ""            # the student's own due date (an extension, or the assignment's), UTC
    extended: bool = False   # it is an extension

    @property
    def points(self) -> float:
        return sum(r.points for r in self.rows)

    @property
    def score(self) -> float:
        return sum(r.score for r in self.rows) - self.penalty

    @property
    def pending(self) -> int:
        return sum(r.pending for r in self.rows)


def render_summary(summary: Summary) -> str:
    """The summary as HTML for a markdown cell: its lines hold no blank line, since a blank line
    would end the cell's HTML block (student text goes through the ``oneline`` filter)."""
    return pages.render("feedback_summary.html.j2", summary=summary)


def render_verdict(verdict: Verdict) -> str:
    return pages.render("feedback_check.html.j2", v=verdict)


# --- the preprocessor ------------------------------------------------------------------


class CourseFeedback(NbGraderPreprocessor):
    """Feedback for students: scores per question, check messages, no hidden code."""

    # The HTML exporter configures this for every NbConvertBase; declared so that it applies.
    display_data_priority = List(["text/html", "application/pdf", "text/latex", "image/svg+xml",
                                  "image/png", "image/jpeg", "text/plain"]).tag(config=True)
    begin_hidden = Unicode("BEGIN HIDDEN TESTS").tag(config=True)
    end_hidden = Unicode("END HIDDEN TESTS").tag(config=True)
    begin_scheme = Unicode("BEGIN MARK SCHEME").tag(config=True)
    end_scheme = Unicode("END MARK SCHEME").tag(config=True)
    hidden_placeholder = Unicode("# (hidden checks run here when your work is graded)").tag(config=True)
    # False for feedback before the deadline (coursekit.hosting.submit_service): a failed hidden check says
    # only that it failed, so that hints cannot be hill-climbed; True (nbgrader's run) as before.
    hidden_hints = Bool(True, help="show the hint of a failed hidden check").tag(config=True)

    def preprocess(self, nb, resources):
        trusted = {"coursekit": {"trusted": resources["coursekit"]["trusted"]}} if "coursekit" in resources else {}
        info = resources.get("nbgrader", {})
        notebook = info.get("notebook", resources.get("metadata", {}).get("name", ""))
        grades, late = self._gradebook(info)
        secrets = secret_lines(nb, (self.begin_hidden, self.end_hidden), (self.begin_scheme, self.end_scheme))
        titles = question_titles(nb)

        rows: dict[str, QuestionRow] = {}
        for cell in nb.cells:
            meta = flags(cell)
            gid = grade_id(cell)
            if cell.cell_type == "markdown" and not is_answer_cell(cell):
                cell.source = remove_region(cell.source, self.begin_scheme, self.end_scheme)
            if not is_graded(cell) or not gid:
                continue
            score, points, pending = grades.get(gid, (meta.get("score"), meta.get("points"), False))
            question = question_of(gid)
            row = rows.setdefault(question, QuestionRow(question, titles.get(question, "")))
            row.points += float(points or 0)
            row.score += 0.0 if pending else float(score or 0)
            if is_check_cell(cell):
                row.checks += 1
                row.failed += self._render_check(cell, score, points, trusted) != "passed"
            else:
                if cell.cell_type == "markdown":
                    row.written += 1
                else:
                    row.checks += 1
                row.pending += bool(pending)

        redacted = 0
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                for container, key in output_texts(out):
                    value = container[key]
                    if isinstance(value, list):
                        value = "".join(value)
                    new, n = redact(value, secrets)
                    if n:
                        container[key] = new
                        redacted += n
        if redacted:
            self.log.warning("feedback for %s/%s: redacted %d output line(s) quoting hidden checks",
                             info.get("student"), notebook, redacted)

        # What happened to the submission: its record (coursekit.core.problems), the one source.
        found = problems.read(Path(resources.get("metadata", {}).get("path", "") or "."),
                              info.get("student"), info.get("assignment")).problems()
        items = self._problems(notebook, late, found, secrets)
        summary = Summary(notebook, list(rows.values()), items, penalty=late[1], **self._due)
        # A markdown cell of the grader's own HTML, marked with the page's token: the page shows it as it is.
        nb.cells.insert(0, new_markdown_cell(render_summary(summary), metadata=dict(trusted)))
        return nb, resources

    # --- pieces ----------------------------------------------------------------------

    def _gradebook(self, info: dict):
        """grade id -> (score, max score, waiting for a TA); and (seconds late, penalty)."""
        grades, late = {}, (0.0, 0.0)
        self._due = {}
        if not info.get("db_url"):
            return grades, late
        from nbgrader.api import Gradebook, MissingEntry

        try:
            with Gradebook(info["db_url"]) as gb:
                nb = gb.find_submission_notebook(info["notebook"], info["assignment"], info["student"])
                for grade in nb.grades:
                    pending = bool(grade.needs_manual_grade) and grade.manual_score is None
                    grades[grade.name] = (grade.score, grade.max_score, pending)
                sub = gb.find_submission(info["assignment"], info["student"])
                late = (float(sub.total_seconds_late or 0), float(nb.late_submission_penalty or 0))
                if sub.duedate is not None:  # nbgrader's: the assignment's due date plus the student's extension
                    self._due = {"due": f"{sub.duedate:%Y-%m-%d %H:%M} UTC", "extended": sub.extension is not None}
        except MissingEntry:
            self.log.warning("no gradebook entry for %s", info)
        return grades, late

    def verdict(self, cell, score, points) -> Verdict:
        """What the student is told about a check cell: public failures in full, hidden ones
        by a hint only."""
        score, points = float(score or 0), float(points or 0)
        status = "passed" if score >= points else ("failed" if score == 0 else "partial")
        hidden_lines = region_line_numbers(cell.source, self.begin_hidden, self.end_hidden)
        verdict = Verdict(grade_id(cell), status, "hidden" if hidden_lines else "public", score, points)
        if status == "passed":
            return verdict
        failure = cell_failure(cell)
        in_hidden = bool(hidden_lines) and (failure is None or failure.line is None or failure.line in hidden_lines)
        if failure is None:
            verdict.hint = GENERIC_HINTS["CheckFailed"]
        elif failure.stderr:
            verdict.hint = STDERR_HINT
        elif in_hidden and not self.hidden_hints:
            verdict.hint = HINT_WITHHELD
        elif in_hidden:
            verdict.hint = failure.hint if failure.ename == "CheckFailed" and failure.hint else \
                GENERIC_HINTS.get(failure.ename, TYPE_HINT.format(ename=failure.ename))
            if failure.ename not in ("CheckFailed", "AssertionError"):
                verdict.stopped_with = failure.ename
        else:
            verdict.message = failure.message if failure.ename == "CheckFailed" else f"{failure.ename}: {failure.message}"
            verdict.hint = failure.hint or GENERIC_HINTS.get(failure.ename) or \
                (TYPE_HINT.format(ename=failure.ename) if failure.ename != "CheckFailed" else "")
        return verdict

    def _render_check(self, cell, score, points, trusted: dict) -> str:
        """Replace a check cell's outputs by its verdict (with ``trusted``, the page's token, as
        its metadata); hide its hidden region."""
        verdict = self.verdict(cell, score, points)
        box = render_verdict(verdict)
        text = re.sub(r"<[^>]+>", " ", html.unescape(box))
        failure = cell_failure(cell) if verdict.status != "passed" else None
        keep = []
        if verdict.kind == "public":  # a public check's own printed output says nothing secret
            keep = [o for o in cell.get("outputs", []) if o.get("output_type") not in ("error",)]
            if failure is not None and failure.ename not in ("CheckFailed", "stderr"):
                keep += [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        cell.outputs = [new_output("display_data", data={"text/html": box, "text/plain": " ".join(text.split())},
                                   metadata=dict(trusted))] + keep
        if verdict.kind == "hidden":
            cell.source = remove_region(cell.source, self.begin_hidden, self.end_hidden, self.hidden_placeholder)
        return verdict.status

    def _problems(self, notebook, late, found, secrets) -> list[ProblemItem]:
        """The submission's recorded entries, this notebook's first; lateness the gradebook
        knows but the record does not (feedback made without the repairs) is added."""
        seconds_late, penalty = late
        items = []
        if seconds_late > 0 and not any(p.get("kind") == "late" for p in found):
            items.append(ProblemItem(problems.label("late"), None,
                                     f"submitted {_late_text(seconds_late)} after the due date"
                                     + (f": -{_points(penalty)} points on this notebook" if penalty else "")))
        this = [p for p in found if p.get("notebook") in (None, "", notebook)]
        other = [p for p in found if p not in this]
        for p in this + other:
            message, _ = redact(str(p.get("message", "")), secrets)
            if p.get("kind") == "late" and penalty:
                message += f" (-{_points(penalty)} points on this notebook)"
            where = p.get("notebook") if p.get("notebook") not in (None, "", notebook) else None
            items.append(ProblemItem(problems.label(p.get("kind")), where, message))
        return items
