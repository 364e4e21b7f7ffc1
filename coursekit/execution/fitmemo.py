"""An exact memo of seeded fits: when every input of a ``Model.fit`` call is identical to one a
trusted run trained, the grading kernel restores that run's final state instead of training.

Why it is exact. A fit on the CPU with one TensorFlow thread and oneDNN off is a deterministic
function of what goes in (tests/execution/test_fastfit.py and tests/execution/test_fitmemo.py train twice in fresh
processes and compare bit for bit). The memo's key is a SHA-256 of all of it (``fit_key``):

- the model: its class and JSON config (built-in Keras layers only: a student's own layer, a
  ``Lambda`` or a subclassed model is code the config does not describe), and every variable's
  path, dtype, shape and bytes (initial weights, the dropout layers' seed generator states);
- the compile configuration (built-in losses and metrics only) and the optimizer's class,
  configuration (learning rate included) and variables;
- the data: dtype, shape and bytes of ``x``, ``y`` and the validation data;
- the arguments: epochs, batch size, shuffle, validation split, initial epoch, verbosity...;
  callbacks must be none (anything else could observe or change the training); no sample or
  class weights, no steps per epoch, a model not fit before (its traced functions exist);
- the random state: Python's ``random``, NumPy's global generator, TensorFlow's global seed and
  its generator of operation seeds (tf.data's shuffle takes its seed there), the global Keras
  seed generator;
- the machine: TensorFlow, Keras, NumPy and Python versions, the thread counts, the TF_*
  switches, the CPU's model and flags, the steps per execution fastfit runs the fit with.

Served, a fit leaves what the real one leaves: the model's, optimizer's and metrics' variables,
every random state above as the real fit left it (so what comes after draws the same numbers),
and a ``History`` built by Keras' own callbacks from the recorded epoch logs (the same per-epoch
lines are printed; their timings are those of the replay).

Trust. Entries are written only by a trusted run: ``python -m coursekit.grading.fitmemo_build build`` (bin/setup
calls it) runs the instructor's source notebooks as autograde runs a submission, with
``COURSEKIT_FITMEMO_RECORD`` naming a fresh staging folder bound read-write into that kernel's
sandbox, then checks each staged entry and moves it into the store. The store lives in the
datasets' cache folder (``datapaths.cache_dir()/fitmemo``), which every grading sandbox mounts
read-only, owned by the grader: a student's kernel can read an entry, never add, change or remove
one (tests/execution/test_fitmemo.py tries). An entry's name and contents are derived from its key: its
name is a hash of the key, its contents are enciphered with a keystream derived from the key
(SHAKE-256) and authenticated by an HMAC under it, so reading the store tells nothing (not the
solution's weights) to anyone who does not already hold every input of that fit, and a damaged
entry is not served. The cipher is not what keeps entries honest: someone who holds the inputs
could forge a valid entry, which is why the store must not be writable by student code.

``COURSEKIT_FITMEMO=0`` in the kernel's environment turns serving off (benchmarks).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import platform
import random
import sys
from pathlib import Path

from coursekit.student import datapaths

ENV = "COURSEKIT_FITMEMO"                # "0": never serve (benchmarks)
RECORD_ENV = "COURSEKIT_FITMEMO_RECORD"  # a trusted build's staging folder: record every memoisable fit
STORE_ENV = "COURSEKIT_FITMEMO_DIR"      # another store (tests); not passed into the sandbox
FORMAT = b"coursekit-fitmemo-1"
SUFFIX = ".fitmemo"
MAX_ENTRY_BYTES = 256 * 2**20
FIT_ARGUMENTS = ("batch_size", "epochs", "verbose", "validation_split", "shuffle", "initial_epoch",
                 "validation_batch_size", "validation_freq")
MUST_BE_NONE = ("class_weight", "sample_weight", "steps_per_epoch", "validation_steps")
THREAD_ENV = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "TF_ENABLE_ONEDNN_OPTS",
              "TF_DETERMINISTIC_OPS", "OMP_NUM_THREADS", "TF_XLA_FLAGS", "KERAS_BACKEND")


class NotMemoisable(Exception):
    """This fit has an input the key cannot capture exactly: it trains."""


def store_dir() -> Path:
    return Path(os.environ.get(STORE_ENV) or datapaths.cache_dir() / "fitmemo")


def serving() -> bool:
    return os.environ.get(ENV, "").strip() != "0" and not os.environ.get(RECORD_ENV)


# --- the key ---------------------------------------------------------------------------------


class _Hasher:
    """SHA-256 over tagged, length-prefixed parts: no two different inputs share a byte stream."""

    def __init__(self):
        self.h = hashlib.sha256(FORMAT)

    def part(self, tag: str, data: bytes) -> None:
        tag_bytes = tag.encode()
        self.h.update(len(tag_bytes).to_bytes(4, "big") + tag_bytes + len(data).to_bytes(8, "big"))
        self.h.update(data)

    def json(self, tag: str, value) -> None:
        self.part(tag, json.dumps(value, sort_keys=True, separators=(",", ":")).encode())

    def array(self, tag: str, value) -> None:
        import numpy as np

        array = np.ascontiguousarray(value)
        if array.dtype.hasobject:
            raise NotMemoisable(f"{tag}: an array of Python objects")
        self.json(tag + ":meta", [array.dtype.str, list(array.shape)])
        self.part(tag, memoryview(array).cast("B") if array.size else b"")


def _builtin(obj) -> bool:
    module = getattr(type(obj), "__module__", "") if not isinstance(obj, type) else obj.__module__
    return module.startswith("keras.src.")


def _plain_array(value, tag: str):
    import numpy as np
    import tensorflow as tf

    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, tf.Tensor) and hasattr(value, "numpy"):
        return value.numpy()
    raise NotMemoisable(f"{tag} is a {type(value).__name__}, not an array")


def _compile_spec(spec, tag: str):
    """A loss or metrics argument as JSON, if every part is a name or a built-in Keras object."""
    if spec is None or isinstance(spec, (str, int, float, bool)):
        return spec
    if isinstance(spec, (list, tuple)):
        return [_compile_spec(item, tag) for item in spec]
    if isinstance(spec, dict):
        return {str(k): _compile_spec(v, tag) for k, v in spec.items()}
    import keras

    if isinstance(spec, (keras.losses.Loss, keras.metrics.Metric)) and _builtin(spec):
        return [type(spec).__name__, keras.saving.serialize_keras_object(spec)]
    raise NotMemoisable(f"{tag}: {type(spec).__name__} is not a built-in Keras object")


def _cpu() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return [platform.processor()]
    wanted = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "flags", "vendor_id") and key not in wanted:
            wanted[key] = value.strip()
    return [platform.machine(), *(wanted.get(k, "") for k in ("vendor_id", "model name", "flags"))]


def random_state() -> dict:
    """Every random state a fit draws from or that code after it could draw from."""
    import numpy as np
    from keras.src.backend.common import global_state
    from tensorflow.python.eager import context

    ctx = context.context()
    np_state = np.random.get_state()
    keras_generator = global_state.get_global_attribute("global_seed_generator")
    return {
        "python": random.getstate(),
        "numpy": (np_state[0], np.asarray(np_state[1]).copy(), int(np_state[2]), int(np_state[3]), float(np_state[4])),
        "tf_seed": getattr(ctx, "_seed", None),
        "tf_rng": ctx._rng.getstate() if getattr(ctx, "_rng", None) is not None else None,
        "keras_global": None if keras_generator is None else np.asarray(keras_generator.state.numpy()).copy(),
    }


def _hash_random_state(h: _Hasher, state: dict) -> None:
    h.json("random:python", state["python"])
    h.json("random:numpy", [state["numpy"][0], *state["numpy"][2:]])
    h.array("random:numpy-keys", state["numpy"][1])
    h.json("random:tf", [state["tf_seed"], state["tf_rng"]])
    if state["keras_global"] is None:
        h.json("random:keras", None)
    else:
        h.array("random:keras", state["keras_global"])


def full_arguments(fit, model, args: tuple, kwargs: dict) -> dict:
    import inspect

    bound = inspect.signature(fit).bind(model, *args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def fit_key(model, arguments: dict, steps_per_execution: int, *, fitted_before: bool) -> bytes:
    """The SHA-256 of every input of this fit (module docstring), or NotMemoisable."""
    import keras
    import numpy as np
    import tensorflow as tf

    if type(model) not in (keras.Sequential, keras.Model) and type(model).__name__ != "Functional":
        raise NotMemoisable(f"a {type(model).__name__} model (subclassed: code the config does not describe)")
    if not _builtin(model):
        raise NotMemoisable("a model class from outside Keras")
    layers = list(model._flatten_layers(include_self=False))
    for layer in layers:
        if not _builtin(layer) or type(layer).__name__ == "Lambda":
            raise NotMemoisable(f"layer {type(layer).__name__} is not a built-in Keras layer")
    if not model.built or not getattr(model, "compiled", False):
        raise NotMemoisable("the model is not built and compiled")
    if model.train_function is not None or fitted_before:
        raise NotMemoisable("the model was fit or evaluated before")
    if model.run_eagerly or model.jit_compile or getattr(model, "_distribute_strategy", None) is not None:
        raise NotMemoisable("eager, XLA or distributed")
    optimizer = model.optimizer
    if optimizer is None or not _builtin(optimizer) or isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        raise NotMemoisable("not a built-in optimizer")
    callbacks = arguments.get("callbacks")
    if callbacks not in (None, [], ()):
        raise NotMemoisable("callbacks")
    for name in MUST_BE_NONE:
        if arguments.get(name) is not None:
            raise NotMemoisable(name)
    if model.steps_per_execution != 1:
        raise NotMemoisable("the model's own steps_per_execution")

    h = _Hasher()
    h.json("versions", [tf.__version__, keras.__version__, np.__version__, sys.version, keras.backend.backend()])
    h.json("machine", _cpu())
    h.json("threads", [tf.config.threading.get_intra_op_parallelism_threads(),
                       tf.config.threading.get_inter_op_parallelism_threads(),
                       {k: os.environ.get(k) for k in THREAD_ENV}])
    h.json("keras-config", [keras.config.floatx(), keras.config.epsilon(), keras.config.image_data_format(),
                            keras.config.dtype_policy().name])
    h.json("steps_per_execution", steps_per_execution)
    h.json("model", [type(model).__name__, model.to_json()])
    for i, variable in enumerate(model.variables):
        h.json(f"variable{i}", [variable.path, variable.trainable])
        h.array(f"variable{i}", variable.numpy())
    compile_config = {
        "loss": _compile_spec(model.loss, "loss"),
        "metrics": _compile_spec(getattr(model, "_compile_config", None) and model._compile_config.config.get("metrics"), "metrics"),
        "weighted_metrics": _compile_spec(getattr(model, "_compile_config", None) and model._compile_config.config.get("weighted_metrics"), "weighted_metrics"),
        "loss_weights": _compile_spec(getattr(model, "_compile_config", None) and model._compile_config.config.get("loss_weights"), "loss_weights"),
    }
    h.json("compile", compile_config)
    h.json("optimizer", [type(optimizer).__name__, keras.saving.serialize_keras_object(optimizer), optimizer.built])
    for i, variable in enumerate(optimizer.variables):
        h.json(f"optimizer{i}", variable.path)
        h.array(f"optimizer{i}", variable.numpy())
    h.json("arguments", {name: _scalar(arguments.get(name), name) for name in FIT_ARGUMENTS})
    h.array("x", _plain_array(arguments.get("x"), "x"))
    h.array("y", _plain_array(arguments.get("y"), "y"))
    validation = arguments.get("validation_data")
    if validation is None:
        h.json("validation", None)
    elif isinstance(validation, (list, tuple)) and len(validation) == 2:
        h.array("validation-x", _plain_array(validation[0], "validation x"))
        h.array("validation-y", _plain_array(validation[1], "validation y"))
    else:
        raise NotMemoisable("validation data that is not (x, y)")
    _hash_random_state(h, random_state())
    return h.h.digest()


def _scalar(value, name: str):
    if value is None or isinstance(value, (bool, int, float, str)):
        return [type(value).__name__, value]
    raise NotMemoisable(f"{name} is a {type(value).__name__}")


# --- entries: named, enciphered and authenticated by the key --------------------------------------


def _derive(key: bytes, purpose: bytes) -> bytes:
    return hashlib.sha256(FORMAT + b"\0" + purpose + b"\0" + key).digest()


def entry_name(key: bytes) -> str:
    return _derive(key, b"name").hex() + SUFFIX


def _keystream(key: bytes, size: int) -> bytes:
    return hashlib.shake_256(_derive(key, b"cipher")).digest(size)


def _xor(data: bytes, stream: bytes) -> bytes:
    import numpy as np

    return (np.frombuffer(data, np.uint8) ^ np.frombuffer(stream, np.uint8)).tobytes()


def seal(key: bytes, plaintext: bytes) -> bytes:
    body = _xor(plaintext, _keystream(key, len(plaintext)))
    return hmac.new(_derive(key, b"mac"), body, hashlib.sha256).digest() + body


def unseal(key: bytes, blob: bytes) -> bytes | None:
    tag, body = blob[:32], blob[32:]
    if len(blob) < 32 or not hmac.compare_digest(tag, hmac.new(_derive(key, b"mac"), body, hashlib.sha256).digest()):
        return None
    return _xor(body, _keystream(key, len(body)))


def lookup(key: bytes, store: Path | None = None) -> bytes | None:
    path = (store or store_dir()) / entry_name(key)
    try:
        if path.stat().st_size > MAX_ENTRY_BYTES:
            return None
        return unseal(key, path.read_bytes())
    except OSError:
        return None


# --- what a fit leaves ---------------------------------------------------------------------------


def capture(model, history) -> bytes:
    """The state a finished fit leaves (module docstring), as an .npz (no pickles)."""
    import numpy as np

    state = random_state()
    arrays = {}
    for group, variables in _groups(model).items():
        for i, variable in enumerate(variables):
            arrays[f"{group}{i}"] = np.asarray(variable.numpy())
    arrays["numpy_keys"] = state["numpy"][1]
    if state["keras_global"] is not None:
        arrays["keras_global"] = state["keras_global"]
    meta = {
        "paths": {group: [v.path for v in variables] for group, variables in _groups(model).items()},
        "history": history.history, "epoch": list(history.epoch), "params": history.params,
        "python": state["python"], "numpy": [state["numpy"][0], *state["numpy"][2:]],
        "tf_seed": state["tf_seed"], "tf_rng": state["tf_rng"],
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def _groups(model) -> dict:
    return {"model": list(model.variables), "optimizer": list(model.optimizer.variables),
            "metrics": list(model.metrics_variables)}


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def serve(model, arguments: dict, plaintext: bytes):
    """Put the recorded final state in place and replay the epochs' callbacks; the History."""
    import numpy as np
    from keras.src.callbacks.callback_list import CallbackList
    from tensorflow.python.eager import context

    with np.load(io.BytesIO(plaintext), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    x, y = arguments["x"], arguments["y"]
    model._symbolic_build(data_batch=(x[:1], y[:1], None))  # metrics, loss, optimizer: as fit builds them
    groups = _groups(model)
    if {g: [v.path for v in vs] for g, vs in groups.items()} != meta["paths"]:
        raise NotMemoisable("the entry's variables are not this model's")
    for group, variables in groups.items():
        for i, variable in enumerate(variables):
            value = arrays[f"{group}{i}"]
            if tuple(value.shape) != tuple(variable.shape):
                raise NotMemoisable("shape")
    for group, variables in groups.items():
        for i, variable in enumerate(variables):
            variable.assign(arrays[f"{group}{i}"])
    random.setstate(_tuples(meta["python"]))
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, arrays["numpy_keys"], pos, has_gauss, cached))
    ctx = context.context()
    if meta["tf_rng"] is not None:
        ctx._seed = meta["tf_seed"]
        ctx._rng = random.Random()
        ctx._rng.setstate(_tuples(meta["tf_rng"]))
    if "keras_global" in arrays:
        from keras.src.random.seed_generator import global_seed_generator

        global_seed_generator().state.assign(arrays["keras_global"])
    params = meta["params"]
    callbacks = CallbackList(None, add_history=True, add_progbar=params["verbose"] != 0, verbose=params["verbose"],
                             epochs=params["epochs"], steps=params["steps"], model=model)
    model.stop_training = False
    callbacks.on_train_begin()
    logs = None
    for epoch in meta["epoch"]:
        logs = {name: values[meta["epoch"].index(epoch)] for name, values in meta["history"].items()}
        callbacks.on_epoch_begin(epoch)
        callbacks.on_epoch_end(epoch, logs)
    callbacks.on_train_end(logs=logs)
    return model.history


