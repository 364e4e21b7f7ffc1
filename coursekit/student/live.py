"""Live Keras and Matplotlib objects read into the records of coursekit/student/values.py.

One reading for both worlds: the student's kernel uses it to send a model, a figure or a
training history to the checker (coursekit/transfer/export.py), and the check helpers use it when they
are given the live object itself (a released notebook run in a student's own Jupyter). So a
check reads the same description of a model whether it runs beside it or in the checker.

Keras and Matplotlib are never imported here: an object can only be a Keras model if Keras
is already loaded in this process (``sys.modules``).
"""

from __future__ import annotations

import sys

import numpy as np

from coursekit.student.values import FigureData, FitData, HistoryData, ModelData

# Bound at import (the student's kernel imports this module before any cell runs): reading a
# model is not changed by a student's later np.allclose = ...
_array = np.array
_float64 = np.float64


def _keras():
    return sys.modules.get("keras")


def is_keras_model(value) -> bool:
    keras = _keras()
    return keras is not None and isinstance(value, keras.Model)


def is_keras_history(value) -> bool:
    keras = _keras()
    return keras is not None and isinstance(value, keras.callbacks.History)


def is_figure(value) -> bool:
    figure = sys.modules.get("matplotlib.figure")
    return figure is not None and isinstance(value, figure.Figure)


# --- models ------------------------------------------------------------------------------


def _plain(value, depth: int = 0):
    """A config as plain JSON data: dicts with string keys, lists, strings, numbers, booleans,
    None (a tuple as a list, a NumPy number or array as numbers); anything else by its type
    name, which coursekit/student/modelspec.py then refuses with that name."""
    if depth > 40:
        return "<nested too deep>"
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in list(value.items())[:10000]}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in list(value)[:100000]]
    if isinstance(value, (np.generic, np.ndarray)) and value.dtype.kind in "biuf" and value.size <= 100000:
        return _plain(value.tolist(), depth + 1)
    for plain in (bool, int, float, str):
        if isinstance(value, plain):
            return plain(value)
    return f"<{type(value).__name__} object>"


def model_config(model) -> dict:
    """{"class_name": the model's class, "config": its Keras config as plain data} (config None
    when Keras could not give one: a subclassed model)."""
    keras = _keras()
    kind = type(model)
    name = "Functional" if kind.__name__ == "Functional" else kind.__name__
    try:
        config = keras.Sequential.get_config(model) if kind is keras.Sequential else model.get_config()
    except Exception:
        config = None
    config = _plain(config)
    _name_activations(model, config)
    return {"class_name": name, "config": config}


# TensorFlow's own activation functions, which Keras' config writes as a function of module
# "builtins" (tf.nn.softmax as "softmax_v2"): the same as Keras' activations of these names.
_TF_ACTIVATIONS = {"nn": ("relu", "softmax", "sigmoid", "tanh", "elu", "selu", "softplus", "softsign", "swish", "silu",
                          "gelu", "relu6", "leaky_relu", "log_softmax"),
                   "math": ("sigmoid", "tanh", "softplus", "softsign"), "": ("sigmoid", "tanh")}


def _known_activations() -> dict:
    """id of a genuine Keras or TensorFlow activation function -> its Keras name."""
    from coursekit.student.modelspec import ACTIVATIONS

    keras, tf = _keras(), sys.modules.get("tensorflow")
    known = {}
    for name in ACTIVATIONS:
        function = getattr(keras.activations, name, None)
        if callable(function):
            known[id(function)] = name
    for space, names in _TF_ACTIVATIONS.items() if tf is not None else ():
        owner = getattr(tf, space, None) if space else tf
        for name in names:
            function = getattr(owner, name, None) if owner is not None else None
            if callable(function):
                known.setdefault(id(function), name)
    return known


def _name_activations(model, config) -> None:
    """A layer whose activation is one of TensorFlow's own functions (activation=tf.nn.relu,
    the tutorial's spelling) gets that activation's Keras name in ``config``: Keras writes it as
    a Python function, which coursekit/student/modelspec.py refuses."""
    entries = config.get("layers") if isinstance(config, dict) else None
    if not isinstance(entries, list):
        return
    layers = {getattr(layer, "name", None): layer for layer in getattr(model, "layers", [])}
    known = None
    for entry in entries:
        settings = entry.get("config") if isinstance(entry, dict) else None
        if not isinstance(settings, dict) or not isinstance(settings.get("activation"), dict):
            continue
        layer = layers.get(settings.get("name"))
        if layer is None:
            continue
        known = _known_activations() if known is None else known
        name = known.get(id(getattr(layer, "activation", None)))
        if name is not None:
            settings["activation"] = name


