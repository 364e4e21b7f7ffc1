"""The grading kernel's default steps_per_execution (coursekit.execution.fastfit) trains exactly what a
stock fit trains: the seeded tutorial model, fitted both ways, has bit-identical weights and
history; the student's own setting wins; a callback that acts per batch turns it off."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from coursekit.student import datasets
from coursekit.execution import fastfit  # noqa: E402

SEED = 42
SUBSET = 12_000  # 375 steps of 32: three executions of 100 and a short one of 75


@pytest.fixture(scope="module")
def fashion():
    (x_train, y_train), (x_test, y_test) = datasets.load_fashion_mnist()
    return x_train[:SUBSET] / 255.0, y_train[:SUBSET], x_test[:2000] / 255.0, y_test[:2000]


@pytest.fixture
def fast_keras(monkeypatch):
    monkeypatch.delenv(fastfit.ENV, raising=False)
    fastfit.install()
    yield
    fastfit.uninstall()


def tutorial_model(dropout: float = 0.0, **compile_args):
    """The tutorial's model, seeded (keras.utils.set_random_seed) as the notebooks do; with
    ``dropout``, a Dropout layer after the hidden one (random numbers drawn at every step)."""
    keras.backend.clear_session()  # layer and optimizer names start afresh: compile configs compare equal
    keras.utils.set_random_seed(SEED)
    middle = [keras.layers.Dropout(dropout)] if dropout else []
    model = keras.Sequential([keras.Input(shape=(28, 28)), keras.layers.Flatten(),
                              keras.layers.Dense(128, activation="relu"), *middle,
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], **compile_args)
    return model


class CountBatches(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append(batch)


class Spy:
    """Records the steps_per_execution each fit of the model really ran with."""

    def __init__(self):
        self.seen = []
        spy = self

        class Probe(keras.callbacks.Callback):  # epoch hooks only: does not turn the default off
            def on_train_begin(self, logs=None):
                spy.seen.append(self.model.steps_per_execution)

        self.callback = Probe()


def fit(model, data, **kwargs):
    x, y, x_val, y_val = data
    return model.fit(x, y, epochs=1, verbose=0, **kwargs)


def max_difference(a, b) -> float:
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b, strict=True))


@pytest.mark.parametrize("dropout", [0.0, 0.2], ids=["tutorial", "with-dropout"])
def test_the_default_trains_bit_identical_weights_and_history(fashion, monkeypatch, dropout):
    stock = tutorial_model(dropout)
    stock_history = fit(stock, fashion).history

    monkeypatch.delenv(fastfit.ENV, raising=False)
    fastfit.install()
    try:
        fast = tutorial_model(dropout)
        spy = Spy()
        fast_history = fit(fast, fashion, callbacks=[spy.callback]).history
    finally:
        fastfit.uninstall()

    assert spy.seen == [fastfit.DEFAULT_STEPS_PER_EXECUTION]  # the default really was in force
    assert fast.steps_per_execution == 1 and fast.get_compile_config() == stock.get_compile_config()
    assert max_difference(stock.get_weights(), fast.get_weights()) == 0.0
    assert fast_history == stock_history
    # the same model evaluates the same afterwards (the stock functions are back in place)
    x_val, y_val = fashion[2], fashion[3]
    assert fast.evaluate(x_val, y_val, verbose=0) == stock.evaluate(x_val, y_val, verbose=0)


def test_with_validation_data_weights_and_both_histories_are_identical(fashion, monkeypatch):
    x, y, x_val, y_val = fashion
    x, y = x[:6000], y[:6000]
    stock = tutorial_model()
    stock_history = stock.fit(x, y, epochs=2, validation_data=(x_val, y_val), verbose=0).history
    monkeypatch.delenv(fastfit.ENV, raising=False)
    fastfit.install()
    try:
        fast = tutorial_model()
        fast_history = fast.fit(x, y, epochs=2, validation_data=(x_val, y_val), verbose=0).history
    finally:
        fastfit.uninstall()
    assert "val_loss" in fast_history
    assert max_difference(stock.get_weights(), fast.get_weights()) == 0.0
    assert fast_history == stock_history


def test_the_students_explicit_steps_per_execution_wins(fashion, fast_keras):
    for explicit in (1, 7):
        model = tutorial_model(steps_per_execution=explicit)
        spy = Spy()
        fit(model, fashion, callbacks=[spy.callback])
        assert spy.seen == [explicit]
    model = tutorial_model()
    model.steps_per_execution = 3  # set on the model after compile: also the student's choice
    spy = Spy()
    fit(model, fashion, callbacks=[spy.callback])
    assert spy.seen == [3]


def test_without_the_rule_a_per_batch_callback_would_miss_batches(fashion):
    """Why a per-batch callback turns the default off: at N steps per execution, stock Keras
    calls batch hooks once per N steps."""
    model = tutorial_model(steps_per_execution=fastfit.DEFAULT_STEPS_PER_EXECUTION)
    counter = CountBatches()
    fit(model, fashion, callbacks=[counter])
    assert len(counter.batches) == -(-SUBSET // 32 // fastfit.DEFAULT_STEPS_PER_EXECUTION)  # 4 of 375


@pytest.mark.parametrize("kind", ["subclass", "lambda"])
def test_a_callback_acting_per_batch_turns_it_off_and_sees_every_batch(fashion, fast_keras, kind):
    model = tutorial_model()
    spy = Spy()
    if kind == "subclass":
        counter = CountBatches()
        batches = counter.batches
    else:
        batches = []
        counter = keras.callbacks.LambdaCallback(on_batch_end=lambda batch, logs: batches.append(batch))
    fit(model, fashion, callbacks=[spy.callback, counter])
    assert spy.seen == [1]
    assert batches == list(range(SUBSET // 32 + (SUBSET % 32 > 0)))


def test_the_model_is_fast_again_after_a_per_batch_fit_and_stock_functions_stay_stock(fashion, fast_keras):
    model = tutorial_model()
    spy = Spy()
    fit(model, fashion, callbacks=[spy.callback, CountBatches()])
    stock_function = model.train_function
    fit(model, fashion, callbacks=[spy.callback])
    assert model.train_function is stock_function  # the N-step function never replaces the stock one
    counter = CountBatches()
    fit(model, fashion, callbacks=[spy.callback, counter])
    assert spy.seen == [1, fastfit.DEFAULT_STEPS_PER_EXECUTION, 1]
    assert len(counter.batches) == SUBSET // 32 + (SUBSET % 32 > 0)


def test_the_environment_turns_it_off(fashion, fast_keras, monkeypatch):
    monkeypatch.setenv(fastfit.ENV, "0")
    model = tutorial_model()
    spy = Spy()
    fit(model, fashion, callbacks=[spy.callback])
    assert spy.seen == [1]


def test_the_grading_kernel_trains_with_the_default_and_keeps_it_after_a_student_undoes_it(tmp_path):
    from test_kernel import run_cells

    fit_cell = """
