"""Student feedback that teaches without giving away the hidden checks.

``nbgrader generate_feedback week2`` runs ``CourseFeedback`` after nbgrader's ``GetGrades``
(``nbgrader_config.py``, section "Feedback"). Stock nbgrader renders the autograded notebook
as it is: hidden test code (restored at autograde), its tracebacks and their expected values
and thresholds, and the TAs' mark schemes (jupyter/nbgrader#917, #1363). This preprocessor
turns it into what a student should read:

- at the top: problems recorded while grading the submission (``coursekit.problems``), the
  late penalty, and the score per question (F1, F2, ... M5);
- under each check cell, instead of its raw output: passed / failed and the points;
  for a *public* check the whole message ("what: expected X, found Y" and its hint), for a
  *hidden* check only the ``Hint:`` line of a ``CheckFailed`` (or a generic hint by error
  type, e.g. for a ``NameError``);
- the hidden test regions of check cells and the mark-scheme regions of prompt cells are
  removed from the cell sources;
- a last guard redacts any output line that quotes a line of hidden test code or of a mark
  scheme (a student's own cell could print IPython's input history, for example).

Whether a failure comes from the public or the hidden part of a check cell is read from the
traceback's "Cell In[n], line L": the public part (e.g. ``checks.expect_names``) says nothing
secret, so its message is shown in full. When the line cannot be told, the failure counts as
hidden.

The helpers ``question_of``, ``question_titles`` and ``cell_failure`` are shared with the
class report (``coursekit.report``).
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from pathlib import Path

from nbformat.v4 import new_markdown_cell, new_output
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import List, Unicode

from coursekit import problems

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
CELL_FRAME = re.compile(r"Cell In\[\d*\], line (\d+)")
HEADING = re.compile(r"^#{1,6}\s*([A-Z]\d+)\s*[·:.\-–]\s*(.+?)\s*(?:\([^()]*points?\))?\s*$", re.M)
CHECK_MESSAGE = re.compile(r"\A(?P<what>.*?): expected (?P<expected>.*), found (?P<found>.*)\Z", re.S)

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

KIND_LABELS = {
    "invalid-notebook": "Notebook could not be read",
    "old-nbformat": "Old notebook format",
    "renamed-notebook": "Notebook under another name",
    "missing-notebook": "Notebook missing",
    "duplicate-cell": "Copied cell",
    "deleted-test-cell": "Deleted check cell",
    "tampered-cell": "Edited read-only cell",
    "late": "Late submission",
    "timeout": "Time limit",
    "error": "Grading error",
    "sandbox": "Stopped by the sandbox",
    "stray-file": "Extra file ignored",
}

REDACTED = "[line removed from feedback: it quoted hidden check code]"


# --- reading notebooks ---------------------------------------------------------------


def nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def is_check_cell(cell) -> bool:
    """An autograded test cell: a code cell worth points that is not the student's answer."""
    meta = nbgrader_meta(cell)
    return cell.cell_type == "code" and bool(meta.get("grade")) and not meta.get("solution")


def question_of(grade_id: str) -> str:
    """'f3_scale_hidden' -> 'F3'; a grade id without that pattern is its own question."""
    m = re.match(r"([A-Za-z]+\d+)(?:_|$)", grade_id or "")
    return m.group(1).upper() if m else (grade_id or "?")


def question_titles(nb) -> dict[str, str]:
    """'F1' -> 'Load the data and split it', from the '## F1 · ...' headings."""
    titles = {}
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for m in HEADING.finditer(cell.source):
                titles.setdefault(m.group(1), m.group(2).strip())
    return titles


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
        meta = nbgrader_meta(cell)
        lines = cell.source.split("\n")
        inside = set()
        for begin, end in (hidden, scheme):
            inside |= region_line_numbers(cell.source, begin, end)
        for number, line in enumerate(lines, start=1):
            text = _norm(line)
            if number in inside:
                if len(text) >= min_length and not begin_or_end(text, hidden, scheme):
                    secret.add(text)
            elif not meta.get("solution"):
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


# --- the preprocessor ------------------------------------------------------------------


def _e(text) -> str:
    """Escaped for HTML, on one line (a blank line would end the summary's HTML block)."""
    return html.escape(str(text), quote=True).replace("\r", "").replace("\n", "<br>")


def _points(value) -> str:
    return f"{float(value or 0):g}"


def _late_text(seconds: float) -> str:
    days = math.ceil(seconds / 86400)
    return f"{days} day{'s' if days != 1 else ''}" if seconds > 3600 else f"{max(1, round(seconds / 60))} min"


