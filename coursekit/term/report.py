"""Class report for TAs, written after autograde: one HTML page and a CSV beside it.

``python -m coursekit.term.report week2`` from the course root writes
``reports/week2/report.html`` and ``reports/week2/report.csv`` (``--out DIR`` to change).

The page shows:
- the score distribution (histogram) and summary statistics;
- per question: mean points, pass rate and the most common failure messages, read from the
  error outputs of the check cells in the autograded notebooks;
- submissions with problems: what ``coursekit.core.problems`` recorded while grading
  (``grading-problems.json``), timeouts and kernel deaths found in the outputs, errors in
  the students' own cells, and submissions that were not autograded at all;
- late submissions (gradebook);
- the queue of written answers still waiting for a TA (gradebook ``needs_manual_grade``);
- item analysis (``coursekit.term.items``): per check cell its difficulty and discrimination (against
  the rest of the autograded score), flagged when negative or near zero; per question the spread
  of points; per written answer the spread of the marks given; also as ``items.csv`` (one row
  per check cell), ``items_questions.csv`` and ``items_written.csv``;
- a link to the similarity page (``coursekit.term.similarity``) when it is in the same folder.

Plots are PNG files drawn with matplotlib and embedded in the page as data URIs, so the
page is one file that opens anywhere. The CSV has one row per submission.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import math
import re
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import nbformat

from coursekit.core import csvsafe
from coursekit.submissions import intake
from coursekit.term import items
from coursekit.rendering import pages
from coursekit.core import problems as problem_log
from coursekit.core.layout import CourseLayout
from coursekit.core.notebook import natural_key, cell_failure, grade_id, is_check_cell, own_errors, question_of, question_titles

TOP_FAILURES = 3


# --- data --------------------------------------------------------------------------------


@dataclass
class CellResult:
    notebook: str
    grade_id: str
    question: str
    kind: str               # "check" (autograded test cell) or "written" (graded by a TA)
    score: float
    max_score: float
    pending: bool           # waiting for a TA
    failure_key: str = ""   # why a check lost points (numbers normalised), "" when it did not
    failure_text: str = ""  # one example of that failure, for people
    hint: str = ""


@dataclass
class Submission:
    student: str
    score: float = 0.0            # after the late penalty; written answers count when marked
    max_score: float = 0.0
    auto_score: float = 0.0
    auto_max: float = 0.0
    late_penalty: float = 0.0
    seconds_late: float = 0.0
    timestamp: datetime | None = None
    due: datetime | None = None   # the student's own due date (nbgrader: the assignment's + their extension)
    cells: list[CellResult] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)  # {"kind", "notebook", "cell", "message"}
    unanswered: int = 0  # answer cells still raising NotImplementedError

    @property
    def pending(self) -> int:
        return sum(c.pending for c in self.cells)


@dataclass
class ClassData:
    assignment: str
    course_id: str
    duedate: datetime | None
    submissions: list[Submission]
    titles: dict[str, str]                 # question -> title
    question_order: list[str]
    ungraded: list[str]                    # submitted but not in the gradebook
    refused: list[tuple[str, str]] = field(default_factory=list)  # (folder, why): the intake refused it


def _autograded_notebook(autograded: Path, notebook: str):
    path = autograded / f"{notebook}.ipynb"
    try:
        return nbformat.read(path, as_version=4)
    except Exception:  # missing, or not a notebook: reported through problems/gradebook
        return None


def collect(layout: CourseLayout, assignment: str) -> ClassData:
    """Everything the report shows, from the gradebook and the autograded folders."""
    from nbgrader.api import MissingEntry

    subs, titles, order = [], {}, []
    with layout.gradebook() as gb:
        try:
            assign = gb.find_assignment(assignment)
        except MissingEntry:
            raise SystemExit(f"{assignment} is not in the gradebook {layout.db_url}: run nbgrader generate_assignment first")
        course_id = assign.course_id
        duedate = assign.duedate
        for nb in sorted(assign.notebooks, key=lambda n: n.name):
            for q in sorted({question_of(c.name) for c in nb.grade_cells}, key=natural_key):
                if q not in order:
                    order.append(q)
        for student in sorted(gb.students, key=lambda s: s.id):
            try:
                sub = gb.find_submission(assignment, student.id)
            except MissingEntry:
                continue
            folder = layout.autograded(student.id, assignment)
            record = Submission(student.id, timestamp=sub.timestamp, seconds_late=float(sub.total_seconds_late or 0),
                                late_penalty=float(sub.late_submission_penalty or 0), due=sub.duedate)
            # What happened to the submission: its record (coursekit.core.problems; a damaged one is
            # one "unreadable-record" entry), then what only the report can see.
            recorded = problem_log.read(folder, student.id, assignment)
            record.problems = [dict(p, source="report" if recorded.damaged else problem_log.FILENAME)
                               for p in recorded.problems()]
            if intake.unfinished(folder):
                record.problems.append({"kind": "not-autograded", "notebook": None, "cell": None, "source": "report",
                                        "message": "its grading was stopped half-way: run nbgrader autograde again"})
            for snb in sorted(sub.notebooks, key=lambda n: n.name):
                graded_nb = _autograded_notebook(folder, snb.name)
                cells_by_id, errors = {}, Counter()
                if graded_nb is not None:
                    for q, t in question_titles(graded_nb).items():
                        titles.setdefault(q, t)
                    cells_by_id = {grade_id(c): c for c in graded_nb.cells if grade_id(c)}
                    _scan_outputs(record, snb.name, graded_nb, errors)
                    if errors:
                        record.problems.append({"kind": "errors-in-answers", "notebook": snb.name, "cell": None,
                                                "message": _error_summary(errors), "source": "outputs"})
                elif folder.is_dir():
                    record.problems.append({"kind": "not-autograded", "notebook": snb.name, "cell": None,
                                            "message": "no autograded notebook to read", "source": "report"})
                for grade in snb.grades:
                    cell = cells_by_id.get(grade.name)
                    kind = "check" if grade.cell_type == "code" and (cell is None or is_check_cell(cell)) else "written"
                    pending = bool(grade.needs_manual_grade) and grade.manual_score is None
                    result = CellResult(snb.name, grade.name, question_of(grade.name), kind,
                                        0.0 if pending else float(grade.score or 0), float(grade.max_score or 0), pending)
                    if kind == "check" and result.score < result.max_score:
                        failure = cell_failure(cell) if cell is not None else None
                        if failure is None:
                            result.failure_key = result.failure_text = "no error shown (cell not run, or output removed)"
                        else:
                            result.failure_key = failure.key
                            if failure.stderr:
                                result.failure_text = f"wrote to stderr: {failure.message}"
                            elif failure.ename == "CheckFailed":
                                result.failure_text = failure.what
                            else:
                                first = failure.message.splitlines()[0] if failure.message else ""
                                result.failure_text = f"{failure.ename}: {first}"
                            result.hint = failure.hint
                    record.cells.append(result)
            record.max_score = sum(c.max_score for c in record.cells)
            record.auto_max = sum(c.max_score for c in record.cells if c.kind == "check")
            record.auto_score = sum(c.score for c in record.cells if c.kind == "check")
            record.score = sum(c.score for c in record.cells) - record.late_penalty
            subs.append(record)

    graded = {s.student for s in subs}
    ungraded = [student for student in layout.students(assignment) if student not in graded]
    try:
        refused = [(folder.student, folder.reason) for folder in intake.class_list(layout, assignment)[1]]
    except intake.IntakeError:
        refused = []
    ungraded = [s for s in ungraded if intake.id_problem(s) is None]
    return ClassData(assignment, course_id, duedate, subs, titles, order, ungraded, refused)


def _scan_outputs(record: Submission, notebook: str, graded_nb, errors: Counter) -> None:
    """Errors in the student's own cells are counted in ``errors`` (ename -> cells) and reported
    as one row per notebook (cells the grader stopped are in the submission's record, and their
    stop's errors are not the student's). A cell still raising NotImplementedError is
    unanswered, not an error: it is counted in ``record.unanswered``."""
    for cell in graded_nb.cells:
        if cell.cell_type != "code" or is_check_cell(cell):
            continue  # a failed check is counted per question
        for ename in sorted(own_errors(cell)):
            if ename == "NotImplementedError":
                record.unanswered += 1
            else:
                errors[ename] += 1


def _error_summary(errors: Counter) -> str:
    total = sum(errors.values())
    kinds = ", ".join(f"{name} ×{n}" if n > 1 else name for name, n in errors.most_common())
    return f"{total} answer cell{'s' if total != 1 else ''} raised an error: {kinds}"


# --- statistics ----------------------------------------------------------------------------


def summary_stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "median": statistics.median(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


@dataclass
class QuestionStats:
    question: str
    title: str
    max_points: float
    mean_points: float
    checks: int
    pass_rate: float | None   # share of submissions with every check of the question passed
    pending: int              # written answers of this question waiting for a TA
    failures: list[tuple[int, str, str, str]]  # (count, example, cells, hint), most common first


def question_stats(data: ClassData) -> list[QuestionStats]:
    by_q: dict[str, list[tuple[Submission, CellResult]]] = defaultdict(list)
    for sub in data.submissions:
        for c in sub.cells:
            by_q[c.question].append((sub, c))
    stats = []
    for q in data.question_order + sorted(set(by_q) - set(data.question_order)):
        rows = by_q.get(q, [])
        if not rows:
            continue
        n = len({s.student for s, _ in rows})
        per_student = defaultdict(float)
        maxima = defaultdict(float)
        check_ok: dict[str, bool] = {}
        failures: dict[str, list] = {}
        for sub, c in rows:
            per_student[sub.student] += c.score
            maxima[(c.notebook, c.grade_id)] = c.max_score
            if c.kind == "check":
                check_ok[sub.student] = check_ok.get(sub.student, True) and c.score >= c.max_score
                if c.failure_key:
                    entry = failures.setdefault(c.failure_key, [Counter(), set(), Counter(), set()])
                    entry[0][c.failure_text] += 1
                    entry[1].add(c.grade_id)
                    entry[2][c.hint] += 1
                    entry[3].add(sub.student)
        top = sorted(failures.values(), key=lambda e: (-len(e[3]), e[0].most_common(1)[0][0]))[:TOP_FAILURES]
        stats.append(QuestionStats(
            q, data.titles.get(q, ""), sum(maxima.values()), sum(per_student.values()) / n,
            len({c.grade_id for _, c in rows if c.kind == "check"}),
            (sum(check_ok.values()) / len(check_ok)) if check_ok else None,
            sum(c.pending for _, c in rows),
            [(len(e[3]), e[0].most_common(1)[0][0], ", ".join(sorted(e[1])), e[2].most_common(1)[0][0]) for e in top],
        ))
    return stats


# --- plots ---------------------------------------------------------------------------------


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def histogram_png(scores: list[float], max_score: float) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    top = max(max_score, max(scores, default=0), 1)
    bins = min(20, max(5, int(math.ceil(top / 5))))
    ax.hist(scores, bins=bins, range=(0, top), color="#4c72b0", edgecolor="white")
    if scores:
        mean = statistics.fmean(scores)
        ax.axvline(mean, color="#d2413a", linestyle="--", label=f"mean {mean:.1f}")
        ax.legend(loc="upper left")
    ax.set_xlabel(f"score (points, out of {max_score:g})")
    ax.set_ylabel("submissions")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title("Score distribution")
    return _png(fig)


def questions_png(stats: list[QuestionStats]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.35 * len(stats) + 1.2))
    names = [s.question for s in stats][::-1]
    share = [100 * s.mean_points / s.max_points if s.max_points else 0 for s in stats][::-1]
    ax.barh(names, share, color="#55a868")
    ax.set_xlim(0, 100)
    ax.set_xlabel("mean points, % of the question's maximum (written answers count once marked)")
    ax.set_title("Questions")
    return _png(fig)


# --- output --------------------------------------------------------------------------------


def _ago(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days} d {hours} h" if days else f"{hours} h {rest // 60} min"


NOT_IN_GRADEBOOK = "submitted, but not in the gradebook: autograde failed or was not run"


def render_html(data: ClassData, stats: list[QuestionStats], generated: datetime,
                analysis: items.ItemAnalysis | None = None, similarity_page: str = "") -> str:
    """The page (templates/report.html.j2); plots are drawn here. ``similarity_page``: the
    similarity page's address relative to this page, linked when it exists."""
    scores = [s.score for s in data.submissions]
    max_score = max((s.max_score for s in data.submissions), default=0.0)
    s = summary_stats(scores)
    auto = summary_stats([x.auto_score for x in data.submissions])
    summary = [("submissions", s["n"]), ("mean", f"{s['mean']:.2f} / {max_score:g}"),
               ("median", f"{s['median']:.2f}"), ("standard deviation", f"{s['stdev']:.2f}"),
               ("lowest / highest", f"{s['min']:g} / {s['max']:g}"),
               ("autograded part, mean", f"{auto['mean']:.2f} / {max((x.auto_max for x in data.submissions), default=0):g}"),
               ("written answers waiting for a TA", sum(x.pending for x in data.submissions))] if s["n"] else []
    problems = [(sub.student, p) for sub in data.submissions for p in sub.problems]
    problems += [(student, {"kind": "not-autograded", "notebook": None, "cell": None, "source": "report",
                            "message": NOT_IN_GRADEBOOK}) for student in data.ungraded]
    problems += [(student, {"kind": "refused-id", "notebook": None, "cell": None, "source": "intake",
                            "message": why}) for student, why in data.refused]
    late = [(sub, _ago(sub.seconds_late)) for sub in sorted(data.submissions, key=lambda x: -x.seconds_late)
            if sub.seconds_late > 0]
    order = {q: i for i, q in enumerate(data.question_order)}
    queue = sorted(((c, sub.student) for sub in data.submissions for c in sub.cells if c.pending),
                   key=lambda r: (order.get(r[0].question, 99), r[0].notebook, r[0].grade_id, r[1]))
    queue_counts = sorted(Counter((c.notebook, c.grade_id) for c, _ in queue).items())
    return pages.render(
        "report.html.j2", csp=pages.REPORT_CSP, data=data, stats=stats, generated=generated, summary=summary,
        histogram=histogram_png(scores, max_score) if summary else "",
        questions_plot=questions_png(stats) if stats else "",
        problems=problems, late=late, queue=queue, queue_counts=queue_counts,
        student_head=CSV_HEAD[:9], student_rows=[row[:9] for row in csv_rows(data)],
        items=analysis if analysis is not None else items.analyse(data), near_zero=items.NEAR_ZERO,
        similarity_page=similarity_page)


