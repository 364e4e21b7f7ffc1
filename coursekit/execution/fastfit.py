"""Faster, exact training in the grading kernel: a default ``steps_per_execution`` for ``fit``
and ``evaluate``.

Training dominates grading, and what it costs is Keras' per-step round trip from Python into
TensorFlow (batch 32: 1,875 steps an epoch for 60,000 images), not arithmetic. With
``steps_per_execution=N`` Keras runs N steps per call, in a ``tf.while_loop`` inside one
``tf.function``. The grading kernel (coursekit/execution/kernel.py, PRELOAD) calls ``install()`` so that
``Model.fit`` and ``Model.evaluate`` use ``DEFAULT_STEPS_PER_EXECUTION`` when the student did
not choose a value (evaluating 60,000 images is 1,875 round trips too).

Why the numbers are exactly those of a stock fit (tests/execution/test_fastfit.py trains the seeded
tutorial model both ways and compares weights and history bit for bit):

- the loop body is the very ``tf.function`` a stock step calls (``one_step_on_data`` in
  keras/src/backend/tensorflow/trainer.py): same graph, same kernels, same order of
  operations; the loop only decides how many times it is called before returning to Python;
- the batches come from the same ``tf.data`` iterator in the same order (shuffling, the last
  short batch and validation data are untouched), and the random state (seed generators,
  optimizer iterations) lives in variables that every step updates in sequence either way;
- the epoch's logs, and what ``evaluate`` returns, are read from the metrics' state at the end,
  not from the per-step Python values, so they do not depend on how often Python looked.

What does change is how often Python sees a batch end: once per N steps. So the default is
off whenever something could observe that, or where exactness is not shown:

- a callback that acts per batch (a class or instance that overrides ``on_batch_*``,
  ``on_train_batch_*``, ``on_test_batch_*`` or ``on_predict_batch_*``: LambdaCallback,
  TerminateOnNaN, ModelCheckpoint, a student's own...), or a ``CallbackList`` (which ``fit``
  also passes to the ``evaluate`` of its validation data, which then runs as ``fit`` does);
- the student set ``steps_per_execution`` (in ``compile`` or on the model): theirs wins;
- the model runs eagerly, is XLA-compiled, has a distribution strategy, or its class
  overrides a step function (``train_step``/``test_step``/``predict_step``/``make_*_function``);
- the training data is not arrays or a ``tf.data.Dataset`` (Python generators and
  ``PyDataset`` run student code whose timing we do not control).

The model never shows the change: ``model.steps_per_execution``, ``get_compile_config()`` and
the model's own traced functions are the stock ones outside ``fit`` and ``evaluate``; the functions traced for N
steps are kept aside per model and dropped when the model is compiled again.
``COURSEKIT_FASTFIT=0`` in the kernel's environment turns the default off (benchmarks);
another integer sets N.

``fit`` goes through coursekit/execution/fitmemo.py first: a fit whose every input (N included) a trusted
run recorded is restored from that record instead of trained, bit for bit the same.
"""

from __future__ import annotations

import functools
import inspect
import os
import weakref

DEFAULT_STEPS_PER_EXECUTION = 100
ENV = "COURSEKIT_FASTFIT"

BATCH_HOOKS = ("on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end",
               "on_test_batch_begin", "on_test_batch_end", "on_predict_batch_begin", "on_predict_batch_end")
_FUNCTIONS = ("train_function", "test_function", "predict_function")
# predict is left stock: with N steps Keras traces one graph of N unrolled calls (trainer.py's
# multi_step_on_data), which costs more than it saves on 10,000 images (benchmarks/training_threads.py).
RUNNING = ("fit", "evaluate")
_STEP_METHODS = ("train_step", "test_step", "predict_step",
                 "make_train_function", "make_test_function", "make_predict_function")

_explicit: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> compile() named steps_per_execution
_fast_functions: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> functions traced for N steps


def steps_per_execution() -> int:
    """N from the environment: 0 or 1 means off."""
    value = os.environ.get(ENV, "").strip()
    try:
        return int(value) if value else DEFAULT_STEPS_PER_EXECUTION
    except ValueError:
        return DEFAULT_STEPS_PER_EXECUTION


def acts_per_batch(callback) -> bool:
    """Does ``callback`` do anything when a batch begins or ends?"""
    from keras.callbacks import Callback, CallbackList

    if isinstance(callback, CallbackList):
        return True  # built by the caller, with whatever it holds (progress bar included)
    for hook in BATCH_HOOKS:
        if hook in getattr(callback, "__dict__", {}):  # LambdaCallback sets its hooks per instance
            return True
        if getattr(type(callback), hook, None) is not getattr(Callback, hook):
            return True
    return False


