"""The data format between the student's kernel and the checker kernel: values as data only.

A message is a folder ``<side>/<id>/`` that one side writes and the other reads (see
coursekit/transfer/split_execute.py for who writes where): ``manifest.json`` plus one ``a<k>.npy`` per
NumPy array. The manifest holds each value as a JSON node:

- ``null``, booleans, numbers and strings are themselves; a JSON list is a Python list;
- ``{"t": ...}`` objects are everything else: ``tuple``, ``dict`` (items as key/value pairs),
  ``set``, ``frozenset``, ``range``, ``bytes``, ``array`` (a file), ``scalar`` (a NumPy scalar),
  ``model``, ``history``, ``figure``, ``object`` (type name and data attributes), ``opaque``
  (type name only), ``function`` (a name to call back), ``unreadable`` (why not).

Writing is done by ``Writer``; reading by ``read_message``, which trusts nothing it reads:

- the folder and files are opened relative to a directory descriptor, never following a
  symbolic link, and only regular files with a single link are read (a FIFO, a device, a
  symlink or a hard link to something else is refused without blocking);
- the manifest is plain JSON, at most ``MAX_MANIFEST_BYTES``, nested at most ``MAX_DEPTH``
  deep, with at most ``MAX_NODES`` nodes; every node is checked against the kinds above;
- arrays are ``.npy`` files read with NumPy's header parser (no pickles, no code): numeric,
  boolean or fixed-width text dtypes only, at most ``MAX_ARRAY_BYTES`` each and
  ``MAX_MESSAGE_BYTES`` per message, and the file must be exactly header + data;
- a Keras model travels as its Keras config and compile config (JSON text of at most
  ``MAX_CONFIG_BYTES``, parsed as plain JSON: never given to Keras here; the checks run
  coursekit/student/modelspec.py's allow-list on it before Keras sees it) and one list of weight arrays
  per layer; ModelData fields this format does not name travel in the model node's "extra";
- records (model, history, figure) are checked field by field (a model's ``fit_epochs``, the
  epochs its last fit ran, is absent/null or an integer from 0 to ``MAX_EPOCHS``; its
  ``fit_steps``, the batches per epoch of that fit, absent/null or an integer from 0 to
  ``MAX_STEPS``; its ``fit_data``, what that fit trained on, absent/null or a record whose
  fingerprints are 1-D uint64 arrays of at most ``MAX_FIT_ROWS``).

A value that breaks a rule is read as ``UnreadableValue`` with the reason: the check that
uses it fails with that reason, and nothing else is affected. Only the standard library and
NumPy are imported: the checker never imports TensorFlow or Matplotlib.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import stat
import zlib
from pathlib import Path

import numpy as np

from coursekit.student.values import (FigureData, FitData, HistoryData, ModelData, ObjectData, OpaqueValue,
                              UnreadableValue)

VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 * 2**20
MAX_ARRAY_BYTES = 512 * 2**20     # a float64 copy of Fashion-MNIST's training images is 376 MB
MAX_MESSAGE_BYTES = 1536 * 2**20  # all arrays of one message
MAX_ARRAYS = 2000
MAX_NDIM = 8
MAX_DEPTH = 24
MAX_NODES = 1_000_000
MAX_STRING = 2**20
MAX_ATTRIBUTES = 64
MAX_PANELS = 1000
MAX_EPOCHS = 10**6  # the epochs a model's last fit ran (ModelData.fit_epochs)
MAX_FIT_ROWS = 200_000  # row fingerprints of a fit's training or validation data (ModelData.fit_data)
MAX_FIT_NOTE = 500
MAX_FUNCTION_SOURCE = 100_000  # characters of a student function's source text sent with it
FIT_DATA_KINDS = {"arrays", "dataset", "other"}
MAX_STEPS = 10**8  # the batches per epoch of that fit (ModelData.fit_steps): above any data set's size
MESSAGE_ID = re.compile(r"[a-z][a-z0-9-]{0,63}")
ARRAY_FILE = re.compile(r"a[0-9]{1,6}\.npy")
# Array kinds that hold numbers or text only: bool, signed/unsigned int, float, complex, str, bytes.
ARRAY_KINDS = "biufcUS"
SCALAR_DTYPES = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                 "float16", "float32", "float64"}


class WireError(ValueError):
    """Data that breaks the format's rules; the message says which."""


# --- writing -------------------------------------------------------------------------------------