CSV_HEAD = ["student", "score", "max_score", "autograded_score", "autograded_max", "late_penalty",
            "written_waiting", "problems", "unanswered_cells", "seconds_late", "timestamp", "due_date"]


def csv_header(data: ClassData) -> list[str]:
    return CSV_HEAD + [f"points_{q}" for q in data.question_order]


def csv_rows(data: ClassData) -> list[list]:
    rows = []
    for sub in data.submissions:
        per_q = defaultdict(float)
        for c in sub.cells:
            per_q[c.question] += c.score
        rows.append([sub.student, round(sub.score, 4), sub.max_score, round(sub.auto_score, 4), sub.auto_max,
                     round(sub.late_penalty, 4), sub.pending, len(sub.problems), sub.unanswered, round(sub.seconds_late),
                     sub.timestamp.isoformat() if sub.timestamp else "", sub.due.isoformat() if sub.due else ""]
                    + [round(per_q[q], 4) for q in data.question_order])
    return rows


SIMILARITY_PAGE = "similarity.html"  # written beside the report by coursekit.term.similarity
ITEM_TABLES = {  # file -> (header, rows of an ItemAnalysis): the item analysis as CSV, beside report.csv
    "items.csv": (items.CSV_HEAD, items.csv_rows),                       # one row per check cell
    "items_questions.csv": (items.SPREAD_HEAD, items.question_rows),     # one row per question
    "items_written.csv": (items.WRITTEN_HEAD, items.written_rows),       # one row per written answer
}


