"""The marking policy through the real pipeline: a single upstream mistake is charged by the one
check about that skill, and the student is told the real cause.

The submissions are the issue-24 reference submissions of tests/fixtures/build_submissions.py
(``mistake-*``: one mistake per question; ``alt-*``: correct answers written differently). Their
scores, cell by cell, are in expected_scores.csv (tests/notebooks/test_autograde.py compares them); here,
the cells each one fails are exactly the ones about its mistakes, and each failure's message and
hint name that mistake, in the autograded notebook and in the student's feedback page.
"""

from __future__ import annotations

import pytest

from conftest import error_text
from coursekit.core.notebook import grade_id
from test_broken_submissions import page_text

# submission -> {(notebook, check cell): phrases its failure must show}; every other check passes
CHARGED_ONCE = {
    "mistake-standardised-and-architecture": {
        ("fashion_mnist", "f3_scale_hidden"): ["do not subtract a mean", "divide by 255.0"],
        ("mnist", "m3_train_hidden"): ["('Dense', 32, 'relu')", "exactly the layers the question lists"],
    },
    "mistake-sigmoid-typo-and-epochs": {
        ("fashion_mnist", "f1_load_hidden"): ["'Sneeker'", "ten names"],
        ("fashion_mnist", "f5_model_hidden"): ["'sigmoid'", "activation='softmax'"],
        ("mnist", "m3_train_public"): ["expected 5, found 3", "epochs=EPOCHS"],
    },
    "mistake-tf-softmax": {
        ("fashion_mnist", "f4_functions_hidden"): ["tf.nn.relu", "NumPy only"],
    },
    "alt-keras-spellings": {},
    "alt-data-and-tensors": {},
    "alt-split-and-slices": {},
}


def failed_checks(graded, student: str) -> dict[tuple[str, str], str]:
    """(notebook, grade id) -> error text of every check cell that failed in the autograded notebooks."""
    failed = {}
    for notebook in ("fashion_mnist", "mnist"):
        for c in graded.autograded_notebook(student, notebook).cells:
            text = error_text(c) if c.cell_type == "code" else ""
            if text:
                failed[(notebook, grade_id(c))] = text
    return failed


@pytest.mark.slow
@pytest.mark.parametrize("student", sorted(CHARGED_ONCE))
def test_a_mistake_fails_only_the_check_about_it_and_names_the_cause(graded_class, student):
    expected = CHARGED_ONCE[student]
    failed = failed_checks(graded_class, student)
    assert set(failed) == set(expected), f"{student}: failed {sorted(failed)}, expected {sorted(expected)}"
    for (notebook, gid), phrases in expected.items():
        missing = [p for p in phrases if p not in failed[(notebook, gid)]]
        assert not missing, f"{student} {gid}: {missing} not in {failed[(notebook, gid)][-600:]}"
        feedback = page_text(graded_class.feedback_html(student, notebook))
        # the feedback shows a visible check's message and a hidden check's hint
        assert any(p in feedback for p in phrases), f"{student}/{notebook}: the feedback does not name the cause"