class Writer:
    """Encodes values into a message folder. ``convert(value)`` turns a live object the format
    does not know into a record (ModelData...), a ``("function", name)`` pair, or None (opaque);
    the student's kernel passes one that reads Keras models, figures and histories."""

    def __init__(self, folder: str | os.PathLike, convert=None, sent: dict | None = None):
        self.folder = Path(folder)
        self.folder.mkdir()
        # mkdir's and open's modes are masked by the umask (root grades with umask 007 on the hub),
        # and the other kernel runs as another user: every message is made world-readable explicitly.
        os.chmod(self.folder, 0o755)
        self.convert = convert
        self.arrays = 0
        self.bytes = 0
        self.nodes = 0
        # (crc32, shape, dtype) -> relative path of an identical array written by an earlier
        # message of this notebook: not written again (see ``reuse`` in read_message).
        self.sent = sent

    def write(self, manifest: dict) -> None:
        manifest = dict(manifest, version=VERSION)
        tmp = self.folder / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, allow_nan=True))
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.folder / MANIFEST)

    def encode(self, value, depth: int = 0, seen: frozenset = frozenset()):
        try:
            return self._encode(value, depth, seen)
        except WireError as err:
            return {"t": "unreadable", "reason": str(err)}

    def _count(self) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise WireError(f"more than {MAX_NODES} values nested inside it")

    def _encode(self, value, depth, seen):
        self._count()
        if depth > MAX_DEPTH:
            raise WireError(f"nested more than {MAX_DEPTH} levels deep")
        kind = type(value)
        if value is None or kind is bool:
            return value
        if kind is int:
            if abs(value) >= 10**300:
                raise WireError("an integer with more than 300 digits")
            return value
        if kind is float:
            return value
        if kind is str:
            if len(value) > MAX_STRING:
                raise WireError(f"a string longer than {MAX_STRING} characters")
            return value
        if isinstance(value, np.ndarray):
            return self._array(value)
        if isinstance(value, np.generic):
            return self._scalar(value)
        for plain in (int, float, str):  # subclasses (an IntEnum, say) as the plain value
            if isinstance(value, plain):
                return self._encode(plain(value), depth, seen)
        container = next((c for c in (dict, list, tuple, set, frozenset) if isinstance(value, c)), None)
        if container is not None:  # subclasses (OrderedDict, a namedtuple...) as the plain container
            if id(value) in seen:
                raise WireError("it contains itself")
            if len(value) > MAX_NODES:
                raise WireError(f"more than {MAX_NODES} items")
            inner = seen | {id(value)}
            if container is dict:
                return {"t": "dict", "items": [[self._encode(k, depth + 1, inner), self._encode(v, depth + 1, inner)]
                                               for k, v in list(value.items())]}
            items = [self._encode(v, depth + 1, inner) for v in list(value)]
            return items if container is list else {"t": container.__name__, "items": items}
        if kind is range:
            return {"t": "range", "start": value.start, "stop": value.stop, "step": value.step}
        if kind is bytes:
            if len(value) > MAX_STRING:
                raise WireError(f"bytes longer than {MAX_STRING}")
            return {"t": "bytes", "hex": value.hex()}
        if isinstance(value, ModelData):
            return self._model(value, depth)
        if isinstance(value, HistoryData):
            return {"t": "history", "history": self._encode(value.history, depth + 1, seen),
                    "params": self._encode(value.params, depth + 1, seen),
                    "epoch": self._encode(value.epoch, depth + 1, seen)}
        if isinstance(value, FigureData):
            return {"t": "figure", "panels": [
                {"image": None if p.get("image") is None else self._array(np.asarray(p["image"])),
                 "bars": None if p.get("bars") is None else self._array(np.asarray(p["bars"])),
                 "xlabel": str(p.get("xlabel", ""))[:MAX_STRING], "title": str(p.get("title", ""))[:MAX_STRING]}
                for p in value.panels[:MAX_PANELS]]}
        if isinstance(value, ObjectData):
            attributes = object.__getattribute__(value, "_attributes")
            return {"t": "object", "type_name": str(value.type_name)[:200],
                    "attributes": {str(k)[:200]: self._encode(v, depth + 1, seen | {id(value)})
                                   for k, v in list(attributes.items())[:MAX_ATTRIBUTES]}}
        if isinstance(value, OpaqueValue):
            return {"t": "opaque", "type_name": str(value.type_name)[:200]}
        if isinstance(value, UnreadableValue):
            return {"t": "unreadable", "reason": str(value.reason)[:2000]}
        converted = self.convert(value, depth) if self.convert is not None else None
        if isinstance(converted, tuple) and converted[:1] == ("function",):
            node = {"t": "function", "name": converted[1]}
            if len(converted) > 2 and isinstance(converted[2], dict):  # where it comes from (export.py)
                about = converted[2]
                if isinstance(about.get("source"), str):
                    node["source"] = about["source"][:MAX_FUNCTION_SOURCE]
                if isinstance(about.get("module"), str):
                    node["module"] = about["module"][:200]
            return node
        if converted is not None:
            return self._encode(converted, depth, seen | {id(value)})
        return {"t": "opaque", "type_name": _qualified_type(value)}

    def _scalar(self, value):
        dtype = value.dtype
        if dtype.name in SCALAR_DTYPES:
            return {"t": "scalar", "dtype": dtype.name, "value": value.item()}
        if dtype.kind == "f":  # longdouble
            return {"t": "scalar", "dtype": "float64", "value": float(value)}
        if dtype.kind == "U":
            return self._encode(str(value), 0, frozenset())
        if dtype.kind == "S":
            return self._encode(bytes(value), 0, frozenset())
        return {"t": "opaque", "type_name": f"numpy.{type(value).__name__}"}

    def _array(self, value: np.ndarray):
        array = np.asarray(value)
        if array.dtype.kind == "f" and array.dtype.itemsize > 8:
            array = array.astype(np.float64)
        elif array.dtype.kind == "c" and array.dtype.itemsize > 16:
            array = array.astype(np.complex128)
        if array.dtype.kind not in ARRAY_KINDS or array.dtype.fields is not None or array.dtype.hasobject:
            return {"t": "opaque", "type_name": f"numpy.ndarray of {array.dtype}"}
        if array.ndim > MAX_NDIM:
            raise WireError(f"an array with more than {MAX_NDIM} dimensions")
        if array.nbytes > MAX_ARRAY_BYTES:
            raise WireError(f"an array of {array.nbytes / 2**20:.0f} MB (the limit is {MAX_ARRAY_BYTES >> 20} MB)")
        if self.bytes + array.nbytes > MAX_MESSAGE_BYTES or self.arrays >= MAX_ARRAYS:
            raise WireError(f"the values a check reads come to more than {MAX_MESSAGE_BYTES >> 20} MB "
                            f"or {MAX_ARRAYS} arrays")
        key = None
        if self.sent is not None and array.nbytes >= REUSE_MIN_BYTES:
            key = (_crc(array), array.shape, array.dtype.str)
            if key in self.sent:
                self.bytes += array.nbytes
                return {"t": "array", "file": self.sent[key]}
        name = f"a{self.arrays}.npy"
        self.arrays += 1
        self.bytes += array.nbytes
        with open(self.folder / name, "wb") as f:
            os.fchmod(f.fileno(), 0o644)
            np.lib.format.write_array(f, array, allow_pickle=False)
        if key is not None:
            self.sent[key] = f"{self.folder.name}/{name}"
        return {"t": "array", "file": name}

    def _model(self, model: ModelData, depth: int):
        node = {"t": "model", "type_name": str(model.type_name)[:200],
                "weights": [[self._array(np.asarray(w)) for w in ws] for ws in model.weights],
                "input_shape": self._encode(model.input_shape, depth + 1, frozenset()),
                "output_shape": self._encode(model.output_shape, depth + 1, frozenset()),
                "compiled": bool(model.compiled),
                "fit_epochs": self._encode(model.fit_epochs, depth + 1, frozenset()),
                "fit_steps": self._encode(model.fit_steps, depth + 1, frozenset()),
                "fit_data": self._fit_data(model.fit_data)}
        if model.config is not None:  # a Keras model: its config and compile config, as JSON text
            node["config"] = _json_text(model.config)
            node["compile_config"] = None if model.compile_config is None else _json_text(model.compile_config)
        else:  # a record built by hand: its descriptions stand for the model
            node["layers"] = [list(layer) for layer in model.layers]
            node["compile_settings"] = self._encode(model.compile_settings, depth + 1, frozenset())
        # Fields added to ModelData after these, each as a value of this format: a new field
        # travels without a change here (a field with its own encoding is listed in MODEL_FIELDS).
        node["extra"] = {f.name: self._encode(getattr(model, f.name), depth + 2, frozenset())
                         for f in dataclasses.fields(ModelData) if f.name not in MODEL_FIELDS}
        return node

    def _fit_data(self, data):
        """A model's FitData as a plain node (fingerprints as uint64 arrays), or null."""
        if not isinstance(data, FitData):
            return None
        prints = {}
        for part in ("train", "validation"):
            value = getattr(data, part)
            prints[part] = None if value is None else self._array(np.asarray(value, dtype=np.uint64).reshape(-1))
        scale = data.scale if isinstance(data.scale, tuple) and len(data.scale) == 2 else None
        return {"kind": str(data.kind)[:20], **prints,
                "scale": None if scale is None else [float(scale[0]), float(scale[1])],
                "note": str(data.note)[:MAX_FIT_NOTE]}


