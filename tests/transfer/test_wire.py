"""The data format between the student's kernel and the checker (coursekit/transfer/wire.py): every value
kind survives the trip, and hostile or malformed data is read as a clear UnreadableValue (or a
WireError for the whole message), never as code, a pickle, a crash or a hang."""

from __future__ import annotations

import json
import math
import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest

from coursekit.transfer import wire
from coursekit.student.checks import CheckFailed
from coursekit.student.values import (FigureData, HistoryData, ModelData, ObjectData, OpaqueValue,
                              UnreadableValue)


def send(tmp_path: Path, values: dict, message: str = "r1", **writer_options) -> wire.Writer:
    writer = wire.Writer(tmp_path / message, **writer_options)
    writer.write({"values": {name: writer.encode(value) for name, value in values.items()}, "missing": []})
    return writer


def receive(tmp_path: Path, names, message: str = "r1", function=None, cache=None) -> dict:
    base = wire.open_base(tmp_path)
    try:
        manifest, reader = wire.read_message(base, message, function, cache)
        try:
            return wire.decode_named(reader, manifest["values"], list(names))
        finally:
            reader.close()
    finally:
        os.close(base)


def write_manifest(tmp_path: Path, values: dict, message: str = "r1") -> Path:
    folder = tmp_path / message
    folder.mkdir(exist_ok=True)
    (folder / wire.MANIFEST).write_text(json.dumps({"version": wire.VERSION, "values": values, "missing": []}))
    return folder


def unreadable(value, *words) -> None:
    assert isinstance(value, UnreadableValue), value
    for word in words:
        assert word in value.reason, value.reason


# --- every kind survives the trip ---------------------------------------------------------------


def test_plain_values_arrays_and_records_round_trip(tmp_path):
    model = ModelData([("Flatten",), ("Dense", 3, "relu"), ("Dropout", 0.2), ("Dense", 2, "softmax")],
                      [[], [np.ones((4, 3), "float32"), np.zeros(3, "float32")], [], [np.ones((3, 2)), np.ones(2)]],
                      (None, 2, 2), (None, 2), True, {"optimizer": "adam", "loss": "mse", "metrics": ["accuracy"]},
                      fit_epochs=5, fit_steps=1875)
    values = {
        "none": None, "flag": True, "count": 7, "big": 10**40, "ratio": 0.25, "nan": math.nan, "text": "é\n",
        "items": [1, [2.5, "x"], (3, None)], "shape": (60000, 28, 28), "mapping": {"a": 1, 2: [3], (4, 5): "t"},
        "unique": {1, 2}, "frozen": frozenset({"a"}), "steps": range(0, 10, 3), "raw": b"\x00\xff",
        "images": np.arange(24, dtype=np.uint8).reshape(2, 3, 4), "fortran": np.asfortranarray(np.ones((3, 2))),
        "swapped": np.arange(5, dtype=">i4"), "names": np.array(["Bag", "Coat"]), "empty": np.zeros((0, 10)),
        "scalar": np.float32(0.5), "index": np.int64(3), "yes": np.bool_(True), "model": model,
        "history": HistoryData({"accuracy": [0.5, 0.6]}, {"epochs": 2}, [0, 1]),
        "figure": FigureData([{"image": np.eye(2), "bars": None, "xlabel": "Bag", "title": ""},
                              {"image": None, "bars": np.arange(3.0), "xlabel": "", "title": "t"}]),
        "object": ObjectData("_History", {"history": {"accuracy": [0.9]}}), "module": OpaqueValue("module tf"),
    }
    send(tmp_path, values)
    got = receive(tmp_path, values)
    for name in ("none", "flag", "count", "big", "ratio", "text", "items", "shape", "mapping", "unique", "frozen",
                 "steps", "raw"):
        assert got[name] == values[name] and type(got[name]) is type(values[name]), name
    assert math.isnan(got["nan"])
    assert type(got["items"][2]) is tuple
    for name in ("images", "fortran", "swapped", "names", "empty"):
        assert type(got[name]) is np.ndarray and got[name].dtype == values[name].dtype.newbyteorder("=")
        assert np.array_equal(got[name], values[name]), name
    assert type(got["scalar"]) is np.float32 and type(got["index"]) is np.int64 and type(got["yes"]) is np.bool_
    assert got["model"].layers == model.layers and got["model"].input_shape == (None, 2, 2)
    assert got["model"].compile_settings == model.compile_settings and got["model"].compiled is True
    assert got["model"].fit_epochs == 5 and got["model"].fit_steps == 1875
    assert all(np.array_equal(a, b) for ws, vs in zip(got["model"].weights, model.weights) for a, b in zip(ws, vs))
    assert got["history"].history == {"accuracy": [0.5, 0.6]} and got["history"].params == {"epochs": 2}
    assert np.array_equal(got["figure"].panels[0]["image"], np.eye(2)) and got["figure"].panels[1]["title"] == "t"
    assert got["object"].history == {"accuracy": [0.9]} and got["object"].type_name == "_History"
    with pytest.raises(AttributeError, match="_History"):
        got["object"].params
    assert isinstance(got["module"], OpaqueValue) and got["module"].type_name == "module tf"