def _plain_data(x) -> bool:
    import numpy as np
    import tensorflow as tf

    if isinstance(x, (np.ndarray, tf.Tensor, tf.data.Dataset)):
        return True
    if isinstance(x, (list, tuple)):
        return all(_plain_data(item) for item in x)
    if isinstance(x, dict):
        return all(_plain_data(item) for item in x.values())
    return False


def exact_for(model, arguments: dict) -> bool:
    """Can this ``fit`` call run N steps per execution and train exactly as a stock one?"""
    import keras

    if _explicit.get(model, True) or model.steps_per_execution != 1:
        return False  # the student chose (or compile did not go through us): theirs wins
    if model.run_eagerly or model.jit_compile or getattr(model, "_distribute_strategy", None) is not None:
        return False
    if any(getattr(type(model), name, None) is not getattr(keras.Model, name, None) for name in _STEP_METHODS):
        return False
    callbacks = arguments.get("callbacks")
    if callbacks is not None:
        if not isinstance(callbacks, (list, tuple)):
            callbacks = [callbacks]
        if any(acts_per_batch(cb) for cb in callbacks):
            return False
    validation = arguments.get("validation_data")
    return _plain_data(arguments.get("x")) and (validation is None or _plain_data(validation))


def _wrap_compile(compile_):
    signature = inspect.signature(compile_)

    @functools.wraps(compile_)
    def compile(self, *args, **kwargs):
        try:
            explicit = "steps_per_execution" in signature.bind(self, *args, **kwargs).arguments
        except TypeError:
            explicit = True
        result = compile_(self, *args, **kwargs)
        _fast_functions.pop(self, None)  # traced for the previous compile
        _explicit[self] = explicit
        return result

    compile.__coursekit_fastfit__ = compile_
    return compile


def _wrap_running(method_):
    """``fit`` or ``evaluate``, run with the default N steps per execution where that is exact;
    ``fit`` also records what it trained on (section "what the last fit trained on")."""
    signature = inspect.signature(method_)
    records = method_.__name__ == "fit"

    @functools.wraps(method_)
    def run(self, *args, **kwargs):
        n = steps_per_execution()
        arguments: dict = {}
        try:
            arguments = signature.bind(self, *args, **kwargs).arguments
            fast = n > 1 and exact_for(self, arguments)
        except Exception:  # a call Keras itself will reject, or a model we cannot read: stock
            fast = False
        if records:  # an exact memo of this fit may stand in for training (coursekit/execution/fitmemo.py)
            from coursekit.execution import fitmemo

            result = fitmemo.run_fit(method_, self, args, kwargs, n if fast else 1,
                                     lambda: _run(method_, self, args, kwargs, fast, n),
                                     fitted_before=self in _fast_functions)
        else:
            result = _run(method_, self, args, kwargs, fast, n)
        if records:
            _record_fit(self, arguments, result)
        return result

    run.__coursekit_fastfit__ = method_
    return run


def _run(method_, self, args, kwargs, fast: bool, n: int):
    """``method_`` called as is, or with N steps per execution when ``fast``."""
    if not fast:
        return method_(self, *args, **kwargs)
    stock = {name: getattr(self, name) for name in _FUNCTIONS}
    for name, function in _fast_functions.get(self, dict.fromkeys(_FUNCTIONS)).items():
        setattr(self, name, function)
    self.steps_per_execution = n
    try:
        return method_(self, *args, **kwargs)
    finally:
        self.steps_per_execution = 1
        _fast_functions[self] = {name: getattr(self, name) for name in _FUNCTIONS}
        for name, function in stock.items():
            setattr(self, name, function)


def install() -> bool:
    """Give ``keras.Model`` the default (idempotent). Call it before the checks' tamper guard
    is installed, so that the guard keeps these methods in place (coursekit/execution/kernel.py)."""
    try:
        import keras
    except ImportError:  # pragma: no cover - the course environment always has Keras
        return False
    for name in RUNNING:
        if not hasattr(getattr(keras.Model, name), "__coursekit_fastfit__"):
            setattr(keras.Model, name, _wrap_running(getattr(keras.Model, name)))
    if not hasattr(keras.Model.compile, "__coursekit_fastfit__"):
        keras.Model.compile = _wrap_compile(keras.Model.compile)
    return True


def uninstall() -> None:
    """Back to stock Keras (tests)."""
    import keras

    for name in (*RUNNING, "compile"):
        method = vars(keras.Model).get(name)
        if method is not None and hasattr(method, "__coursekit_fastfit__"):
            delattr(keras.Model, name)