import keras, numpy as np
class Probe(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        print(self.model.steps_per_execution)
model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(2, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
model.fit(np.zeros((640, 4)), np.zeros(640), verbose=0, callbacks=[Probe()])
"""
    out = run_cells(tmp_path, fit_cell,
                    "import keras; keras.Model.fit = keras.Model.fit.__coursekit_fastfit__", fit_cell)
    assert out[0].split() == out[2].split() == [str(fastfit.DEFAULT_STEPS_PER_EXECUTION)]


def test_evaluate_returns_bit_identical_loss_and_metrics(fashion, monkeypatch):
    x, y, _, _ = fashion  # 375 steps of 32: three executions of 100 and a short one
    stock = tutorial_model()
    fit(stock, fashion)
    stock_result = stock.evaluate(x, y, verbose=0, return_dict=True)
    stock_list = stock.evaluate(x, y, verbose=0)

    monkeypatch.delenv(fastfit.ENV, raising=False)
    fastfit.install()
    try:
        fast = tutorial_model()
        fit(fast, fashion)
        seen = []

        class Probe(keras.callbacks.Callback):  # begin and end only: does not turn the default off
            def on_test_begin(self, logs=None):
                seen.append(self.model.steps_per_execution)

        fast_result = fast.evaluate(x, y, verbose=0, return_dict=True, callbacks=[Probe()])
        fast_list = fast.evaluate(x, y, verbose=0, callbacks=[Probe()])
    finally:
        fastfit.uninstall()

    assert seen == [fastfit.DEFAULT_STEPS_PER_EXECUTION] * 2 and fast.steps_per_execution == 1
    assert max_difference(stock.get_weights(), fast.get_weights()) == 0.0
    assert fast_result == stock_result and fast_list == stock_list


def test_a_callback_acting_per_test_batch_sees_every_batch_of_evaluate(fashion, fast_keras):
    x, y, _, _ = fashion
    model = tutorial_model()
    batches = []
    model.evaluate(x, y, verbose=0, callbacks=[keras.callbacks.LambdaCallback(
        on_test_batch_end=lambda batch, logs: batches.append(batch))])
    assert batches == list(range(SUBSET // 32 + (SUBSET % 32 > 0)))