def test_subclasses_travel_as_their_plain_kind(tmp_path):
    from collections import OrderedDict, namedtuple

    Shape = namedtuple("Shape", "n h w")
    send(tmp_path, {"shape": Shape(1, 2, 3), "ordered": OrderedDict(a=1), "matrix": np.ma.masked_array([1.0, 2.0])})
    got = receive(tmp_path, ["shape", "ordered", "matrix"])
    assert got["shape"] == (1, 2, 3) and type(got["shape"]) is tuple
    assert got["ordered"] == {"a": 1} and type(got["ordered"]) is dict
    assert type(got["matrix"]) is np.ndarray


def test_functions_become_what_the_receiver_makes_of_a_reference(tmp_path):
    send(tmp_path, {"relu": lambda x: x}, convert=lambda v, d: ("function", "f0") if callable(v) else None)
    got = receive(tmp_path, ["relu"], function=lambda name: f"proxy for {name}")
    assert got["relu"] == "proxy for f0"
    unreadable(receive(tmp_path, ["relu"])["relu"], "cannot be called")


def test_an_unchanged_large_array_is_written_once_and_read_back_from_the_first_message(tmp_path):
    big = np.arange(2 * wire.REUSE_MIN_BYTES // 8, dtype=np.float64)
    sent: dict = {}
    send(tmp_path, {"x": big}, "r1", sent=sent)
    send(tmp_path, {"y": big}, "r2", sent=sent)
    assert not list((tmp_path / "r2").glob("*.npy")), "the second message wrote the array again"
    cache = {}
    assert np.array_equal(receive(tmp_path, ["y"], "r2", cache=cache)["y"], big)
    big[0] = -1  # changed in place: written again
    send(tmp_path, {"y": big}, "r3", sent=sent)
    assert list((tmp_path / "r3").glob("*.npy"))


# --- what the writer refuses to send ------------------------------------------------------------


def test_writer_marks_values_it_cannot_send_as_unreadable(tmp_path, monkeypatch):
    monkeypatch.setattr(wire, "MAX_ARRAY_BYTES", 1000)
    looped: list = []
    looped.append(looped)
    deep: list = []
    for _ in range(wire.MAX_DEPTH + 5):
        deep = [deep]
    send(tmp_path, {"big": np.zeros(1000), "looped": looped, "deep": deep, "objects": np.array([None, 1]),
                    "huge_int": 10**400})
    got = receive(tmp_path, ["big", "looped", "deep", "objects", "huge_int"])
    unreadable(got["big"], "MB")
    unreadable(got["looped"], "contains itself")
    unreadable(got["deep"], "levels deep")
    assert isinstance(got["objects"], OpaqueValue) and "object" in got["objects"].type_name
    unreadable(got["huge_int"], "digits")


# --- hostile messages: the reader stays in control --------------------------------------------


def test_missing_or_malformed_manifest_is_a_wire_error(tmp_path):
    base = wire.open_base(tmp_path)
    try:
        with pytest.raises(wire.WireError, match="no answer"):
            wire.read_message(base, "r1")
        (tmp_path / "r1").mkdir()
        (tmp_path / "r1" / wire.MANIFEST).write_text("{not json")
        with pytest.raises(wire.WireError, match="not valid JSON"):
            wire.read_message(base, "r1")
        (tmp_path / "r1" / wire.MANIFEST).write_text("[" * 200_000 + "]" * 200_000)
        with pytest.raises(wire.WireError):
            wire.read_message(base, "r1")
        (tmp_path / "r1" / wire.MANIFEST).write_text(json.dumps({"version": 99, "values": {}}))
        with pytest.raises(wire.WireError, match="not a message"):
            wire.read_message(base, "r1")
        with pytest.raises(wire.WireError, match="bad message id"):
            wire.read_message(base, "../r1")
    finally:
        os.close(base)


def test_manifest_over_the_size_limit_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setattr(wire, "MAX_MANIFEST_BYTES", 1000)
    write_manifest(tmp_path, {"x": "a" * 5000})
    base = wire.open_base(tmp_path)
    try:
        with pytest.raises(wire.WireError, match="larger than"):
            wire.read_message(base, "r1")
    finally:
        os.close(base)


def test_message_folder_that_is_a_symlink_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    send(elsewhere, {"x": 1})
    (tmp_path / "r1").symlink_to(elsewhere / "r1")
    base = wire.open_base(tmp_path)
    try:
        with pytest.raises(wire.WireError, match="not a plain folder"):
            wire.read_message(base, "r1")
    finally:
        os.close(base)


HOSTILE_NODES = {
    "unknown kind": {"t": "exec", "code": "import os"},
    "dict claiming to be a model": {"t": "model", "layers": [["Dense", 10, "relu"]], "weights": []},
    "model with wrong weight shapes": {"t": "model", "type_name": "Sequential", "layers": [["Dense", 10, "relu"]],
                                       "weights": [[{"t": "array", "file": "a0.npy"}]], "input_shape": None,
                                       "output_shape": None, "compiled": True, "compile_settings": None},
    "model with malformed settings": {"t": "model", "type_name": "Sequential", "layers": [], "weights": [],
                                      "input_shape": [28], "output_shape": None, "compiled": True,
                                      "compile_settings": {"optimizer": 3}},
    "history that is not one": {"t": "history", "history": [1, 2], "params": {}, "epoch": []},
    "figure with a text image": {"t": "figure", "panels": [{"image": "pixels", "bars": None, "xlabel": "", "title": ""}]},
    "path traversal": {"t": "array", "file": "../../etc/passwd"},
    "reused path traversal": {"t": "array", "file": "r0/../a0.npy"},
    "missing array file": {"t": "array", "file": "a9.npy"},
    "scalar of object dtype": {"t": "scalar", "dtype": "object", "value": 1},
    "int8 out of range": {"t": "scalar", "dtype": "int8", "value": 1000},
    "unhashable key": {"t": "dict", "items": [[[1], 2]]},
    "range step zero": {"t": "range", "start": 0, "stop": 1, "step": 0},
    "too deep": json.loads("[" * 40 + "1" + "]" * 40),
    "huge integer": 10**301,
    "function without a receiver": {"t": "function", "name": "f0"},
}


@pytest.mark.parametrize("what", list(HOSTILE_NODES))
def test_hostile_value_is_unreadable_and_alone(tmp_path, what):
    folder = write_manifest(tmp_path, {"bad": HOSTILE_NODES[what], "good": [1, 2]})
    np.save(folder / "a0.npy", np.ones((3, 3)))
    got = receive(tmp_path, ["bad", "good"])
    unreadable(got["bad"])
    assert got["bad"].name == "bad"
    assert got["good"] == [1, 2]


def model_node(**fields) -> dict:
    return {"t": "model", "type_name": "Sequential", "layers": [["Flatten"]], "weights": [[]], "input_shape": None,
            "output_shape": None, "compiled": True, "compile_settings": None, **fields}


@pytest.mark.parametrize("fit_epochs", ["5", -1, 10**7, 10**299, True, 5.0, [5], {"t": "scalar", "dtype": "int64", "value": 5},
                                        {"t": "array", "file": "a0.npy"}])
def test_a_models_training_record_that_is_not_a_number_of_epochs_is_unreadable(tmp_path, fit_epochs):
    """The epochs a model's last fit ran come from the student's kernel: wrong-typed, negative or
    oversized, the model is unreadable and the check that reads it fails with the reason."""
    folder = write_manifest(tmp_path, {"mnist_model": model_node(fit_epochs=fit_epochs), "good": 1})
    np.save(folder / "a0.npy", np.array(5))
    got = receive(tmp_path, ["mnist_model", "good"])
    unreadable(got["mnist_model"], "last training record is not a number of epochs")
    assert got["good"] == 1
    from coursekit.student import checks

    with pytest.raises(CheckFailed, match="mnist_model could not be read from your notebook: .*number of epochs"):
        checks.expect_epochs(got["mnist_model"], 5, "mnist_model")


@pytest.mark.parametrize("fields, epochs", [({}, None), ({"fit_epochs": None}, None), ({"fit_epochs": 0}, 0),
                                            ({"fit_epochs": 5}, 5)])
def test_a_models_training_record_reads_as_the_epochs_of_its_last_fit(tmp_path, fields, epochs):
    write_manifest(tmp_path, {"model": model_node(**fields)})
    assert receive(tmp_path, ["model"])["model"].fit_epochs == epochs


@pytest.mark.parametrize("fit_steps", ["1875", -1, 10**9, 10**299, True, False, 1875.0, [1875], math.inf,
                                       {"t": "scalar", "dtype": "int64", "value": 1875}, {"t": "array", "file": "a0.npy"}])
def test_a_models_training_record_that_is_not_a_number_of_steps_is_unreadable(tmp_path, fit_steps):
    """The batches per epoch of a model's last fit come from the student's kernel too: wrong-typed,
    negative or oversized, the model is unreadable and the leakage check fails with the reason."""
    folder = write_manifest(tmp_path, {"mnist_model": model_node(fit_epochs=5, fit_steps=fit_steps), "good": 1})
    np.save(folder / "a0.npy", np.array(1875))
    got = receive(tmp_path, ["mnist_model", "good"])
    unreadable(got["mnist_model"], "last training record is not a number of steps per epoch")
    assert got["good"] == 1
    from coursekit.student import checks

    with pytest.raises(CheckFailed, match="mnist_model could not be read from your notebook: .*steps per epoch"):
        checks.expect_trained_on(got["mnist_model"], 60000, "mnist_model")


@pytest.mark.parametrize("fields, steps", [({}, None), ({"fit_steps": None}, None), ({"fit_steps": 0}, 0),
                                           ({"fit_steps": 1875}, 1875), ({"fit_steps": wire.MAX_STEPS}, wire.MAX_STEPS)])
def test_a_models_training_record_reads_as_the_steps_per_epoch_of_its_last_fit(tmp_path, fields, steps):
    write_manifest(tmp_path, {"model": model_node(**fields)})
    assert receive(tmp_path, ["model"])["model"].fit_steps == steps


def test_too_many_values_is_unreadable(tmp_path, monkeypatch):
    monkeypatch.setattr(wire, "MAX_NODES", 100)
    write_manifest(tmp_path, {"many": list(range(500))})
    unreadable(receive(tmp_path, ["many"])["many"], "more than 100")


def test_unreadable_value_fails_every_use_with_its_reason():
    value = UnreadableValue("model", "an array of 900 MB")
    for use in (lambda v: v.layers, lambda v: len(v), lambda v: v[0], lambda v: float(v), lambda v: v(1),
                lambda v: np.asarray(v), lambda v: v == 1, lambda v: list(v)):
        with pytest.raises(CheckFailed, match="model could not be read from your notebook: an array of 900 MB"):
            use(value)


# --- hostile array files ------------------------------------------------------------------------


def array_manifest(tmp_path: Path) -> Path:
    return write_manifest(tmp_path, {"x": {"t": "array", "file": "a0.npy"}})


def test_array_file_that_is_a_symlink_or_hard_link_is_refused(tmp_path):
    folder = array_manifest(tmp_path)
    secret = tmp_path / "secret.npy"
    np.save(secret, np.arange(3))
    (folder / "a0.npy").symlink_to(secret)
    unreadable(receive(tmp_path, ["x"])["x"], "not a plain file")
    (folder / "a0.npy").unlink()
    os.link(secret, folder / "a0.npy")
    unreadable(receive(tmp_path, ["x"])["x"], "not a plain file")


def test_array_file_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    folder = array_manifest(tmp_path)
    os.mkfifo(folder / "a0.npy")
    got = {}
    reader = threading.Thread(target=lambda: got.update(receive(tmp_path, ["x"])), daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "the reader blocked on a FIFO"
    unreadable(got["x"], "not a plain file")


def test_array_file_that_is_a_folder_is_refused(tmp_path):
    folder = array_manifest(tmp_path)
    (folder / "a0.npy").mkdir()
    unreadable(receive(tmp_path, ["x"])["x"])


def test_pickled_object_array_is_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    folder = array_manifest(tmp_path)
    np.save(folder / "a0.npy", np.array([Payload(), 1], dtype=object), allow_pickle=True)
    unreadable(receive(tmp_path, ["x"])["x"], "cannot be read")
    assert not marker.exists()
    # and a bare pickle renamed .npy
    (folder / "a0.npy").write_bytes(pickle.dumps(Payload()))
    unreadable(receive(tmp_path, ["x"])["x"], "not a .npy array")
    assert not marker.exists()


def npy_header(shape, dtype="<f8") -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def test_array_header_that_claims_more_than_the_file_holds_or_the_limit_is_refused(tmp_path):
    folder = array_manifest(tmp_path)
    (folder / "a0.npy").write_bytes(npy_header((10**6,)) + b"\0" * 80)
    unreadable(receive(tmp_path, ["x"])["x"], "size does not match")
    (folder / "a0.npy").write_bytes(npy_header((10**7, 10**4)))  # 800 GB claimed: never allocated
    unreadable(receive(tmp_path, ["x"])["x"], "the limit is")
    (folder / "a0.npy").write_bytes(npy_header((3,), "|O") + b"\0" * 24)
    unreadable(receive(tmp_path, ["x"])["x"], "cannot be read")
    (folder / "a0.npy").write_bytes(npy_header((3,), [("a", "<f8")]) + b"\0" * 24)
    unreadable(receive(tmp_path, ["x"])["x"])
    (folder / "a0.npy").write_bytes(b"\x93NUMPY\x01\x00" + b"\xff\xff" + b"{" * 100)
    unreadable(receive(tmp_path, ["x"])["x"], "not a .npy array")


def test_arrays_over_the_message_limit_are_unreadable(tmp_path, monkeypatch):
    monkeypatch.setattr(wire, "MAX_MESSAGE_BYTES", 1000)
    folder = write_manifest(tmp_path, {"a": {"t": "array", "file": "a0.npy"}, "b": [{"t": "array", "file": "a0.npy"}] * 3})
    np.save(folder / "a0.npy", np.zeros(50))
    got = receive(tmp_path, ["a", "b"])
    assert got["a"].shape == (50,)
    unreadable(got["b"], "more than")
