"""Adversarial submissions: each tries to get points the work does not earn, and each scores
only what the work earns (expected_scores.csv, tests/test_autograde.py). Here: that the
defence did it, i.e. the checks that would have been fooled ran genuinely and failed for the
right reason.

Defences (see coursekit/checks.py and coursekit/kernel.py):
- accuracy is measured by the checks from the model's weights, in NumPy, on the course's
  own copy of the test set (hard-coded numbers, a redefined Model.evaluate/predict);
- the helpers bind genuine NumPy/Keras functions at import, and the kernel imports them
  before any cell; a guard puts back, before each cell, NumPy/Keras functions, the check
  helpers and the notebook names `checks`, `np`... that an earlier cell replaced;
- the kernel runs Python with -P: a `coursekit/` package in the submission is never imported.
"""

from __future__ import annotations

import pytest

from builder import cell, read
from conftest import error_text


def submitted_source(graded, student, notebook, gid) -> str:
    return cell(read(graded.submitted_dir(student) / f"{notebook}.ipynb"), gid).source


# (submission, notebook, answer cell, what the submission does there, check cell, the genuine failure)
DEFENCES = [
    ("hardcoded-accuracy", "fashion_mnist", "f7_train", "test_acc = 0.8851",
     "f7_train_hidden", "test accuracy of your model, measured by the check"),
    ("hardcoded-accuracy", "mnist", "m3_train", "# model.fit(",
     "m3_train_hidden", "test accuracy of mnist_model, measured by the check"),
    ("hardcoded-accuracy", "mnist", "m4_accuracy", "mnist_train_acc = 0.9887",
     "m4_accuracy_hidden", "mnist_train_acc should be the model's training accuracy"),
    ("redefined-functions", "fashion_mnist", "f7_train", "tf.keras.Model.evaluate = lambda",
     "f7_train_hidden", "test accuracy of your model, measured by the check"),
    ("redefined-functions", "fashion_mnist", "f8_predictions", "np.array_equal = lambda",
     "f8_predictions_hidden", "predicted_classes should be the argmax of each row"),
    ("patched-check-helpers", "fashion_mnist", "f7_train", "checks.require = lambda",
     "f7_train_hidden", "test accuracy of your model, measured by the check"),
    ("patched-check-helpers", "mnist", "m3_train", "checks = _Anything()",
     "m3_train_public", "each row of classifications[0] should sum to 1"),
    ("shadowing-coursekit", "fashion_mnist", "f7_train", "history = _History()",
     "f7_train_hidden", "test accuracy of your model, measured by the check"),
    ("shadowing-coursekit", "mnist", "m3_train", "classifications = np.zeros",
     "m3_train_public", "each row of classifications[0] should sum to 1"),
]


@pytest.mark.parametrize("student, notebook, answer, attempt, check, failure", DEFENCES,
                         ids=[f"{d[0]}-{d[4]}" for d in DEFENCES])
def test_the_check_ran_genuinely_and_failed_for_the_right_reason(fast_class, student, notebook, answer, attempt,
                                                                  check, failure):
    assert attempt in submitted_source(fast_class, student, notebook, answer), "the fixture no longer tries this"
    nb = fast_class.autograded_notebook(student, notebook)
    assert failure in error_text(cell(nb, check)), error_text(cell(nb, check))[-2000:]


def test_redefinitions_last_only_for_the_cell_that_makes_them(fast_class):
    """np.argmax and Model.predict were redefined at the end of F8's answer; F9 and F10 used
    the genuine ones (their checks pass), so the redefinitions did not leak into later cells."""
    nb = fast_class.autograded_notebook("redefined-functions", "fashion_mnist")
    for gid in ("f9_two_images_hidden", "f9_grid_hidden", "f10_single_hidden"):
        assert not error_text(cell(nb, gid)), f"{gid}: {error_text(cell(nb, gid))[-1500:]}"


def test_shadowing_package_is_ignored_and_recorded(fast_class):
    folder = fast_class.autograded_dir("shadowing-coursekit")
    assert (folder / "coursekit" / "checks.py").is_file(), "nbgrader copies extra files into autograded/"
    stray = [p for p in fast_class.problems("shadowing-coursekit") if p["kind"] == "stray-file"]
    assert stray and "'coursekit'" in stray[0]["message"]
