"""Live Keras and Matplotlib objects read into the records of coursekit/values.py.

One reading for both worlds: the student's kernel uses it to send a model, a figure or a
training history to the checker (coursekit/export.py), and the check helpers use it when they
are given the live object itself (a released notebook run in a student's own Jupyter). So a
check reads the same description of a model whether it runs beside it or in the checker.

Keras and Matplotlib are never imported here: an object can only be a Keras model if Keras
is already loaded in this process (``sys.modules``).
"""

from __future__ import annotations

import sys

import numpy as np

from coursekit.values import FigureData, FitData, HistoryData, ModelData

# Bound at import (the student's kernel imports this module before any cell runs): reading a
# model is not changed by a student's later np.allclose = ...
_array, _allclose, _maximum, _exp = np.array, np.allclose, np.maximum, np.exp
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


def activation_name(layer) -> str:
    """'relu', 'softmax' or 'linear', found by what the activation does to a probe."""
    import tensorflow as tf

    probe = _array([[-2.0, -0.5, 0.0, 0.5, 3.0]], dtype="float32")
    try:
        out = _array(layer.activation(tf.convert_to_tensor(probe)), dtype=_float64)
    except Exception:
        return "unknown"
    wide = _array(probe, dtype=_float64)
    softmax = _exp(wide - wide.max(axis=-1, keepdims=True))
    softmax = softmax / softmax.sum(axis=-1, keepdims=True)
    if _allclose(out, probe, atol=1e-6):
        return "linear"
    if _allclose(out, _maximum(probe, 0), atol=1e-6):
        return "relu"
    if _allclose(out, softmax, atol=1e-6):
        return "softmax"
    return "other"


def model_data(model) -> ModelData:
    """The layers as ('Flatten',), ('Dense', units, activation), ('Dropout', rate) or
    (class name,), each with its weights (read with Keras' own Layer.get_weights, for exact
    Dense layers only: a subclass is described by its name and never asked for weights)."""
    keras = _keras()
    layers, weights = [], []
    for layer in model.layers:
        kind = type(layer)
        if kind is keras.layers.InputLayer:
            continue
        if kind is keras.layers.Flatten:
            layers.append(("Flatten",))
            weights.append([])
        elif kind is keras.layers.Dense:
            layers.append(("Dense", int(layer.units), activation_name(layer)))
            weights.append([_array(w) for w in keras.layers.Layer.get_weights(layer)])
        elif kind is keras.layers.Dropout:
            layers.append(("Dropout", float(layer.rate)))
            weights.append([])
        else:
            layers.append((kind.__name__,))
            weights.append([])
    compiled = bool(getattr(model, "compiled", False))
    return ModelData(layers, weights, _shape(model, "input_shape"), _shape(model, "output_shape"), compiled,
                     compile_settings(model) if compiled else None, type(model).__name__, fit_epochs(model),
                     fit_steps(model), fit_data=fit_data(model))


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
    """What the model's last ``fit`` trained on, as coursekit/fastfit.py's wrapper of ``fit``
    recorded it (only where that wrapper is installed: the grading kernel), else None."""
    fastfit = sys.modules.get("coursekit.fastfit")
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


def compile_settings(model) -> dict:
    """The optimizer class name, loss and metrics that ``model.compile`` was given."""
    keras = _keras()
    config = keras.Model.get_compile_config(model) or {}
    optimizer = config.get("optimizer")
    if isinstance(optimizer, dict):
        optimizer = optimizer.get("class_name") or optimizer.get("config", {}).get("name")
    loss = config.get("loss")
    if isinstance(loss, dict):
        loss = loss.get("config", {}).get("name") or loss.get("class_name")
    metrics = config.get("metrics") or []
    metrics = [m if isinstance(m, str) else (m.get("config", {}).get("name") if isinstance(m, dict) else str(m))
               for m in (metrics if isinstance(metrics, (list, tuple)) else [metrics])]
    return {"optimizer": str(optimizer).lower(), "loss": _snake(str(loss)), "metrics": [_snake(str(m)) for m in metrics]}


def _snake(name: str) -> str:
    out = ""
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out += "_"
        out += ch.lower()
    return out


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
