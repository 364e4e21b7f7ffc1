"""The TA class report: `python -m coursekit.term.report week2` after autograde writes
reports/week2/report.html and report.csv, and what they say matches the gradebook and the
autograded notebooks."""

from __future__ import annotations

import base64
import csv
import html
import io
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import numpy as np
import pytest

import builder
from builder import ASSIGNMENT, NOTEBOOKS, Submission
from coursekit.core import problems
from coursekit.core.course import Course, grading_env
from coursekit.core.notebook import is_answer_cell, question_of

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def run_report(course: Course) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "coursekit.term.report", ASSIGNMENT], cwd=course.root,
                          capture_output=True, text=True, env=grading_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


class Tables(HTMLParser):
    """Rows of every table by the table's id, cells as text; and the ids and images present."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[list[str]]] = {}
        self.ids: set[str] = set()
        self.images: dict[str, str] = {}
        self._table, self._row, self._cell = None, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            self.images[attrs.get("id", "")] = attrs.get("src", "")
        elif tag == "table":
            self._table = self.tables.setdefault(attrs.get("id", ""), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(html_text: str) -> Tables:
    t = Tables()
    t.feed(html_text)
    return t


def body_rows(table: list[list[str]]) -> list[list[str]]:
    return table[1:]  # the first row holds the headings


def gradebook_view(course: Course) -> dict[str, dict]:
    """Per student, computed here from the gradebook: score, pending answers, per question."""
    view = {}
    with course.layout.gradebook() as gb:
        for sub in gb.assignment_submissions(ASSIGNMENT):
            per_q, pending, score, max_score = {}, [], 0.0, 0.0
            for nb in sub.notebooks:
                for g in nb.grades:
                    waiting = g.needs_manual_grade and g.manual_score is None
                    q = question_of(g.name)
                    per_q[q] = per_q.get(q, 0.0) + (0.0 if waiting else g.score)
                    score += 0.0 if waiting else g.score
                    max_score += g.max_score
                    if waiting:
                        pending.append((nb.name, g.name))
            penalty = sub.late_submission_penalty or 0.0
            view[sub.student.id] = {"score": score - penalty, "max": max_score, "per_q": per_q, "pending": pending,
                                    "penalty": penalty, "late": (sub.total_seconds_late or 0) > 0}
    return view


# --- the fixture class ---------------------------------------------------------------


@pytest.fixture(scope="module")
def report(graded_class):
    proc = run_report(graded_class.course)
    folder = graded_class.course.root / "reports" / ASSIGNMENT
    html_text = (folder / "report.html").read_text(encoding="utf-8")
    with open(folder / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {"stdout": proc.stdout, "folder": folder, "html": html_text, "page": parse(html_text), "csv": rows}


def test_command_writes_html_and_csv_and_says_where(report):
    assert str(report["folder"] / "report.html") in report["stdout"]
    assert str(report["folder"] / "report.csv") in report["stdout"]


def test_csv_has_every_submission_with_its_gradebook_score(report, graded_class):
    view = gradebook_view(graded_class.course)
    assert {r["student"] for r in report["csv"]} == set(view)
    assert set(view) >= {s for s in graded_class.students if graded_class.autograded_dir(s).is_dir()}
    for row in report["csv"]:
        want = view[row["student"]]
        assert float(row["score"]) == pytest.approx(want["score"]), row["student"]
        assert float(row["max_score"]) == pytest.approx(want["max"])
        assert int(row["written_waiting"]) == len(want["pending"])
        assert float(row["late_penalty"]) == pytest.approx(want["penalty"])
        for q, points in want["per_q"].items():
            assert float(row[f"points_{q}"]) == pytest.approx(points), (row["student"], q)


def test_summary_statistics_and_histogram(report, graded_class):
    view = gradebook_view(graded_class.course)
    scores = sorted(v["score"] for v in view.values())
    stats = {r[0]: r[1] for r in report["page"].tables["summary-stats"]}
    assert stats["submissions"] == str(len(scores))
    assert stats["mean"].startswith(f"{sum(scores) / len(scores):.2f} / ")
    assert stats["lowest / highest"] == f"{scores[0]:g} / {scores[-1]:g}"
    png = report["page"].images["histogram"]
    assert png.startswith("data:image/png;base64,")


def test_per_question_mean_points_and_pass_rate(report, graded_class):
    view = gradebook_view(graded_class.course)
    rows = {r[0].split(" ·")[0]: r for r in body_rows(report["page"].tables["question-table"])}
    questions = {q for v in view.values() for q in v["per_q"]}
    assert set(rows) == questions
    with graded_class.course.layout.gradebook() as gb:
        for q, row in rows.items():
            mean = sum(v["per_q"].get(q, 0.0) for v in view.values()) / len(view)
            assert row[2].startswith(f"{mean:.2f}"), (q, row)
            passed, with_checks = 0, 0
            for sub in gb.assignment_submissions(ASSIGNMENT):
                checks = [g for nb in sub.notebooks for g in nb.grades
                          if g.cell_type == "code" and question_of(g.name) == q]
                if checks:
                    with_checks += 1
                    passed += all(g.score >= g.max_score for g in checks)
            assert row[3] == ("—" if not with_checks else f"{100 * passed / with_checks:.0f} %"), (q, row)


def test_failure_messages_come_from_the_autograded_notebooks(report, graded_class):
    """Each question some check of which failed lists failures, and each listed message is
    (part of) an error a check cell printed in an autograded notebook."""
    errors = []
    for path in [p for s in graded_class.students for p in graded_class.autograded_dir(s).glob("*.ipynb")]:
        for cell in nbformat.read(path, as_version=4).cells:
            errors += [f"{o.get('ename')}: {o.get('evalue')}" for o in cell.get("outputs", [])
                       if o.get("output_type") == "error"]
            errors += [f"wrote to stderr: {o.get('text', '').strip()}" for o in cell.get("outputs", [])
                       if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    listed = [html.unescape(m) for m in re.findall(r'<li><b>\d+×</b> (.*?) <span class="muted">', report["html"])]
    assert listed or not errors
    for message in listed:
        assert any(message in e for e in errors) or message.startswith("no error shown"), message
    untouched = [r for r in body_rows(report["page"].tables["question-table"]) if r[0].startswith("F5")]
    if "untouched-release" in graded_class.students:
        assert "not defined" in untouched[0][4] or "NameError" in untouched[0][4]


def test_manual_grading_queue_is_the_gradebook_queue(report, graded_class):
    rows = body_rows(report["page"].tables.get("queue-table", [[]]))
    shown = {(r[3], r[1], r[2]) for r in rows}
    assert shown == set(graded_class.manual)
    assert len(rows) == len(graded_class.manual)


def test_problems_and_late_submissions_listed(report, graded_class):
    page = report["page"]
    problem_rows = body_rows(page.tables.get("problem-table", [[]]))
    for student in graded_class.students:
        for p in problems.load(graded_class.autograded_dir(student)):
            row = [student, p["kind"], p["notebook"] or "", p["cell"] or "", " ".join(str(p["message"]).split()),
                   "grading-problems.json"]
            assert row in problem_rows, (student, p)
    if "untouched-release" in graded_class.students:  # every answer cell raises NotImplementedError:
        answer_cells = sum(1 for nb in builder.release(graded_class.course.layout).values()  # unanswered,
                           for c in nb.cells if c.cell_type == "code" and is_answer_cell(c))  # not an error
        row = next(r for r in report["csv"] if r["student"] == "untouched-release")
        assert int(row["unanswered_cells"]) == answer_cells > 10
        assert not [r for r in problem_rows if r[0] == "untouched-release" and r[1] == "errors-in-answers"]
    late = {s for s, v in gradebook_view(graded_class.course).items() if v["late"]}
    assert {r[0] for r in body_rows(page.tables.get("late-table", [[]]))} == late


def test_item_analysis_csv_matches_the_gradebook(report, graded_class):
    """items.csv: one row per check cell of the gradebook, its pass rate and its discrimination
    (correlation with the autograded score minus the cell's) computed here from the gradebook."""
    points: dict[tuple[str, str], dict[str, float]] = {}
    maxima: dict[tuple[str, str], float] = {}
    with graded_class.course.layout.gradebook() as gb:
        for sub in gb.assignment_submissions(ASSIGNMENT):
            for nb in sub.notebooks:
                for g in nb.grades:
                    if g.cell_type == "code":
                        points.setdefault((nb.name, g.name), {})[sub.student.id] = g.score
                        maxima[(nb.name, g.name)] = g.max_score
    auto = {}
    for cell in points.values():
        for student, score in cell.items():
            auto[student] = auto.get(student, 0.0) + score
    with open(report["folder"] / "items.csv", newline="") as f:
        rows = {(r["notebook"], r["grade_id"]): r for r in csv.DictReader(f)}
    assert set(rows) == set(points)
    for key, row in rows.items():
        students = sorted(points[key])
        scores = np.array([points[key][s] for s in students])
        rest = np.array([auto[s] for s in students]) - scores
        assert float(row["pass_rate"]) == pytest.approx(float(np.mean(scores >= maxima[key])), abs=1e-4), key
        if scores.std() == 0 or rest.std() == 0:
            assert row["discrimination"] == "" and row["flag"] == "no spread", key
        else:
            r = float(np.corrcoef(scores, rest)[0, 1])
            assert float(row["discrimination"]) == pytest.approx(r, abs=1e-4), key
            assert row["flag"] == ("negative" if r < 0 else "near zero" if abs(r) < 0.1 else ""), key
    assert {"item-table", "spread-table", "written-table"} <= report["page"].ids


# --- a class with a timeout, a late submission and a recorded problem ------------------


@pytest.fixture(scope="module")
def troubled(tmp_path_factory) -> Course:
    """One submission whose first answer loops forever, handed in 30 hours late, graded with
    a 40 s cell time limit; a tampered cell recorded for it as the repairs would."""
    course = Course.copy_of(tmp_path_factory.mktemp("troubled") / "course")
    course.generate(ASSIGNMENT)
    notebooks = builder.release(course.layout, NOTEBOOKS)
    builder.set_answer(notebooks["fashion_mnist"], "f1_load", "while True:\n    pass\n")
    Submission(notebooks, timestamp=builder.late_by(course.layout, hours=30)).submit(course, "loops")
    course.nbgrader("autograde", ASSIGNMENT, "--Execute.timeout=40")
    problems.record(course.layout.autograded("loops", ASSIGNMENT), "tampered-cell", "mnist", "m1_shapes_public",
                    "a read-only check cell was edited; the original was restored")
    return course


def test_timeouts_late_and_recorded_problems_are_reported(troubled):
    run_report(troubled)
    page = parse((troubled.root / "reports" / ASSIGNMENT / "report.html").read_text(encoding="utf-8"))
    rows = body_rows(page.tables["problem-table"])
    # found in the outputs, or recorded by the grading pipeline (then listed once)
    assert len([r for r in rows if r[:4] == ["loops", "timeout", "fashion_mnist", "f1_load"]]) == 1, rows
    assert ["loops", "tampered-cell", "mnist", "m1_shapes_public",
            "a read-only check cell was edited; the original was restored", "grading-problems.json"] in rows
    late = body_rows(page.tables["late-table"])
    # columns: student, submitted, the student's own due date, late by, penalty
    assert [r[0] for r in late] == ["loops"] and late[0][2] == "2026-12-04 23:59:00 UTC" and late[0][3] == "1 d 6 h"
    view = gradebook_view(troubled)
    assert float(late[0][4]) == pytest.approx(view["loops"]["penalty"])


# --- it renders in a browser -----------------------------------------------------------


def chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run bin/setup (Debian: apt-get install chromium)")
    profile = tmp / f"profile-{len(list(tmp.iterdir()))}"
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)