def compile_config(model) -> dict | None:
    """Keras' compile config (optimizer, loss, metrics in whatever form compile was given them),
    as plain data; None when there is none."""
    keras = _keras()
    try:
        config = keras.Model.get_compile_config(model)
    except Exception:
        return None
    return _plain(config) if isinstance(config, dict) else None


def model_weights(model, config: dict) -> list[list]:
    """Each layer's weights (Keras' own Layer.get_weights, never a method of the student's
    layer), one list per layer of ``config``, in its order: [] for a layer without weights
    (the InputLayer) or a name the model does not have."""
    keras = _keras()
    by_name = {}
    for layer in getattr(model, "layers", []):
        by_name.setdefault(getattr(layer, "name", None), layer)
    entries = (config.get("config") or {}).get("layers") if isinstance(config.get("config"), dict) else None
    weights = []
    for entry in entries if isinstance(entries, list) else []:
        name = entry.get("name") if isinstance(entry, dict) else None
        if name is None and isinstance(entry, dict) and isinstance(entry.get("config"), dict):
            name = entry["config"].get("name")
        layer = by_name.get(name) if isinstance(name, str) else None
        try:
            arrays = [_array(w) for w in keras.layers.Layer.get_weights(layer)] if layer is not None else []
        except Exception:
            arrays = []
        weights.append(arrays)
    return weights


def model_data(model) -> ModelData:
    """The model as data: its Keras config, compile config and weights (coursekit/student/modelspec.py
    checks them and derives the layers' descriptions and the compile settings), its shapes and
    its last training record."""
    from coursekit.student import modelspec

    config = model_config(model)
    weights = model_weights(model, config)
    compiled = bool(getattr(model, "compiled", False))
    compiled_with = compile_config(model) if compiled else None
    try:
        layers = modelspec.validate(config).descriptions()
    except modelspec.Unsupported:
        layers = []
    return ModelData(layers, weights, _shape(model, "input_shape"), _shape(model, "output_shape"), compiled,
                     modelspec.compile_settings(compiled_with) if compiled else None, type(model).__name__,
                     fit_epochs(model), fit_steps(model), config=config, compile_config=compiled_with,
                     fit_data=fit_data(model))


def _last_fit(model):
    """The History of the model's last ``fit`` (Keras sets ``model.history`` to the History of
    each fit; ``evaluate`` and ``predict`` leave it), None if it was never fitted."""
    try:
        history = vars(model).get("history")
    except TypeError:  # an object without a __dict__
        return None
    return history if is_keras_history(history) else None


def fit_epochs(model) -> int | None:
    """How many epochs the model's last ``fit`` ran, None if it was never fitted: the History
    lists the epochs that fit ran (``history.epoch``, as ``len(history.history[...])``)."""
    history = _last_fit(model)
    epochs = vars(history).get("epoch") if history is not None else None
    return len(epochs) if type(epochs) is list else None


def fit_steps(model) -> int | None:
    """How many batches each epoch of the model's last ``fit`` ran (``history.params['steps']``:
    the training samples over the batch size, rounded up), None if it was never fitted or Keras
    did not know (a generator of unknown length)."""
    history = _last_fit(model)
    params = vars(history).get("params") if history is not None else None
    steps = params.get("steps") if type(params) is dict else None
    return steps if type(steps) is int else None


def fit_data(model) -> FitData | None:
    """What the model's last ``fit`` trained on, as coursekit/execution/fastfit.py's wrapper of ``fit``
    recorded it (only where that wrapper is installed: the grading kernel), else None."""
    fastfit = sys.modules.get("coursekit.execution.fastfit")
    try:
        record = fastfit.fit_record(model) if fastfit is not None else None
    except Exception:
        return None
    return None if record is None else FitData(**record)


def _shape(model, attribute: str):
    try:
        shape = getattr(model, attribute)
    except Exception:  # an unbuilt model has no shapes yet
        return None
    if isinstance(shape, list):
        return [tuple(s) for s in shape]
    return tuple(shape) if isinstance(shape, tuple) else None


# --- training histories and figures ---------------------------------------------------------


def history_data(history) -> HistoryData:
    return HistoryData(dict(history.history), dict(getattr(history, "params", None) or {}),
                       list(getattr(history, "epoch", None) or []))


def figure_data(fig) -> FigureData:
    """What each axes of ``fig`` shows: its image (if any), bar heights, x-label text, title."""
    panels = []
    for ax in fig.axes:
        images = ax.get_images()
        bars = [p.get_height() for p in ax.patches if type(p).__name__ == "Rectangle"]
        panels.append({
            "image": _array(images[0].get_array(), dtype=_float64) if images else None,
            "bars": _array(bars, dtype=_float64) if bars else None,
            "xlabel": ax.get_xlabel(),
            "title": ax.get_title(),
        })
    return FigureData(panels)