STYLE = """
<style>
#coursekit-summary { border: 1px solid #bbb; border-radius: 6px; padding: 0.8em 1.2em; margin: 0 0 1.5em; background: #fafafa; }
#coursekit-summary table { border-collapse: collapse; margin: 0.5em 0; }
#coursekit-summary th, #coursekit-summary td { border-bottom: 1px solid #ddd; padding: 0.25em 0.8em; text-align: left; }
#coursekit-problems { border-left: 4px solid #d2413a; background: #fff3f2; padding: 0.4em 1em; margin: 0.6em 0; }
.ck-check { border-left: 4px solid #888; padding: 0.3em 0.8em; margin: 0.2em 0; background: #f7f7f7; }
.ck-passed { border-color: #2e8b57; }
.ck-failed, .ck-partial { border-color: #d2413a; }
.ck-check pre { white-space: pre-wrap; margin: 0.3em 0; background: transparent; border: none; padding: 0; }
.ck-hint { font-style: italic; }
</style>
"""


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

    def preprocess(self, nb, resources):
        info = resources.get("nbgrader", {})
        notebook = info.get("notebook", resources.get("metadata", {}).get("name", ""))
        grades, late = self._gradebook(info)
        secrets = secret_lines(nb, (self.begin_hidden, self.end_hidden), (self.begin_scheme, self.end_scheme))
        titles = question_titles(nb)

        rows: dict[str, dict] = {}
        timeouts = []
        for cell in nb.cells:
            meta = nbgrader_meta(cell)
            gid = meta.get("grade_id")
            if cell.cell_type == "markdown" and not meta.get("solution"):
                cell.source = remove_region(cell.source, self.begin_scheme, self.end_scheme)
            if cell.cell_type == "code" and any(o.get("ename") == "CellTimeoutError" for o in cell.get("outputs", [])):
                timeouts.append(gid or "")
            if not meta.get("grade") or not gid:
                continue
            score, points, pending = grades.get(gid, (meta.get("score"), meta.get("points"), False))
            row = rows.setdefault(question_of(gid), {"score": 0.0, "points": 0.0, "failed": 0, "checks": 0,
                                                     "pending": 0, "written": 0})
            row["points"] += float(points or 0)
            row["score"] += 0.0 if pending else float(score or 0)
            if is_check_cell(cell):
                row["checks"] += 1
                status = self._render_check(cell, score, points)
                row["failed"] += status != "passed"
            else:
                row["written" if cell.cell_type == "markdown" else "checks"] += 1
                row["pending"] += bool(pending)

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

        found = problems.load(Path(resources.get("metadata", {}).get("path", "") or "."))
        summary = self._summary(notebook, rows, titles, late, found, timeouts, secrets)
        # A markdown cell of raw HTML: nbgrader's feedback template renders it as it is (raw
        # cells would go through nbconvert's HTML sanitizer, which drops tables and headings).
        nb.cells.insert(0, new_markdown_cell(summary, metadata={"coursekit": "feedback-summary"}))
        return nb, resources

    # --- pieces ----------------------------------------------------------------------

    def _gradebook(self, info: dict):
        """grade id -> (score, max score, waiting for a TA); and (seconds late, penalty)."""
        grades, late = {}, (0.0, 0.0)
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
        except MissingEntry:
            self.log.warning("no gradebook entry for %s", info)
        return grades, late

    def _render_check(self, cell, score, points) -> str:
        """Replace a check cell's outputs by its verdict; hide its hidden region."""
        score, points = float(score or 0), float(points or 0)
        status = "passed" if score >= points else ("failed" if score == 0 else "partial")
        hidden_lines = region_line_numbers(cell.source, self.begin_hidden, self.end_hidden)
        has_hidden = bool(hidden_lines)
        failure = cell_failure(cell) if status != "passed" else None
        in_hidden = has_hidden and (failure is None or failure.line is None or failure.line in hidden_lines)

        label = ("Hidden check" if has_hidden else "Check") if status != "passed" else \
            ("Check passed, hidden part included" if has_hidden else "Check passed")
        parts = []
        if status == "passed":
            head = f"&#10004; {_e(label)} ({_points(score)} / {_points(points)} points)"
        else:
            verb = "did not pass" if status == "failed" else "passed in part"
            head = f"&#10008; {_e(label)} {verb} ({_points(score)} / {_points(points)} points)"
            if failure is None:
                parts.append(f'<div class="ck-hint">Hint: {_e(GENERIC_HINTS["CheckFailed"])}</div>')
            elif failure.stderr:
                parts.append(f'<div class="ck-hint">Hint: {_e(STDERR_HINT)}</div>')
            elif in_hidden:
                hint = failure.hint if failure.ename == "CheckFailed" and failure.hint else \
                    GENERIC_HINTS.get(failure.ename, TYPE_HINT.format(ename=failure.ename))
                if failure.ename not in ("CheckFailed", "AssertionError"):
                    parts.append(f"<pre>The hidden part stopped with {_e(failure.ename)}.</pre>")
                parts.append(f'<div class="ck-hint">Hint: {_e(hint)}</div>')
            else:
                shown = failure.message if failure.ename == "CheckFailed" else f"{failure.ename}: {failure.message}"
                parts.append(f'<pre class="ck-message">{_e(shown)}</pre>')
                hint = failure.hint or GENERIC_HINTS.get(failure.ename) or \
                    (TYPE_HINT.format(ename=failure.ename) if failure.ename != "CheckFailed" else "")
                if hint:
                    parts.append(f'<div class="ck-hint">Hint: {_e(hint)}</div>')
        kind = "hidden" if has_hidden else "public"
        box = (f'<div class="ck-check ck-{status}" data-grade-id="{_e(nbgrader_meta(cell).get("grade_id"))}" '
               f'data-status="{status}" data-kind="{kind}"><b>{head}</b>{"".join(parts)}</div>')
        text = re.sub(r"<[^>]+>", " ", html.unescape(box))

        keep = []
        if not has_hidden:  # a public check's own printed output says nothing secret
            keep = [o for o in cell.get("outputs", []) if o.get("output_type") not in ("error",)]
            if failure is not None and failure.ename not in ("CheckFailed", "stderr"):
                keep += [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        cell.outputs = [new_output("display_data", data={"text/html": box, "text/plain": " ".join(text.split())})] + keep
        if has_hidden:
            cell.source = remove_region(cell.source, self.begin_hidden, self.end_hidden, self.hidden_placeholder)
        return status

    def _summary(self, notebook, rows, titles, late, found, timeouts, secrets) -> str:
        seconds_late, penalty = late
        total = sum(r["score"] for r in rows.values())
        points = sum(r["points"] for r in rows.values())
        pending = sum(r["pending"] for r in rows.values())
        out = [STYLE, '<div id="coursekit-summary">', f"<h2>Your results: {_e(notebook)}</h2>"]
        score_line = f"Score so far: <b>{_points(total - penalty)} / {_points(points)}</b>"
        if penalty:
            score_line += f" (after a late penalty of {_points(penalty)} points)"
        if pending:
            score_line += f"; {pending} written answer{'s' if pending != 1 else ''} still to be marked by a TA"
        out.append(f'<p id="coursekit-score">{score_line}</p>')

        items = []
        recorded_late = [p for p in found if p.get("kind") == "late"]
        if seconds_late > 0 and not recorded_late:
            items.append(("Late submission", None, f"submitted {_late_text(seconds_late)} after the due date"
                          + (f": -{_points(penalty)} points on this notebook" if penalty else "")))
        this = [p for p in found if p.get("notebook") in (None, "", notebook)]
        other = [p for p in found if p not in this]
        for p in this + other:
            message, _ = redact(str(p.get("message", "")), secrets)
            if p.get("kind") == "late" and penalty:
                message += f" (-{_points(penalty)} points on this notebook)"
            where = p.get("notebook") if p.get("notebook") not in (None, "", notebook) else None
            items.append((KIND_LABELS.get(p.get("kind"), str(p.get("kind"))), where, message))
        recorded_timeouts = {p.get("cell") for p in this if p.get("kind") == "timeout"}
        for gid in timeouts:
            if gid not in recorded_timeouts:
                items.append(("Time limit", None, f"cell {gid or '(unnamed)'} ran past the time limit and was stopped"))
        if items:
            out.append('<div id="coursekit-problems"><h3>Problems found while grading your submission</h3><ul>')
            for label, where, message in items:
                place = f" (in {_e(where)}.ipynb)" if where else ""
                out.append(f'<li class="coursekit-problem"><b>{_e(label)}</b>{place}: {_e(message)}</li>')
            out.append("</ul></div>")

        out.append('<table id="coursekit-scores"><thead><tr><th>Question</th><th>Points</th><th>Status</th>'
                   "</tr></thead><tbody>")
        for q, r in rows.items():
            title = f" · {titles[q]}" if q in titles else ""
            if r["pending"]:
                status = "waiting for a TA to mark the written answer" + ("s" if r["pending"] > 1 else "")
                if r["failed"]:
                    status = f"{r['failed']} check{'s' if r['failed'] > 1 else ''} not passed; " + status
            elif r["failed"]:
                status = f"{r['failed']} of {r['checks']} checks not passed"
            elif r["checks"]:
                status = "all checks passed" + (", written answer marked" if r["written"] else "")
            else:
                status = "marked by a TA"
            score = "–" if r["pending"] and not r["checks"] else _points(r["score"])
            out.append(f'<tr data-question="{_e(q)}"><td>{_e(q + title)}</td>'
                       f'<td class="coursekit-points">{score} / {_points(r["points"])}</td><td>{_e(status)}</td></tr>')
        out.append("</tbody></table>")
        out.append("<p><small>Under each check you will find whether it passed. A visible check shows "
                   "what it expected and what it found; a hidden check shows only a hint, so that the "
                   "hidden checks stay useful for everyone.</small></p></div>")
        return "\n".join(out)