@pytest.mark.browser
def test_report_renders_in_headless_chromium(report, tmp_path):
    from PIL import Image

    url = (report["folder"] / "report.html").as_uri()
    shot = tmp_path / "report.png"
    proc = chromium(f"--screenshot={shot}", "--window-size=1200,2000", url, tmp=tmp_path)
    assert shot.is_file(), proc.stderr[-3000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 2000)
    pixels = np.asarray(image).reshape(-1, 3).astype(int)
    colors = len(np.unique(pixels, axis=0))
    not_white = float((pixels.sum(axis=1) < 720).mean())
    assert colors > 50 and not_white > 0.02, (colors, not_white)
    # the histogram's bars (matplotlib colour #4c72b0) are on screen: the embedded PNG decoded
    bars = int((np.abs(pixels - [0x4C, 0x72, 0xB0]).max(axis=1) < 12).sum())
    assert bars > 500, bars

    dom = chromium("--dump-dom", url, tmp=tmp_path).stdout
    page = parse(dom)
    for element in ("title", "summary", "histogram", "questions", "question-table", "problems", "late",
                    "manual-queue", "students", "summary-stats"):
        assert element in page.ids, element
    assert len(body_rows(page.tables["question-table"])) == len(report["page"].tables["question-table"]) - 1
    for name in ("histogram", "questions-plot"):
        src = page.images[name]
        assert src.startswith("data:image/png;base64,")
        plot = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert plot.format == "PNG" and plot.width > 300 and plot.height > 100
        assert len(np.unique(np.asarray(plot.convert("RGB")).reshape(-1, 3), axis=0)) > 10, name
