"""Item analysis in the class report (coursekit.term.items): difficulty, discrimination against the rest
score, flags, the spread of points per question and of marks per written answer, computed by hand
on a tiny synthetic gradebook (a real nbgrader SQLite gradebook, read by coursekit.term.report.collect)
and checked in the page, in items.csv and in headless Chromium."""

from __future__ import annotations

import csv
import math
import os
import sys
from pathlib import Path

import pytest

from coursekit.core import csvsafe
from coursekit.term import items, report
from coursekit.core.course import REPO_ROOT
from coursekit.core.layout import CourseLayout

SHOTS = REPO_ROOT / "build" / "screenshots" / "items"
ASSIGNMENT = "tiny"

# Five students; checks f1_a, f1_b (question F1), f2_c (2 points), f2_d, f2_e (F2); a written answer
# f2_w (2 points) that s3 is still waiting for. Points per student s1..s5:
CHECKS = {  # grade id -> (max, points of s1..s5)
    "f1_a": (1, [1, 1, 0, 0, 1]),
    "f1_b": (1, [0, 1, 1, 0, 0]),
    "f2_c": (2, [2, 2, 0, 1, 1]),
    "f2_d": (1, [1, 1, 1, 1, 1]),
    "f2_e": (1, [1, 1, 1, 1, 0]),
}
WRITTEN = {"f2_w": (2, [2, 1, None, 0, 2])}  # None: not marked yet
STUDENTS = ["s1", "s2", "s3", "s4", "s5"]
HOSTILE_ID = "=HYPERLINK(1)"  # a grade id a spreadsheet would run (only the instructor names cells, but still)

# By hand. Autograded totals: s1..s5 = 5, 6, 3, 3, 3.
#  f1_a: x = 1 1 0 0 1, rest = 4 5 3 3 2; means 0.6, 3.4; dx = .4 .4 -.6 -.6 .4, dy = .6 1.6 -.4 -.4 -1.4;
#        Sxy = .24+.64+.24+.24-.56 = 0.8, Sxx = 1.2, Syy = .36+2.56+.16+.16+1.96 = 5.2: r = .8/sqrt(6.24) = 0.3203
#  f1_b: x = 0 1 1 0 0, rest = 5 5 2 3 3; means 0.4, 3.6; dx = -.4 .6 .6 -.4 -.4, dy = 1.4 1.4 -1.6 -.6 -.6;
#        Sxy = -.56+.84-.96+.24+.24 = -0.2, Sxx = 1.2, Syy = 7.2: r = -.2/sqrt(8.64) = -0.0680 -> negative
#  f2_c: x = 2 2 0 1 1, rest = 3 4 3 2 2; means 1.2, 2.8; dx = .8 .8 -1.2 -.2 -.2, dy = .2 1.2 .2 -.8 -.8;
#        Sxy = .16+.96-.24+.16+.16 = 1.2, Sxx = 2.8, Syy = 2.8: r = 1.2/2.8 = 0.4286
#  f2_d: everyone 1: undefined -> no spread
#  f2_e: x = 1 1 1 1 0, rest = 4 5 2 2 3; means 0.8, 3.2; dx = .2 .2 .2 .2 -.8, dy = .8 1.8 -1.2 -1.2 -.2;
#        Sxy = .16+.36-.24-.24+.16 = 0.2, Sxx = 0.8, Syy = 6.8: r = .2/sqrt(5.44) = 0.0857 -> near zero (< 0.1)
HAND = {  # grade id -> (pass rate, mean points, discrimination, flag)
    "f1_a": (0.6, 0.6, 0.8 / math.sqrt(6.24), ""),
    "f1_b": (0.4, 0.4, -0.2 / math.sqrt(8.64), "negative"),
    "f2_c": (0.4, 1.2, 1.2 / 2.8, ""),
    "f2_d": (1.0, 1.0, None, "no spread"),
    "f2_e": (0.8, 0.8, 0.2 / math.sqrt(5.44), "near zero"),
}
# Points per question (a written answer waiting counts 0, as in the rest of the report):
#  F1 = a+b = 1 2 1 0 1: mean 1, sd sqrt(2/4), sorted 0 1 1 1 2: min 0, q1 1, median 1, q3 1, max 2
#  F2 = c+d+e+w = 6 5 2 3 4: mean 4, sd sqrt(10/4), sorted 2 3 4 5 6: q1 3, median 4, q3 5
SPREAD = {"F1": (1.0, math.sqrt(0.5), 0, 1, 1, 1, 2), "F2": (4.0, math.sqrt(2.5), 2, 3, 4, 5, 6)}
# f2_w: marks given 2 1 0 2 (s3 waiting): mean 1.25, sd sqrt((.5625*2+.0625+1.5625)/3), min 0, median 1.5, max 2
MARKS = (4, 1, 1.25, math.sqrt(2.75 / 3), 0, 1.5, 2)


