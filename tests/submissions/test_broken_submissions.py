"""Broken submissions: each is graded with the rest of the class (tests/conftest.py), scores as
expected_scores.csv says (tests/notebooks/test_autograde.py), and has a documented outcome here: the
problems recorded for the TA report, and what its feedback page tells the student.

Where stock nbgrader does the wrong thing, coursekit/submissions/sanitize.py fixes it (its docstring has
the table); the tests below name what stock nbgrader would do.
"""

from __future__ import annotations

import html
import re
import warnings

import nbformat
import pytest

from builder import ASSIGNMENT, cell
from conftest import build_submissions, dump, error_text, submission_folders
from coursekit.core.notebook import flags, grade_id, is_graded

# (kind, notebook, cell) of every problem recorded while grading, per submission. Fast
# submissions not listed must have none (a repair that fires on a sound notebook is a bug).
PROBLEMS = {
    # The sandbox's output budget stops what nbgrader would buffer (issue 11), and what was kept
    # is still cut for the pages (issue 12): both are recorded.
    "print-50mb": {("sandbox", "fashion_mnist", "f3_scale"), ("too-long", "fashion_mnist", "f3_scale")},
    "invalid-json": {("invalid-notebook", "mnist", None)},
    "old-nbformat-v3": {("old-nbformat", "fashion_mnist", None)},
    "renamed-notebook": {("renamed-notebook", "fashion_mnist", None)},
    "missing-notebook": {("missing-notebook", "mnist", None)},
    "duplicate-cells": {("duplicate-cell", "fashion_mnist", None),  # repeated cell ids
                        ("duplicate-cell", "fashion_mnist", "f4_functions"),
                        ("duplicate-cell", "fashion_mnist", "f4_functions_public")},
    "deleted-test-cell": {("deleted-test-cell", "fashion_mnist", "f1_load_hidden"),
                          ("deleted-test-cell", "fashion_mnist", "f5_model_hidden")},
    "edited-test-cell": {("tampered-cell", "fashion_mnist", "f8_predictions_public")},
    "infinite-loop": {("timeout", "fashion_mnist", "f4_functions")},
    "late-submission": {("late", None, None)},
    "shadowing-coursekit": {("stray-file", None, None)},
}

# What the feedback page of (submission, notebook) says, in the student's words.
FEEDBACK_SAYS = {
    ("invalid-json", "mnist"): ["mnist.ipynb could not be read as a notebook", "not valid JSON",
                                "graded as not submitted"],
    ("old-nbformat-v3", "fashion_mnist"): ["old notebook format (nbformat 3)", "converted to nbformat 4"],
    ("renamed-notebook", "fashion_mnist"): ["There was no fashion_mnist.ipynb",
                                            "fashion_mnist-Copy1.ipynb has its cells"],
    ("missing-notebook", "mnist"): ["mnist.ipynb was not in your submission"],
    ("duplicate-cells", "fashion_mnist"): ["The cell 'f4_functions' appears 2 times", "The last copy was graded"],
    ("deleted-test-cell", "fashion_mnist"): ["The check cell 'f1_load_hidden' was missing",
                                             "The check cell 'f5_model_hidden' was missing", "put it back"],
    ("edited-test-cell", "fashion_mnist"): ["The read-only cell 'f8_predictions_public' had been edited",
                                            "original was restored"],
    ("exception-in-first-cell", "fashion_mnist"): ["seaborn"],
    ("infinite-loop", "fashion_mnist"): ["time limit", "Look for a loop that never ends"],
    ("print-50mb", "fashion_mnist"): ["characters in one output", "only the first 100,000 are kept"],
    ("late-submission", "fashion_mnist"): ["after the due date", "2 started day(s) late",
                                           "takes 20 % of each notebook's score"],
    ("late-submission", "mnist"): ["2 started day(s) late"],
}


def page_text(page: str) -> str:
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text)))


def recorded(graded, student) -> set:
    return {(p["kind"], p["notebook"], p["cell"]) for p in graded.problems(student)}


FAST = [p.name for p in submission_folders(slow=False)]


@pytest.mark.parametrize("student", FAST)
def test_problems_recorded_are_exactly_the_submissions_problems(fast_class, student):
    assert recorded(fast_class, student) == PROBLEMS.get(student, set()), dump(fast_class, student)


@pytest.mark.parametrize("student, notebook", sorted(FEEDBACK_SAYS))
def test_feedback_says_what_went_wrong(fast_class, student, notebook):
    text = page_text(fast_class.feedback_html(student, notebook))
    missing = [phrase for phrase in FEEDBACK_SAYS[(student, notebook)] if phrase not in text]
    assert not missing, f"{student}/{notebook} feedback lacks {missing}"


# --- one outcome per broken submission --------------------------------------------------------


@pytest.mark.parametrize("student", ["invalid-json", "missing-notebook"])
def test_unreadable_or_missing_notebook_is_graded_from_a_placeholder(fast_class, student):
    # stock nbgrader: invalid JSON fails the student's whole autograde (exit code 1, the
    # autograded folder removed); a missing notebook gets 0 but no notebook and no feedback page
    nb = fast_class.autograded_notebook(student, "mnist")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(is_graded(c) for c in code), "only check cells run"
    assert fast_class.autograded_notebook(student, "fashion_mnist").cells  # the other notebook graded as usual


