"""Class report for TAs, written after autograde: one HTML page and a CSV beside it.

``python -m coursekit.report week2`` from the course root writes
``reports/week2/report.html`` and ``reports/week2/report.csv`` (``--out DIR`` to change).

The page shows:
- the score distribution (histogram) and summary statistics;
- per question: mean points, pass rate and the most common failure messages, read from the
  error outputs of the check cells in the autograded notebooks;
- submissions with problems: what ``coursekit.problems`` recorded while grading
  (``grading-problems.json``), timeouts and kernel deaths found in the outputs, errors in
  the students' own cells, and submissions that were not autograded at all;
- late submissions (gradebook);
- the queue of written answers still waiting for a TA (gradebook ``needs_manual_grade``).

Plots are PNG files drawn with matplotlib and embedded in the page as data URIs, so the
page is one file that opens anywhere. The CSV has one row per submission.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import math
import os
import re
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import nbformat

from coursekit import problems as problem_log
from coursekit.feedback import cell_failure, is_check_cell, nbgrader_meta, question_of, question_titles

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


def natural_key(name: str):
    """'F10' after 'F9'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _autograded_notebook(autograded: Path, notebook: str):
    path = autograded / f"{notebook}.ipynb"
    try:
        return nbformat.read(path, as_version=4)
    except Exception:  # missing, or not a notebook: reported through problems/gradebook
        return None


def collect(db_url: str, root: Path, assignment: str, autograded_dir: str = "autograded",
            submitted_dir: str = "submitted") -> ClassData:
    """Everything the report shows, from the gradebook and the autograded folders."""
    from nbgrader.api import Gradebook, MissingEntry

    subs, titles, order = [], {}, []
    with Gradebook(db_url) as gb:
        try:
            assign = gb.find_assignment(assignment)
        except MissingEntry:
            raise SystemExit(f"{assignment} is not in the gradebook {db_url}: run nbgrader generate_assignment first")
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
            folder = root / autograded_dir / student.id / assignment
            record = Submission(student.id, timestamp=sub.timestamp, seconds_late=float(sub.total_seconds_late or 0),
                                late_penalty=float(sub.late_submission_penalty or 0))
            record.problems = [dict(p, source="grading-problems.json") for p in problem_log.load(folder)]
            for snb in sorted(sub.notebooks, key=lambda n: n.name):
                graded_nb = _autograded_notebook(folder, snb.name)
                cells_by_id, errors = {}, Counter()
                if graded_nb is not None:
                    for q, t in question_titles(graded_nb).items():
                        titles.setdefault(q, t)
                    for cell in graded_nb.cells:
                        gid = nbgrader_meta(cell).get("grade_id")
                        if gid:
                            cells_by_id[gid] = cell
                        _scan_outputs(record, snb.name, gid, cell, errors)
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
    base = root / submitted_dir
    ungraded = sorted(p.name for p in base.iterdir() if (p / assignment).is_dir() and p.name not in graded) \
        if base.is_dir() else []
    return ClassData(assignment, course_id, duedate, subs, titles, order, ungraded)