# ModelData's fields this format writes by name; any other field travels in the node's "extra".
MODEL_FIELDS = {"layers", "weights", "input_shape", "output_shape", "compiled", "compile_settings", "type_name",
                "fit_epochs", "fit_steps", "config", "compile_config", "fit_data"}
MAX_CONFIG_BYTES = 2**20  # a model's config (or compile config) as JSON text: the tutorial's is 3 kB


def _json_text(value) -> str:
    text = json.dumps(value, allow_nan=True)
    if len(text) > MAX_CONFIG_BYTES:
        raise WireError(f"a model configuration longer than {MAX_CONFIG_BYTES} characters")
    return text


def _json_config(node: dict, field: str, what: str):
    """A model's config or compile config: JSON text of at most MAX_CONFIG_BYTES, an object."""
    text = node.get(field)
    if text is None and field == "compile_config":
        return None
    if not isinstance(text, str) or len(text) > MAX_CONFIG_BYTES:
        raise WireError(f"a model without its {what}")
    try:
        value = json.loads(text)
    except RecursionError:
        raise WireError(f"a model whose {what} is nested too deep") from None
    except ValueError:
        raise WireError(f"a model whose {what} is not JSON") from None
    if not isinstance(value, dict):
        raise WireError(f"a model whose {what} is not a JSON object")
    return value


