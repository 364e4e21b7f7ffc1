"""What the checker kernel holds in place of a student's live objects.

During grading, check cells run in a trusted kernel that never executes student code
(coursekit/transfer/split_execute.py). The student's values reach it as data (coursekit/transfer/wire.py):
arrays, numbers, strings and containers as themselves, and the few live objects the checks
read as the plain records below. The check helpers (coursekit/student/checks.py) accept both these
records and the real objects, so a released notebook still works in a student's own Jupyter.

Only NumPy is imported here: the checker never imports TensorFlow or Matplotlib.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ModelData:
    """A Keras model as the checks read it.

    ``layers`` are the descriptions ``checks.describe_layers`` gives a live model:
    ``("Flatten",)``, ``("Dense", units, activation)``, ``("Dropout", rate)``, ``("Reshape",
    target shape)`` or ``(class name,)`` (coursekit/student/modelspec.py, ``describe``; [] for a model
    outside its allow-list); ``weights`` holds each layer's arrays (a Dense layer's kernel and
    bias), one list per layer of ``config`` (below), or of ``layers`` for a record built by hand.
    ``fit_epochs`` is the model's last training record: how many epochs its last ``fit`` ran
    (Keras keeps that fit's ``History`` as ``model.history``), None if it was never fitted;
    ``fit_steps`` is how many batches each epoch of that fit ran (``history.params['steps']``),
    None if it was never fitted or Keras did not know (a generator of unknown length).
    """

    layers: list[tuple]
    weights: list[list]
    input_shape: tuple | None
    output_shape: tuple | None
    compiled: bool
    compile_settings: dict | None  # {"optimizer", "loss", "from_logits", "metrics"} when compiled
    type_name: str = "Sequential"
    fit_epochs: int | None = None
    fit_steps: int | None = None
    # A model read from Keras (coursekit/student/live.py) carries what Keras itself describes it by, as
    # plain JSON data: ``config`` is {"class_name": "Sequential" or "Functional", "config":
    # model.get_config()}, and ``compile_config`` is Keras' compile config (optimizer, loss,
    # metrics in any of their forms). ``weights`` is then aligned with config["config"]["layers"]
    # (one list of arrays per layer, InputLayer included, empty), ``layers`` and
    # ``compile_settings`` are derived from these by coursekit/student/modelspec.py. A record built by
    # hand (tests) leaves both None: its ``layers`` descriptions stand for the model.
    config: dict | None = None
    compile_config: dict | None = None
    # What the last fit trained on (coursekit/execution/fastfit.py records it in the student's kernel), a
    # FitData; None when unknown (never fitted, fitted outside the grading kernel, a hand record).
    fit_data: "FitData | None" = None


@dataclass
class FitData:
    """What a model's last ``fit`` consumed, as coursekit/execution/fastfit.py recorded it in the student's
    kernel: ``kind`` "arrays" (``train``/``validation``: one uint64 fingerprint per row it trained
    or validated on, 0 for a row whose pixels could not be recovered; ``scale``: the affine map
    (step, offset) of the student's preprocessing, pixel = raw * step + offset), "dataset" (a
    tf.data dataset, not read) or "other"; ``note`` says why nothing more is known."""

    kind: str
    train: object = None  # np.ndarray of uint64, or None
    validation: object = None  # np.ndarray of uint64, or None
    scale: tuple | None = None
    note: str = ""


@dataclass
class HistoryData:
    """A Keras ``History``: what ``model.fit`` recorded."""

    history: dict
    params: dict = field(default_factory=dict)
    epoch: list = field(default_factory=list)
    type_name: str = "History"


@dataclass
class FigureData:
    """A Matplotlib figure as the checks read it: one dict per axes, with its first image
    (float64 array or None), its bar heights (float64 array or None), x-label and title."""

    panels: list[dict]
    type_name: str = "Figure"


class ObjectData:
    """Any other object, as its type name and its public data attributes (read once, in the
    student's kernel): ``history.history`` of a hand-made history class still reads."""

    def __init__(self, type_name: str, attributes: dict):
        object.__setattr__(self, "type_name", type_name)
        object.__setattr__(self, "_attributes", dict(attributes))

    def __getattr__(self, name):
        attributes = object.__getattribute__(self, "_attributes")
        if name in attributes:
            return attributes[name]
        raise AttributeError(f"'{self.type_name}' object has no attribute '{name}'")

    def __repr__(self) -> str:
        return f"<{self.type_name} object>"


class OpaqueValue:
    """A value the checks cannot use (a module, a generator, an object array...): only its type."""

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<{self.type_name} object>"


class UnreadableValue:
    """A value that could not be read from the student's kernel (too large, malformed, a kernel
    that died or did not answer). Any use of it fails the check with the reason."""

    def __init__(self, name: str, reason: str):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "reason", reason)

    @property
    def message(self) -> str:
        return f"{self.name} could not be read from your notebook: {self.reason}"

    def fail(self, *_args, **_kwargs):
        from coursekit.student.failures import CheckFailed

        raise CheckFailed(self.message, hint="make sure the cells above run without errors and that "
                          f"{self.name} holds the kind of value the question asks for")

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)  # protocols Python probes for (copy, pickle, NumPy)
        self.fail()

    __call__ = __getitem__ = __iter__ = __len__ = __bool__ = __float__ = __int__ = __index__ = fail
    __array__ = __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __contains__ = fail
    __hash__ = None

    def __repr__(self) -> str:
        return f"<unreadable: {self.reason}>"


def type_name(value) -> str:
    """The student's type name for a record, else the value's own type name."""
    if isinstance(value, (ModelData, HistoryData, FigureData, ObjectData, OpaqueValue)):
        return value.type_name
    if isinstance(value, UnreadableValue):
        return "unreadable value"
    return type(value).__name__


# --- fingerprints of image rows: what a fit record holds (coursekit/execution/fastfit.py) and what the
# checks compare it with (checks.fit_contents); here because both the student's kernel and the
# students' package need the same function


def fingerprint_rows(x, low: float, high: float):
    """One uint64 per row of ``x``: the SHA-256 of its pixels mapped back to 0..255, 0 where the
    map does not give whole numbers."""
    import hashlib

    import numpy as np

    count = len(x)
    out = np.zeros(count, dtype=np.uint64)
    if not high > low:
        return out
    step = (high - low) / 255.0
    for start in range(0, count, 10_000):  # a float64 copy of 10,000 rows at a time
        rows = np.asarray(x[start:start + 10_000], dtype=np.float64).reshape(min(10_000, count - start), -1)
        raw = np.rint((rows - low) / step)
        exact = (np.abs(raw * step + low - rows) <= 0.05 * step).all(axis=1) & (raw >= 0).all(axis=1) \
            & (raw <= 255).all(axis=1)
        pixels = raw.astype(np.uint8)
        for k in np.flatnonzero(exact):
            out[start + k] = int.from_bytes(hashlib.sha256(pixels[k].tobytes()).digest()[:8], "little")
    return out


def row_fingerprints(images):
    """Fingerprints of a data set's own uint8 images (the checker's side of the comparison)."""
    import numpy as np

    images = np.asarray(images)
    return fingerprint_rows(images, 0.0, 255.0) if images.size else np.zeros(0, dtype=np.uint64)
