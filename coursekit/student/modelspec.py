"""A student's Keras model as data the checker may hand to Keras: a strict allow-list.

The student's kernel sends a model as its Keras config (``model.get_config()``: class names and
plain arguments), its compile config and its weights (coursekit/student/live.py, coursekit/transfer/wire.py).
Keras' own ``from_config`` is not safe on a hostile config, ``safe_mode`` or not: a config names
modules and functions to import and call (CVE-2025-1550: any module; CVE-2025-8747:
``keras.utils.get_file``; CVE-2025-9906: ``keras.config.enable_unsafe_deserialization`` and then a
``Lambda``; CVE-2025-9905: a ``Lambda``'s marshalled code where ``safe_mode`` was ignored). So the
checker runs ``validate`` first, on plain data, without Keras: it accepts only

- a ``Sequential`` or ``Functional`` model of at most ``MAX_LAYERS`` layers, each one of the
  built-in layer classes of ``LAYERS``, by plain class name, with the arguments that class lists
  (each of a plain type and bounded: ints in ranges, strings from short enums, shapes of a few
  bounded ints), and nothing nested but the built-in activations, initializers, regularizers and
  constraints by plain name (``NAMED``), in Keras' own ``module`` (``MODULES``);
- for a Functional model, a graph whose every inbound reference names an earlier layer (so no
  cycle), each layer called once, one input and one output;

and refuses anything else (``Lambda``, ``TFOpLambda``, custom classes, ``__lambda__`` or
``"function"`` serialisations, a ``module`` outside Keras', ``shared_object_id``, unknown keys)
with ``Unsupported``, whose message reads "this model cannot be checked: <what was found> is not
something the checks can run". It then works out each layer's output shape and the shapes of
its weights (so a config cannot make Keras allocate more than ``MAX_PARAMETERS`` numbers), checks
the student's weights against them (floating point, finite, exactly those shapes), and returns a
``Spec`` whose config is REBUILT from the allow-list (never the student's dict passed on), which
``build`` gives to Keras' ``from_config`` with safe mode on.

The rebuilt model computes in float64 (every layer's dtype is set so): the checks measured
models in float64 before, in NumPy, and their tolerances and calibrated thresholds were set so.

``compile_settings`` reads a compile config in any of its forms (a loss as a string, a function,
an object, a dict of those) without ever failing. Only the standard library is imported here;
``build`` imports Keras (and TensorFlow) when a model must actually be run.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

MAX_LAYERS = 100
MAX_UNITS = 8192
MAX_FILTERS = 1024
MAX_KERNEL = 15
MAX_DIM = 100_000            # one size of a shape
MAX_FEATURES = 4_000_000     # numbers one image becomes after any layer
MAX_PARAMETERS = 20_000_000  # numbers in all weights (the tutorial's model: 101,770)
MAX_NAME = 100
MAX_DEPTH = 12               # nesting of the config's dicts and lists
MAX_NODES = 20_000           # dicts, lists and values in the whole config
NAME = re.compile(r"[A-Za-z0-9_.\-/ ]{1,100}")

# Keras' own modules, as its serialisation writes them: nothing else may be named.
MODULES = {"keras", "keras.layers", "keras.initializers", "keras.regularizers", "keras.constraints",
           "keras.activations", "keras.losses", "keras.metrics", "keras.optimizers", "keras.models",
           "keras.src.models.functional", "keras.src.models.sequential"}

ACTIVATIONS = {"linear", "relu", "softmax", "sigmoid", "tanh", "elu", "selu", "softplus", "softsign",
               "swish", "silu", "gelu", "exponential", "hard_sigmoid", "leaky_relu", "relu6", "log_softmax",
               "mish", "hard_swish", "hard_silu"}
INITIALIZERS = {"GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal", "LecunUniform", "LecunNormal",
                "Zeros", "Ones", "Constant", "RandomUniform", "RandomNormal", "TruncatedNormal",
                "VarianceScaling", "Orthogonal", "Identity"}
REGULARIZERS = {"L1", "L2", "L1L2", "OrthogonalRegularizer"}
CONSTRAINTS = {"MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm"}
DTYPES = {"float16", "bfloat16", "float32", "float64", "mixed_float16", "mixed_bfloat16"}
COMPUTE_DTYPE = "float64"


class Unsupported(ValueError):
    """A config outside the allow-list; ``found`` says what (shown to the student)."""

    def __init__(self, found: str):
        self.found = found[:300]
        super().__init__(f"this model cannot be checked: {self.found} is not something the checks can run")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


# --- plain values ------------------------------------------------------------------------------


def _bool(value, what):
    if type(value) is not bool:
        raise Unsupported(f"{what} = {_short(value)}")
    return value


def _int(low, high):
    def check(value, what):
        if type(value) is not int or not low <= value <= high:
            raise Unsupported(f"{what} = {_short(value)} (a whole number from {low} to {high} is expected)")
        return value
    return check


def _number(low, high):
    def check(value, what):
        if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:
            raise Unsupported(f"{what} = {_short(value)} (a number from {low} to {high} is expected)")
        return float(value)
    return check


def _optional(check):
    def optional(value, what):
        return None if value is None else check(value, what)
    return optional


def _none(value, what):
    if value is not None:
        raise Unsupported(f"{what} = {_short(value)}")
    return None


def _enum(*choices):
    def check(value, what):
        if value not in choices or type(value) is not type(choices[0]):
            raise Unsupported(f"{what} = {_short(value)}")
        return value
    return check


def _ints(length_low, length_high, low, high):
    """A tuple of ints (a JSON list, a bare int for a square size, or Keras' ``__tuple__``)."""
    def check(value, what):
        if isinstance(value, dict) and set(value) == {"class_name", "config"} and value["class_name"] == "__tuple__" \
                and isinstance(value["config"], dict) and set(value["config"]) == {"value"}:
            value = value["config"]["value"]
        if type(value) is int and length_low <= 2 <= length_high:
            value = [value, value]
        if not isinstance(value, list) or not length_low <= len(value) <= length_high \
                or any(type(v) is not int or not low <= v <= high for v in value):
            raise Unsupported(f"{what} = {_short(value)}")
        return list(value)
    return check


def _shape(value, what, rank_high=5, any_batch=False):
    """A batch shape: None for the batch (or, ``any_batch``, a size), then sizes."""
    batch_ok = value[0] is None or (any_batch and type(value[0]) is int and 0 < value[0] <= 2**31) \
        if isinstance(value, list) and value else False
    if not isinstance(value, list) or not 1 <= len(value) <= rank_high or not batch_ok \
            or any(type(v) is not int or not 1 <= v <= MAX_DIM for v in value[1:]):
        raise Unsupported(f"{what} = {_short(value)}")
    return list(value)


def _name(value, what):
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise Unsupported(f"{what} = {_short(value)} (a short plain name is expected)")
    return value


def _dtype(value, what):
    """A dtype or DTypePolicy: checked, then replaced by the checks' own (COMPUTE_DTYPE)."""
    if isinstance(value, dict):
        _keys(value, {"module", "class_name", "config", "registered_name"}, what)
        if value.get("module") != "keras" or value.get("class_name") not in ("DTypePolicy", "FloatDTypePolicy") \
                or value.get("registered_name") is not None:
            raise Unsupported(f"{what} = {_short(value)}")
        config = value.get("config")
        if not isinstance(config, dict) or set(config) != {"name"}:
            raise Unsupported(f"{what} = {_short(value)}")
        value = config["name"]
    if value is not None and value not in DTYPES:
        raise Unsupported(f"{what} = {_short(value)}")
    return COMPUTE_DTYPE


def _keys(value: dict, allowed: set, what: str) -> None:
    unknown = sorted(str(k)[:40] for k in value if k not in allowed)
    if unknown:
        raise Unsupported(f"{what} with the setting {unknown[0]!r}")


def _named(kinds: set, what_kind: str, module: str):
    """A built-in initializer/regularizer/constraint: a plain name, or Keras' dict of a class in
    ``kinds`` with plain number settings. Checked; the rebuilt config leaves it out (it does
    not change what a trained model computes)."""
    def check(value, what):
        if value is None or (isinstance(value, str) and (value in kinds or _camel(value) in kinds)):
            return None
        if not isinstance(value, dict):
            raise Unsupported(f"the {what_kind} {_short(value)}")
        _keys(value, {"module", "class_name", "config", "registered_name"}, f"the {what_kind}")
        if value.get("module") != module or value.get("class_name") not in kinds or value.get("registered_name") is not None:
            raise Unsupported(f"the {what_kind} {_short(value.get('class_name'))} from {_short(value.get('module'))}")
        config = value.get("config")
        if not isinstance(config, dict) or len(config) > 10:
            raise Unsupported(f"the {what_kind} {value['class_name']} with settings {_short(config)}")
        for key, setting in config.items():
            if not (isinstance(key, str) and len(key) <= 40) or not (
                    setting is None or type(setting) in (bool, int, float, str) and len(str(setting)) <= 40):
                raise Unsupported(f"the {what_kind} {value['class_name']} with the setting {_short(key)}")
        return None
    return check


def _camel(name: str) -> str:
    return "".join(part.title() for part in name.split("_"))


def _activation(value, what):
    """A built-in activation by plain name (Keras writes ``tf.nn.relu`` as "relu" too)."""
    if isinstance(value, str) and value in ACTIVATIONS:
        return value
    if value is None:
        return "linear"
    if isinstance(value, dict):
        kind = value.get("class_name")
        if kind == "__lambda__":
            raise Unsupported("an activation written as a lambda (Python code)")
        if kind == "function":
            raise Unsupported(f"the activation function {_short(value.get('config'))} from module "
                              f"{_short(value.get('module'))}")
        raise Unsupported(f"the activation {_short(kind)} from {_short(value.get('module'))}")
    raise Unsupported(f"the activation {_short(value)}")


INITIALIZER = _named(INITIALIZERS, "initializer", "keras.initializers")
REGULARIZER = _named(REGULARIZERS, "regularizer", "keras.regularizers")
CONSTRAINT = _named(CONSTRAINTS, "constraint", "keras.constraints")

# --- layers ------------------------------------------------------------------------------------
# Per class: the arguments it may have, each as (check, kept): a kept argument goes into the
# rebuilt config (as the check returned it), the others are only checked. "name", "trainable"
# and "dtype" are common to all.

_DATA_FORMAT = _enum("channels_last")
_PADDING = _enum("valid", "same")
_COMMON = {"name": (_name, True), "trainable": (_bool, False), "dtype": (_dtype, True)}
_WEIGHTED = {"kernel_initializer": (INITIALIZER, False), "bias_initializer": (INITIALIZER, False),
             "kernel_regularizer": (REGULARIZER, False), "bias_regularizer": (REGULARIZER, False),
             "activity_regularizer": (REGULARIZER, False), "kernel_constraint": (CONSTRAINT, False),
             "bias_constraint": (CONSTRAINT, False)}

LAYERS: dict[str, dict] = {
    "InputLayer": {"batch_shape": (_shape, True), "batch_input_shape": (_shape, False), "sparse": (_enum(False), False),
                   "ragged": (_enum(False), False), "optional": (_enum(False), False)},
    "Dense": {"units": (_int(1, MAX_UNITS), True), "activation": (_activation, True), "use_bias": (_bool, True),
              "quantization_config": (_none, False), "lora_rank": (_none, False), "lora_alpha": (_none, False),
              **_WEIGHTED},
    "Flatten": {"data_format": (_DATA_FORMAT, True)},
    "Reshape": {"target_shape": (_ints(1, 4, -1, MAX_DIM), True)},
    "Dropout": {"rate": (_number(0, 0.999999), True), "seed": (_optional(_int(0, 2**31)), False),
                "noise_shape": (_optional(_ints(1, 5, 1, MAX_DIM)), False)},
    "Activation": {"activation": (_activation, True)},
    "Softmax": {"axis": (_enum(-1), True)},
    "ReLU": {"max_value": (_optional(_number(0, 1e6)), True), "negative_slope": (_number(0, 1), True),
             "threshold": (_number(-1e6, 1e6), True)},
    "LeakyReLU": {"negative_slope": (_number(0, 1), True), "alpha": (_number(0, 1), False)},
    "BatchNormalization": {"axis": (_enum(-1), True), "momentum": (_number(0, 1), True),
                           "epsilon": (_number(1e-12, 1), True), "center": (_bool, True), "scale": (_bool, True),
                           "synchronized": (_enum(False), False), "renorm": (_enum(False), False),
                           "renorm_clipping": (_none, False), "renorm_momentum": (_number(0, 1), False),
                           **{f"{w}_{k}": (check, False) for w in ("beta", "gamma", "moving_mean", "moving_variance")
                              for k, check in (("initializer", INITIALIZER), ("regularizer", REGULARIZER),
                                               ("constraint", CONSTRAINT))}},
    "Rescaling": {"scale": (_number(-1e6, 1e6), True), "offset": (_number(-1e6, 1e6), True)},
    "Normalization": {"axis": (_ints(1, 1, -1, -1), True), "invert": (_enum(False), True),
                      "mean": (_none, True), "variance": (_none, True)},
    "Conv2D": {"filters": (_int(1, MAX_FILTERS), True), "kernel_size": (_ints(2, 2, 1, MAX_KERNEL), True),
               "strides": (_ints(2, 2, 1, MAX_KERNEL), True), "padding": (_PADDING, True),
               "data_format": (_DATA_FORMAT, True), "dilation_rate": (_ints(2, 2, 1, 1), True),
               "groups": (_enum(1), True), "activation": (_activation, True), "use_bias": (_bool, True), **_WEIGHTED},
    "MaxPooling2D": {"pool_size": (_ints(2, 2, 1, MAX_KERNEL), True), "strides": (_optional(_ints(2, 2, 1, MAX_KERNEL)), True),
                     "padding": (_PADDING, True), "data_format": (_DATA_FORMAT, True)},
    "GlobalAveragePooling2D": {"data_format": (_DATA_FORMAT, True), "keepdims": (_enum(False), True)},
    "GlobalMaxPooling2D": {"data_format": (_DATA_FORMAT, True), "keepdims": (_enum(False), True)},
    "Concatenate": {"axis": (_enum(-1), True)},
    "Add": {},
}
LAYERS["AveragePooling2D"] = LAYERS["MaxPooling2D"]
MERGING = {"Concatenate", "Add"}
# Refused by name with the reason a student can act on.
NAMED_REFUSALS = {"Lambda": "a Lambda layer (Python code)", "TFOpLambda": "a TensorFlow operation used as a layer",
                  "TFSMLayer": "a layer loading a saved model from a file", "function": "a Python function",
                  "__lambda__": "a lambda (Python code)"}


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str
    settings: dict                  # the kept arguments, as checked
    inputs: tuple                   # names of the layers it is called on (Functional); () for the first
    output_shape: tuple             # per image (no batch axis)
    weight_shapes: tuple            # shapes of its weights, in Keras' order


@dataclass(frozen=True)
class Spec:
    """A checked model: what the checks describe and what ``build`` gives Keras."""

    kind: str                       # "Sequential" or "Functional"
    layers: tuple                   # Layer, in the config's order (InputLayer included)
    config: dict                    # rebuilt from the allow-list, for Keras' from_config
    input_shape: tuple              # per image
    output_activation: str          # the last layer's activation ("linear" when it has none)

    def descriptions(self) -> list[tuple]:
        return [describe(layer) for layer in self.layers if layer.kind != "InputLayer"]

    def canonical(self) -> str:
        """The rebuilt config as text: a key for the memo."""
        return json.dumps(self.config, sort_keys=True)


def describe(layer: Layer) -> tuple:
    """('Flatten',), ('Dense', units, activation), ('Dropout', rate), ('Reshape', target shape),
    ('Conv2D', filters, kernel size, activation), (pooling class, pool size), (class name,)."""
    s = layer.settings
    if layer.kind == "Dense":
        return ("Dense", s["units"], s["activation"])
    if layer.kind == "Dropout":
        return ("Dropout", s["rate"])
    if layer.kind == "Reshape":
        return ("Reshape", tuple(s["target_shape"]))
    if layer.kind == "Activation":
        return ("Activation", s["activation"])
    if layer.kind == "Conv2D":
        return ("Conv2D", s["filters"], tuple(s["kernel_size"]), s["activation"])
    if layer.kind in ("MaxPooling2D", "AveragePooling2D"):
        return (layer.kind, tuple(s["pool_size"]))
    return (layer.kind,)


def architecture(spec: Spec) -> list[tuple]:
    """The descriptions with equivalent spellings made one: a Reshape to one axis of all its
    input's numbers is Flatten (Reshape((784,)) of a 28x28 image); a Dense layer without an
    activation followed by Activation(a) (or Softmax(), ReLU()) is Dense(units, a)."""
    out: list[tuple] = []
    previous_shape = spec.input_shape
    for layer in spec.layers:
        if layer.kind == "InputLayer":
            previous_shape = layer.output_shape
            continue
        description = describe(layer)
        follows_linear_dense = bool(out) and out[-1][0] == "Dense" and out[-1][2] == "linear"
        if layer.kind == "Reshape" and len(layer.output_shape) == 1 and layer.output_shape[0] == math.prod(previous_shape):
            description = ("Flatten",)
        elif follows_linear_dense and layer.kind in ("Activation", "Softmax", "ReLU"):
            name = {"Softmax": "softmax"}.get(layer.kind, layer.settings.get("activation"))
            if layer.kind == "ReLU" and (layer.settings.get("max_value"), layer.settings.get("negative_slope", 0.0),
                                         layer.settings.get("threshold", 0.0)) == (None, 0.0, 0.0):
                name = "relu"
            if name is not None:
                out[-1] = ("Dense", out[-1][1], name)
                previous_shape = layer.output_shape
                continue
        out.append(description)
        previous_shape = layer.output_shape
    return out


# --- the whole config ---------------------------------------------------------------------------


def _walk_bounds(value, depth=0, count=None):
    """Refuse a config nested deeper than MAX_DEPTH or larger than MAX_NODES, and keys that
    only Keras' object sharing or custom objects use, wherever they are."""
    count = count if count is not None else [0]
    count[0] += 1
    if count[0] > MAX_NODES:
        raise Unsupported(f"a configuration of more than {MAX_NODES} settings")
    if depth > MAX_DEPTH:
        raise Unsupported(f"a configuration nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise Unsupported(f"a setting named {_short(key)}")
            if key == "shared_object_id":
                raise Unsupported("a shared object (shared_object_id)")
            if key == "class_name" and item == "function":
                raise Unsupported(f"the Python function {_short(value.get('config'))} from module "
                                  f"{_short(value.get('module'))}")
            if key == "class_name" and isinstance(item, str) and item in NAMED_REFUSALS:
                raise Unsupported(NAMED_REFUSALS[item])
            _walk_bounds(item, depth + 1, count)
    elif isinstance(value, list):
        for item in value:
            _walk_bounds(item, depth + 1, count)
    elif isinstance(value, str):
        if len(value) > 1000:
            raise Unsupported("a setting of more than 1000 characters")
    elif value is not None and type(value) not in (bool, int, float):
        raise Unsupported(f"a setting of type {type(value).__name__}")
    elif type(value) is int and abs(value) > 2**53:
        raise Unsupported(f"the number {_short(value)}")


def _check_entry(entry, index: int, functional: bool) -> tuple[str, str, dict, dict | None]:
    """(name, class, kept settings, raw inbound nodes) of one layer entry of the config."""
    where = f"layer {index + 1}"
    if not isinstance(entry, dict):
        raise Unsupported(f"{where}: {_short(entry)}")
    kind = entry.get("class_name")
    if not isinstance(kind, str):
        raise Unsupported(f"{where} without a class")
    if kind in NAMED_REFUSALS:
        raise Unsupported(NAMED_REFUSALS[kind])
    if kind not in LAYERS:
        raise Unsupported(f"a layer of class {_short(kind)}")
    allowed = {"module", "class_name", "config", "registered_name", "build_config"}
    if functional:
        allowed |= {"name", "inbound_nodes"}
    _keys(entry, allowed, f"the {kind} layer")
    if entry.get("module", "keras.layers") != "keras.layers":
        raise Unsupported(f"a {kind} layer from module {_short(entry.get('module'))}")
    if entry.get("registered_name") not in (None, kind):
        raise Unsupported(f"a layer registered as {_short(entry.get('registered_name'))}")
    build = entry.get("build_config")
    if build is not None:
        if not isinstance(build, dict) or set(build) != {"input_shape"}:
            raise Unsupported(f"the {kind} layer's build settings {_short(build)}")
        shape = build["input_shape"]
        if isinstance(shape, list) and shape and isinstance(shape[0], list):  # a merging layer: one per input
            for one in shape[:8]:
                _shape(one, f"the {kind} layer's input shape", 5, True)
        elif shape is not None:
            _shape(shape, f"the {kind} layer's input shape", 5, True)
    config = entry.get("config")
    if not isinstance(config, dict):
        raise Unsupported(f"the {kind} layer's settings {_short(config)}")
    arguments = {**_COMMON, **LAYERS[kind]}
    _keys(config, set(arguments), f"the {kind} layer")
    kept = {}
    for key, value in config.items():
        check, keep = arguments[key]
        checked = check(value, f"{kind}'s {key}")
        if keep:
            kept[key] = checked
    name = kept.get("name")
    if name is None:
        raise Unsupported(f"the {kind} layer without a name")
    if functional and entry.get("name", name) != name:
        raise Unsupported(f"the {kind} layer named twice ({_short(entry.get('name'))}, {_short(name)})")
    return name, kind, kept, entry.get("inbound_nodes") if functional else None


def _reference(value, names: dict, where: str) -> str:
    """A tensor reference of a Functional config: {"class_name": "__keras_tensor__", "config":
    {"shape", "dtype", "keras_history": [layer, 0, 0]}}, to a layer defined before."""
    if not isinstance(value, dict) or value.get("class_name") != "__keras_tensor__" or set(value) != {"class_name", "config"}:
        raise Unsupported(f"{where}: an input that is not a layer's output ({_short(value)})")
    config = value["config"]
    if not isinstance(config, dict) or not set(config) <= {"shape", "dtype", "keras_history"}:
        raise Unsupported(f"{where}: an input with settings {_short(config)}")
    history = config.get("keras_history")
    if not isinstance(history, list) or len(history) != 3 or history[1:] != [0, 0] or not isinstance(history[0], str):
        raise Unsupported(f"{where}: an input {_short(history)} (each layer is used once)")
    if history[0] not in names:
        raise Unsupported(f"{where}: an input from {_short(history[0])}, which is not a layer defined before it")
    return history[0]


def _inbound(nodes, names: dict, kind: str, where: str) -> tuple:
    if kind == "InputLayer":
        if nodes not in ([], None):
            raise Unsupported(f"{where}: an input layer with inputs")
        return ()
    if not isinstance(nodes, list) or len(nodes) != 1:
        raise Unsupported(f"{where}: a layer used {len(nodes) if isinstance(nodes, list) else '?'} times "
                          "(each layer once is what the checks can run)")
    node = nodes[0]
    if not isinstance(node, dict) or set(node) != {"args", "kwargs"} or node["kwargs"] != {} \
            or not isinstance(node["args"], list) or len(node["args"]) != 1:
        raise Unsupported(f"{where}: a layer called with {_short(node)}")
    arg = node["args"][0]
    if kind in MERGING:
        if not isinstance(arg, list) or not 2 <= len(arg) <= 8:
            raise Unsupported(f"{where}: a {kind} layer without a list of 2 to 8 inputs")
        return tuple(_reference(a, names, where) for a in arg)
    return (_reference(arg, names, where),)


def _endpoints(value, names: dict, what: str) -> str:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
        value = value[0]
    if not (isinstance(value, list) and len(value) == 3 and value[1:] == [0, 0] and value[0] in names):
        raise Unsupported(f"the model's {what} {_short(value)} (one {what[:-1]}, a layer of the model)")
    return value[0]


def validate(config, weights=None) -> Spec:
    """The model ``config`` ({"class_name": "Sequential" or "Functional", "config": ...}) checked
    against the allow-list, with ``weights`` (one list of arrays per layer of the config, in its
    order; None: not checked) checked against the shapes it implies. Raises ``Unsupported``."""
    if not isinstance(config, dict):
        raise Unsupported(f"a model described by {_short(config)}")
    _walk_bounds(config)
    _keys(config, {"module", "class_name", "config", "registered_name"}, "the model")
    kind = config.get("class_name")
    if kind == "Model":
        kind = "Functional"
    if kind not in ("Sequential", "Functional"):
        raise Unsupported(f"a model of class {_short(kind)} (a subclassed or custom model)")
    if config.get("module") not in (None, "keras", "keras.models", "keras.src.models.functional",
                                    "keras.src.models.sequential") or config.get("registered_name") not in (None, kind):
        raise Unsupported(f"a model from module {_short(config.get('module'))}")
    body = config.get("config")
    if not isinstance(body, dict):
        raise Unsupported("a model whose configuration could not be read")
    functional = kind == "Functional"
    top = {"name", "trainable", "layers"} | ({"input_layers", "output_layers"} if functional
                                             else {"dtype", "build_input_shape"})
    _keys(body, top, f"the {kind} model")
    model_name = _name(body.get("name", "model"), "the model's name")
    if "trainable" in body:
        _bool(body["trainable"], "the model's trainable")
    if "dtype" in body:
        _dtype(body["dtype"], "the model's dtype")
    entries = body.get("layers")
    if not isinstance(entries, list) or not entries:
        raise Unsupported("a model without layers")
    if len(entries) > MAX_LAYERS:
        raise Unsupported(f"a model of {len(entries)} layers (at most {MAX_LAYERS})")
    if weights is not None and (not isinstance(weights, list) or len(weights) != len(entries)):
        raise Unsupported("weights that are not one list per layer of the model")

    checked: dict[str, Layer] = {}
    order: list[Layer] = []
    parameters = 0
    build_shape = body.get("build_input_shape")
    previous_shape = tuple(_shape(build_shape, "the model's input shape")[1:]) if build_shape is not None else None
    build_input = previous_shape
    for index, entry in enumerate(entries):
        name, layer_kind, kept, nodes = _check_entry(entry, index, functional)
        if name in checked:
            raise Unsupported(f"two layers named {_short(name)}")
        if functional:
            inputs = _inbound(nodes, checked, layer_kind, f"layer {name}")
            in_shapes = [checked[n].output_shape for n in inputs]
        else:
            if layer_kind in MERGING:
                raise Unsupported(f"a {layer_kind} layer in a Sequential model")
            if layer_kind == "InputLayer" and index != 0:
                raise Unsupported("an input layer in the middle of the model")
            inputs = (order[-1].name,) if order else ()
            in_shapes = [previous_shape] if layer_kind != "InputLayer" else []
        if layer_kind == "InputLayer":
            shape = kept.get("batch_shape") or config_input_shape(entry)
            kept["batch_shape"] = shape
            in_shapes = [tuple(shape[1:])]
        elif not in_shapes or any(s is None for s in in_shapes):
            raise Unsupported(f"a model whose input shape is not known (start it with tf.keras.Input(shape=...))")
        out_shape, weight_shapes = _output(layer_kind, kept, in_shapes, name)
        if math.prod(out_shape) > MAX_FEATURES:
            raise Unsupported(f"layer {name}, whose output has {math.prod(out_shape):,} numbers per image")
        parameters += sum(math.prod(s) for s in weight_shapes)
        if parameters > MAX_PARAMETERS:
            raise Unsupported(f"a model of more than {MAX_PARAMETERS:,} weights")
        layer = Layer(name, layer_kind, kept, inputs, out_shape, weight_shapes)
        checked[name] = layer
        order.append(layer)
        previous_shape = out_shape
    if functional:
        first = _endpoints(body.get("input_layers"), checked, "inputs")
        last = _endpoints(body.get("output_layers"), checked, "outputs")
        if checked[first].kind != "InputLayer" or sum(layer.kind == "InputLayer" for layer in order) != 1:
            raise Unsupported("a model with more than one input")
    else:
        first, last = order[0].name, order[-1].name
    if weights is not None:
        for layer, arrays in zip(order, weights):
            check_weights(layer, arrays)
    input_shape = checked[first].output_shape if checked[first].kind == "InputLayer" else build_input
    return Spec(kind, tuple(order), _rebuilt(kind, model_name, order, first, last, functional, input_shape),
                tuple(input_shape), _output_activation(order, last, checked))


def config_input_shape(entry) -> list:
    shape = entry["config"].get("batch_input_shape")
    if shape is None:
        raise Unsupported("an input layer without a shape")
    return shape


def _output_activation(order, last: str, checked: dict) -> str:
    layer = checked[last]
    if layer.kind in ("Dense", "Conv2D", "Activation"):
        return layer.settings["activation"]
    if layer.kind == "Softmax":
        return "softmax"
    if layer.kind == "Dropout" and layer.inputs:  # Dropout is the identity when the checks run the model
        return _output_activation(order, layer.inputs[0], checked)
    return "linear"


def _conv_size(size: int, kernel: int, stride: int, padding: str) -> int:
    return -(-size // stride) if padding == "same" else (size - kernel) // stride + 1


def _output(kind: str, s: dict, in_shapes: list, name: str) -> tuple[tuple, tuple]:
    """(output shape per image, weight shapes) of a layer, or Unsupported when its input cannot
    be what it takes."""
    shape = tuple(in_shapes[0])
    bad = Unsupported(f"layer {name} ({kind}) applied to inputs of shape {tuple(in_shapes)}")
    if kind == "InputLayer":
        return shape, ()
    if kind == "Dense":
        if not shape:
            raise bad
        units = s["units"]
        return shape[:-1] + (units,), ((shape[-1], units),) + (((units,),) if s.get("use_bias", True) else ())
    if kind == "Flatten":
        return (math.prod(shape),), ()
    if kind == "Reshape":
        target = list(s["target_shape"])
        total = math.prod(shape)
        if target.count(-1) > 1:
            raise bad
        if -1 in target:
            known = math.prod(t for t in target if t != -1)
            if known == 0 or total % known:
                raise bad
            target[target.index(-1)] = total // known
        if math.prod(target) != total or any(t < 1 for t in target):
            raise bad
        return tuple(target), ()
    if kind in ("Dropout", "Activation", "Softmax", "ReLU", "LeakyReLU", "Rescaling"):
        return shape, ()
    if kind == "BatchNormalization":
        if not shape:
            raise bad
        n = (shape[-1],)
        return shape, ((n,) if s.get("scale", True) else ()) + ((n,) if s.get("center", True) else ()) + (n, n)
    if kind == "Normalization":
        if not shape:
            raise bad
        return shape, ((shape[-1],), (shape[-1],), ())
    if kind == "Conv2D":
        if len(shape) != 3:
            raise bad
        (kh, kw), (sh, sw) = s["kernel_size"], s.get("strides", [1, 1])
        h, w = (_conv_size(shape[0], kh, sh, s.get("padding", "valid")), _conv_size(shape[1], kw, sw, s.get("padding", "valid")))
        if h < 1 or w < 1:
            raise bad
        filters = s["filters"]
        return (h, w, filters), ((kh, kw, shape[2], filters),) + (((filters,),) if s.get("use_bias", True) else ())
    if kind in ("MaxPooling2D", "AveragePooling2D"):
        if len(shape) != 3:
            raise bad
        ph, pw = s["pool_size"]
        sh, sw = s.get("strides") or s["pool_size"]
        h, w = (_conv_size(shape[0], ph, sh, s.get("padding", "valid")), _conv_size(shape[1], pw, sw, s.get("padding", "valid")))
        if h < 1 or w < 1:
            raise bad
        return (h, w, shape[2]), ()
    if kind in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
        if len(shape) != 3:
            raise bad
        return (shape[2],), ()
    if kind == "Add":
        if any(tuple(other) != shape for other in in_shapes):
            raise bad
        return shape, ()
    if kind == "Concatenate":
        if any(len(other) != len(shape) or tuple(other[:-1]) != shape[:-1] or not other for other in in_shapes):
            raise bad
        return shape[:-1] + (sum(other[-1] for other in in_shapes),), ()
    raise bad  # pragma: no cover - every class of LAYERS is handled above


def check_weights(layer: Layer, arrays) -> None:
    """The student's weights of ``layer``: exactly the shapes its config implies, floating point
    (Normalization's count: an integer), finite."""
    import numpy as np  # the checker has NumPy; kept local so the allow-list itself needs nothing

    if not isinstance(arrays, list) or len(arrays) != len(layer.weight_shapes):
        raise Unsupported(f"layer {layer.name} ({layer.kind}) with {len(arrays) if isinstance(arrays, list) else '?'} "
                          f"weight arrays where it has {len(layer.weight_shapes)}")
    for index, (array, shape) in enumerate(zip(arrays, layer.weight_shapes)):
        what = f"weight {index + 1} of layer {layer.name} ({layer.kind})"
        if not isinstance(array, np.ndarray):
            raise Unsupported(f"{what}, which is not an array")
        count = layer.kind == "Normalization" and index == 2  # how many samples it was adapted on
        if array.dtype.kind not in ("iuf" if count else "f"):
            raise Unsupported(f"{what}, an array of {array.dtype} (numbers in floating point are expected)")
        if tuple(array.shape) != tuple(shape):
            raise Unsupported(f"{what}, of shape {tuple(array.shape)} where the layer's is {tuple(shape)}")
        if not count and not bool(np.isfinite(array).all()):
            raise Unsupported(f"{what}, which holds nan or inf")


def _rebuilt(kind: str, model_name: str, order: list, first: str, last: str, functional: bool, input_shape) -> dict:
    """The config Keras gets: built here from the checked settings, in Keras' own format."""
    def entry(layer: Layer) -> dict:
        settings = dict(layer.settings)
        settings["name"] = layer.name
        settings["dtype"] = COMPUTE_DTYPE
        out = {"module": "keras.layers", "class_name": layer.kind, "config": settings, "registered_name": None}
        if functional:
            out["name"] = layer.name
            refs = [{"class_name": "__keras_tensor__",
                     "config": {"shape": [None, *_owner[n].output_shape], "dtype": COMPUTE_DTYPE, "keras_history": [n, 0, 0]}}
                    for n in layer.inputs]
            out["inbound_nodes"] = [] if not refs else [{"args": [refs if layer.kind in MERGING else refs[0]], "kwargs": {}}]
        return out

    _owner = {layer.name: layer for layer in order}
    body = {"name": model_name, "trainable": False, "layers": [entry(layer) for layer in order]}
    if functional:
        body["input_layers"] = [first, 0, 0]
        body["output_layers"] = [last, 0, 0]
    else:
        body["dtype"] = COMPUTE_DTYPE
        if order[0].kind != "InputLayer":  # built with model.build(shape) or its first layer's input_shape
            names = {layer.name for layer in order}
            body["layers"].insert(0, {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
                                      "config": {"batch_shape": [None, *input_shape], "dtype": COMPUTE_DTYPE,
                                                 "name": next(f"input_{i}" for i in range(len(names) + 1)
                                                              if f"input_{i}" not in names)}})
    return {"module": "keras", "class_name": kind, "config": body, "registered_name": None}


def from_descriptions(layers: list, input_shape, weights: list) -> tuple[dict, list]:
    """A hand-built record's descriptions (('Flatten',), ('Dense', units, activation),
    ('Dropout', rate)) as a Sequential config and its per-layer weights (InputLayer first)."""
    shape = list(input_shape) if input_shape else None
    if shape is None:  # the tutorial's input, or the first Dense layer's input size
        dense = next((w for d, w in zip(layers, weights) if d and d[0] == "Dense" and w), None)
        shape = [None, int(dense[0].shape[0])] if dense is not None and not any(d[0] == "Flatten" for d in layers) \
            else [None, 28, 28]
    entries = [{"module": "keras.layers", "class_name": "InputLayer",
                "config": {"batch_shape": shape, "name": "input_layer"}, "registered_name": None}]
    for index, description in enumerate(layers):
        if not description or not isinstance(description[0], str):
            raise Unsupported(f"the layer {_short(description)}")
        kind, name = description[0], f"layer_{index}"
        if kind == "Flatten" and len(description) == 1:
            config = {"name": name}
        elif kind == "Dense" and len(description) == 3:
            config = {"name": name, "units": description[1], "activation": description[2]}
        elif kind == "Dropout" and len(description) == 2:
            config = {"name": name, "rate": description[1]}
        else:
            raise Unsupported(f"a {_short(kind)} layer")
        entries.append({"module": "keras.layers", "class_name": kind, "config": config, "registered_name": None})
    return {"class_name": "Sequential", "config": {"name": "model", "layers": entries}}, [[], *weights]


# --- Keras -----------------------------------------------------------------------------------


def build(spec: Spec, weights: list):
    """The Keras model of ``spec`` (a checked Spec, ``weights`` checked by ``validate``): built by
    Keras' from_config on the rebuilt config, in safe mode, then given the weights. Imports Keras
    (and TensorFlow) now, quietly: their C++ logs would be stderr, which nbgrader scores 0."""
    import os
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import keras

    from keras.src.saving.serialization_lib import SafeModeScope

    cls = keras.Sequential if spec.kind == "Sequential" else keras.Model
    with SafeModeScope(True):  # Keras' own guard as well, whatever a library set before
        model = cls.from_config(json.loads(json.dumps(spec.config["config"])))
    by_name = {layer.name: layer for layer in model.layers}
    for layer, arrays in zip(spec.layers, weights):
        if layer.kind == "InputLayer" or layer.name not in by_name:
            continue
        target = by_name[layer.name]
        shapes = [tuple(v.shape) for v in target.weights]
        if shapes != [tuple(s) for s in layer.weight_shapes]:  # Keras built other shapes than worked out
            raise Unsupported(f"layer {layer.name} ({layer.kind}), whose weights Keras makes {shapes}")
        if arrays:
            target.set_weights(list(arrays))
            if layer.kind == "Normalization":  # computes its mean and variance from its weights here
                target.finalize_state()
    return model


# --- compile settings ------------------------------------------------------------------------

LOSS_ALIASES = {"mse": "mean_squared_error", "mae": "mean_absolute_error", "mape": "mean_absolute_percentage_error",
                "msle": "mean_squared_logarithmic_error", "kld": "kl_divergence",
                "kullback_leibler_divergence": "kl_divergence", "bce": "binary_crossentropy",
                "acc": "accuracy"}


def _snake(name: str) -> str:
    out = ""
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out += "_"
        out += ch.lower()
    return out


def _plain_name(value) -> str:
    """A loss, metric or optimizer in any form Keras writes it, as one snake_case name."""
    if isinstance(value, str):
        name = value
    elif isinstance(value, dict):
        config = value.get("config")
        if value.get("class_name") == "function" and isinstance(config, str):
            name = config  # tf.keras.losses.sparse_categorical_crossentropy, the function
        elif isinstance(value.get("class_name"), str):
            name = value["class_name"]  # an object: its class (SparseCategoricalCrossentropy)
        elif isinstance(config, dict) and isinstance(config.get("name"), str):
            name = config["name"]
        else:
            name = "unknown"
    else:
        name = "unknown" if value is not None else "none"
    name = _snake(name.strip()[:MAX_NAME])
    return LOSS_ALIASES.get(name, name)


def _single(value):
    """A loss given per output ({"dense_1": loss} or [loss]): the only one, else as it is."""
    if isinstance(value, dict) and "class_name" not in value and len(value) == 1:
        return next(iter(value.values()))
    if isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


def compile_settings(compile_config) -> dict:
    """{"optimizer", "loss", "from_logits", "metrics"} from Keras' compile config, whatever form
    each part has (a loss as "sparse_categorical_crossentropy", as the function
    tf.keras.losses.sparse_categorical_crossentropy, as SparseCategoricalCrossentropy(
    from_logits=True), or a dict of one of these per output). Never raises: what cannot be read
    is "unknown"."""
    config = compile_config if isinstance(compile_config, dict) else {}
    optimizer = config.get("optimizer")
    optimizer_name = _plain_name(optimizer).replace("_", "") if optimizer is not None else "none"
    loss = _single(config.get("loss"))
    from_logits = False
    if isinstance(loss, dict) and isinstance(loss.get("config"), dict):
        from_logits = loss["config"].get("from_logits") is True
    metrics = config.get("metrics")
    metrics = _single(metrics) if isinstance(metrics, dict) and "class_name" not in metrics else metrics
    if metrics is None:
        metrics = []
    if not isinstance(metrics, list):
        metrics = [metrics]
    flat = []
    for metric in metrics[:50]:
        flat.extend(metric[:50] if isinstance(metric, list) else [metric])
    several = isinstance(loss, list) or (isinstance(loss, dict) and "class_name" not in loss)
    return {"optimizer": optimizer_name[:MAX_NAME], "loss": "several losses" if several else _plain_name(loss),
            "from_logits": from_logits, "metrics": [_plain_name(m) for m in flat[:50]]}