# Arrays this large are looked up by checksum before being written again (``Writer.sent``):
# the same 376 MB training set is read by several checks of a notebook.
REUSE_MIN_BYTES = 4 * 2**20


def _crc(array: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B"))


def _qualified_type(value) -> str:
    kind = type(value)
    module = getattr(kind, "__module__", "") or ""
    name = getattr(kind, "__qualname__", kind.__name__)
    return (f"{module}.{name}" if module not in ("builtins", "__main__", "") else name)[:200]


# --- reading -------------------------------------------------------------------------------------


def _training_count(node: dict, field: str, limit: int, what: str) -> int | None:
    """A model's training record (``fit_epochs``, ``fit_steps``): absent/null, or an int 0..limit."""
    value = node.get(field)
    if value is not None and not (type(value) is int and 0 <= value <= limit):
        raise WireError(f"a model whose last training record is not a number of {what}")
    return value


class Reader:
    """Decodes one message folder. ``function(name)`` makes the stand-in for a student function
    (the checker's proxy; in the student's kernel, the function itself). ``cache`` maps an array's
    path (``<message>/a<k>.npy``) to the array already read from it in this notebook; ``arrays_read``
    holds, the same way, every array this reader decoded."""

    def __init__(self, base_fd: int, message: str, function=None, cache: dict | None = None):
        if not MESSAGE_ID.fullmatch(message):
            raise WireError(f"bad message id {message!r}")
        self.base_fd = base_fd
        self.message = message
        self.function = function
        self.cache = cache or {}
        self.arrays_read: dict = {}
        self.nodes = 0
        self.bytes = 0
        self.arrays = 0
        self.fd = _open_dir(message, base_fd)

    def close(self) -> None:
        os.close(self.fd)

    def manifest(self) -> dict:
        data = _read_file(self.fd, MANIFEST, MAX_MANIFEST_BYTES)
        try:
            manifest = json.loads(data.decode("utf-8"))
        except RecursionError:
            raise WireError(f"the manifest is nested more than {MAX_DEPTH} levels deep") from None
        except (UnicodeDecodeError, ValueError) as err:
            raise WireError(f"the manifest is not valid JSON ({str(err)[:200]})") from None
        if not isinstance(manifest, dict) or manifest.get("version") != VERSION:
            raise WireError("the manifest is not a message of this grader")
        return manifest

    def value(self, node, depth: int = 0):
        """A node as a Python value; a node that breaks the rules as UnreadableValue is the
        caller's job (this raises WireError)."""
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise WireError(f"more than {MAX_NODES} values")
        if depth > MAX_DEPTH:
            raise WireError(f"nested more than {MAX_DEPTH} levels deep")
        if node is None or isinstance(node, (bool, int, float)):
            if isinstance(node, int) and not isinstance(node, bool) and abs(node) >= 10**300:
                raise WireError("an integer with more than 300 digits")
            return node
        if isinstance(node, str):
            if len(node) > MAX_STRING:
                raise WireError(f"a string longer than {MAX_STRING} characters")
            return node
        if isinstance(node, list):
            return [self.value(item, depth + 1) for item in node]
        if not isinstance(node, dict) or not isinstance(node.get("t"), str):
            raise WireError("a value of unknown form")
        kind = node["t"]
        decode = getattr(self, f"_{kind}", None) if kind in KINDS else None
        if decode is None:
            raise WireError(f"a value of unknown kind {kind[:40]!r}")
        return decode(node, depth)

    # one method per kind ------------------------------------------------------------------

    def _tuple(self, node, depth):
        return tuple(self.value(item, depth + 1) for item in _field(node, "items", list))

    def _set(self, node, depth):
        return set(self._hashables(node, depth))

    def _frozenset(self, node, depth):
        return frozenset(self._hashables(node, depth))

    def _hashables(self, node, depth):
        items = [self.value(item, depth + 1) for item in _field(node, "items", list)]
        for item in items:
            _require_hashable(item)
        return items

    def _dict(self, node, depth):
        out = {}
        for pair in _field(node, "items", list):
            if not isinstance(pair, list) or len(pair) != 2:
                raise WireError("a dict item that is not a key/value pair")
            key = self.value(pair[0], depth + 1)
            _require_hashable(key)
            out[key] = self.value(pair[1], depth + 1)
        return out

    def _range(self, node, depth):
        start, stop, step = (_field(node, k, int) for k in ("start", "stop", "step"))
        if step == 0 or max(abs(start), abs(stop), abs(step)) >= 2**63:
            raise WireError("a range out of bounds")
        return range(start, stop, step)

    def _bytes(self, node, depth):
        text = _field(node, "hex", str)
        if len(text) > 2 * MAX_STRING:
            raise WireError("bytes too long")
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise WireError("bytes that are not hexadecimal") from None

    def _scalar(self, node, depth):
        dtype = _field(node, "dtype", str)
        value = node.get("value")
        if dtype not in SCALAR_DTYPES or isinstance(value, (list, dict, str)) or value is None:
            raise WireError(f"a NumPy scalar of unsupported type {dtype[:40]!r}")
        try:
            with np.errstate(all="ignore"):
                out = np.dtype(dtype).type(value)
        except (OverflowError, ValueError, TypeError) as err:
            raise WireError(f"a NumPy {dtype} that does not fit ({err})") from None
        if dtype.startswith(("int", "uint")) and (isinstance(value, float) or out != value):
            raise WireError(f"a NumPy {dtype} that does not fit")
        return out

    def _array(self, node, depth):
        name = _field(node, "file", str)
        reused = "/" in name
        if reused:  # an identical array written by an earlier message of this notebook
            message, _, file = name.partition("/")
            if not (MESSAGE_ID.fullmatch(message) and ARRAY_FILE.fullmatch(file)):
                raise WireError(f"bad array file name {name[:80]!r}")
        elif not ARRAY_FILE.fullmatch(name):
            raise WireError(f"bad array file name {name[:80]!r}")
        key = name if reused else f"{self.message}/{name}"
        if key in self.arrays_read:
            array = self.arrays_read[key]
        elif key in self.cache:
            array = self.cache[key]
        elif reused:
            fd = _open_dir(message, self.base_fd)
            try:
                array = _read_array(fd, file)
            finally:
                os.close(fd)
        else:
            array = _read_array(self.fd, name)
        self.arrays += 1
        self.bytes += array.nbytes
        if self.arrays > MAX_ARRAYS or self.bytes > MAX_MESSAGE_BYTES:
            raise WireError(f"the values come to more than {MAX_MESSAGE_BYTES >> 20} MB or {MAX_ARRAYS} arrays")
        self.arrays_read[key] = array
        # Small arrays are copied so that no two values share memory; large ones (read-only
        # use by the checks) are shared with the cache.
        return array.copy() if array.nbytes < REUSE_MIN_BYTES else array

    def _model(self, node, depth):
        if node.get("config") is not None:
            return self._keras_model(node, depth)
        layers_node = _field(node, "layers", list)
        weights_node = _field(node, "weights", list)
        if len(layers_node) > 1000 or len(layers_node) != len(weights_node):
            raise WireError("a model whose layers and weights do not match")
        layers, weights = [], []
        for layer, arrays in zip(layers_node, weights_node):
            if not isinstance(layer, list) or not layer or not isinstance(layer[0], str) or len(layer[0]) > 100:
                raise WireError("a model layer without a kind")
            if not isinstance(arrays, list) or len(arrays) > 16:
                raise WireError("a model layer with malformed weights")
            ws = [self.value(a, depth + 2) for a in arrays]
            if not all(isinstance(w, np.ndarray) and w.dtype.kind in "biuf" for w in ws):
                raise WireError("model weights that are not arrays of numbers")
            kind = layer[0]
            if kind == "Dense":
                if not (len(layer) == 3 and type(layer[1]) is int and 0 < layer[1] <= 10**6 and isinstance(layer[2], str)
                        and len(layer[2]) <= 50):
                    raise WireError("a Dense layer without units and activation")
                units = layer[1]
                if not ws or ws[0].ndim != 2 or ws[0].shape[1] != units or len(ws) > 2 or \
                        (len(ws) == 2 and ws[1].shape != (units,)):
                    raise WireError(f"a Dense({units}) layer whose weights have the wrong shapes")
            elif kind == "Dropout":
                if not (len(layer) == 2 and type(layer[1]) in (int, float) and 0 <= layer[1] < 1):
                    raise WireError("a Dropout layer without a rate")
                layer = [kind, float(layer[1])]
            elif len(layer) != 1:
                raise WireError(f"a {kind[:40]} layer with unexpected settings")
            layers.append(tuple(layer))
            weights.append(ws)
        input_shape, output_shape, compiled = self._model_frame(node, depth)
        settings = self.value(node.get("compile_settings"), depth + 1)
        if settings is not None:
            if not (isinstance(settings, dict) and set(settings) - {"from_logits"} == {"optimizer", "loss", "metrics"}
                    and isinstance(settings.get("from_logits", False), bool)
                    and isinstance(settings["optimizer"], str) and isinstance(settings["loss"], str)
                    and isinstance(settings["metrics"], list) and all(isinstance(m, str) for m in settings["metrics"])):
                raise WireError("a model with malformed compile settings")
        fit_epochs = _training_count(node, "fit_epochs", MAX_EPOCHS, "epochs")
        fit_steps = _training_count(node, "fit_steps", MAX_STEPS, "steps per epoch")
        return ModelData(layers, weights, input_shape, output_shape, compiled, settings,
                         _type_name(node), fit_epochs, fit_steps, fit_data=self._fit_data(node.get("fit_data"), depth),
                         **self._model_extra(node, depth))

    def _model_frame(self, node, depth):
        """What both model forms carry: input and output shapes, and whether it is compiled."""
        input_shape = self.value(node.get("input_shape"), depth + 1)
        output_shape = self.value(node.get("output_shape"), depth + 1)
        for shape in (input_shape, output_shape):
            _check_shape(shape)
        compiled = node.get("compiled")
        if not isinstance(compiled, bool):
            raise WireError("a model that does not say whether it is compiled")
        return input_shape, output_shape, compiled

    def _keras_model(self, node, depth):
        """A Keras model: its config and compile config as data (checked against the allow-list
        of coursekit/student/modelspec.py by the checks that run it, so that a model the checks cannot run
        fails those checks only, with the reason), one list of weight arrays per layer of its config."""
        from coursekit.student import modelspec

        config = _json_config(node, "config", "configuration")
        compile_config = _json_config(node, "compile_config", "compile settings")
        weights_node = _field(node, "weights", list)
        if len(weights_node) > 1000:
            raise WireError("a model with more than 1000 layers of weights")
        weights = []
        for arrays in weights_node:
            if not isinstance(arrays, list) or len(arrays) > 16:
                raise WireError("a model layer with malformed weights")
            ws = [self.value(a, depth + 2) for a in arrays]
            if not all(isinstance(w, np.ndarray) and w.dtype.kind in "biuf" for w in ws):
                raise WireError("model weights that are not arrays of numbers")
            weights.append(ws)
        input_shape, output_shape, compiled = self._model_frame(node, depth)
        try:
            layers = modelspec.validate(config).descriptions()
        except modelspec.Unsupported:
            layers = []  # the checks that run the model say why
        return ModelData(layers, weights, input_shape, output_shape, compiled,
                         modelspec.compile_settings(compile_config) if compiled else None, _type_name(node),
                         _training_count(node, "fit_epochs", MAX_EPOCHS, "epochs"),
                         _training_count(node, "fit_steps", MAX_STEPS, "steps per epoch"),
                         config=config, compile_config=compile_config,
                         fit_data=self._fit_data(node.get("fit_data"), depth), **self._model_extra(node, depth))

    def _model_extra(self, node, depth) -> dict:
        """ModelData's fields beyond MODEL_FIELDS, from the node's "extra" (absent: the default)."""
        extra = node.get("extra", {})
        if not isinstance(extra, dict):
            raise WireError("a model with malformed extra fields")
        return {f.name: self.value(extra[f.name], depth + 2) for f in dataclasses.fields(ModelData)
                if f.name not in MODEL_FIELDS and f.name in extra}

    def _fit_data(self, node, depth):
        """What a model's last fit trained on: absent/null, or a record every field of which is
        checked (a kind, fingerprints as 1-D uint64 arrays of at most MAX_FIT_ROWS, two finite
        numbers for the scale, a short note)."""
        if node is None:
            return None
        if not isinstance(node, dict) or set(node) != {"kind", "train", "validation", "scale", "note"} \
                or node["kind"] not in FIT_DATA_KINDS:
            raise WireError("a model whose record of its training data is malformed")
        prints = {}
        for part in ("train", "validation"):
            sub = node[part]
            if sub is None:
                prints[part] = None
                continue
            if not (isinstance(sub, dict) and sub.get("t") == "array"):
                raise WireError("a model whose training data fingerprints are not an array")
            array = self.value(sub, depth + 2)
            if not (isinstance(array, np.ndarray) and array.dtype == np.uint64 and array.ndim == 1
                    and len(array) <= MAX_FIT_ROWS):
                raise WireError("a model whose training data fingerprints are not a list of row fingerprints")
            prints[part] = array
        scale = node["scale"]
        if scale is not None:
            if not (isinstance(scale, list) and len(scale) == 2
                    and all(type(v) in (int, float) and math.isfinite(v) for v in scale)):
                raise WireError("a model whose record of its preprocessing is not two numbers")
            scale = (float(scale[0]), float(scale[1]))
        note = node["note"]
        if not isinstance(note, str) or len(note) > MAX_FIT_NOTE:
            raise WireError("a model whose training data note is not a short text")
        return FitData(node["kind"], prints["train"], prints["validation"], scale, note)

    def _history(self, node, depth):
        history = self.value(node.get("history"), depth + 1)
        params = self.value(node.get("params"), depth + 1)
        epoch = self.value(node.get("epoch"), depth + 1)
        if not isinstance(history, dict) or not isinstance(params, dict) or not isinstance(epoch, list):
            raise WireError("a training history that is not a history")
        return HistoryData(history, params, epoch)

    def _figure(self, node, depth):
        panels = []
        for panel in _field(node, "panels", list)[:MAX_PANELS]:
            if not isinstance(panel, dict):
                raise WireError("a figure panel that is not a panel")
            image = self.value(panel.get("image"), depth + 2)
            bars = self.value(panel.get("bars"), depth + 2)
            xlabel, title = panel.get("xlabel"), panel.get("title")
            if image is not None and not (isinstance(image, np.ndarray) and image.dtype.kind in "biuf" and image.ndim <= 3):
                raise WireError("a figure image that is not an image")
            if bars is not None and not (isinstance(bars, np.ndarray) and bars.dtype.kind in "biuf" and bars.ndim == 1):
                raise WireError("figure bars that are not numbers")
            if not isinstance(xlabel, str) or not isinstance(title, str) or len(xlabel) + len(title) > MAX_STRING:
                raise WireError("a figure label that is not text")
            panels.append({"image": None if image is None else image.astype(np.float64),
                           "bars": None if bars is None else bars.astype(np.float64),
                           "xlabel": xlabel, "title": title})
        return FigureData(panels)

    def _object(self, node, depth):
        attributes = _field(node, "attributes", dict)
        if len(attributes) > MAX_ATTRIBUTES:
            raise WireError("an object with too many attributes")
        return ObjectData(_type_name(node), {str(k): self.value(v, depth + 1) for k, v in attributes.items()})

    def _opaque(self, node, depth):
        return OpaqueValue(_type_name(node))

    def _unreadable(self, node, depth):
        return UnreadableValue("the value", str(node.get("reason", "no reason given"))[:2000])

    def _function(self, node, depth):
        name = _field(node, "name", str)
        if not name.isidentifier() or self.function is None:
            raise WireError("a function that cannot be called from here")
        source, module = node.get("source"), node.get("module")
        if source is None and module is None:
            return self.function(name)
        # The function's source text (data for checks.expect_numpy_only to parse, never to run)
        # and the module that defined it.
        if not (source is None or isinstance(source, str) and len(source) <= MAX_FUNCTION_SOURCE) or \
                not (module is None or isinstance(module, str) and len(module) <= 200):
            raise WireError("a function whose source text is not a short text")
        return self.function(name, source=source, module=module)


KINDS = {"tuple", "set", "frozenset", "dict", "range", "bytes", "scalar", "array", "model", "history",
         "figure", "object", "opaque", "unreadable", "function"}


def _field(node: dict, name: str, kind: type):
    value = node.get(name)
    if type(value) is not kind:
        raise WireError(f"a {node.get('t', 'value')!s:.20} without its {name}")
    return value


def _type_name(node: dict) -> str:
    name = node.get("type_name")
    if not isinstance(name, str) or len(name) > 200:
        raise WireError("a value without a type name")
    return name


def _require_hashable(value) -> None:
    try:
        hash(value)
    except TypeError:
        raise WireError("an unhashable dict key or set item") from None


def _check_shape(shape) -> None:
    if shape is None:
        return
    items = shape if isinstance(shape, (tuple, list)) else None
    if items is None or len(items) > 16:
        raise WireError("a model shape that is not a tuple")
    for item in items:
        if isinstance(item, (tuple, list)):
            _check_shape(item)
        elif item is not None and not (type(item) is int and 0 <= item < 2**40):
            raise WireError("a model shape that is not a tuple of sizes")


# --- files ---------------------------------------------------------------------------------------

_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_OPEN_DIR = _OPEN_FILE | os.O_DIRECTORY


def open_base(path: str | os.PathLike) -> int:
    """A descriptor of the folder messages are read from (refusing a symbolic link)."""
    return os.open(path, _OPEN_DIR)


def _open_dir(name: str, base_fd: int) -> int:
    try:
        return os.open(name, _OPEN_DIR, dir_fd=base_fd)
    except FileNotFoundError:
        raise WireError("no answer was written") from None
    except OSError as err:
        raise WireError(f"the answer is not a plain folder ({err.strerror})") from None


def _open_regular(dir_fd: int, name: str) -> tuple[int, os.stat_result]:
    try:
        fd = os.open(name, _OPEN_FILE, dir_fd=dir_fd)
    except FileNotFoundError:
        raise WireError(f"{name} is missing") from None
    except OSError as err:
        raise WireError(f"{name} is not a plain file ({err.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise WireError(f"{name} is not a plain file")
    return fd, st


def _read_exactly(fd: int, size: int) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    done = 0
    while done < size:
        n = os.readv(fd, [view[done:]])
        if n == 0:
            raise WireError("a file shorter than it says")
        done += n
    return buffer


def _read_file(dir_fd: int, name: str, limit: int) -> bytes:
    fd, st = _open_regular(dir_fd, name)
    try:
        if st.st_size > limit:
            raise WireError(f"{name} is larger than {limit >> 20} MB")
        return bytes(_read_exactly(fd, st.st_size))
    finally:
        os.close(fd)


def _read_array(dir_fd: int, name: str) -> np.ndarray:
    fd, st = _open_regular(dir_fd, name)
    try:
        with os.fdopen(os.dup(fd), "rb", buffering=0) as f:
            try:
                major, _minor = np.lib.format.read_magic(f)
                if major == 1:
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=10000)
                elif major in (2, 3):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=10000)
                else:
                    raise WireError(f"{name}: unsupported .npy version")
            except WireError:
                raise
            except Exception as err:  # NumPy raises ValueError (and others) on a bad header
                raise WireError(f"{name} is not a .npy array ({str(err)[:200]})") from None
            offset = f.tell()
        if dtype.hasobject or dtype.fields is not None or dtype.kind not in ARRAY_KINDS or dtype.subdtype is not None:
            raise WireError(f"{name}: arrays of {dtype} cannot be read (numbers or text only)")
        if len(shape) > MAX_NDIM or any(type(n) is not int or n < 0 for n in shape):
            raise WireError(f"{name}: bad shape {shape!r:.80}")
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if nbytes > MAX_ARRAY_BYTES:
            raise WireError(f"{name}: an array of {nbytes / 2**20:.0f} MB (the limit is {MAX_ARRAY_BYTES >> 20} MB)")
        if st.st_size != offset + nbytes:
            raise WireError(f"{name}: the file's size does not match its header")
        os.lseek(fd, offset, os.SEEK_SET)
        data = _read_exactly(fd, nbytes)
    finally:
        os.close(fd)
    array = np.frombuffer(data, dtype=dtype, count=count).reshape(shape, order="F" if fortran else "C")
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


def read_message(base_fd: int, message: str, function=None, cache: dict | None = None) -> tuple[dict, Reader]:
    """(manifest, reader) of message ``message`` under ``base_fd``; WireError if unusable."""
    reader = Reader(base_fd, message, function, cache)
    try:
        return reader.manifest(), reader
    except BaseException:
        reader.close()
        raise


def decode_named(reader: Reader, nodes: dict, names: list[str]) -> dict:
    """name -> value for each of ``names`` found in ``nodes``: a node that breaks a rule (or any
    error while decoding it) gives an UnreadableValue naming the variable."""
    out = {}
    for name in names:
        if name not in nodes:
            continue
        try:
            value = reader.value(nodes[name])
        except WireError as err:
            value = UnreadableValue(name, str(err))
        except (MemoryError, RecursionError, OverflowError, ValueError, TypeError) as err:
            value = UnreadableValue(name, f"{type(err).__name__}: {str(err)[:300]}")
        if isinstance(value, UnreadableValue) and value.name == "the value":
            value = UnreadableValue(name, value.reason)
        out[name] = value
    return out
