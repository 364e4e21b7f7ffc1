"""The grader's agent in the student's kernel: hands values to the checker as data, and calls
the student's functions for it.

coursekit/transfer/split_execute.py sends two requests to the student's kernel, each as a silent
execution (not in the kernel's history, no output recorded):

- ``export_values(globals(), names, folder)`` before a check cell: writes the values of
  ``names`` into the message folder ``folder`` (coursekit/transfer/wire.py), Keras models, histories
  and Matplotlib figures read by coursekit/student/live.py, functions as references to call back;
- ``serve_call(globals(), name, arguments, folder)`` while a check cell runs: reads the
  arguments the checker wrote, calls the student's function, and writes back its result (or
  the exception it raised), what it printed, and the arguments it changed in place.

This code runs where the student's code runs, so the student can change what it reports: that
is then simply the student's answer, checked by the checker like any other. Nothing the
checker holds (check code, hidden tests, expected values) ever reaches this process: only the
names a check reads, and the arguments it passes to the student's functions.
"""

from __future__ import annotations

import builtins
import contextlib
import inspect
import io
import os
import sys
import zlib

import numpy as np

from coursekit.student import live
from coursekit.transfer import wire
from coursekit.student.values import ObjectData, OpaqueValue

MAX_PRINTED = 100_000  # characters of stdout/stderr kept from one call
# Student functions the checker may call, by reference name (f0, f1...): every callable this
# kernel has handed over, kept so that a reference stays valid for the whole notebook.
_functions: dict[str, object] = {}
_function_names: dict[int, str] = {}
# Large arrays already written by an earlier message of this notebook (wire.Writer.sent).
_sent: dict = {}


def _reference(value) -> str:
    name = _function_names.get(id(value))
    if name is None or _functions.get(name) is not value:
        name = f"f{len(_functions)}"
        _functions[name] = value
        _function_names[id(value)] = name
    return name


def convert(value, depth: int):
    """A live object as a record, a function reference, or None (opaque)."""
    if live.is_keras_model(value):
        return live.model_data(value)
    if live.is_keras_history(value):
        return live.history_data(value)
    if live.is_figure(value):
        return live.figure_data(value)
    if isinstance(value, type(sys)):
        return OpaqueValue(f"module {getattr(value, '__name__', '?')}")
    if callable(value):
        return ("function", _reference(value), _origin(value))
    if hasattr(type(value), "__array__"):
        try:
            array = np.asarray(value)
        except Exception:
            array = None
        if array is not None and array.dtype.kind in wire.ARRAY_KINDS:
            return array
    if depth >= 4:
        return None
    return ObjectData(wire._qualified_type(value), _attributes(value))


def _origin(function) -> dict:
    """Where a function comes from, for checks about how it is written (checks.expect_numpy_only):
    its module, and for a function of the notebook its source text (bounded), sent as data."""
    module = getattr(function, "__module__", None)
    if not isinstance(module, str):
        module = getattr(type(function), "__module__", None)
    about = {"module": module if isinstance(module, str) else None, "source": None}
    if module in (None, "__main__"):
        with contextlib.suppress(Exception):
            about["source"] = inspect.getsource(function)[:wire.MAX_FUNCTION_SOURCE]
    return about


def _attributes(value) -> dict:
    """Public data attributes: the instance's own, then its classes' (not methods)."""
    found: dict = {}
    with contextlib.suppress(Exception):
        found.update((k, v) for k, v in vars(value).items() if isinstance(k, str) and not k.startswith("_"))
    for cls in type(value).__mro__:
        if cls is object or cls.__module__ == "builtins":
            continue
        for key, attr in vars(cls).items():
            if key.startswith("_") or key in found or callable(attr) or isinstance(attr, (staticmethod, classmethod, property)):
                continue
            found[key] = attr
    return dict(list(found.items())[:wire.MAX_ATTRIBUTES])


def export_values(namespace: dict, names: list[str], folder: str) -> None:
    writer = wire.Writer(folder, convert, sent=_sent)
    values, missing = {}, []
    for name in names:
        if name not in namespace:
            missing.append(name)
            continue
        try:
            values[name] = writer.encode(namespace[name])
        except Exception as err:  # a property of a student object raised, say
            values[name] = {"t": "unreadable", "reason": f"reading it raised {type(err).__name__}: {str(err)[:300]}"}
    writer.write({"values": values, "missing": missing})


def _fingerprint(value):
    if isinstance(value, np.ndarray):
        return (value.shape, value.dtype.str, zlib.crc32(memoryview(np.ascontiguousarray(value)).cast("B")))
    if isinstance(value, (list, dict, set)):
        with contextlib.suppress(Exception):
            return repr(value)
    return None


def serve_call(namespace: dict, name: str, arguments: str, folder: str) -> None:
    """Call student function ``name`` with the arguments in message ``arguments`` (under the
    checker's folder) and write what came of it into ``folder``."""
    checker_dir, message = os.path.split(arguments)
    base = wire.open_base(checker_dir)
    try:
        manifest, reader = wire.read_message(base, message, function=_functions.__getitem__)
        try:
            args = [reader.value(a) for a in manifest.get("args", [])]
            kwargs = {str(k): reader.value(v) for k, v in dict(manifest.get("kwargs", {})).items()}
        finally:
            reader.close()
    finally:
        os.close(base)
    function = _functions[name]
    before = [_fingerprint(a) for a in args]
    before_kw = {k: _fingerprint(v) for k, v in kwargs.items()}
    out, err = io.StringIO(), io.StringIO()
    result, error = None, None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            result = function(*args, **kwargs)
        except BaseException as exc:  # the student's exception is part of the answer
            kind = type(exc)
            error = {"type": kind.__name__, "message": str(exc)[:2000],
                     "builtin": getattr(builtins, kind.__name__, None) is kind}
    writer = wire.Writer(folder, convert, sent=_sent)
    writer.write({
        "result": None if error else writer.encode(result),
        "error": error,
        # arguments the function changed in place, by position or keyword ("should not change its input")
        "changed": {str(i): writer.encode(a) for i, (a, b) in enumerate(zip(args, before)) if _fingerprint(a) != b},
        "changed_kwargs": {k: writer.encode(v) for k, v in kwargs.items() if _fingerprint(v) != before_kw[k]},
        "stdout": out.getvalue()[:MAX_PRINTED],
        "stderr": err.getvalue()[:MAX_PRINTED],
    })