def test_old_nbformat_is_upgraded_and_graded(fast_class):
    assert (fast_class.submitted_dir("old-nbformat-v3") / "fashion_mnist.ipynb").read_text().count('"worksheets"')
    nb = fast_class.autograded_notebook("old-nbformat-v3", "fashion_mnist")
    assert nb.nbformat == 4


def test_renamed_notebook_is_graded_under_its_own_name(fast_class):
    # stock nbgrader: "Skipping unknown notebook", fashion_mnist scores 0
    folder = fast_class.autograded_dir("renamed-notebook")
    assert (folder / "fashion_mnist.ipynb").is_file() and not (folder / "fashion_mnist-Copy1.ipynb").exists()


def test_copied_graded_cells_are_graded_once_and_do_not_abort_the_batch(fast_class):
    # stock nbgrader: DeduplicateIds empties the copies' metadata, CheckCellMetadata raises
    # SchemaTooOldError and `nbgrader autograde` stops: no later submission is graded
    nb = fast_class.autograded_notebook("duplicate-cells", "fashion_mnist")
    ids = [grade_id(c) for c in nb.cells if grade_id(c)]
    assert len(ids) == len(set(ids))
    copies = [c for c in nb.cells if "second try" in c.source]
    assert len(copies) == 1 and flags(copies[0]), "the last copy is the graded one"
    later = [s for s in FAST if s > "duplicate-cells"]
    assert later and all(fast_class.autograded_dir(s).is_dir() for s in later)


def test_deleted_check_cells_are_put_back_in_place_and_run(fast_class):
    # stock nbgrader: the deleted cells' points are left "needing a manual grade", unscored
    nb = fast_class.autograded_notebook("deleted-test-cell", "fashion_mnist")
    order = [grade_id(c) for c in nb.cells if grade_id(c)]
    release = nbformat.read(fast_class.course.layout.release(ASSIGNMENT) / "fashion_mnist.ipynb", as_version=4)
    assert order == [grade_id(c) for c in release.cells if grade_id(c)]
    for gid in ("f1_load_hidden", "f5_model_hidden"):
        restored = cell(nb, gid)
        assert "### BEGIN HIDDEN TESTS" in restored.source and not error_text(restored)


def test_weakened_check_is_restored_and_fails(fast_class):
    nb = fast_class.autograded_notebook("edited-test-cell", "fashion_mnist")
    check = cell(nb, "f8_predictions_public")
    assert "predicted_classes" in check.source
    assert "shape of predicted_classes" in error_text(check)


def test_exception_in_the_first_cell_stops_nothing_else(fast_class):
    nb = fast_class.autograded_notebook("exception-in-first-cell", "fashion_mnist")
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "ModuleNotFoundError" in error_text(first)
    assert not error_text(cell(nb, "f10_single_hidden"))


def test_infinite_loop_is_stopped_by_the_timeout_and_the_rest_runs(fast_class):
    nb = fast_class.autograded_notebook("infinite-loop", "fashion_mnist")
    assert "CellTimeoutError" in error_text(cell(nb, "f4_functions"))
    assert not error_text(cell(nb, "f4_functions_hidden")) and not error_text(cell(nb, "f10_single_hidden"))


def test_50mb_of_printing_is_cut_down(fast_class):
    # stock nbgrader: LimitOutput cuts the 240,000 lines, but not the single 25 MB line,
    # which stays in the autograded notebook and the feedback page
    folder = fast_class.autograded_dir("print-50mb")
    assert (folder / "fashion_mnist.ipynb").stat().st_size < 1_000_000
    feedback = fast_class.feedback_page("print-50mb", "fashion_mnist")
    assert feedback.stat().st_size < 2_000_000
    nb = fast_class.autograded_notebook("print-50mb", "fashion_mnist")
    assert "Output truncated" in cell(nb, "f1_load").outputs[0].text  # nbgrader's LimitOutput


def test_stderr_warnings_fixture_does_write_warnings_when_the_checks_call_it():
    """The fixture is only a test of the stderr policy if its functions really warn."""
    import numpy as np

    nb = build_submissions.RECIPES["stderr-warnings"]().notebooks["fashion_mnist"]
    namespace = {"np": np}
    exec(cell(nb, "f4_functions").source, namespace)  # noqa: S102 (our own fixture's code)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        namespace["softmax"](np.array([1000.0, 1001.0, 1002.0]))
        namespace["relu"](np.array([[-1.0, 2.0], [3.0, -4.0]]))
    assert {w.category for w in caught} >= {RuntimeWarning, UserWarning}


def test_stderr_warnings_cost_no_points(fast_class):
    nb = fast_class.autograded_notebook("stderr-warnings", "fashion_mnist")
    for gid in ("f4_functions_public", "f4_functions_hidden"):
        assert not [o for o in cell(nb, gid).outputs if o.get("name") == "stderr"]


def test_late_submission_is_penalised_by_the_policy(fast_class):
    with fast_class.course.layout.gradebook() as gb:
        sub = gb.find_submission(ASSIGNMENT, "late-submission")
        assert 86400 < sub.total_seconds_late <= 2 * 86400
        for nb in sub.notebooks:
            assert nb.late_submission_penalty == pytest.approx(0.2 * nb.score)
