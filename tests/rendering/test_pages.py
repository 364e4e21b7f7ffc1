"""The HTML pages (coursekit/templates, coursekit.rendering.pages): student text is always escaped, and the
feedback summary stays one HTML block. The real pages are checked end to end in
test_report.py and test_feedback.py; these render the templates from made-up data."""

from __future__ import annotations

from datetime import datetime, timezone

from coursekit.rendering import feedback
from coursekit.term import report

HOSTILE = '<script>alert("x")</script>\n\n<img src=x onerror=alert(1)>'


def test_the_feedback_summary_escapes_and_holds_no_blank_line():
    summary = feedback.Summary(
        "fashion_mnist", [feedback.QuestionRow("F1", HOSTILE, 1.0, 2.0, checks=2, failed=1)],
        [feedback.ProblemItem("Late submission", HOSTILE, HOSTILE)], penalty=0.5)
    html = feedback.render_summary(summary)
    assert "<script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;" in html
    box = html[html.index('<div id="coursekit-summary">'):]
    assert "\n\n" not in box and not [line for line in box.split("\n") if not line.strip()]
    assert "Score so far: <b>0.5 / 2</b> (after a late penalty of 0.5 points)" in html
    assert 'class="coursekit-problem"' in html and 'data-question="F1"' in html


def test_a_verdict_escapes_the_message_and_keeps_its_attributes():
    verdict = feedback.Verdict("f1_load_public", "failed", "public", 0.0, 2.0, message=HOSTILE, hint=HOSTILE)
    html = feedback.render_verdict(verdict)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert html.startswith('<div class="ck-check ck-failed" data-grade-id="f1_load_public" data-status="failed" '
                           'data-kind="public">')
    assert "&#10008; Check did not pass (0 / 2 points)" in html


def test_the_class_report_escapes_what_students_control():
    sub = report.Submission(HOSTILE, score=1.0, max_score=2.0, auto_score=1.0, auto_max=2.0,
                            cells=[report.CellResult(HOSTILE, "f1_" + HOSTILE, "F1", "check", 1.0, 2.0, False,
                                                     "k", HOSTILE, HOSTILE)],
                            problems=[{"kind": "stray-file", "notebook": HOSTILE, "cell": HOSTILE,
                                       "message": HOSTILE, "source": "grading-problems.json"}])
    data = report.ClassData("week2", "course", None, [sub], {"F1": HOSTILE}, ["F1"], [HOSTILE])
    html = report.render_html(data, report.question_stats(data), datetime.now(timezone.utc))
    assert "<script>" not in html and "<img src=x" not in html
    assert html.count("&lt;script&gt;") >= 5
    for element in ('id="summary-stats"', 'id="question-table"', 'id="problem-table"', 'id="student-table"',
                    'data-kind="not-autograded"', 'data-question="F1"', 'id="histogram"'):
        assert element in html, element
