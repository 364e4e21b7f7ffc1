"""Check helpers shared by the public and hidden test cells of the week-2 notebooks.

The helpers are generic (shapes, closeness, a model's own forward pass, what a figure
shows); the expected values and thresholds of the hidden checks stay in the hidden test
cells, so reading this module reveals none of them.

Two worlds: during grading, check cells run in a trusted checker kernel that never runs
student code (coursekit/transfer/split_execute.py) and receives the student's values as data: arrays,
numbers, strings, and for live objects the records of coursekit/student/values.py (ModelData,
HistoryData, FigureData...). In a student's own Jupyter the same helpers get the live Keras
model or Matplotlib figure and read it the same way (coursekit/student/live.py). The helpers never
call methods of student objects when a genuine function can do the work: accuracy and
predictions are recomputed here, by Keras, on a copy of the model rebuilt from its config and
weights once coursekit/student/modelspec.py's allow-list has accepted them. Importing this module
does not import TensorFlow or Matplotlib (the checker loads Keras only to run a model).

Every failure raises ``CheckFailed`` whose message reads::

    <what was checked>: expected <expected>, found <found>
    Hint: <what to do about it>

Feedback (coursekit.rendering.feedback) shows the whole message for public checks and only the
``Hint:`` line for hidden ones.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections import OrderedDict

import numpy as _np

from coursekit.student import live as _live
from coursekit.student import modelspec as _modelspec
from coursekit.student.values import FigureData, ModelData, UnreadableValue, type_name

# Genuine functions, bound once at import time: in a student's own Jupyter, where the checks
# run beside the student's code, redefining np.argmax does not change what the helpers compute
# (during grading the checker runs no student code at all).
_array = _np.array
_asarray = _np.asarray
_argmax = _np.argmax
_allclose = _np.allclose
_isfinite = _np.isfinite
_exp = _np.exp
_float64 = _np.float64
_issubdtype = _np.issubdtype
_floating = _np.floating
_integer = _np.integer
_ndarray = _np.ndarray
_isinstance = isinstance
_len = len
_type = type

# COURSEKIT_CHECK_CACHE=0 in the checker's environment turns off its memo of forward passes and
# scaled data sets (section "memo" below): benchmarks/check_cells.py and the tests compare the two.
CACHE_ENV = "COURSEKIT_CHECK_CACHE"


from coursekit.student.failures import CheckFailed  # noqa: E402  (checks.CheckFailed: what check cells catch)

def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if _len(text) <= limit else text[:limit] + "..."


def require(condition, what, expected=None, found=None, hint=""):
    if not condition:
        raise CheckFailed(what, expected, found, hint)


# --- values -----------------------------------------------------------------------------


def as_array(value, name: str) -> _ndarray:
    """A plain ndarray copy of ``value`` (no subclass, so no student-defined behaviour)."""
    if _isinstance(value, UnreadableValue):
        value.fail()
    try:
        return _array(value, copy=True, subok=False)
    except Exception as err:
        raise CheckFailed(f"{name} should be array-like", "an array", f"{type_name(value)} ({err})",
                          "store a NumPy array (or a list of numbers) in this variable")


def shaped(value, shape, name: str, hint: str = "") -> _ndarray:
    """``value`` as an array, checked to have ``shape``."""
    arr = as_array(value, name)
    require(tuple(arr.shape) == tuple(shape), f"shape of {name}", tuple(shape), tuple(arr.shape), hint)
    return arr


# The expect_* helpers return None on purpose: a test cell's last value would otherwise be
# shown as its output, and nbgrader reads a numeric output as partial credit.


def expect_shape(value, shape, name: str, hint: str = "") -> None:
    shaped(value, shape, name, hint)


def expect_names(namespace: dict, *names: str) -> None:
    """The notebook defines ``names``: otherwise say which cell to run or fix."""
    missing = [n for n in names if n not in namespace]
    require(not missing, f"not defined: {', '.join(missing)}", hint=
            "run the cells above in order (Kernel > Restart & Run All) and keep the variable names the question asks for")
    for n in names:
        if _isinstance(namespace[n], UnreadableValue):
            namespace[n].fail()


def expect_equal(value, expected, name: str, hint: str = ""):
    require(value == expected, name, repr(expected), repr(value), hint)


def expect_close(value, expected, name: str, atol: float = 1e-6, rtol: float = 1e-5, hint: str = "") -> None:
    arr = as_array(value, name).astype(_float64)
    want = _asarray(expected, dtype=_float64)
    require(arr.shape == want.shape, f"shape of {name}", want.shape, arr.shape, hint)
    require(bool(_allclose(arr, want, atol=atol, rtol=rtol)), name,
            _np.array2string(want, precision=6), _np.array2string(arr, precision=6), hint)


def expect_int(value, name: str, low: int, high: int, hint: str = "") -> None:
    if _isinstance(value, (tuple, list)):  # e.g. y_train.shape stored for a count
        hint = (f"{name} is a {_type(value).__name__} ({_short(value)}), not a number: a shape is a tuple; "
                "take the number itself, e.g. len(y_train) or y_train.shape[0]")
    require(_isinstance(value, (int, _integer)) and not _isinstance(value, bool), f"{name} should be an integer",
            "int", _type(value).__name__, hint or "convert it with int(...)")
    require(low <= int(value) <= high, f"{name} out of range", f"{low}..{high}", int(value), hint)


def expect_fraction(value, name: str, hint: str = "") -> None:
    """``value`` is a number from 0 to 1 (an accuracy): a Python or NumPy number, not a list."""
    if _isinstance(value, UnreadableValue):
        value.fail()
    number = _isinstance(value, (int, float, _integer, _floating)) and not _isinstance(value, bool)
    if _isinstance(value, _ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        number = True  # a 0-d array (a TensorFlow scalar, as the checker receives it)
    if not number:
        cause = (f"{name} is a {type_name(value)} ({_short(value)}), not a number"
                 if _isinstance(value, (tuple, list, _ndarray)) else f"{name} should be a number")
        raise CheckFailed(f"{name} should be a number", "a number from 0 to 1", type_name(value),
                          f"{cause}: {hint}" if hint else cause)
    require(bool(_isfinite(float(value))) and 0.0 <= float(value) <= 1.0, f"{name} should be a fraction", "0..1",
            value, hint)


def expect_indices(value, name: str, count: int, size: int, hint: str = "") -> None:
    """``value`` is a list (tuple, range or 1-D array) of ``count`` integer indices into ``size`` items."""
    if _isinstance(value, UnreadableValue):
        value.fail()
    listed = _isinstance(value, (list, tuple, range)) or (_isinstance(value, _ndarray) and value.ndim == 1)
    require(listed, f"{name} should be a list of {count} indices", f"a list of {count} integers", type_name(value), hint)
    require(_len(value) == count, f"number of images in {name}", count, _len(value), hint)
    for item in value:
        expect_int(item, f"each index in {name}", 0, size - 1, hint)


def expect_at_least(value: float, threshold: float, name: str, hint: str = ""):
    require(float(value) >= threshold, name, f"at least {threshold:.4f}", f"{float(value):.4f}", hint)


def expect_probability_rows(value, name: str, atol: float = 1e-4) -> None:
    """Each row (last axis) is a probability distribution: finite, in [0, 1], sums to 1."""
    arr = as_array(value, name).astype(_float64)
    require(bool(_isfinite(arr).all()), f"{name} should be finite", "finite numbers", "nan or inf",
            "nan or inf comes from np.exp of a large number (subtract the row's maximum first) "
            "or from training that diverged")
    require(arr.min() >= -atol and arr.max() <= 1 + atol, f"{name} should hold probabilities",
            "values in [0, 1]", f"values in [{arr.min():.3g}, {arr.max():.3g}]",
            "the output layer needs activation='softmax' to turn scores into probabilities")
    sums = arr.sum(axis=-1)
    worst = float(abs(sums - 1).max())
    require(worst <= atol, f"each row of {name} should sum to 1", "1", f"a row summing to {float(sums.flat[int(_argmax(abs(sums - 1)))]):.6f}",
            "the output layer needs activation='softmax' to turn scores into probabilities")


def expect_prediction_rows(values, name: str, model=None, images=None, reference=None, question: str = "F5") -> None:
    """``values`` are probability rows (``expect_probability_rows``), or, errors carried forward,
    exactly the model's own outputs for the student's ``images`` (of the data set ``reference``):
    an output layer without softmax is charged by the question that builds the model
    (``question``), not again by the one that predicts with it."""
    try:
        expect_probability_rows(values, name)
    except CheckFailed as failure:
        if model is None or images is None or reference is None:
            raise
        own = _finite_copy(values, (_len(reference), 10))
        if own is None or _isinstance(model, UnreadableValue):
            raise
        try:
            outputs = forward(model, images_used(images, reference))
        except CheckFailed:
            raise failure from None
        if outputs.shape != own.shape or not _allclose(own, outputs, atol=2e-4):
            raise


def expect_scaled_pixels(images, name: str, shape) -> None:
    """Images scaled from 0..255 to [0, 1], with the misconception named when not."""
    arr = shaped(images, shape, name)
    require(_issubdtype(arr.dtype, _floating), f"dtype of {name}", "floating point (e.g. float64)", arr.dtype,
            "divide by 255.0 (a float) so the pixels become fractions between 0 and 1")
    hi, lo = float(arr.max()), float(arr.min())
    # Negative pixels first: standardised images ((x - mean) / std) go up to about 2, and were
    # told "pixel values go up to 255", which was not their mistake.
    require(lo >= -1e-6, f"smallest pixel value of {name}", "at least 0.0", f"{lo:g}",
            "scaling should keep pixels between 0 and 1; do not subtract a mean here (nor divide by a "
            "standard deviation): divide by 255.0 only")
    require(hi <= 1.0 + 1e-6, f"largest pixel value of {name}", "at most 1.0", f"{hi:g}",
            "pixel values go up to 255: scale them to [0, 1] by dividing by 255.0"
            if hi > 2 else "scale the pixels once, by dividing by 255.0")
    require(hi >= 0.5, f"largest pixel value of {name}", "close to 1.0", f"{hi:g}",
            "pixels were scaled down too far: divide by 255.0 once, not twice")


# --- models -----------------------------------------------------------------------------


def model_data(model, name: str = "model") -> ModelData:
    """The model as the checks read it: a ModelData as it comes (the checker's copy of the
    student's model), a live Keras model read by coursekit/student/live.py."""
    if _isinstance(model, ModelData):
        return model
    if _isinstance(model, UnreadableValue):
        model.fail()
    require(_live.is_keras_model(model), f"{name} should be a Keras model", "tf.keras.Sequential",
            type_name(model), "build it with tf.keras.Sequential([...])")
    return _live.model_data(model)


def expect_keras_model(model, name: str = "model") -> None:
    model_data(model, name)


def fit_epochs(model, name: str = "model") -> int | None:
    """How many epochs the model's last ``fit`` ran (Keras keeps that fit's History as
    ``model.history``); None if it was never fitted."""
    return model_data(model, name).fit_epochs


def fit_steps(model, name: str = "model") -> int | None:
    """How many batches each epoch of the model's last ``fit`` ran (``history.params['steps']``);
    None if it was never fitted or Keras did not know."""
    return model_data(model, name).fit_steps


def carried_recipe(model, earlier, charged_in: str | None) -> bool:
    """Errors carried forward across questions: ``model`` was made by the same recipe as
    ``earlier``, a model an earlier question (``charged_in``) already checked: both fitted, with
    the same layers and the same number of epochs (M5's fashion_model from M3's
    train_tutorial_model). A wrong recipe is then charged by that question, not again."""
    if earlier is None or charged_in is None or _isinstance(earlier, UnreadableValue):
        return False
    if not (_isinstance(earlier, ModelData) or _live.is_keras_model(earlier)):
        return False
    if not (_isinstance(model, ModelData) or _live.is_keras_model(model)):
        return False
    mine, theirs = model_data(model), model_data(earlier)
    return (mine.fit_epochs is not None and mine.fit_epochs == theirs.fit_epochs
            and list(mine.layers) == list(theirs.layers))


def expect_epochs(model, epochs: int, name: str = "model", hint: str = "", same_as=None,
                  charged_in: str | None = None) -> None:
    """The model's last ``fit`` ran ``epochs`` epochs; the hint adds the likely cause. With
    ``same_as`` (a model of question ``charged_in``, whose check charges its epochs), a model made
    by the same recipe passes here whatever its epochs (``carried_recipe``)."""
    if carried_recipe(model, same_as, charged_in):
        return
    require(_isinstance(epochs, (int, _integer)) and not _isinstance(epochs, bool), "the number of epochs asked for",
            "a whole number", _short(epochs), "keep EPOCHS as the read-only set-up cell sets it")
    found = fit_epochs(model, name)
    if found is None:
        cause = f"{name} was never trained: nothing called fit on it"
    elif found < epochs:
        cause = (f"its last fit ran {found} epoch{'s' if found != 1 else ''}: fit once with epochs={epochs} "
                 "(a model fitted more than once keeps only its last fit, e.g. one epoch per call in a loop)")
    else:
        cause = f"fit for epochs={epochs}, the tutorial's length"
    require(found == epochs, f"number of epochs {name} was trained", epochs,
            "none (never fitted)" if found is None else found, f"{hint}; {cause}" if hint else cause)


def describe_layers(model) -> list[tuple]:
    """The model's layers as ('Flatten',), ('Dense', units, activation), ('Dropout', rate),
    ('Reshape', target shape), ... (coursekit/student/modelspec.py, ``describe``), read from its Keras
    config once the allow-list has accepted it: a model the checks cannot run fails here with
    what they cannot run."""
    data = model_data(model)
    if data.config is None:  # a record built by hand: its descriptions
        return list(data.layers)
    return _model_spec(data)[0].descriptions()


def expect_architecture(model, expected: list[tuple], name: str = "model"):
    """The model has the ``expected`` layers, equivalent spellings counted as one
    (``modelspec.architecture``: Reshape((784,)) of a 28x28 image is Flatten(); Dense(10) then
    Activation('softmax') is Dense(10, activation='softmax'); a Functional chain is its layers)."""
    data = model_data(model, name)
    found = list(data.layers) if data.config is None else _modelspec.architecture(_model_spec(data)[0])
    hint = ""
    dense_out = [l for l in found if l[0] == "Dense"][-1:]
    want_out = [l for l in expected if l[0] == "Dense"][-1:]
    if dense_out and dense_out[0][2] != "softmax":
        hint = "the output layer needs activation='softmax' so that it returns probabilities"
    elif any(l[0] == "Dense" and l[2] == "linear" for l in found[:-1]):
        hint = "the hidden Dense layer needs activation='relu'"
    elif found[:1] != [("Flatten",)] and list(expected)[:1] == [("Flatten",)]:
        hint = "start with tf.keras.layers.Flatten(): Dense layers need each 28x28 image as one row of 784 numbers"
    elif dense_out and want_out and dense_out[0][1] != want_out[0][1]:
        hint = f"the output layer needs one neuron per class: Dense({want_out[0][1]}, activation='softmax')"
    else:
        hint = "use exactly the layers the question lists, in that order, with no extra layers"
    require(found == list(expected), f"layers of {name}", expected, found, hint)


def expect_architecture_carried(model, expected: list[tuple], name: str = "model", same_as=None,
                                charged_in: str | None = None) -> bool:
    """``expect_architecture``, unless ``model`` was made by the same recipe as ``same_as``
    (``carried_recipe``): a wrong architecture is then charged by ``charged_in`` only. True when
    the architecture was carried forward (it is not the one asked for, and not charged here)."""
    try:
        expect_architecture(model, expected, name)
    except CheckFailed:
        if carried_recipe(model, same_as, charged_in):
            return True
        raise
    return False


def compile_settings(model) -> dict:
    """{"optimizer", "loss", "from_logits", "metrics"} that ``model.compile`` was given, each
    normalised (coursekit/student/modelspec.py, ``compile_settings``): the optimizer's class name in lower
    case ("adam"), the loss as one snake_case name whether it was given as a string, a function
    (tf.keras.losses.sparse_categorical_crossentropy) or an object
    (SparseCategoricalCrossentropy(from_logits=True)), whether the loss reads logits, the metrics'
    names."""
    data = model_data(model)
    require(data.compiled and data.compile_settings is not None, "model should be compiled",
            "model.compile(...) called", "not compiled", "call model.compile(optimizer=..., loss=..., metrics=[...])")
    return {"from_logits": False, **data.compile_settings}


# --- memo -------------------------------------------------------------------------------
# A notebook's checks measure the same model on the same images several times (F7, F8 and F9 on
# the test set; M3, M4 and M5 on MNIST's test set, each check again), and every one of those
# forward passes is a float64 copy and matmuls over 10,000 or 60,000 images. The checker keeps
# what it computed under the SHA-256 of everything the result was computed from (the layers,
# activations and float64 weights; the images' dtype, shape and bytes), never under an object's
# identity: a model whose weights changed, or an array whose content changed in place, is a new
# key, so a stale result is never served, and no value of the student's can stand for another
# (one would need a SHA-256 collision). Results are kept read-only and handed out as copies, so
# a check that changes what it got changes nothing kept. The memo is per process: during
# grading that is the checker kernel of one notebook, which runs no student code.


def memo_enabled() -> bool:
    """The memo is on unless ``COURSEKIT_CHECK_CACHE=0`` (read at each use, so a test can switch it)."""
    return os.environ.get(CACHE_ENV, "").strip() != "0"


def _array_digest(array: _ndarray) -> bytes | None:
    """SHA-256 of an array's dtype, shape and bytes (~0.05 s for 10,000 float64 images, a fifth of
    a forward pass over them); None when it holds something other than numbers (an object
    array's bytes are pointers, not content). A read-only array the memo shares has its digest
    already (``_Memo.known``)."""
    known = _Memo.known.get(id(array))
    if known is not None and known[0] is array:
        return known[1]
    if array.dtype.kind not in "biuf":
        return None
    digest = hashlib.sha256(f"array {array.dtype.str} {array.shape}|".encode())
    digest.update(_np.ascontiguousarray(array).data)
    return digest.digest()


def _digest(*parts) -> bytes | None:
    """SHA-256 of ``parts``: arrays by ``_array_digest``, anything else by its repr; None when an
    array has no digest."""
    digest = hashlib.sha256()
    for part in parts:
        if _isinstance(part, _ndarray):
            inner = _array_digest(part)
            if inner is None:
                return None
            digest.update(b"array|" + inner)
        else:
            digest.update(f"{part!r}|".encode())
    return digest.digest()


class _Memo:
    """Arrays computed by the checks, by the digest of their inputs; the least recently used are
    dropped past ``limit`` bytes. ``shared``: handed out as the kept array itself, read-only (a
    scaled data set, too large to copy each time; a check that tried to write into it would fail,
    not change it), else as a copy (a forward pass's output, 10 numbers per image)."""

    known: dict = {}  # id of a kept, shared array -> (the array, its _array_digest)

    def __init__(self, limit: int, shared: bool = False):
        self.limit, self.shared = limit, shared
        self.kept: OrderedDict = OrderedDict()
        self.size = 0

    def get(self, inputs: tuple, compute) -> _ndarray:
        """What ``compute()`` returns, computed once for ``inputs`` (``_digest``) while it is kept."""
        key = _digest(*inputs) if memo_enabled() else None
        if key is None:
            return compute()
        if key in self.kept:
            self.kept.move_to_end(key)
            kept = self.kept[key]
            return kept if self.shared else kept.copy()
        value = compute()
        kept = value if self.shared else _array(value, copy=True)
        kept.flags.writeable = False
        if self.shared:
            _Memo.known[id(kept)] = (kept, _array_digest(kept))
        self.kept[key] = kept
        self.size += kept.nbytes
        while self.size > self.limit and _len(self.kept) > 1:
            _, dropped = self.kept.popitem(last=False)
            self.size -= dropped.nbytes
            _Memo.known.pop(id(dropped), None)
        return value

    def clear(self) -> None:
        for kept in self.kept.values():
            _Memo.known.pop(id(kept), None)
        self.kept.clear()
        self.size = 0


# Forward passes' outputs (small); data sets scaled to [0, 1]: a notebook's checks use its own
# data set's test images (63 MB as float64) and training images (376 MB) and the other data set's
# test images; what does not fit is computed again, as without the memo.
FORWARD_MEMO = _Memo(limit=256 * 2**20)
SCALED_MEMO = _Memo(limit=512 * 2**20, shared=True)


def clear_memo() -> None:
    FORWARD_MEMO.clear()
    SCALED_MEMO.clear()


def scaled_images(raw) -> _ndarray:
    """A data set's images ``raw`` (0..255) as float64 in [0, 1], ``raw / 255.0``, the scaling the
    questions ask for; with the memo on, computed once per content and shared read-only."""
    raw = _asarray(raw)
    return SCALED_MEMO.get(("scaled", raw), lambda: _asarray(raw, dtype=_float64) / 255.0)


# Hint when a model is outside what the checks can run (coursekit/student/modelspec.py's allow-list).
UNSUPPORTED_HINT = ("build the model from Keras' own layers (tf.keras.layers.Flatten, Dense, Dropout...) with "
                    "built-in activations such as 'relu' and 'softmax': no Lambda layers, custom layers or functions")
# Keras models the checks rebuilt, by the digest of their checked config and weights: the few a
# notebook's checks use again (each build costs a Keras from_config and set_weights).
_BUILT: OrderedDict = OrderedDict()
_BUILT_LIMIT = 4


def _model_spec(data: ModelData) -> tuple:
    """(modelspec.Spec, per-layer weights) of a model record: its Keras config checked against the
    allow-list, with its weights (a record built by hand: its descriptions as a Sequential
    config). A model outside the allow-list fails the check that needs it, with what was found."""
    try:
        if data.config is None:
            config, weights = _modelspec.from_descriptions(list(data.layers), data.input_shape, list(data.weights))
        else:
            config, weights = data.config, list(data.weights)
        weights = [[w if _isinstance(w, _ndarray) else _asarray(w) for w in arrays] if _isinstance(arrays, list)
                   else arrays for arrays in weights]
        return _modelspec.validate(config, weights), weights
    except _modelspec.Unsupported as err:
        raise CheckFailed(str(err), hint=UNSUPPORTED_HINT) from None


def model_weights(model) -> tuple:
    """(checked modelspec.Spec, its weights: one list of arrays per layer of its config)."""
    return _model_spec(model_data(model))


def _keras_model(spec, weights: list):
    """The Keras model of a checked spec, built by modelspec.build (Keras imported then, not
    before), kept for the next check that runs the same config and weights."""
    key = _digest("keras", spec.canonical(), *[w for arrays in weights for w in arrays])
    if key is not None and key in _BUILT:
        _BUILT.move_to_end(key)
        return _BUILT[key]
    try:
        built = _modelspec.build(spec, weights)
    except _modelspec.Unsupported as err:
        raise CheckFailed(str(err), hint=UNSUPPORTED_HINT) from None
    if key is not None:
        _BUILT[key] = built
        while _len(_BUILT) > _BUILT_LIMIT:
            _BUILT.popitem(last=False)
    return built


def forward(model, images) -> _ndarray:
    """The model's output for ``images``, as float64: the student's model rebuilt with Keras from
    its checked config and weights (coursekit/student/modelspec.py), run in float64 (once per config,
    weights and images while the memo keeps it, section "memo")."""
    # A plain array is only read; anything else is copied into a plain array first, as as_array
    # does for every check.
    x = images if _type(images) is _ndarray else as_array(images, "images")
    spec, weights = model_weights(model)
    inputs = ("forward", spec.canonical(), *[part for arrays in weights for part in (_len(arrays), *arrays)], x)
    return FORWARD_MEMO.get(inputs, lambda: _forward(spec, weights, x))


FORWARD_CHUNK = 10000  # images per call of the rebuilt model (a float64 copy of 10,000 is 63 MB)


def _forward(spec, weights: list, images: _ndarray) -> _ndarray:
    per_image = tuple(spec.input_shape)
    size = int(_np.prod(per_image))
    found = int(_np.prod(images.shape[1:])) if images.ndim >= 1 else 0
    require(images.ndim >= 2 and found == size, "model input size", size, found,
            "the model should take 28x28 images: an Input layer of shape (28, 28), then Flatten()")
    x = images.reshape((images.shape[0], *per_image))  # (n, 784) images for a (28, 28) model, as before
    model = _keras_model(spec, weights)
    parts = [_array(model(x[start:start + FORWARD_CHUNK].astype(_float64), training=False), dtype=_float64)
             for start in range(0, x.shape[0], FORWARD_CHUNK)]
    if not parts:
        parts = [_array(model(x[:1].astype(_float64), training=False), dtype=_float64)[:0]]
    out = _np.concatenate(parts, axis=0)
    require(out.ndim == 2, "shape of the model's output for each image", "one row of numbers per image",
            f"an array of shape {out.shape[1:]} per image",
            "the model should take 28x28 images: an Input layer of shape (28, 28), then Flatten()")
    return out


def accuracy(model, images, labels) -> float:
    """Fraction of ``images`` whose most probable class (the model's own forward pass, rebuilt
    here) is the label: the argmax of its outputs, which no normalisation of
    ``class_probabilities`` changes."""
    outputs = forward(model, images)
    return float((_argmax(outputs, axis=1) == _asarray(labels)).mean())


def class_probabilities(model, images) -> _ndarray:
    """One probability row per image (finite, in [0, 1], summing to 1), whatever the model's
    output layer, the argmax of each row unchanged:

    - a softmax output (or Softmax() last): its outputs, as they are;
    - a sigmoid output (one independent probability per class): each row divided by its sum,
      the reading that makes them one distribution over the classes (a row of zeros: uniform);
    - log_softmax: its exponential;
    - a linear output (logits: compiled with from_logits=True, or without, its scores are still
      the model's only ranking of the classes) and any other activation: softmax applied."""
    outputs = forward(model, images)
    spec, _ = model_weights(model)
    activation = spec.output_activation
    if activation == "softmax":
        return outputs
    if activation in ("sigmoid", "hard_sigmoid"):
        sums = outputs.sum(axis=1, keepdims=True)
        safe = _np.where(sums > 0, sums, 1.0)
        return _np.where(sums > 0, outputs / safe, 1.0 / max(outputs.shape[1], 1))
    if activation == "log_softmax":
        return _exp(outputs)
    return softmax_reference(outputs)


def predicted_classes(model, images) -> _ndarray:
    """The class each image is predicted to be: the argmax of the model's outputs (the same as of
    ``class_probabilities``)."""
    return _argmax(forward(model, images), axis=1)


def affine_map(images, reference) -> tuple[float, float] | None:
    """(step, offset) when ``images`` are ``reference * step + offset`` pixel by pixel, with one
    increasing map for every pixel (x / 255, x left as it is, (x - mean) / std), else None."""
    ref = _asarray(reference, dtype=_float64)
    arr = _finite_copy(images, ref.shape)
    if arr is None or ref.size == 0:
        return None
    low, high = float(ref.min()), float(ref.max())
    if high <= low:
        return None
    step = (float(arr.max()) - float(arr.min())) / (high - low)
    offset = float(arr.min()) - step * low
    if not step > 0:
        return None
    size = max(1.0, abs(step) * high, abs(offset))
    return (step, offset) if _allclose(arr, ref * step + offset, rtol=1e-5, atol=1e-6 * size) else None


def _unusable(question: str | None, name: str, what: str) -> None:
    """A later check whose input, an earlier question's answer, cannot be used: say which."""
    if question is not None:
        raise CheckFailed(f"{question}'s {name} are not usable, so this check cannot run",
                          hint=f"fix {question} first: {name} should be {what}")


def images_used(images, reference, name: str = "images", question: str | None = None) -> _ndarray:
    """Errors carried forward: the images a student's later answers were computed from.

    ``reference`` is a data set's images as loaded (0..255). When the student's ``images`` are
    those images under one increasing affine map per pixel (scaled by another factor, left
    0..255, standardised with a mean and a standard deviation: what the scaling check charges),
    a later check compares with what the student's own images imply. Anything else is not this
    data set: with ``question`` (the question that made the images, e.g. "F3") the check says
    that question's images are unusable; without, it uses the images scaled to [0, 1] as the
    question asks.

    With the memo on, images equal to the scaled ones (the right answer) are found by one
    comparison, and the shared scaled images returned."""
    correct = scaled_images(reference)
    if memo_enabled() and _type(images) is _ndarray and images.shape == correct.shape \
            and bool(_np.array_equal(images, correct)):
        return correct
    if images is None or _isinstance(images, UnreadableValue):
        return correct
    if affine_map(images, reference) is not None:
        return _finite_copy(images, _asarray(reference).shape)
    _unusable(question, name, "the data set's images, each pixel scaled the same way (pixel / 255.0)")
    return correct


def training_scale(model, dataset: str | None = None, train_images=None) -> tuple[float, float] | None:
    """The affine map (step, offset) of the preprocessing ``model`` was trained with: what its last
    fit recorded (fit_data, when its rows are the data set's), else what the student's
    ``train_images`` show against the data set's training images; None when neither tells."""
    data = model if _isinstance(model, ModelData) else (model_data(model) if _live.is_keras_model(model) else None)
    record = getattr(data, "fit_data", None)
    if record is not None and record.kind == "arrays" and record.scale is not None and dataset is not None:
        contents = fit_contents(model, dataset)
        if contents is not None and contents["from_train"] + contents["from_test"] > 0:
            return tuple(record.scale)
    if train_images is not None and dataset is not None:
        from coursekit.student.datasets import load

        (x_train, _), _ = load(dataset)
        return affine_map(train_images, x_train)
    return None


def rows_used(values, reference, name: str = "values") -> _ndarray:
    """Errors carried forward for rows a student computed earlier (their ``predictions``): their
    own when they are finite numbers of the reference's shape (the check about them charges a
    mistake once), else the reference."""
    ref = _asarray(reference, dtype=_float64)
    arr = _finite_copy(values, ref.shape)
    return ref if arr is None else arr


def _finite_copy(values, shape: tuple):
    """A float64 copy of a student's ``values`` when they are finite numbers of ``shape``, else
    None: what errors carried forward may build on."""
    if _isinstance(values, UnreadableValue):
        return None
    try:
        arr = _array(values, dtype=_float64, copy=True, subok=False)
    except Exception:
        return None
    return arr if arr.shape == shape and _isfinite(arr).all() else None


def bars_hint(bars, expected, source: str) -> str:
    """The likely cause when a bar chart is not ``expected`` (one probability per class)."""
    arr = _asarray(bars, dtype=_float64) if bars is not None else None
    want = _asarray(expected, dtype=_float64)
    counts = arr is not None and bool((arr == _np.round(arr)).all()) and abs(float(arr.sum()) - want.size) < 1e-9
    if arr is None or arr.shape != want.shape or counts:
        return (f"plt.hist counts how often values occur; draw one bar per class with "
                f"plt.bar(range(10), {source})")
    if _allclose(arr, softmax_reference(want), atol=2e-4):
        return f"these bars have softmax applied a second time: plot {source} as model.predict returned it"
    return f"plot {source} for the same image"


# How far a reported validation accuracy may be from the checks' own measurement on the held-out
# images: 24 of 12,000 images, for Keras' float32 arithmetic against the checks' float64.
HELD_OUT_TOLERANCE = 0.002
LEAKAGE_HINT = ("fit on the 60,000 training images only, with validation_split=0.2 (Keras holds back the last "
                "12,000 of them): test images in training or in validation make the test accuracy meaningless "
                "(data leakage)")


def held_out_gap(model, val_accuracy, images, labels, split: float = 0.2) -> tuple[float, float]:
    """(the model's accuracy on the images ``validation_split`` holds back, its distance from the
    reported ``val_accuracy``). Keras validates on the last ``split`` of the arrays it is given,
    in order, with the final weights after the last epoch: an honest fit reproduces its number;
    a fit on other data (test images shuffled in) does not."""
    labels = _asarray(labels)
    start = int(_np.ceil(_len(labels) * (1 - split)))
    held = accuracy(model, _asarray(images)[start:], labels[start:])
    return held, abs(float(val_accuracy) - held)


def steps_fit_samples(steps, samples: int) -> bool:
    """Whether an epoch of ``steps`` batches can come from ``samples`` images at some batch size."""
    if not _isinstance(steps, (int, _integer)) or _isinstance(steps, bool) or not 1 <= steps <= samples:
        return False
    return int(_np.ceil(samples / int(_np.ceil(samples / steps)))) == steps


# Validation splits a student may add to a fit the question asks on all the training images
# (F7's 0.2, or the other values students type): Keras then trains on the first
# int(samples * (1 - split)) of them, which is not leakage. Each split accepted adds step counts
# a leaking fit can hit by chance: 0.3 would let training and test images together with F7's 0.2
# pass at every batch size, so it is not accepted (tests/student/test_checks.py lists what is caught).
COMMON_VALIDATION_SPLITS = (0.1, 0.2, 0.25)


def steps_fit_training_images(steps, samples: int) -> bool:
    """Whether an epoch of ``steps`` batches can come from ``samples`` training images, all of
    them or the part a common ``validation_split`` leaves, at some batch size."""
    return any(steps_fit_samples(steps, int(samples * (1 - split))) for split in (0.0, *COMMON_VALIDATION_SPLITS))


# --- leakage, by which images reached the fit -------------------------------------------------
# The student's kernel records, with each model's last fit, one fingerprint per row it trained
# and validated on (coursekit/execution/fastfit.py; ModelData.fit_data). Here they are compared with the
# fingerprints of the course's own training and test images (an image in both sets would be
# ambiguous: these data sets have none). A fit is honest when no test image is among the rows it
# trained on, whatever the shuffle, validation split or validation data. Where nothing was
# recorded (a tf.data dataset, a fit outside the grading kernel) or no row matched this data set,
# the older rules below, by steps and accuracies, decide, and the check notes it.

DATA_LEAKAGE_HINT = ("test images reached training: fit on the training images only (shuffling them, a "
                     "validation_split or validation data from the training images are all fine); the test "
                     "images must stay unseen until you measure accuracy (data leakage)")
_FINGERPRINTS: dict = {}  # data set name -> (its training images' fingerprints, its test images')


def _dataset_fingerprints(dataset: str) -> tuple[_ndarray, _ndarray]:
    if dataset not in _FINGERPRINTS:
        from coursekit.student.datasets import load
        from coursekit.student.values import row_fingerprints

        (x_train, _), (x_test, _) = load(dataset)
        _FINGERPRINTS[dataset] = (row_fingerprints(x_train), row_fingerprints(x_test))
    return _FINGERPRINTS[dataset]


def fit_contents(model, dataset: str) -> dict | None:
    """What the model's last fit trained and validated on, counted against ``dataset``'s images:
    ``rows``, ``from_train``, ``from_test`` (and ``val_rows``, ``val_from_train``, ``val_from_test``);
    None when the fit left no record of its rows."""
    data = model if _isinstance(model, ModelData) else model_data(model)
    record = getattr(data, "fit_data", None)
    if record is None or record.kind != "arrays" or record.train is None:
        return None
    train_prints, test_prints = _dataset_fingerprints(dataset)
    found = {}
    for part, prints in (("", record.train), ("val_", record.validation)):
        rows = _asarray(prints if prints is not None else [], dtype=_np.uint64).reshape(-1)
        known = rows[rows != 0]
        found[f"{part}rows"] = int(rows.size)
        found[f"{part}from_train"] = int(_np.isin(known, train_prints).sum())
        found[f"{part}from_test"] = int(_np.isin(known, test_prints).sum())
    return found


def fit_leakage_verdict(model, dataset: str, name: str = "model", hint: str = "") -> bool:
    """Leakage decided by data: fails when test images of ``dataset`` are among the rows the
    model's last fit trained on; True when the record decided (no test image), False when there
    is no usable record (the caller then applies the older rules)."""
    contents = fit_contents(model, dataset)
    if contents is None or contents["from_train"] + contents["from_test"] == 0:
        return False
    require(contents["from_test"] == 0,
            f"{name}'s last fit should train on training images only",
            "no test images among the images it trained on",
            f"{contents['from_test']:,} of the {contents['rows']:,} images it trained on are test images",
            hint or DATA_LEAKAGE_HINT)
    return True


def expect_validation_held_out(model, history, images, labels, split: float = 0.2, dataset: str | None = None) -> None:
    """Leakage. With ``dataset`` and a record of the rows the model's last fit trained on, no test
    image of ``dataset`` is among them (``fit_leakage_verdict``: any shuffle, validation split or
    validation data is fine). Otherwise, the older rule: ``model`` was fitted on ``images`` with
    ``validation_split=split`` and nothing else, its epochs ran over the training part only
    (``history.params['steps']``, at any batch size), and its last validation accuracy is its
    accuracy on the held-out part (a shuffle before the split fails this rule, which is why the
    record decides when there is one)."""
    if dataset is not None and fit_leakage_verdict(model, dataset):
        return
    labels = _asarray(labels)
    steps = (getattr(history, "params", None) or {}).get("steps")
    trained_on = int(_np.ceil(_len(labels) * (1 - split)))
    if steps is not None:
        require(steps_fit_samples(steps, trained_on),
                f"each epoch should run over the {trained_on:,} training images validation_split leaves",
                f"a whole number of batches of {trained_on:,} images", f"{steps} steps", LEAKAGE_HINT)
    val_accuracy = history.history["val_accuracy"][-1]
    held, gap = held_out_gap(model, val_accuracy, images, labels, split)
    require(gap <= HELD_OUT_TOLERANCE,
            f"the validation accuracy should be the model's accuracy on the last {split:.0%} of the training images",
            f"about {held:.4f}", f"{float(val_accuracy):.4f}", LEAKAGE_HINT)


# How much more accurate on the test images than on the 60,000 training images a model fitted on
# the training images may be: chance alone moves an accuracy on 10,000 images by a few tenths of a
# point, and a model accurate enough for M3/M5 scores higher on the images it was fitted on. One
# fitted on the test images alone scores points higher on them. Calibrated (calibration/RESULTS.md):
# honest fits -1.1 to -2.9 points, fits on the test images alone +1.6 to +4.3; kept nearer the
# leaks than the middle, since an honest student wrongly charged is the worse mistake.
TEST_ABOVE_TRAIN_TOLERANCE = 0.01


def _accuracy_in_chunks(model, raw_images, labels, chunk: int = 10000) -> float:
    """``accuracy`` on a data set's images scaled to [0, 1], 10,000 at a time (a float64 copy of
    60,000 images at once is 376 MB)."""
    # With the memo on, the scaled images are computed once for all checks (and equal these chunks).
    scaled = scaled_images(raw_images) if memo_enabled() else None
    right = 0.0
    for start in range(0, _len(labels), chunk):
        images = raw_images[start:start + chunk] / 255.0 if scaled is None else scaled[start:start + chunk]
        right += accuracy(model, images, labels[start:start + chunk]) * _len(labels[start:start + chunk])
    return right / _len(labels)


def expect_trained_on(model, samples: int, name: str = "model", hint: str = "", dataset: str | None = None) -> None:
    """Leakage, for a model the question fits on all its training images: its last ``fit`` ran
    over ``samples`` images (each epoch a whole number of batches of them, or of the part a common
    validation split leaves, at any batch size: ``history.params['steps']``), so neither the test images alone nor training and test images
    together. Steps alone cannot tell every batch size apart (10,000 test images in batches of 32
    make as many steps as 60,000 in batches of 192), so with ``dataset`` the check also measures
    the model on the course's copy of that data set: a model fitted on the training images is not
    more accurate on the test images than on them (``TEST_ABOVE_TRAIN_TOLERANCE``)."""
    require(_isinstance(samples, (int, _integer)) and not _isinstance(samples, bool) and samples > 0,
            "the number of training images asked for", "a positive whole number", _short(samples))
    data = model_data(model, name)
    if data.fit_epochs is None:
        require(False, f"{name} should be trained on the {int(samples):,} training images", "a fitted model",
                "none (never fitted)", f"{hint}; nothing called fit on {name}" if hint else f"nothing called fit on {name}")
    if dataset is not None and fit_leakage_verdict(data, dataset, name, hint):
        return  # decided by which images the fit trained on (a validation split of any size is fine)
    steps = data.fit_steps
    require(steps is not None, f"each epoch of {name}'s last fit should run over the {int(samples):,} training images",
            f"a whole number of batches of {int(samples):,} images", "an unknown number of steps",
            f"{hint}; fit on the arrays themselves, so that Keras records how many batches each epoch ran"
            if hint else "fit on the arrays themselves, so that Keras records how many batches each epoch ran")
    require(steps_fit_training_images(steps, int(samples)),
            f"each epoch of {name}'s last fit should run over the {int(samples):,} training images",
            f"a whole number of batches of {int(samples):,} images (or of the part a validation_split leaves)",
            f"{steps} steps", hint)
    if dataset is None:
        return
    from coursekit.student.datasets import load

    (x_train, y_train), (x_test, y_test) = load(dataset)
    on_train, on_test = _accuracy_in_chunks(data, x_train, y_train), _accuracy_in_chunks(data, x_test, y_test)
    require(on_test <= on_train + TEST_ABOVE_TRAIN_TOLERANCE,
            f"{name} should not be more accurate on the test images than on the training images it was fitted on",
            f"at most {on_train + TEST_ABOVE_TRAIN_TOLERANCE:.4f} (its training accuracy {on_train:.4f}, measured by the check)",
            f"{on_test:.4f}", hint)


def accuracy_on_test_set(model, dataset: str, train_images=None) -> float:
    """Accuracy on the course's own verified copy of ``dataset``'s test set, preprocessed as the
    model was trained (errors carried forward: ``training_scale``, from its fit's record or the
    student's ``train_images``), else scaled to [0, 1]."""
    from coursekit.student.datasets import load

    (_, _), (x_test, y_test) = load(dataset)
    scale = training_scale(model, dataset, train_images)
    if scale is None or (abs(scale[0] * 255.0 - 1.0) <= 1e-9 and abs(scale[1]) <= 1e-12):
        return accuracy(model, scaled_images(x_test), y_test)  # x / 255, exactly as the question asks
    return accuracy(model, _asarray(x_test, dtype=_float64) * scale[0] + scale[1], y_test)


# --- reference maths ---------------------------------------------------------------------


def softmax_reference(x) -> _ndarray:
    x = _asarray(x, dtype=_float64)
    shifted = _exp(x - x.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


# --- figures -----------------------------------------------------------------------------


def expect_figure(fig, name: str):
    if _isinstance(fig, FigureData) or _live.is_figure(fig):
        return fig
    if _isinstance(fig, UnreadableValue):
        fig.fail()
    raise CheckFailed(f"{name} should be a matplotlib figure", "the Figure returned by plt.figure()", type_name(fig),
                      f"write {name} = plt.figure(...) before drawing, and keep that variable")


def figure_panels(fig, name: str) -> list[dict]:
    """What each axes of ``fig`` shows: its image (if any), bar heights, x-label text."""
    expect_figure(fig, name)
    data = fig if _isinstance(fig, FigureData) else _live.figure_data(fig)
    return [dict(panel) for panel in data.panels]


def image_panels(fig, name: str) -> list[dict]:
    """The panels of ``fig`` that show an image (``plt.imshow``), in order."""
    return [panel for panel in figure_panels(fig, name) if panel["image"] is not None]


def expect_panels(fig, count: int, name: str, images: bool = False, hint: str = "") -> None:
    """``fig`` has ``count`` panels (axes), or ``count`` panels that show an image if ``images``."""
    found = _len(image_panels(fig, name) if images else figure_panels(fig, name))
    require(found == count, f"number of {'images' if images else 'panels'} in {name}", count, found, hint)


def find_image(image, candidates, atol: float = 1e-6) -> int | None:
    """Index of the first candidate equal to ``image``: as it is, scaled to [0,1] or 0..255, or
    under any increasing affine map of its pixels (a standardised image is the same picture, and
    imshow draws it the same)."""
    img = _asarray(image, dtype=_float64)
    for index, candidate in enumerate(candidates):
        cand = _asarray(candidate, dtype=_float64)
        if cand.shape != img.shape:
            continue
        if _allclose(img, cand, atol=atol) or _allclose(img, cand / 255.0, atol=atol) \
                or _allclose(img / 255.0, cand, atol=atol):
            return index
        if float(cand.max()) > float(cand.min()) and affine_map(img, cand) is not None:
            return index
    return None


def names_used(names, reference, name: str = "class_names", question: str | None = None) -> list:
    """Errors carried forward: the class names a student's plots were labelled with. Their own
    ``names`` when they are as many strings as ``reference`` (a misspelt name is charged by the
    question that asks for the names, ``question``), else, with ``question``, the check says
    that question's names are unusable; without, the reference."""
    if _isinstance(names, (list, tuple)) and _len(names) == _len(reference) \
            and all(_isinstance(n, str) for n in names):
        return [str(n) for n in names]
    if names is not None and not _isinstance(names, UnreadableValue):
        _unusable(question, name, f"a list of {_len(reference)} class names, as strings")
    return list(reference)


# --- how a function is written ---------------------------------------------------------------
# A question that asks for a function "in NumPy (no TensorFlow)" is checked where it is asked:
# the student's kernel sends the function's source text and module as data (coursekit/transfer/export.py),
# and the check parses it with ``ast`` (never runs it). It sees what the function's own code
# names: tf.*, keras.*, tensorflow.*, an import of them inside it, or a function that is
# TensorFlow's own (softmax = tf.nn.softmax). A TensorFlow call hidden behind another notebook
# function, or a global alias (T = tf, then T.nn.softmax), is not seen: this catches the habit,
# not a determined workaround.

FORBIDDEN_LIBRARIES = ("tensorflow", "tf", "keras")


def function_source(func) -> tuple[str | None, str | None]:
    """(source text, module) of a student function: the checker's proxy carries them; a live
    function (a student's own Jupyter) is read with inspect."""
    source, module = getattr(func, "source", None), getattr(func, "module", None)
    if source is None and module is None and callable(func):
        import inspect

        module = getattr(func, "__module__", None)
        try:
            source = inspect.getsource(func) if module in (None, "__main__") else None
        except (OSError, TypeError):
            source = None
    return (source if _isinstance(source, str) else None), (module if _isinstance(module, str) else None)


def library_uses(source: str) -> list[str]:
    """What ``source`` uses of TensorFlow/Keras, as written ("tf.nn.softmax", "import tensorflow")."""
    import ast
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if _isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_LIBRARIES]
        elif _isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_LIBRARIES:
            found.append(f"from {node.module} import ...")
        elif _isinstance(node, ast.Attribute):
            root = node
            while _isinstance(root, ast.Attribute):
                root = root.value
            if _isinstance(root, ast.Name) and root.id in FORBIDDEN_LIBRARIES:
                found.append(ast.unparse(node))
    # keep the longest spelling of each chain (tf.nn.softmax, not also tf.nn)
    return [f for f in dict.fromkeys(found) if not any(o != f and o.startswith(f + ".") for o in found)]


def expect_numpy_only(func, name: str, question: str = "this question") -> None:
    """``func`` (a student function) is written with NumPy, not TensorFlow or Keras: read from
    its source text, never run."""
    source, module = function_source(func)
    root = (module or "").split(".")[0]
    require(root not in FORBIDDEN_LIBRARIES, f"{name} should be your own NumPy function",
            "a function written with NumPy", f"{module}'s own function",
            f"{name} is TensorFlow's own function; {question} asks for NumPy only: write it with np.exp, np.max, np.sum")
    if source is None:
        return  # nothing to read (a built-in, a lambda typed at a prompt): not charged
    uses = library_uses(source)
    require(not uses, f"{name} should use NumPy only", "no TensorFlow or Keras", ", ".join(uses),
            f"{name} calls {', '.join(uses)}; {question} asks for NumPy only (no TensorFlow): "
            "write it with NumPy functions such as np.exp, np.max, np.sum, np.maximum")


# --- reproducibility ------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow so a notebook trains the same way each run."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    _np.random.seed(seed)
    try:
        import keras
    except ImportError:  # pragma: no cover - the course environment always has Keras
        return
    keras.utils.set_random_seed(seed)


# --- tamper guard (the student's kernel) ---------------------------------------------------
# Not a defence any more: during grading the checks run in the checker kernel, which never runs
# student code (coursekit/transfer/split_execute.py). What it still does, in the student's kernel, is keep
# a library redefinition to the cell that makes it: before every cell it puts back NumPy's
# functions, the methods of the Keras classes the checks look at, this module's helpers, and
# the notebook names bound to these (checks, np, tf, load_fashion_mnist...). A student who
# redefines np.argmax or Model.predict at the end of one answer gets the genuine ones in the
# next answer (tests/fixtures: redefined-functions, whose later answers are graded so).
#
# Importing this module installs nothing: the student's kernel calls install_guard() once, before
# any cell runs (coursekit/execution/kernel.py, PRELOAD), so that what the guard saves is genuine.


def _callables(owner) -> dict:
    return {k: v for k, v in vars(owner).items() if callable(v) or _isinstance(v, (staticmethod, classmethod, property))}


def _guarded_owners(keras) -> list:
    owners = [_np]
    for cls in (keras.Sequential, keras.layers.Dense, keras.layers.Flatten, keras.layers.Dropout, keras.layers.InputLayer):
        owners += [c for c in cls.__mro__ if c is not object and c not in owners]
    return owners


def install_guard(shell) -> None:
    """Put back, before every cell ``shell`` runs, what earlier cells replaced (see above)."""
    import sys

    import keras
    import tensorflow as tf

    from coursekit.student import datasets

    module = sys.modules[__name__]
    saved = [(owner, _callables(owner)) for owner in _guarded_owners(keras)]
    saved.append((module, {k: v for k, v in vars(module).items() if not k.startswith("__")}))
    genuine = {id(o): o for o in (_np, tf, keras, module, datasets, datasets.load_fashion_mnist,
                                  datasets.load_mnist, datasets.load)}
    names: dict = {}  # notebook name -> the genuine object it was bound to

    def after_cell(*_):
        for name, value in list(shell.user_ns.items()):
            if id(value) in genuine and genuine[id(value)] is value:
                names.setdefault(name, value)

    def before_cell(*_):
        for owner, attrs in saved:
            for name, value in attrs.items():
                if vars(owner).get(name) is not value:
                    setattr(owner, name, value)
            if _isinstance(owner, type):
                inherited = {n for o, a in saved if _isinstance(o, type) and o in owner.__mro__[1:] for n in a}
                for name in [n for n in vars(owner) if n not in attrs and n in inherited]:
                    delattr(owner, name)  # e.g. Model.predict set over the inherited method
        for name, value in names.items():
            if shell.user_ns.get(name) is not value:
                shell.user_ns[name] = value

    shell.events.register("post_run_cell", after_cell)
    shell.events.register("pre_run_cell", before_cell)