def tiny_course(root: Path) -> CourseLayout:
    """A course folder whose gradebook holds the class above, made with nbgrader's API."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "nbgrader_config.py").write_text(
        "c = get_config()\nc.CourseDirectory.course_id = 'tiny-course'\n"
        "c.CourseDirectory.db_url = 'sqlite:///gradebook.db'\n")
    layout = CourseLayout.load(root)
    with layout.gradebook() as gb:
        gb.add_assignment(ASSIGNMENT)
        gb.add_notebook("nb", ASSIGNMENT)
        for gid, (top, _) in CHECKS.items():
            gb.add_grade_cell(gid, "nb", ASSIGNMENT, max_score=top, cell_type="code")
        for gid, (top, _) in WRITTEN.items():
            gb.add_grade_cell(gid, "nb", ASSIGNMENT, max_score=top, cell_type="markdown")
        for i, student in enumerate(STUDENTS):
            gb.add_student(student)
            gb.add_submission(ASSIGNMENT, student)
            for gid, (_, points) in CHECKS.items():
                grade = gb.find_grade(gid, "nb", ASSIGNMENT, student)
                grade.auto_score, grade.needs_manual_grade = points[i], False
            for gid, (_, marks) in WRITTEN.items():
                grade = gb.find_grade(gid, "nb", ASSIGNMENT, student)
                grade.auto_score, grade.manual_score = None, marks[i]
                grade.needs_manual_grade = marks[i] is None
        gb.db.commit()
    return layout


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    with pytest.MonkeyPatch.context() as env:  # nbgrader makes a new gradebook with the venv's alembic
        env.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        layout = tiny_course(tmp_path_factory.mktemp("items") / "course")
    data = report.collect(layout, ASSIGNMENT)
    out = layout.root / "reports" / ASSIGNMENT
    page, _ = report.write_report(data, out)
    return {"layout": layout, "data": data, "analysis": items.analyse(data), "out": out,
            "html": page.read_text(encoding="utf-8")}


def test_difficulty_and_discrimination_by_hand(tiny):
    found = {i.grade_id: i for i in tiny["analysis"].checks}
    assert list(found) == list(CHECKS)  # in question order, and no written answer among the checks
    for gid, (pass_rate, mean, r, flag) in HAND.items():
        item = found[gid]
        assert item.n == 5 and item.max_score == CHECKS[gid][0]
        assert item.pass_rate == pytest.approx(pass_rate), gid
        assert item.mean == pytest.approx(mean), gid
        assert item.difficulty == pytest.approx(mean / CHECKS[gid][0]), gid
        assert (item.discrimination is None) if r is None else item.discrimination == pytest.approx(r, abs=1e-9), gid
        assert item.flag == flag, gid


def test_rest_score_not_total(tiny):
    """Against the total (cell included) f1_b would look fine: the rest score is what shows it is negative."""
    scores = CHECKS["f1_b"][1]
    totals = [sum(points[i] for _, points in CHECKS.values()) for i in range(5)]
    assert items.pearson(scores, totals) > 0 > items.pearson(scores, [t - s for t, s in zip(totals, scores)])


def test_question_spread_and_written_marks(tiny):
    spreads = {s.name: s for s in tiny["analysis"].questions}
    assert list(spreads) == ["F1", "F2"]
    for q, (mean, sd, low, q1, median, q3, high) in SPREAD.items():
        s = spreads[q]
        assert (s.n, s.mean, s.sd, s.min, s.q1, s.median, s.q3, s.max) == \
            pytest.approx((5, mean, sd, low, q1, median, q3, high)), q
    [w] = tiny["analysis"].written
    assert w.grade_id == "f2_w" and not tiny["analysis"].per_ta
    marked, waiting, mean, sd, low, median, high = MARKS
    assert (w.marked, w.waiting) == (marked, waiting)
    assert (w.spread.mean, w.spread.sd, w.spread.min, w.spread.median, w.spread.max) == \
        pytest.approx((mean, sd, low, median, high))


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_items_csv_one_row_per_check_cell(tiny):
    rows = read_csv(tiny["out"] / "items.csv")
    assert [r["grade_id"] for r in rows] == list(CHECKS)
    for row in rows:
        pass_rate, mean, r, flag = HAND[row["grade_id"]]
        assert float(row["pass_rate"]) == pytest.approx(pass_rate, abs=1e-4)
        assert float(row["mean_points"]) == pytest.approx(mean, abs=1e-4)
        assert row["discrimination"] == ("" if r is None else f"{round(r, 4)}")
        assert row["flag"] == flag and row["question"] == row["grade_id"][:2].upper()
    questions = {r["question"]: r for r in read_csv(tiny["out"] / "items_questions.csv")}
    assert float(questions["F2"]["q3"]) == 5 and float(questions["F1"]["sd"]) == pytest.approx(math.sqrt(0.5), abs=1e-4)
    [written] = read_csv(tiny["out"] / "items_written.csv")
    assert (written["grade_id"], written["marked"], written["waiting"], float(written["mean"])) == ("f2_w", "4", "1", 1.25)


def test_items_csv_is_formula_safe(tiny, tmp_path):
    """A cell name a spreadsheet would run is written as text (csvsafe), not as a formula."""
    data = tiny["data"]
    hostile = report.ClassData(data.assignment, data.course_id, data.duedate, [
        report.Submission(s.student, cells=[report.CellResult(c.notebook, HOSTILE_ID if c.grade_id == "f1_a" else c.grade_id,
                                                              c.question, c.kind, c.score, c.max_score, c.pending)
                                            for c in s.cells]) for s in data.submissions],
        data.titles, data.question_order, [])
    report.write_report(hostile, tmp_path)
    cells = [r["grade_id"] for r in read_csv(tmp_path / "items.csv")]
    assert "'" + HOSTILE_ID in cells and HOSTILE_ID not in cells
    assert csvsafe.cell(HOSTILE_ID) == "'" + HOSTILE_ID  # the defence; without it the cell starts with '='


def test_page_shows_the_item_analysis(tiny):
    from test_report import body_rows, parse

    page = parse(tiny["html"])
    rows = {r[2]: r for r in body_rows(page.tables["item-table"])}
    assert list(rows) == list(CHECKS)
    for gid, (pass_rate, mean, r, flag) in HAND.items():
        question, notebook, _, top, shown_rate, shown_mean, shown_r, shown_flag = rows[gid]
        assert shown_rate == f"{100 * pass_rate:.0f} %" and shown_mean == f"{mean:.2f}"
        assert shown_r == ("—" if r is None else f"{r:.2f}") and shown_flag == flag
    assert 'data-cell="f1_b"' in tiny["html"].split('class="flagged"')[1][:40]  # flagged rows are marked
    spread = {r[0]: r for r in body_rows(page.tables["spread-table"])}
    assert spread["F2"][1:] == ["6", "4.00", "1.58", "2.00", "3.00", "4.00", "5.00", "6.00"]
    [written] = body_rows(page.tables["written-table"])
    assert written[:6] == ["F2", "nb", "f2_w", "2", "4", "1"] and written[6] == "1.25"
    assert "per-ta-note" in page.ids
    assert "similarity-link" not in page.ids  # no similarity page in the folder: no link


def test_report_links_to_the_similarity_page_when_it_exists(tiny, tmp_path):
    from test_report import parse

    (tmp_path / "similarity.html").write_text("<!DOCTYPE html><title>similar</title>")
    page, _ = report.write_report(tiny["data"], tmp_path)
    html = page.read_text(encoding="utf-8")
    assert "similarity-link" in parse(html).ids and 'href="similarity.html"' in html


@pytest.mark.browser
def test_item_analysis_in_headless_chromium(tiny):
    import browser

    if not browser.available():
        pytest.fail("chromium and chromedriver are needed: run bin/setup")
    with browser.Browser.start(screenshots=SHOTS, width=1300, height=1100) as b:
        b.open((tiny["out"] / "report.html").as_uri())
        section = b.find("#items")
        b.scroll_to(section, block="start")
        shot = b.shot("report-item-analysis")
        flagged = b.script("return [...document.querySelectorAll('#item-table tr.flagged')]"
                           ".map(r => r.dataset.cell)")
        assert flagged == ["f1_b", "f2_e"]
        assert "Mean mark per TA is not shown" in b.text()
    assert shot is not None and shot.stat().st_size > 10_000