# --- the fit wrapper's entry point (coursekit/execution/fastfit.py) ------------------------------------------


def run_fit(fit, model, args: tuple, kwargs: dict, steps_per_execution: int, train, *, fitted_before: bool):
    """``train()`` (the real fit), unless an entry for exactly this fit is in the store; in a
    trusted build (``COURSEKIT_FITMEMO_RECORD``), train and stage an entry. ``fitted_before``: the fit
    wrapper (coursekit/execution/fastfit.py) saw this model train already (never served: its state is more
    than its variables)."""
    record = os.environ.get(RECORD_ENV)
    if not record and not serving():
        return train()
    try:
        arguments = full_arguments(fit, model, args, kwargs)
        key = fit_key(model, arguments, steps_per_execution, fitted_before=fitted_before)
    except Exception:  # NotMemoisable, or anything the key could not read: train
        return train()
    if not record:
        plaintext = lookup(key)
        if plaintext is not None:
            try:
                return serve(model, arguments, plaintext)
            except NotMemoisable:
                pass
        return train()
    history = train()
    try:
        folder = Path(record)
        blob = seal(key, capture(model, history))
        temporary = folder / (entry_name(key) + ".part")
        temporary.write_bytes(blob)
        temporary.replace(folder / entry_name(key))
    except Exception as error:  # the build reports what it staged; a failed record is a miss
        print(f"fitmemo: could not record a fit: {error!r}")  # the trusted build reads the cell outputs
    return history
