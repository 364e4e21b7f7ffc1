"""coursekit.student.checks: the helpers the public and hidden checks are built from."""

import re

import numpy as np
import pytest

from coursekit.student import checks
from coursekit.student.checks import CheckFailed

tf = pytest.importorskip("tensorflow")


def tutorial_model(output_activation="softmax", hidden=128, dropout=False):
    layers = [tf.keras.Input(shape=(28, 28)), tf.keras.layers.Flatten(),
              tf.keras.layers.Dense(hidden, activation="relu")]
    if dropout:
        layers.append(tf.keras.layers.Dropout(0.2))
    layers.append(tf.keras.layers.Dense(10, activation=output_activation))
    return tf.keras.Sequential(layers)


def test_failure_message_has_expected_found_and_hint():
    with pytest.raises(CheckFailed) as err:
        checks.expect_shape(np.zeros((3, 4)), (4, 3), "x", hint="transpose it")
    assert str(err.value) == "shape of x: expected (4, 3), found (3, 4)\nHint: transpose it"
    assert err.value.hint == "transpose it"


def test_expect_helpers_return_none_so_a_test_cell_has_no_output_value():
    # nbgrader reads a numeric last value of a test cell as partial credit
    assert checks.expect_shape(np.zeros(3), (3,), "x") is None
    assert checks.expect_close([1.0], [1.0], "x") is None
    assert checks.expect_probability_rows([[0.5, 0.5]], "p") is None
    assert checks.expect_scaled_pixels(np.full((2, 2), 0.9), "img", (2, 2)) is None


@pytest.mark.parametrize("images, hint", [
    (np.full((2, 28, 28), 255.0), "pixel values go up to 255"),
    (np.full((2, 28, 28), 255, dtype=np.uint8), "divide by 255.0"),
    (np.full((2, 28, 28), 1 / 255.0), "scaled down too far"),
])
def test_unscaled_pixels_are_named_as_the_misconception(images, hint):
    with pytest.raises(CheckFailed) as err:
        checks.expect_scaled_pixels(images, "train_images", (2, 28, 28))
    assert hint in err.value.hint


def test_probability_rows_name_the_missing_softmax():
    with pytest.raises(CheckFailed, match="softmax"):
        checks.expect_probability_rows([[2.0, -1.0, 3.0]], "predictions")


def test_describe_layers_reads_the_activation_by_what_it_does():
    assert checks.describe_layers(tutorial_model()) == [("Flatten",), ("Dense", 128, "relu"), ("Dense", 10, "softmax")]
    assert checks.describe_layers(tutorial_model(None))[-1] == ("Dense", 10, "linear")
    model = tf.keras.Sequential([tf.keras.Input((28, 28)), tf.keras.layers.Flatten(),
                                 tf.keras.layers.Dense(128, activation=tf.nn.relu),
                                 tf.keras.layers.Dense(10, activation=tf.nn.softmax)])
    assert checks.describe_layers(model)[1:] == [("Dense", 128, "relu"), ("Dense", 10, "softmax")]


def test_architecture_check_hints_at_a_missing_softmax():
    with pytest.raises(CheckFailed) as err:
        checks.expect_architecture(tutorial_model(None), [("Flatten",), ("Dense", 128, "relu"), ("Dense", 10, "softmax")])
    assert "softmax" in err.value.hint


def test_forward_pass_matches_keras_predict_including_dropout_models():
    rng = np.random.default_rng(0)
    images = rng.random((16, 28, 28))
    for model in (tutorial_model(), tutorial_model(hidden=256, dropout=True), tutorial_model(None)):
        ours = checks.forward(model, images)
        keras = model.predict(images, verbose=0)
        assert np.allclose(ours, keras, atol=1e-5)


def test_accuracy_is_computed_from_the_weights_not_from_student_methods():
    model = tutorial_model()
    images = np.random.default_rng(1).random((50, 28, 28))
    labels = np.argmax(checks.forward(model, images), axis=1)
    model.predict = lambda *a, **k: np.eye(10)[np.zeros(50, dtype=int)]  # a student's "fix"
    assert checks.accuracy(model, images, labels) == 1.0