def _write_csv(path: Path, header: list, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(csvsafe.row(header))
        writer.writerows(csvsafe.row(r) for r in rows)


def write_report(data: ClassData, out_dir: Path) -> tuple[Path, Path]:
    """report.html and report.csv, and the item analysis's CSV files (ITEM_TABLES), in ``out_dir``.
    The page links to the similarity page (coursekit.term.similarity) when it is in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = question_stats(data)
    analysis = items.analyse(data)
    page = out_dir / "report.html"
    similarity_page = SIMILARITY_PAGE if (out_dir / SIMILARITY_PAGE).is_file() else ""
    page.write_text(render_html(data, stats, datetime.now(timezone.utc), analysis, similarity_page),
                    encoding="utf-8")
    table = out_dir / "report.csv"
    _write_csv(table, csv_header(data), csv_rows(data))
    for name, (header, rows) in ITEM_TABLES.items():
        _write_csv(out_dir / name, header, rows(analysis))
    return page, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coursekit.term.report",
                                     description="Write the class report of an assignment (run after autograde).")
    parser.add_argument("assignment", nargs="?", help="the assignment (default: the course's only one)")
    parser.add_argument("--course", help="the course's root folder (default: the folder with nbgrader_config.py, "
                                         "from here upwards)")
    parser.add_argument("--out", help="folder for report.html and report.csv (default: reports/<assignment>)")
    args = parser.parse_args(argv)

    out_dir = Path(args.out).resolve() if args.out else None
    from coursekit.term import context  # the course and the assignment found as every coursekit command finds them

    try:
        layout, args.assignment = context.resolve(args.course, args.assignment)
    except context.click.ClickException as err:
        print(f"{parser.prog}: {err.format_message()}", file=sys.stderr)
        return err.exit_code
    data = collect(layout, args.assignment)
    out_dir = out_dir or layout.root / "reports" / args.assignment
    page, table = write_report(data, out_dir)
    print(f"class report of {args.assignment} ({len(data.submissions)} submission(s)): {page}")
    print(f"table: {table}")
    print(f"item analysis: {table.parent / 'items.csv'} (one row per check cell)")
    return 0 if data.submissions else 1


if __name__ == "__main__":
    sys.exit(main())