def _scan_outputs(record: Submission, notebook: str, gid: str | None, cell, errors: Counter) -> None:
    """Timeouts and dead kernels from error outputs (unless grading already recorded them);
    errors in the student's own cells are counted in ``errors`` (ename -> cells) and reported
    as one row per notebook. A cell still raising NotImplementedError is unanswered, not an
    error: it is counted in ``record.unanswered``."""
    if cell.cell_type != "code":
        return
    errors_here = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    names = {o.get("ename", "") or "Error" for o in errors_here}
    where = gid or "(a cell without id)"
    recorded = {(p.get("kind"), p.get("notebook"), p.get("cell")) for p in record.problems}
    if "CellTimeoutError" in names:
        if ("timeout", notebook, gid) not in recorded:
            record.problems.append({"kind": "timeout", "notebook": notebook, "cell": gid,
                                    "message": f"cell {where} ran past the time limit", "source": "outputs"})
        names.discard("KeyboardInterrupt")  # how the kernel was interrupted at the time limit
    for ename in sorted(names):
        if ename == "CellTimeoutError":
            continue
        if ename in ("DeadKernelError", "UnresponsiveKernelError"):
            if ("error", notebook, gid) not in recorded:
                record.problems.append({"kind": "error", "notebook": notebook, "cell": gid,
                                        "message": f"the kernel died while running {where}", "source": "outputs"})
        elif is_check_cell(cell):
            continue  # a failed check: counted per question
        elif ename == "NotImplementedError":
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


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def _ago(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days} d {hours} h" if days else f"{hours} h {rest // 60} min"


CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.1em; } h2 { margin-top: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.6em 0; width: 100%; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 0.3em 0.6em; text-align: left; vertical-align: top; font-size: 0.93em; }
th { background: #f3f3f3; } td.num { text-align: right; white-space: nowrap; }
.muted { color: #777; } ol.failures { margin: 0; padding-left: 1.2em; } .hint { color: #555; font-style: italic; }
img.plot { max-width: 100%; border: 1px solid #eee; }
.stats td:first-child { width: 14em; }
"""


def render_html(data: ClassData, stats: list[QuestionStats], generated: datetime) -> str:
    scores = [s.score for s in data.submissions]
    max_score = max((s.max_score for s in data.submissions), default=0.0)
    s = summary_stats(scores)
    auto = summary_stats([x.auto_score for x in data.submissions])
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{_e(data.assignment)}: class report</title><style>{CSS}</style></head><body>",
           f'<h1 id="title">{_e(data.assignment)}: class report</h1>',
           f'<p class="muted">Course {_e(data.course_id)} · due {_e(data.duedate or "no due date")} UTC · '
           f"generated {_e(generated.strftime('%Y-%m-%d %H:%M UTC'))} from the gradebook and autograded/ · "
           f"{len(data.submissions)} graded submission(s)</p>"]

    # summary
    out.append('<section id="summary"><h2>Scores</h2>')
    if s["n"]:
        out.append('<table class="stats" id="summary-stats"><tbody>')
        rows = [("submissions", s["n"]), ("mean", f"{s['mean']:.2f} / {max_score:g}"),
                ("median", f"{s['median']:.2f}"), ("standard deviation", f"{s['stdev']:.2f}"),
                ("lowest / highest", f"{s['min']:g} / {s['max']:g}"),
                ("autograded part, mean", f"{auto['mean']:.2f} / {max((x.auto_max for x in data.submissions), default=0):g}"),
                ("written answers waiting for a TA", sum(x.pending for x in data.submissions))]
        out += [f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows]
        out.append("</tbody></table>")
        out.append('<p class="muted">Scores are after late penalties; written answers count once a TA has '
                   "marked them, so scores rise as the queue below empties.</p>")
        out.append(f'<img class="plot" id="histogram" alt="histogram of scores" src="{histogram_png(scores, max_score)}">')
    else:
        out.append("<p>No graded submissions yet: run <code>nbgrader autograde</code> first.</p>")
    out.append("</section>")

    # questions
    out.append('<section id="questions"><h2>Questions</h2>')
    if stats:
        out.append(f'<img class="plot" id="questions-plot" alt="mean points per question" src="{questions_png(stats)}">')
    out.append('<table id="question-table"><thead><tr><th>Question</th><th>Max</th><th>Mean points</th>'
               "<th>All checks passed</th><th>Most common failures (students · cells · hint)</th></tr></thead><tbody>")
    for q in stats:
        rate = "—" if q.pass_rate is None else f"{100 * q.pass_rate:.0f} %"
        waiting = f'<br><span class="muted">{q.pending} written waiting</span>' if q.pending else ""
        fails = "".join(f"<li><b>{count}×</b> {_e(text)} <span class=\"muted\">({_e(cells)})</span>"
                        + (f'<br><span class="hint">Hint: {_e(hint)}</span>' if hint else "") + "</li>"
                        for count, text, cells, hint in q.failures)
        fails = f'<ol class="failures">{fails}</ol>' if fails else '<span class="muted">none</span>'
        title = f" · {_e(q.title)}" if q.title else ""
        out.append(f'<tr data-question="{_e(q.question)}"><td><b>{_e(q.question)}</b>{title}</td>'
                   f'<td class="num">{q.max_points:g}</td><td class="num">{q.mean_points:.2f}{waiting}</td>'
                   f'<td class="num">{rate}</td><td>{fails}</td></tr>')
    out.append("</tbody></table></section>")

    # problems
    out.append('<section id="problems"><h2>Submissions with problems</h2>')
    rows = [(sub.student, p) for sub in data.submissions for p in sub.problems]
    rows += [(student, {"kind": "not-autograded", "notebook": None, "cell": None, "source": "report",
                        "message": "submitted, but not in the gradebook: autograde failed or was not run"})
             for student in data.ungraded]
    if rows:
        out.append('<table id="problem-table"><thead><tr><th>Student</th><th>Kind</th><th>Notebook</th>'
                   "<th>Cell</th><th>What</th><th>Found in</th></tr></thead><tbody>")
        for student, p in rows:
            out.append(f'<tr data-kind="{_e(p.get("kind"))}"><td>{_e(student)}</td><td>{_e(p.get("kind"))}</td>'
                       f'<td>{_e(p.get("notebook") or "")}</td><td>{_e(p.get("cell") or "")}</td>'
                       f'<td>{_e(p.get("message"))}</td><td class="muted">{_e(p.get("source"))}</td></tr>')
        out.append("</tbody></table>")
    else:
        out.append("<p>None.</p>")
    out.append("</section>")

    # late
    out.append('<section id="late"><h2>Late submissions</h2>')
    late = [sub for sub in data.submissions if sub.seconds_late > 0]
    if late:
        out.append('<table id="late-table"><thead><tr><th>Student</th><th>Submitted</th><th>Late by</th>'
                   "<th>Penalty (points)</th></tr></thead><tbody>")
        for sub in sorted(late, key=lambda x: -x.seconds_late):
            out.append(f"<tr><td>{_e(sub.student)}</td><td>{_e(sub.timestamp)} UTC</td><td>{_ago(sub.seconds_late)}</td>"
                       f'<td class="num">{sub.late_penalty:g}</td></tr>')
        out.append("</tbody></table>")
    else:
        out.append("<p>None.</p>")
    out.append("</section>")

    # manual grading queue
    out.append('<section id="manual-queue"><h2>Written answers waiting for a TA</h2>')
    queue = [(c.question, c.notebook, c.grade_id, sub.student, c.max_score)
             for sub in data.submissions for c in sub.cells if c.pending]
    if queue:
        per_cell = Counter((nb, gid) for _, nb, gid, _, _ in queue)
        out.append("<p>" + " · ".join(f"{_e(gid)} ({_e(nb)}): <b>{n}</b>" for (nb, gid), n in sorted(per_cell.items()))
                   + ' <span class="muted">— grade them in formgrader (Manual Grading), question by question</span></p>')
        order = {q: i for i, q in enumerate(data.question_order)}
        out.append('<table id="queue-table"><thead><tr><th>Question</th><th>Notebook</th><th>Cell</th>'
                   "<th>Student</th><th>Points</th></tr></thead><tbody>")
        for q, nb, gid, student, points in sorted(queue, key=lambda r: (order.get(r[0], 99), r[1], r[2], r[3])):
            out.append(f"<tr><td>{_e(q)}</td><td>{_e(nb)}</td><td>{_e(gid)}</td><td>{_e(student)}</td>"
                       f'<td class="num">{points:g}</td></tr>')
        out.append("</tbody></table>")
    else:
        out.append("<p>None: every written answer has been marked.</p>")
    out.append("</section>")

    # students
    out.append('<section id="students"><h2>All submissions</h2><p class="muted">The same as report.csv.</p>'
               '<table id="student-table"><thead><tr>' + "".join(f"<th>{_e(h)}</th>" for h in CSV_HEAD[:9])
               + "</tr></thead><tbody>")
    for row in csv_rows(data):
        out.append("<tr>" + "".join(f'<td{" class=num" if i else ""}>{_e(v)}</td>' for i, v in enumerate(row[:9]))
                   + "</tr>")
    out.append("</tbody></table></section></body></html>")
    return "\n".join(out)


CSV_HEAD = ["student", "score", "max_score", "autograded_score", "autograded_max", "late_penalty",
            "written_waiting", "problems", "unanswered_cells", "seconds_late", "timestamp"]


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
                     sub.timestamp.isoformat() if sub.timestamp else ""]
                    + [round(per_q[q], 4) for q in data.question_order])
    return rows


def write_report(data: ClassData, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = question_stats(data)
    page = out_dir / "report.html"
    page.write_text(render_html(data, stats, datetime.now(timezone.utc)), encoding="utf-8")
    table = out_dir / "report.csv"
    with open(table, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(csv_header(data))
        writer.writerows(csv_rows(data))
    return page, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the class report of an assignment (run after autograde).")
    parser.add_argument("assignment", nargs="?", default="week2")
    parser.add_argument("--out", help="folder for report.html and report.csv (default: reports/<assignment>)")
    args = parser.parse_args(argv)

    from nbgrader.coursedir import CourseDirectory

    from coursekit.schedule import load_course_config

    out_dir = Path(args.out).resolve() if args.out else None
    config = load_course_config()
    coursedir = CourseDirectory(config=config)
    root = Path(coursedir.root)
    os.chdir(root)  # the gradebook URL in nbgrader_config.py is relative to the course root
    data = collect(coursedir.db_url, root, args.assignment, coursedir.autograded_directory,
                   coursedir.submitted_directory)
    out_dir = out_dir or root / "reports" / args.assignment
    page, table = write_report(data, out_dir)
    print(f"class report of {args.assignment} ({len(data.submissions)} submission(s)): {page}")
    print(f"table: {table}")
    return 0 if data.submissions else 1


if __name__ == "__main__":
    sys.exit(main())