def test_checks_keep_genuine_numpy_when_a_student_redefines_it(monkeypatch):
    monkeypatch.setattr(np, "argmax", lambda *a, **k: 0)
    monkeypatch.setattr(np, "allclose", lambda *a, **k: True)
    with pytest.raises(CheckFailed):
        checks.expect_close([1.0, 2.0], [1.0, 3.0], "x")
    model = tutorial_model()
    images = np.random.default_rng(2).random((20, 28, 28))
    wrong_labels = (np.asarray(checks._argmax(checks.forward(model, images), axis=1)) + 1) % 10
    assert checks.accuracy(model, images, wrong_labels) == 0.0


def test_subclassed_layers_are_not_trusted():
    class FakeDense(tf.keras.layers.Dense):
        def get_weights(self):  # pragma: no cover - must not be called
            raise AssertionError("student code called")

    model = tf.keras.Sequential([tf.keras.Input((28, 28)), tf.keras.layers.Flatten(), FakeDense(10, activation="softmax")])
    with pytest.raises(CheckFailed, match="cannot be checked: a layer of class 'FakeDense'"):
        checks.forward(model, np.zeros((1, 28, 28)))


def test_compile_settings_normalise_strings_and_objects():
    model = tutorial_model()
    model.compile(optimizer=tf.keras.optimizers.Adam(), loss=tf.keras.losses.SparseCategoricalCrossentropy(),
                  metrics=["accuracy"])
    settings = checks.compile_settings(model)
    assert settings["optimizer"] == "adam"
    assert settings["loss"] == "sparse_categorical_crossentropy"
    assert "accuracy" in settings["metrics"]
    model.compile(optimizer="sgd", loss="mean_squared_error")
    assert checks.compile_settings(model)["loss"] == "mean_squared_error"


def test_figure_panels_read_images_bars_and_labels():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = np.arange(784).reshape(28, 28) / 784
    fig = plt.figure()
    plt.subplot(1, 2, 1)
    plt.imshow(image)
    plt.xlabel("Sneaker 90% (Sneaker)")
    plt.subplot(1, 2, 2)
    plt.bar(range(10), np.linspace(0, 1, 10))
    panels = checks.figure_panels(fig, "fig")
    plt.close(fig)
    assert checks.find_image(panels[0]["image"], [np.zeros((28, 28)), image * 255]) == 1
    assert panels[0]["xlabel"].startswith("Sneaker")
    assert np.allclose(panels[1]["bars"], np.linspace(0, 1, 10))
    with pytest.raises(CheckFailed, match="plt.figure"):
        checks.figure_panels(None, "fig_grid")


def test_expect_names_says_which_variables_are_missing():
    with pytest.raises(CheckFailed, match="not defined: model, history"):
        checks.expect_names({"x": 1}, "x", "model", "history")


def test_softmax_reference_matches_the_course_notes_and_is_stable():
    assert np.allclose(checks.softmax_reference([1, 3, 4, 2]), [0.0320586, 0.23688282, 0.64391426, 0.08714432], atol=1e-7)
    assert np.isfinite(checks.softmax_reference([1000.0, 1001.0])).all()


# --- both worlds: live objects (a student's own Jupyter) and the checker's data ------------


def through_the_wire(tmp_path, value):
    """``value`` as the checker receives it from the student's kernel."""
    import os

    from coursekit.transfer import export, wire

    tmp_path.mkdir(parents=True, exist_ok=True)
    writer = wire.Writer(tmp_path / "r1", export.convert)
    writer.write({"values": {"v": writer.encode(value)}, "missing": []})
    base = wire.open_base(tmp_path)
    manifest, reader = wire.read_message(base, "r1")
    try:
        return wire.decode_named(reader, manifest["values"], ["v"])["v"]
    finally:
        reader.close()
        os.close(base)


