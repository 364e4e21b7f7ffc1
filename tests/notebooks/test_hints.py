"""Errors carried forward, and hints that name the cause (issue 13).

The source notebooks' own check cells (public and hidden parts) run here on the values a
misconception leaves behind, as the checker kernel receives them (arrays, a ``ModelData``, a
``FigureData``, a ``HistoryData``), without a Jupyter kernel. Each named misconception is pinned
to the hint it gets, and a mistake an earlier check charges does not fail a later check whose
skill the student did apply to their own values.
"""

from __future__ import annotations

import ast
import dataclasses

import numpy as np
import pytest

import builder
from coursekit.student import checks
from coursekit.student.datasets import FASHION_CLASS_NAMES, load_fashion_mnist, load_mnist
from coursekit.core.notebook import grade_id
from coursekit.student.values import FigureData, HistoryData, ModelData

LAYERS = [("Flatten",), ("Dense", 128, "relu"), ("Dense", 10, "softmax")]


def check_source(notebook: str, gid: str) -> str:
    cells = [c for c in builder.source()[notebook].cells if grade_id(c) == gid]
    assert len(cells) == 1, f"{notebook}: no single cell {gid}"
    return cells[0].source


def run_check(notebook: str, gid: str, **values) -> checks.CheckFailed | None:
    """The check cell ``gid`` run on ``values`` (the student's names): its failure, or None."""
    return run_source(check_source(notebook, gid), gid, **values)


def run_source(source: str, gid: str, **values) -> checks.CheckFailed | None:
    namespace = {"np": np, "checks": checks, "load_fashion_mnist": load_fashion_mnist, "load_mnist": load_mnist,
                 **values}
    try:
        exec(compile(source, gid, "exec"), namespace)
    except checks.CheckFailed as failure:
        return failure
    return None


def hint_of(notebook: str, gid: str, **values) -> str:
    failure = run_check(notebook, gid, **values)
    assert failure is not None, f"{gid} passed"
    return failure.hint