# --- what the last fit trained on (leakage is decided by data, coursekit/student/checks.py) ------------
# Beside the speed-up, ``fit``'s wrapper records, per model, a bounded summary of the images its
# last fit consumed: one fingerprint per row of ``x`` it trained on and per row it validated on.
# The checker compares them with the fingerprints of the course's own training and test images,
# so "no test image reached training" is judged by which images reached it, whatever the shuffle,
# validation split or validation data. Like Keras' History, the record lives in the student's
# kernel and their code can change it: it catches mistakes, not forgery.
#
# A fingerprint must not depend on the student's preprocessing, which the check does not know.
# Students apply one increasing affine map to every pixel (x / 255, (x - mean) / std, x itself;
# a decreasing one, 1 - x / 255, matches nothing and falls back), so the kernel inverts it: with the smallest and largest value of the
# data given to fit standing for 0 and 255 (every training set of these data sets holds both),
# ``round((x - low) * 255 / (high - low))`` recovers the uint8 pixels exactly, and a row's
# fingerprint is the first 8 bytes of the SHA-256 of those 784 bytes (0.08 s for 60,000 rows).
# A row the map does not recover (augmented, noisy, per-pixel standardised) gets fingerprint 0,
# which matches nothing: such a fit is judged by the older rule (steps, accuracies). An argsort or
# rank pattern would survive any increasing map, but ties among the many 0 pixels make it
# ambiguous and it costs a sort per row; the inverse map is exact for what students do.
# tf.data datasets are not iterated (that would run the student's pipeline again): only their
# element spec is noted, and the checks fall back to the steps rule.

from coursekit.student.values import fingerprint_rows as _fingerprint_rows, row_fingerprints  # noqa: E402,F401

MAX_FIT_ROWS = 200_000  # rows fingerprinted per fit (8 bytes each); more and no fingerprints are kept
_fit_records: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> (History, record)


def _rows_of(x):
    """``x`` as an array with one image per row, or None (a dict, a dataset, a generator...)."""
    import numpy as np

    if isinstance(x, (list, tuple)) or isinstance(x, dict) or x is None:
        return None
    if not (isinstance(x, np.ndarray) or type(x).__module__.startswith("tensorflow")):
        return None
    try:
        array = np.asarray(x)
    except Exception:
        return None
    if array.ndim < 2 or array.dtype.kind not in "biuf" or len(array) > MAX_FIT_ROWS:
        return None
    return array


def describe_fit_data(arguments: dict) -> dict:
    """The record of what a ``fit`` call with these (bound) arguments trains and validates on."""
    import numpy as np

    x = arguments.get("x")
    try:
        import tensorflow as tf

        if isinstance(x, tf.data.Dataset):
            return {"kind": "dataset", "train": None, "validation": None, "scale": None,
                    "note": f"a tf.data dataset ({str(x.element_spec)[:300]}): its images were not read"}
    except Exception:
        pass
    rows = _rows_of(x)
    if rows is None:
        return {"kind": "other", "train": None, "validation": None, "scale": None,
                "note": f"fit was given {type(x).__name__[:100]}, not an array of images"}
    low, high = float(np.nanmin(rows)), float(np.nanmax(rows))
    prints = _fingerprint_rows(rows, low, high)
    validation = None
    split = arguments.get("validation_split") or 0.0
    given = arguments.get("validation_data")
    if given is None and isinstance(split, (int, float)) and 0 < split < 1:
        at = int(np.floor(len(rows) * (1.0 - split)))  # Keras: the last fraction of x, as given
        prints, validation = prints[:at], prints[at:]
    elif isinstance(given, (list, tuple)) and given:
        held = _rows_of(given[0])
        if held is not None:
            validation = _fingerprint_rows(held, low, high)  # the training data's map
    return {"kind": "arrays", "train": prints, "validation": validation,
            "scale": (float((high - low) / 255.0), low), "note": ""}


def _record_fit(model, arguments: dict, history) -> None:
    try:
        _fit_records[model] = (weakref.ref(history), describe_fit_data(arguments))
    except Exception:  # never let the record break a fit
        _fit_records.pop(model, None)


def fit_record(model) -> dict | None:
    """What the model's last ``fit`` (the one whose History is ``model.history``) trained on."""
    kept = _fit_records.get(model)
    if kept is None:
        return None
    history = vars(model).get("history") if hasattr(model, "__dict__") else None
    return kept[1] if history is not None and kept[0]() is history else None