def test_a_model_reads_the_same_live_and_as_the_checkers_data(tmp_path):
    from coursekit.student.values import ModelData

    model = tutorial_model(dropout=True)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    data = through_the_wire(tmp_path, model)
    assert isinstance(data, ModelData)
    images = np.random.default_rng(3).random((20, 28, 28))
    labels = np.arange(20) % 10
    assert checks.describe_layers(data) == checks.describe_layers(model) == \
        [("Flatten",), ("Dense", 128, "relu"), ("Dropout", 0.2), ("Dense", 10, "softmax")]
    assert np.array_equal(checks.forward(data, images), checks.forward(model, images))
    assert checks.accuracy(data, images, labels) == checks.accuracy(model, images, labels)
    assert checks.compile_settings(data) == checks.compile_settings(model)
    assert (data.input_shape, data.output_shape, data.compiled) == ((None, 28, 28), (None, 10), True)
    checks.expect_keras_model(data)
    with pytest.raises(CheckFailed, match="model should be compiled"):
        checks.compile_settings(through_the_wire(tmp_path / "2", tutorial_model()))


def test_something_else_in_place_of_a_model_fails_with_its_type(tmp_path):
    class FakeModel:
        layers = ["Dense"]

    for value in (FakeModel(), None, {"t": "model"}):
        with pytest.raises(CheckFailed, match="model should be a Keras model"):
            checks.describe_layers(through_the_wire(tmp_path / str(id(value)), value))


