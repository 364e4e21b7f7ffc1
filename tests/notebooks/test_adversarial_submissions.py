"""Adversarial submissions: each tries to get points the work does not earn, and each scores
only what the work earns (expected_scores.csv, tests/notebooks/test_autograde.py). Here: that the
defence did it, i.e. the checks that would have been fooled ran genuinely and failed for the
right reason, and nothing the submissions printed or wrote holds a hidden test, in any encoding.

Defences (see coursekit/transfer/split_execute.py, coursekit/student/checks.py and coursekit/execution/kernel.py):
- check cells run in a checker kernel that never executes student code; the student's values
  reach it as data, its functions are called in its own kernel: nothing the student's code
  does to its process (input and AST transformers, event hooks, a patched run_cell or
  do_execute, sys.settrace, redefined NumPy or Keras functions) changes a verdict, and hidden
  test code never enters that process (tests/transfer/test_split_execute.py shows each of these doors
  doing damage when the checks share the student's kernel);
- accuracy is measured by the checks from the model's weights, in NumPy, on the course's
  own copy of the test set (hard-coded numbers, a redefined Model.evaluate/predict);
- the student's kernel still puts back, before each cell, NumPy/Keras functions and the
  notebook names `checks`, `np`... that an earlier cell replaced: a redefinition lasts for
  the cell that makes it (this keeps later answers genuine; it is not what protects the checks);
- the kernels run Python with -P: a `coursekit/` package in the submission is never imported.
"""

from __future__ import annotations

import ast

import pytest

import leaks
from build_submissions import DOORS
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


# --- doors into the student's kernel (issue 10) -----------------------------------------------

# (submission, what it installs, check cell, the genuine failure)
DOOR_DEFENCES = [
    ("input-transformer", "input_transformers_post.append", "f1_load_public", "NameError"),
    ("input-transformer", "input_transformers_post.append", "f10_single_hidden", "not defined: single_index"),
    ("ast-transformer", "ast_transformers.append", "f4_functions_public", "NotImplementedError"),
    ("patched-run-cell", "_shell.run_cell_async = ", "f5_model_hidden", "not defined: model"),
    ("patched-do-execute", "_kernel.do_execute = ", "f3_scale_public", "NameError"),
    ("pre-run-cell-hook", 'events.register("pre_run_cell"', "f7_train_hidden",
     "test accuracy of your model, measured by the check"),
    ("settrace", "sys.settrace(", "f7_train_hidden", "test accuracy of your model, measured by the check"),
]


@pytest.mark.parametrize("student, attempt, check, failure", DOOR_DEFENCES, ids=[f"{d[0]}-{d[2]}" for d in DOOR_DEFENCES])
def test_doors_into_the_kernel_do_not_reach_the_checks(fast_class, student, attempt, check, failure):
    sources = "\n".join(c.source for c in fast_class_notebook(fast_class, student, submitted=True).cells)
    assert attempt in sources, "the fixture no longer tries this"
    nb = fast_class.autograded_notebook(student, "fashion_mnist")
    assert failure in error_text(cell(nb, check)), error_text(cell(nb, check))[-2000:]


def fast_class_notebook(graded, student, submitted=False, notebook="fashion_mnist"):
    if submitted:
        return read(graded.submitted_dir(student) / f"{notebook}.ipynb")
    return graded.autograded_notebook(student, notebook)


@pytest.mark.parametrize("student", DOORS)
def test_nothing_a_door_printed_or_wrote_holds_a_hidden_test_in_any_encoding(fast_class, student):
    texts = leaks.folder_texts(fast_class.autograded_dir(student))
    for notebook in ("fashion_mnist", "mnist"):
        texts += leaks.notebook_texts(fast_class.autograded_notebook(student, notebook))
        texts.append(fast_class.feedback_html(student, notebook))
    assert not leaks.leaked(texts)


def test_the_leaks_ran_and_printed_what_the_students_kernel_holds(fast_class):
    printed = "\n".join(leaks.notebook_texts(fast_class.autograded_notebook("history-leak", "fashion_mnist")))
    assert "history: " in printed
    readings = "\n".join(leaks.readings(printed))
    assert "from coursekit import checks" in readings, "the decoded history holds the student's own cells"
    snoop = "\n".join(leaks.notebook_texts(fast_class.autograded_notebook("kernel-snoop", "fashion_mnist")))
    for label in ("zlib-base64:", "gzip-base64:", "zlib-hex:", "rot13:", "sockets:"):
        assert label in snoop
    sockets = ast.literal_eval(snoop.split("sockets: ", 1)[1].split("\n", 1)[0])  # the list the snoop printed
    assert sockets and all(s.startswith("/run/jupyter/") for s in sockets), sockets  # its own kernel's only