def train(images: np.ndarray, labels: np.ndarray, epochs: int = 2, seed: int = 0) -> ModelData:
    """The tutorial's network trained in NumPy (plain SGD): a model good enough to clear the
    calibrated threshold, as the checker would receive it, in seconds and without TensorFlow."""
    rng = np.random.default_rng(seed)
    x = images.reshape(len(images), -1)
    w1, b1 = rng.normal(0, np.sqrt(2 / 784), (784, 128)), np.zeros(128)
    w2, b2 = rng.normal(0, np.sqrt(1 / 128), (128, 10)), np.zeros(10)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), 100):
            batch = order[start:start + 100]
            hidden = np.maximum(x[batch] @ w1 + b1, 0)
            grad = checks.softmax_reference(hidden @ w2 + b2)
            grad[np.arange(len(batch)), labels[batch]] -= 1
            grad /= len(batch)
            back = grad @ w2.T * (hidden > 0)
            w2 -= 0.1 * hidden.T @ grad
            b2 -= 0.1 * grad.sum(0)
            w1 -= 0.1 * x[batch].T @ back
            b1 -= 0.1 * back.sum(0)
    return ModelData(LAYERS, [[], [w1, b1], [w2, b2]], (None, 28, 28), (None, 10), True,
                     {"optimizer": "Adam", "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]})


@pytest.fixture(scope="module")
def fashion():
    """The tutorial's model fitted as validation_split=0.2 fits it: on the first 48,000 training
    images, validated on the last 12,000."""
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    model = train(x_train[:48000] / 255.0, y_train[:48000])
    val_acc = checks.accuracy(model, x_train[48000:] / 255.0, y_train[48000:])
    return dict(model=model, raw=x_test, scaled=x_test / 255.0, labels=y_test, val_acc=val_acc,
                train_images=x_train / 255.0)


@pytest.fixture(scope="module")
def mnist(fashion):
    (_, _), (x_test, y_test) = load_mnist()
    return dict(raw=x_test, scaled=x_test / 255.0, labels=y_test)


def f7_values(fashion, test_images, test_acc, model=None, val_acc=None, steps=1500) -> dict:
    val_acc = fashion["val_acc"] if val_acc is None else val_acc
    history = HistoryData({"accuracy": [0.8, 0.88], "val_accuracy": [0.84, val_acc]}, {"epochs": 5, "steps": steps})
    return dict(model=model or fashion["model"], history=history, train_acc=0.88, val_acc=val_acc,
                train_images=fashion["train_images"], test_images=test_images, test_acc=test_acc)


# --- F7: test_acc -------------------------------------------------------------------------------


def test_f7_evaluate_on_unscaled_test_images_is_named(fashion):
    on_raw = checks.accuracy(fashion["model"], fashion["raw"], fashion["labels"])
    hint = hint_of("fashion_mnist", "f7_train_hidden", **f7_values(fashion, fashion["scaled"], on_raw))
    assert "unscaled test images" in hint and "type it in" not in hint


def test_f7_a_typed_in_accuracy_is_named(fashion):
    hint = hint_of("fashion_mnist", "f7_train_hidden", **f7_values(fashion, fashion["scaled"], 0.999))
    assert "do not type it in" in hint


def test_f7_carries_forward_test_images_left_unscaled(fashion):
    """F3 charges the unscaled test images; F7's evaluate on them is the skill done right."""
    on_raw = checks.accuracy(fashion["model"], fashion["raw"], fashion["labels"])
    assert run_check("fashion_mnist", "f7_train_hidden", **f7_values(fashion, fashion["raw"] * 1.0, on_raw)) is None
    right = checks.accuracy(fashion["model"], fashion["scaled"], fashion["labels"])
    assert run_check("fashion_mnist", "f7_train_hidden", **f7_values(fashion, fashion["scaled"], right)) is None


def test_f7_other_images_are_not_carried_forward(fashion):
    """Only the test set, scaled some other way, is carried forward: not arbitrary images."""
    noise = np.random.default_rng(1).random(fashion["raw"].shape)
    on_noise = checks.accuracy(fashion["model"], noise, fashion["labels"])
    assert run_check("fashion_mnist", "f7_train_hidden", **f7_values(fashion, noise, on_noise)) is not None


@pytest.mark.slow  # trains models on the full data sets
def test_f7_a_fit_with_the_test_images_shuffled_in_is_caught_and_named(fashion):
    """Training on train and test images shuffled together: validation_split then holds back a
    mix of both, and the reported val_acc is not the model's accuracy on the held-out training
    images. The test accuracy looks better than any honest run's; the check says why it is not."""
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    images, labels = np.concatenate([x_train, x_test]) / 255.0, np.concatenate([y_train, y_test])
    order = np.random.default_rng(7).permutation(len(labels))
    images, labels = images[order], labels[order]
    split = int(np.ceil(len(labels) * 0.8))
    leaky = train(images[:split], labels[:split])
    val_acc = checks.accuracy(leaky, images[split:], labels[split:])
    test_acc = checks.accuracy(leaky, fashion["scaled"], fashion["labels"])
    # As Keras records it: 56,000 images in batches of 32. (The 2-epoch model here barely
    # overfits, so its val_acc alone is close to its accuracy on the held-out training images;
    # calibration/held_out.csv shows the gap for the real 5-epoch fits.)
    failure = run_check("fashion_mnist", "f7_train_hidden",
                        **f7_values(fashion, fashion["scaled"], test_acc, model=leaky, val_acc=val_acc, steps=1750))
    assert failure is not None and "data leakage" in failure.hint, failure


@pytest.mark.parametrize("steps, honest", [(1500, True), (750, True), (48000, True), (1, True),
                                           (1750, False), (875, False), (0, False), (60000, False)])
def test_epoch_steps_tell_which_sample_counts_were_trained_on(steps, honest):
    assert checks.steps_fit_samples(steps, 48000) is honest


def test_f7_an_honest_fit_passes_the_leakage_check(fashion):
    test_acc = checks.accuracy(fashion["model"], fashion["scaled"], fashion["labels"])
    assert run_check("fashion_mnist", "f7_train_hidden", **f7_values(fashion, fashion["scaled"], test_acc)) is None


# --- F8: predictions ----------------------------------------------------------------------------


def f8_values(predictions, test_images) -> dict:
    classes = np.argmax(predictions, axis=1)
    return dict(predictions=predictions, predicted_classes=classes, pred_50=int(classes[50]),
                label_50=int(load_fashion_mnist()[1][1][50]), match_50=int(classes[50]) == int(load_fashion_mnist()[1][1][50]),
                test_images=test_images)


def test_f8_double_softmax_is_named(fashion):
    ours = checks.forward(fashion["model"], fashion["scaled"])
    hint = hint_of("fashion_mnist", "f8_predictions_hidden", model=fashion["model"],
                   **f8_values(checks.softmax_reference(ours), fashion["scaled"]))
    assert "softmax applied a second time" in hint


def test_f8_carries_forward_test_images_left_unscaled(fashion):
    ours = checks.forward(fashion["model"], fashion["raw"])
    assert run_check("fashion_mnist", "f8_predictions_hidden", model=fashion["model"],
                     **f8_values(ours, fashion["raw"])) is None


# --- F9: the figures ----------------------------------------------------------------------------


def two_images_figure(images, rows, chosen) -> FigureData:
    panels = []
    for i in chosen:
        panels.append({"image": images[i] * 1.0, "bars": None, "xlabel": "", "title": ""})
        panels.append({"image": None, "bars": np.asarray(rows[i], dtype=float), "xlabel": "", "title": ""})
    return FigureData(panels)


def test_f9_bars_with_a_second_softmax_are_named(fashion):
    predictions = checks.forward(fashion["model"], fashion["scaled"])
    shown = checks.softmax_reference(predictions)
    hint = hint_of("fashion_mnist", "f9_two_images_hidden", model=fashion["model"], predictions=predictions,
                   my_images=[50, 7], fig_two=two_images_figure(fashion["raw"], shown, [50, 7]))
    assert "softmax applied a second time" in hint


@pytest.mark.parametrize("mistake", ["double softmax", "unscaled test images"])
def test_f9_carries_forward_the_students_own_predictions(fashion, mistake):
    """The F8 mistake is charged by F8: F9 plots the student's own predictions[i] and earns its points."""
    if mistake == "double softmax":
        predictions = checks.softmax_reference(checks.forward(fashion["model"], fashion["scaled"]))
    else:
        predictions = checks.forward(fashion["model"], fashion["raw"])
    assert run_check("fashion_mnist", "f9_two_images_hidden", model=fashion["model"], predictions=predictions,
                     my_images=[50, 7], fig_two=two_images_figure(fashion["raw"], predictions, [50, 7])) is None
    grid = []
    for i in range(15):
        label = FASHION_CLASS_NAMES[int(np.argmax(predictions[i]))]
        grid += [{"image": fashion["raw"][i] * 1.0, "bars": None, "xlabel": f"{label} 90% (x)", "title": ""},
                 {"image": None, "bars": predictions[i], "xlabel": "", "title": ""}]
    assert run_check("fashion_mnist", "f9_grid_hidden", model=fashion["model"], predictions=predictions,
                     fig_grid=FigureData(grid)) is None


# --- F10: one image ----------------------------------------------------------------------------


def test_f10_carries_forward_test_images_left_unscaled(fashion):
    img = fashion["raw"][23:24] * 1.0
    single = checks.forward(fashion["model"], img)
    klass = int(np.argmax(single[0]))
    assert run_check("fashion_mnist", "f10_single_hidden", model=fashion["model"], test_images=fashion["raw"] * 1.0,
                     single_index=23, img=img, single_prediction=single, single_class=klass,
                     single_matches=klass == int(fashion["labels"][23])) is None


def test_f10_double_softmax_is_named(fashion):
    img = fashion["scaled"][23:24]
    single = checks.softmax_reference(checks.forward(fashion["model"], img))
    klass = int(np.argmax(single[0]))
    hint = hint_of("fashion_mnist", "f10_single_hidden", model=fashion["model"], test_images=fashion["scaled"],
                   single_index=23, img=img, single_prediction=single, single_class=klass,
                   single_matches=klass == int(fashion["labels"][23]))
    assert "second softmax" in hint


# --- MNIST ---------------------------------------------------------------------------------------


def test_m1_a_shape_stored_as_the_label_count_is_named():
    (x_train, y_train), (x_test, _) = load_mnist()
    hint = hint_of("mnist", "m1_shapes_public", train_images_shape=x_train.shape, test_images_shape=x_test.shape,
                   train_labels_length=y_train.shape)
    assert "tuple" in hint and "len(y_train)" in hint and "int(...)" not in hint


def test_m3_a_histogram_instead_of_bars_is_named(fashion, mnist):
    classifications = checks.forward(fashion["model"], mnist["scaled"])  # any model: the figure is the point
    chosen = 3
    counts, _ = np.histogram(classifications[chosen], bins=10)
    figure = FigureData([{"image": mnist["raw"][chosen] * 1.0, "bars": None, "xlabel": "", "title": ""},
                         {"image": None, "bars": counts.astype(float), "xlabel": "", "title": ""}])
    hint = hint_of("mnist", "m3_chosen_hidden", mnist_model=fashion["model"], classifications=classifications,
                   chosen=chosen, chosen_class=int(np.argmax(classifications[chosen])), fig_chosen=figure)
    assert "plt.hist" in hint and "plt.bar(range(10), classifications[chosen])" in hint


def test_m3_bars_of_the_students_own_classifications_pass(fashion, mnist):
    classifications = checks.softmax_reference(checks.forward(fashion["model"], mnist["scaled"]))
    chosen = 3
    figure = FigureData([{"image": mnist["raw"][chosen] * 1.0, "bars": None, "xlabel": "", "title": ""},
                         {"image": None, "bars": classifications[chosen], "xlabel": "", "title": ""}])
    assert run_check("mnist", "m3_chosen_hidden", mnist_model=fashion["model"], classifications=classifications,
                     chosen=chosen, chosen_class=int(np.argmax(classifications[chosen])), fig_chosen=figure) is None


# --- M3 and M5: trained on the 60,000 training images only (leakage) --------------------------------


def fitted(images: np.ndarray, labels: np.ndarray, steps: int, epochs: int = 5, seed: int = 0) -> ModelData:
    """``train``'s model with the record Keras keeps of train_tutorial_model's fit (5 epochs, in
    batches of 32): ``steps`` is how many batches of 32 the images it was given make."""
    assert steps == -(-len(labels) // 32)
    return dataclasses.replace(train(images, labels, epochs=epochs, seed=seed), fit_epochs=5, fit_steps=steps)


def fits(load) -> dict:
    """The tutorial's network fitted three ways on one data set: on its 60,000 training images,
    on training and test images shuffled together (70,000: 2,188 batches, which 60,000 images
    make at no batch size), and on the 10,000 test images alone (313 batches, which 60,000
    images also make, in batches of 192: only the accuracies can tell)."""
    (x_train, y_train), (x_test, y_test) = load()
    both_images, both_labels = np.concatenate([x_train, x_test]) / 255.0, np.concatenate([y_train, y_test])
    order = np.random.default_rng(7).permutation(len(both_labels))
    return dict(honest=fitted(x_train / 255.0, y_train, 1875),
                train_and_test=fitted(both_images[order], both_labels[order], 2188),
                test_only=fitted(x_test / 255.0, y_test, 313, epochs=30))


@pytest.fixture(scope="module")
def mnist_fits():
    return fits(load_mnist)


@pytest.fixture(scope="module")
def fashion_fits():
    return fits(load_fashion_mnist)


def without_leakage_check(source: str) -> str:
    """A check cell's source without its ``checks.expect_trained_on`` statements: the cell as it
    was before the leakage check, to show what that check stops."""
    lines = source.splitlines(keepends=True)
    drop = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and \
                ast.unparse(node.value.func) == "checks.expect_trained_on":
            drop.update(range(node.lineno - 1, node.end_lineno))
    assert drop, "no leakage check in this cell"
    return "".join(line for k, line in enumerate(lines) if k not in drop)


def m3_values(model: ModelData, mnist) -> dict:
    return dict(x_test_scaled=mnist["scaled"], mnist_model=model, classifications=checks.forward(model, mnist["scaled"]))


@pytest.mark.slow  # trains models on the full data sets
@pytest.mark.parametrize("leak", ["train_and_test", "test_only"])
def test_m3_a_model_trained_on_the_test_images_is_caught_and_named(mnist_fits, mnist, leak):
    """mnist_model = train_tutorial_model(...) on training and test images together, or on the test
    images alone: without the leakage check it earns M3's hidden points (it is accurate on the test
    images because it has seen them); with it, it does not, and the hint says why."""
    values = m3_values(mnist_fits[leak], mnist)
    assert run_source(without_leakage_check(check_source("mnist", "m3_train_hidden")), "m3_train_hidden", **values) is None
    failure = run_check("mnist", "m3_train_hidden", **values)
    assert failure is not None and "leakage" in failure.hint and "60,000 training images" in failure.hint, failure
    assert "steps" in str(failure) if leak == "train_and_test" else "more accurate on the test images" in str(failure)


@pytest.mark.slow  # trains models on the full data sets
def test_m3_the_honest_fit_passes_the_leakage_check(mnist_fits, mnist):
    assert run_check("mnist", "m3_train_hidden", **m3_values(mnist_fits["honest"], mnist)) is None


def m5_values(fashion_model: ModelData, mnist_model: ModelData) -> dict:
    fashion_acc = checks.accuracy_on_test_set(fashion_model, "fashion-mnist")
    mnist_acc = checks.accuracy_on_test_set(mnist_model, "mnist")
    return dict(EPOCHS=5, mnist_model=mnist_model, fashion_model=fashion_model, fashion_test_acc=fashion_acc,
                more_accurate="mnist" if mnist_acc > fashion_acc else "fashion-mnist")


@pytest.mark.slow  # trains models on the full data sets
@pytest.mark.parametrize("leak", ["train_and_test", "test_only"])
def test_m5_a_fashion_model_trained_on_the_test_images_is_caught_and_named(fashion_fits, mnist_fits, leak):
    values = m5_values(fashion_fits[leak], mnist_fits["honest"])
    assert run_source(without_leakage_check(check_source("mnist", "m5_compare_hidden")), "m5_compare_hidden",
                      **values) is None
    failure = run_check("mnist", "m5_compare_hidden", **values)
    assert failure is not None and "leakage" in failure.hint and "Fashion-MNIST training images" in failure.hint, failure


@pytest.mark.slow  # trains models on the full data sets
def test_m5_the_honest_fit_passes_the_leakage_check(fashion_fits, mnist_fits):
    assert run_check("mnist", "m5_compare_hidden", **m5_values(fashion_fits["honest"], mnist_fits["honest"])) is None


# --- what the student sees before submitting: the visible part of each check (issue 13) ------------


def run_visible(notebook: str, gid: str, **values) -> checks.CheckFailed | None:
    """The visible part of check cell ``gid`` (what a student runs before submitting) on ``values``."""
    source = check_source(notebook, gid).split("### BEGIN HIDDEN TESTS")[0]
    namespace = {"np": np, "checks": checks, "EPOCHS": 5, **values}
    try:
        exec(compile(source, gid, "exec"), namespace)
    except checks.CheckFailed as failure:
        return failure
    return None


def image_panel(k: int = 0) -> dict:
    return {"image": np.full((28, 28), k / 30), "bars": None, "xlabel": str(k), "title": ""}


def bars_panel() -> dict:
    return {"image": None, "bars": np.full(10, 0.1), "xlabel": "", "title": ""}


def figure(*panels) -> FigureData:
    return FigureData(list(panels))


def trained(epochs) -> ModelData:
    return ModelData(LAYERS, [[], [np.zeros((784, 128)), np.zeros(128)], [np.zeros((128, 10)), np.zeros(10)]],
                     (None, 28, 28), (None, 10), True, None, fit_epochs=epochs)


SOLUTION_VALUES = {
    ("fashion_mnist", "f1_show_hidden"): dict(fig_samples=figure(*[image_panel(k) for k in range(10)])),
    ("fashion_mnist", "f9_two_images_hidden"): dict(my_images=[50, 7], fig_two=figure(image_panel(), bars_panel(),
                                                                                       image_panel(), bars_panel())),
    ("fashion_mnist", "f9_grid_hidden"): dict(fig_grid=figure(*[p for k in range(15) for p in (image_panel(k), bars_panel())])),
    ("mnist", "m2_digits_hidden"): dict(fig_digits=figure(*[image_panel(k) for k in range(25)])),
    ("mnist", "m3_train_public"): dict(classifications=np.full((10000, 10), 0.1), mnist_model=trained(5)),
    ("mnist", "m3_chosen_hidden"): dict(chosen=0, chosen_class=7, fig_chosen=figure(image_panel(), bars_panel())),
    ("mnist", "m4_accuracy_hidden"): dict(mnist_model=trained(5), mnist_train_acc=0.9887, mnist_test_acc=np.float64(0.9771)),
    ("mnist", "m5_compare_hidden"): dict(fashion_model=trained(5), fashion_test_acc=0.8851, more_accurate="mnist"),
}

# (notebook, grade id, the wrong answer (names replaced), what the visible failure says, what its hint says)
VISIBLE_MISTAKES = [
    ("fashion_mnist", "f1_show_hidden", dict(fig_samples=figure(*[image_panel(k) for k in range(9)])),
     "number of images in fig_samples: expected 10, found 9", "first 10 training images"),
    ("fashion_mnist", "f1_show_hidden", dict(fig_samples="the figure"), "fig_samples should be a matplotlib figure",
     "plt.figure"),
    ("fashion_mnist", "f9_two_images_hidden", dict(my_images=50), "my_images should be a list of 2 indices",
     "list of two test image indices"),
    ("fashion_mnist", "f9_two_images_hidden", dict(my_images=[50]), "number of images in my_images: expected 2, found 1",
     "list of two test image indices"),
    ("fashion_mnist", "f9_two_images_hidden", dict(fig_two=figure(image_panel(), bars_panel())),
     "number of panels in fig_two: expected 4, found 2", "2x2 grid"),
    ("fashion_mnist", "f9_grid_hidden", dict(fig_grid=figure(*[image_panel(k) for k in range(15)])),
     "number of panels in fig_grid: expected 30, found 15", "each with its bar chart"),
    ("mnist", "m2_digits_hidden", dict(fig_digits=figure(*[bars_panel() for _ in range(25)])),
     "number of images in fig_digits: expected 25, found 0", "5x5 grid"),
    ("mnist", "m3_train_public", dict(mnist_model=trained(None)), "number of epochs mnist_model was trained: expected 5",
     "never trained"),
    ("mnist", "m3_train_public", dict(mnist_model=trained(1)), "number of epochs mnist_model was trained: expected 5, found 1",
     "fitted more than once"),
    ("mnist", "m3_train_public", dict(mnist_model=trained(10)), "expected 5, found 10", "train_tutorial_model should fit for EPOCHS"),
    ("mnist", "m3_chosen_hidden", dict(chosen_class=np.float64(7.0)), "chosen_class should be an integer",
     "int(np.argmax(classifications[chosen]))"),
    ("mnist", "m3_chosen_hidden", dict(chosen_class=10), "chosen_class out of range", "np.argmax"),
    ("mnist", "m3_chosen_hidden", dict(chosen=10000), "chosen out of range", "index of one test image"),
    ("mnist", "m3_chosen_hidden", dict(fig_chosen=figure(image_panel())), "number of panels in fig_chosen: expected 2, found 1",
     "bars on the right"),
    ("mnist", "m4_accuracy_hidden", dict(mnist_test_acc=[0.07, 0.9771]), "mnist_test_acc should be a number",
     "is a list ([0.07, 0.9771]), not a number"),
    ("mnist", "m4_accuracy_hidden", dict(mnist_train_acc=98.87), "mnist_train_acc should be a fraction: expected 0..1",
     "evaluate(x_train_scaled, y_train)[1]"),
    ("mnist", "m5_compare_hidden", dict(fashion_model="not trained yet"), "fashion_model should be a Keras model",
     "tf.keras.Sequential"),
    ("mnist", "m5_compare_hidden", dict(fashion_model=trained(None)), "number of epochs fashion_model was trained",
     "train_tutorial_model"),
    ("mnist", "m5_compare_hidden", dict(fashion_model=trained(3)), "expected 5, found 3", "fitted more than once"),
    ("mnist", "m5_compare_hidden", dict(fashion_test_acc=88.5), "fashion_test_acc should be a fraction", "evaluate"),
    ("mnist", "m5_compare_hidden", dict(more_accurate="MNIST"), "more_accurate should be 'mnist' or 'fashion-mnist'",
     "spelled exactly"),
    ("mnist", "m5_compare_hidden", dict(more_accurate=True), "more_accurate should be 'mnist' or 'fashion-mnist'", "string"),
]


@pytest.mark.parametrize("notebook, gid", list(SOLUTION_VALUES))
def test_visible_part_passes_on_the_solutions_structure(notebook, gid):
    assert run_visible(notebook, gid, **SOLUTION_VALUES[notebook, gid]) is None


@pytest.mark.parametrize("notebook, gid, wrong, what, hint", VISIBLE_MISTAKES,
                         ids=[f"{gid}-{what[:40]}" for _, gid, _, what, _ in VISIBLE_MISTAKES])
def test_visible_part_catches_an_obviously_wrong_answer_before_submission(notebook, gid, wrong, what, hint):
    """Each structure check sits above ### BEGIN HIDDEN TESTS: a student sees it fail in their own
    notebook, with the message, before submitting."""
    failure = run_visible(notebook, gid, **{**SOLUTION_VALUES[notebook, gid], **wrong})
    assert failure is not None, f"{gid} passed {wrong}"
    assert what in str(failure), str(failure)
    assert hint in failure.hint, failure.hint


def test_every_question_named_in_the_issue_has_a_visible_structure_check():
    """F1's figure, F9, M2, M3's chosen image, M4 and M5 had only the 'names exist' line."""
    for notebook, gid in SOLUTION_VALUES:
        visible = [line for line in check_source(notebook, gid).split("### BEGIN HIDDEN TESTS")[0].splitlines()
                   if line.startswith("checks.") and not line.startswith("checks.expect_names(")]
        assert visible, f"{gid} has no visible check beyond the names"
    assert "checks.expect_epochs(mnist_model, EPOCHS" in check_source("mnist", "m3_train_public")
    assert "checks.expect_epochs(fashion_model, EPOCHS" in check_source("mnist", "m5_compare_hidden").split("### BEGIN HIDDEN")[0]


def test_m5_whole_check_passes_on_models_trained_for_epochs_and_fails_on_a_loop_of_short_fits(fashion):
    """The visible lines and the hidden part together, on a fashion model whose last fit ran EPOCHS
    epochs; the same model fitted one epoch at a time is stopped by the visible epoch check."""
    fashion_model = dataclasses.replace(fashion["model"], fit_epochs=5, fit_steps=1875)
    (x_train, y_train), _ = load_mnist()
    mnist_model = dataclasses.replace(train(x_train[:6000] / 255.0, y_train[:6000], epochs=1), fit_epochs=5)
    fashion_acc = checks.accuracy_on_test_set(fashion_model, "fashion-mnist")
    mnist_acc = checks.accuracy_on_test_set(mnist_model, "mnist")
    assert mnist_acc > 0.8, mnist_acc  # a real digit model, if a quick one
    better = "mnist" if mnist_acc > fashion_acc else "fashion-mnist"
    values = dict(EPOCHS=5, mnist_model=mnist_model, fashion_model=fashion_model, fashion_test_acc=fashion_acc,
                  more_accurate=better)
    assert run_check("mnist", "m5_compare_hidden", **values) is None
    values["fashion_model"] = dataclasses.replace(fashion_model, fit_epochs=1)
    assert "fitted more than once" in hint_of("mnist", "m5_compare_hidden", **values)