def test_a_figure_reads_the_same_live_and_as_the_checkers_data(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    plt.subplot(1, 2, 1)
    plt.imshow(np.arange(784).reshape(28, 28) / 784)
    plt.xlabel("Bag")
    plt.subplot(1, 2, 2)
    plt.bar(range(10), np.linspace(0, 1, 10))
    data = through_the_wire(tmp_path, fig)
    plt.close(fig)
    live, sent = checks.figure_panels(fig, "fig"), checks.figure_panels(data, "fig")
    assert [p["xlabel"] for p in live] == [p["xlabel"] for p in sent] == ["Bag", ""]
    assert np.array_equal(live[0]["image"], sent[0]["image"]) and np.array_equal(live[1]["bars"], sent[1]["bars"])
    with pytest.raises(CheckFailed, match="should be a matplotlib figure"):
        checks.figure_panels(through_the_wire(tmp_path / "2", "a figure"), "fig")


def test_a_training_history_and_a_hand_made_one_both_read(tmp_path):
    model = tutorial_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(np.zeros((8, 28, 28)), np.zeros(8), epochs=2, verbose=0, validation_split=0.25)
    data = through_the_wire(tmp_path, history)
    assert data.history == history.history and data.params["epochs"] == 2

    class _History:
        history = {"accuracy": [0.8], "val_accuracy": [0.7]}

    assert through_the_wire(tmp_path / "2", _History()).history == _History.history


def test_a_models_last_fit_reads_the_same_live_and_as_the_checkers_data(tmp_path):
    """M3 and M5 see how many epochs a model's last fit ran (Keras keeps its History as
    model.history): None before any fit, a loop of one-epoch fits leaves 1."""
    model = tutorial_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    images, labels = np.zeros((8, 28, 28)), np.zeros(8)
    assert checks.fit_epochs(model) is None and through_the_wire(tmp_path / "0", model).fit_epochs is None
    with pytest.raises(CheckFailed, match="number of epochs model was trained: expected 5, found none") as err:
        checks.expect_epochs(through_the_wire(tmp_path / "1", model), 5, "model")
    assert "never trained" in err.value.hint
    model.fit(images, labels, epochs=2, verbose=0)
    model.evaluate(images, labels, verbose=0)  # evaluate and predict leave the record alone
    model.predict(images, verbose=0)
    for seen in (model, through_the_wire(tmp_path / "2", model)):
        assert checks.fit_epochs(seen) == 2
        assert checks.expect_epochs(seen, 2, "model") is None
        with pytest.raises(CheckFailed, match="expected 5, found 2"):
            checks.expect_epochs(seen, 5, "model", hint="fit for EPOCHS epochs")
    for _ in range(3):
        model.fit(images, labels, epochs=1, verbose=0)
    for seen in (model, through_the_wire(tmp_path / "3", model)):
        with pytest.raises(CheckFailed, match="expected 5, found 1") as err:
            checks.expect_epochs(seen, 5, "mnist_model", hint="train_tutorial_model should fit for EPOCHS epochs")
        assert err.value.hint.startswith("train_tutorial_model should fit for EPOCHS epochs")
        assert "fitted more than once" in err.value.hint
    model.fit(images, labels, epochs=7, verbose=0)
    with pytest.raises(CheckFailed, match="expected 5, found 7") as err:
        checks.expect_epochs(model, 5, "model")
    assert "epochs=5" in err.value.hint
    with pytest.raises(CheckFailed, match="should be a Keras model"):
        checks.expect_epochs(None, 5, "fashion_model")
    with pytest.raises(CheckFailed, match="the number of epochs asked for: expected a whole number, found '5'"):
        checks.expect_epochs(model, "5", "model")  # EPOCHS comes from the student's kernel


def test_a_hand_made_history_on_a_model_is_no_training_record(tmp_path):
    model = tutorial_model()

    class _History:
        epoch = [0, 1, 2, 3, 4]
        params = {"epochs": 5, "steps": 1875}

    model.history = _History()
    assert checks.fit_epochs(model) is None and through_the_wire(tmp_path, model).fit_epochs is None
    assert checks.fit_steps(model) is None and through_the_wire(tmp_path / "2", model).fit_steps is None


def test_the_steps_of_a_models_last_fit_read_the_same_live_and_as_the_checkers_data(tmp_path):
    """M3 and M5 see how many batches each epoch of a model's last fit ran (history.params['steps']),
    live in a student's Jupyter and as the checker receives the model: 8 images in batches of 3
    are 3 steps, which 8 images make at some batch size and 2 images make at none."""
    model = tutorial_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    images, labels = np.zeros((8, 28, 28)), np.zeros(8)
    assert checks.fit_steps(model) is None and through_the_wire(tmp_path / "0", model).fit_steps is None
    with pytest.raises(CheckFailed, match="mnist_model should be trained on the 8 training images: expected a fitted "
                                          "model, found none") as err:
        checks.expect_trained_on(through_the_wire(tmp_path / "1", model), 8, "mnist_model", hint="train on x_train_scaled")
    assert err.value.hint.startswith("train on x_train_scaled") and "nothing called fit" in err.value.hint
    model.fit(images, labels, epochs=2, batch_size=3, verbose=0)
    model.evaluate(images, labels, verbose=0)  # evaluate and predict leave the record alone
    model.predict(images, verbose=0)
    for k, seen in enumerate((model, through_the_wire(tmp_path / "2", model))):
        assert checks.fit_steps(seen) == 3
        assert checks.expect_trained_on(seen, 8, "mnist_model") is None
        with pytest.raises(CheckFailed, match=re.escape(
                "each epoch of mnist_model's last fit should run over the 2 training images: expected a whole number "
                "of batches of 2 images (or of the part a validation_split leaves), found 3 steps")) as err:
            checks.expect_trained_on(seen, 2, "mnist_model", hint="the test images must stay unseen (data leakage)")
        assert err.value.hint == "the test images must stay unseen (data leakage)"
    with pytest.raises(CheckFailed, match="should be a Keras model"):
        checks.expect_trained_on(None, 60000, "fashion_model")
    with pytest.raises(CheckFailed, match="the number of training images asked for"):
        checks.expect_trained_on(model, "8", "model")


@pytest.mark.parametrize("steps, epochs, found", [(None, 5, "an unknown number of steps"), (2188, 5, "2188 steps"),
                                                  (313, 5, None), (0, 5, "0 steps"), (60001, 5, "60001 steps"),
                                                  (None, None, "none (never fitted)")])
def test_trained_on_reads_the_last_fits_steps_against_the_training_images(steps, epochs, found):
    """Steps alone: 70,000 images in batches of 32 (2,188 steps) cannot come from 60,000; 10,000
    test images in batches of 32 (313 steps) can (60,000 in batches of 192), which is why M3 and
    M5 also compare accuracies (tests/notebooks/test_hints.py); a fit whose steps Keras did not record
    (a generator of unknown length) cannot show what it trained on."""
    from coursekit.student.values import ModelData

    model = ModelData([("Flatten",)], [[]], (None, 28, 28), None, True, None, fit_epochs=epochs, fit_steps=steps)
    if found is None:
        assert checks.expect_trained_on(model, 60000, "mnist_model") is None
        return
    with pytest.raises(CheckFailed, match=re.escape(f"found {found}")) as err:
        checks.expect_trained_on(model, 60000, "mnist_model", hint="train on x_train_scaled only (data leakage)")
    assert err.value.hint.startswith("train on x_train_scaled only (data leakage)")


def keras_steps(samples: int, batch_size: int, validation_split: float = 0.0) -> int:
    """history.params['steps'] of a Keras fit (it trains on the first int(samples * (1 - split)))."""
    return -(-int(samples * (1 - validation_split)) // batch_size)


@pytest.mark.parametrize("split", [0.0, *checks.COMMON_VALIDATION_SPLITS])
@pytest.mark.parametrize("batch_size", [16, 32, 64, 100, 128, 256])
def test_an_honest_fit_with_a_common_validation_split_is_not_taken_for_leakage(split, batch_size):
    """M3 asks for a fit on all 60,000 training images; a student who adds F7's validation_split
    (or another common one) still trained on training images only."""
    assert checks.steps_fit_training_images(keras_steps(60000, batch_size, split), 60000)


@pytest.mark.parametrize("split, batch_size", [(split, batch) for split in (0.0, 0.1) for batch in (16, 32, 64, 128)]
                         + [(split, batch) for split in (0.2, 0.25, 0.3) for batch in (16, 32, 64)])
def test_training_and_test_images_together_are_caught_by_their_steps_at_common_batch_sizes(split, batch_size):
    """70,000 images: without a validation split (or with 0.1) at the batch sizes students use,
    and with F7's 0.2 and others at batch sizes up to 64. Larger batches with a split make steps
    that some validation part of 60,000 also makes; the accuracy test is then all that is left."""
    assert not checks.steps_fit_training_images(keras_steps(70000, batch_size, split), 60000)


def test_panels_and_image_panels_count_the_same_live_and_as_the_checkers_data(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    for k in range(3):
        plt.subplot(2, 2, k + 1)
        plt.imshow(np.full((28, 28), k / 3))
    plt.subplot(2, 2, 4)
    plt.bar(range(10), np.linspace(0, 1, 10))
    data = through_the_wire(tmp_path, fig)
    plt.close(fig)
    for seen in (fig, data):
        assert len(checks.image_panels(seen, "fig")) == 3
        assert checks.expect_panels(seen, 4, "fig") is None
        assert checks.expect_panels(seen, 3, "fig", images=True) is None
        with pytest.raises(CheckFailed, match="number of panels in fig: expected 30, found 4") as err:
            checks.expect_panels(seen, 30, "fig", hint="5 rows of 3 images, each with its bar chart")
        assert err.value.hint == "5 rows of 3 images, each with its bar chart"
        with pytest.raises(CheckFailed, match="number of images in fig: expected 10, found 3"):
            checks.expect_panels(seen, 10, "fig", images=True)
    with pytest.raises(CheckFailed, match="should be a matplotlib figure"):
        checks.expect_panels([fig], 4, "fig_two")


@pytest.mark.parametrize("value", [0.97, 0, 1, np.float32(0.5), np.float64(0.88), np.array(0.9, dtype="float32")])
def test_expect_fraction_takes_python_and_numpy_numbers(value):
    assert checks.expect_fraction(value, "acc") is None


@pytest.mark.parametrize("value, what, hint", [
    ([0.07, 0.97], "mnist_test_acc should be a number", "mnist_test_acc is a list ([0.07, 0.97]), not a number"),
    ((0.07, 0.97), "should be a number", "is a tuple"),
    ("0.97", "should be a number", "should be a number"),
    (None, "should be a number", "should be a number"),
    (True, "should be a number", "should be a number"),
    (97.7, "mnist_test_acc should be a fraction: expected 0..1, found 97.7", ""),
    (-0.1, "should be a fraction", ""),
    (float("nan"), "should be a fraction", ""),
])
def test_expect_fraction_names_what_was_stored_instead(value, what, hint):
    with pytest.raises(CheckFailed) as err:
        checks.expect_fraction(value, "mnist_test_acc", hint="mnist_model.evaluate(x_test_scaled, y_test)[1]")
    assert what in str(err.value)
    assert hint in err.value.hint and "evaluate(x_test_scaled, y_test)[1]" in err.value.hint


def test_expect_indices_wants_a_list_of_that_many_integers_in_range():
    for good in ([50, 7], (3, 4), np.array([1, 2]), [np.int64(9999), 0]):
        assert checks.expect_indices(good, "my_images", 2, 10000) is None
    for bad, what in [(7, "my_images should be a list of 2 indices"), ([50], "number of images in my_images"),
                      ([50, 7, 3], "number of images in my_images"), ([50, 10000], "each index in my_images out of range"),
                      ([50, 7.0], "each index in my_images should be an integer"), (np.zeros((2, 2), int), "a list of 2")]:
        with pytest.raises(CheckFailed, match=what):
            checks.expect_indices(bad, "my_images", 2, 10000, hint="my_images is a list of two test image indices")


GUARD_DEMO = """
import numpy
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
genuine = numpy.argmax
shell.run_cell("import coursekit.student.checks")
for step in ("imported", "installed"):
    if step == "installed":
        numpy.argmax = genuine
        shell.run_cell("coursekit.student.checks.install_guard(get_ipython())")
    shell.run_cell("import numpy as np; np.argmax = lambda *a, **k: 0")
    shell.run_cell("print('%s', np.argmax([1, 3, 2]))" % step)
"""


def test_the_tamper_guard_is_installed_by_the_kernel_not_by_the_import():
    """A redefinition of np.argmax outlives its cell when coursekit.student.checks is only imported, and
    lasts only for that cell once the guard is installed (as the student kernel's preload does)."""
    import subprocess
    import sys

    from coursekit.execution.kernel import PRELOAD

    proc = subprocess.run([sys.executable, "-c", GUARD_DEMO], capture_output=True, text=True, timeout=300)
    assert "imported 0" in proc.stdout and "installed 1" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert "install_guard(get_ipython())" in PRELOAD


# --- the checker's memo (issue 14) -----------------------------------------------------------


@pytest.fixture
def memo(monkeypatch):
    """Switch the memo on ("1") or off ("0"), empty."""
    def switch(state: str):
        monkeypatch.setenv(checks.CACHE_ENV, state)
        checks.clear_memo()
    yield switch
    checks.clear_memo()


def model_record(seed: int):
    from coursekit.student.values import ModelData

    rng = np.random.default_rng(seed)
    weights = [[], [rng.normal(0, 0.05, (784, 128)), rng.normal(0, 0.1, 128)],
               [rng.normal(0, 0.3, (128, 10)), rng.normal(0, 0.1, 10)]]
    return ModelData([("Flatten",), ("Dense", 128, "relu"), ("Dense", 10, "softmax")], weights, (None, 28, 28),
                     (None, 10), True, None, fit_epochs=5, fit_steps=1875)


def test_the_memo_serves_a_changed_model_or_changed_images_their_new_answer(memo):
    """Keys are the content of the weights and images, not the objects: a model trained further
    between two checks (same object, weights changed in place) and an array changed in place get
    new answers, and a data set's scaled copy follows its images."""
    memo("1")
    model, images = model_record(0), np.random.default_rng(1).random((50, 28, 28))
    first = checks.forward(model, images)
    model.weights[2][1][:] += np.arange(10.0)  # the same record, other weights
    assert not np.array_equal(checks.forward(model, images), first)
    memo("0")
    changed_model = checks.forward(model, images)
    memo("1")
    assert np.array_equal(checks.forward(model, images), changed_model)
    images[:10] = 1.0 - images[:10]  # the same array, other images
    assert np.array_equal(checks.forward(model, images)[10:], changed_model[10:])
    assert not np.array_equal(checks.forward(model, images)[:10], changed_model[:10])
    raw = np.random.default_rng(2).integers(0, 256, (30, 28, 28), dtype=np.uint8)
    scaled = checks.scaled_images(raw)
    raw[0] = 255 - raw[0]
    assert np.array_equal(checks.scaled_images(raw), raw / 255.0) and not np.array_equal(scaled, raw / 255.0)
    assert checks.images_used(raw / 255.0, raw) is checks.scaled_images(raw)


def test_what_the_memo_keeps_cannot_be_changed_through_what_it_hands_out(memo):
    memo("1")
    model, images = model_record(0), np.random.default_rng(1).random((50, 28, 28))
    out = checks.forward(model, images)
    out[:] = 0.0
    assert checks.forward(model, images).sum() > 0  # a copy of what is kept, every time
    scaled = checks.scaled_images(np.full((2, 28, 28), 51, dtype=np.uint8))
    with pytest.raises(ValueError, match="read-only"):
        scaled[0, 0, 0] = 1.0


def bits(value) -> tuple:
    """A value's dtype, shape and the SHA-256 of its bytes (kept instead of the 63 MB arrays)."""
    import hashlib

    arr = np.ascontiguousarray(np.asarray(value))
    return arr.dtype.str, arr.shape, hashlib.sha256(arr.data).hexdigest()


class Bits(dict):
    def __setitem__(self, key, value):
        super().__setitem__(key, bits(value))


def notebook_measurements(model_seed: int) -> dict:
    """What MNIST's hidden checks compute from a model and the course's data, right and wrong
    answers alike (checks.images_used's other branches), twice each, as the check cells do: each
    value's dtype, shape and bytes (``bits``)."""
    from coursekit.student.datasets import load

    model = model_record(model_seed)
    (x_train, y_train), (x_test, y_test) = load("mnist")
    found = Bits()
    for n in range(2):
        for label, student in [("scaled", x_test / 255.0), ("unscaled", x_test), ("twice", x_test / 255.0 / 255.0),
                               ("float32", (x_test / 255.0).astype(np.float32)), ("other", x_test[::-1] / 255.0),
                               ("missing", None)]:
            used = checks.images_used(student, x_test, "x_test_scaled")
            found[f"{n} images_used {label}"] = used
            found[f"{n} forward {label}"] = checks.forward(model, used)
            found[f"{n} accuracy {label}"] = checks.accuracy(model, used, y_test)
        found[f"{n} test set"] = checks.accuracy_on_test_set(model, "mnist")
        found[f"{n} raw"] = checks.accuracy(model, x_test, y_test)
        found[f"{n} forward of 1"] = checks.forward(model, checks.images_used(x_test / 255.0, x_test)[7:8])
        found[f"{n} chunks"] = (checks._accuracy_in_chunks(model, x_train, y_train),
                                checks._accuracy_in_chunks(model, x_test, y_test))
        used = checks.images_used(x_train / 255.0, x_train, "x_train_scaled")
        found[f"{n} train"] = checks.accuracy(model, used, y_train)
        found[f"{n} held out"] = checks.held_out_gap(model, 0.5, used, y_train)
        del used
        found[f"{n} rows"] = checks.rows_used(None, checks.forward(model, x_test / 255.0))[:15]
    return found


def test_the_memo_changes_no_number_a_check_sees_bit_for_bit(memo):
    memo("0")
    without = notebook_measurements(3)
    memo("1")
    with_memo = notebook_measurements(3)
    other_model = notebook_measurements(4)  # the memo still holds model 3's results
    assert without == with_memo
    assert other_model["0 forward scaled"] != with_memo["0 forward scaled"]
    memo("0")
    assert notebook_measurements(4) == other_model
