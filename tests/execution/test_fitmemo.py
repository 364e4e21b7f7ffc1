"""The exact memo of seeded fits (coursekit/execution/fitmemo.py): served only for identical inputs, bit
for bit what training gives, and written only by trusted runs.

Each fit runs in a fresh Python process (the grading kernel's environment: one TensorFlow thread,
oneDNN off) on a small seeded tutorial-like model, so that "identical" means identical across
processes, as between the trusted build and a student's grading kernel."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coursekit.execution import fitmemo, sandbox
from coursekit.grading import fitmemo_build
from coursekit.execution.kernel import KERNEL_ENV

# Trains the model for each configuration in argv[1] (a JSON list of variations of BASE) and
# prints, per configuration, what the memo did and everything a notebook could observe after.
FIT_SCRIPT = r'''
import hashlib, json, os, random, sys
import numpy as np
import keras, tensorflow as tf
from coursekit.execution import fastfit, fitmemo
fastfit.install()
outcomes = []
_serve, _train = fitmemo.serve, None
def serve(*a, **k):
    outcomes.append("served"); return _serve(*a, **k)
fitmemo.serve = serve
BASE = dict(seed=7, epochs=2, batch_size=32, lr=0.001, flip_byte=False, bump_weight=False,
            validation_split=0.2, shuffle=True, fastfit="", verbose=2, callbacks=False)
def digest(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]
def one(v):
    c = dict(BASE, **v)
    os.environ["COURSEKIT_FASTFIT"] = c["fastfit"]
    keras.backend.clear_session()  # names (and their variables' paths) as in a fresh process
    keras.utils.set_random_seed(c["seed"])
    data = np.random.default_rng(0)
    x = data.integers(0, 256, size=(600, 28, 28)).astype("uint8")
    y = data.integers(0, 10, size=600).astype("int64")
    if c["flip_byte"]:
        x[123, 4, 5] ^= 1
    x = x / 255.0
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(name="flat"),
                              keras.layers.Dense(32, activation="relu", name="hidden"),
                              keras.layers.Dropout(0.2, name="drop"),
                              keras.layers.Dense(10, activation="softmax", name="out")], name="tutorial")
    if c["bump_weight"]:
        w = model.layers[1].kernel.numpy(); w[0, 0] = np.nextafter(w[0, 0], np.float32(1)); model.layers[1].kernel.assign(w)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=c["lr"]),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    before = len(outcomes)
    callbacks = [keras.callbacks.EarlyStopping(monitor="loss", patience=5)] if c["callbacks"] else None
    history = model.fit(x, y, epochs=c["epochs"], batch_size=c["batch_size"], shuffle=c["shuffle"],
                        validation_split=c["validation_split"], verbose=c["verbose"], callbacks=callbacks)
    observed = {
        "outcome": "served" if len(outcomes) > before else "trained",
        "model": [[v.path, digest(v.numpy())] for v in model.variables],
        "optimizer": [[v.path, digest(v.numpy())] for v in model.optimizer.variables],
        "metrics": [[v.path, digest(v.numpy())] for v in model.metrics_variables],
        "metrics_names": model.metrics_names, "history_is_model_history": history is model.history,
        "history": history.history, "epoch": history.epoch, "params": history.params,
        "evaluate": model.evaluate(x[:200], y[:200], verbose=0),
        "predict": digest(model.predict(x[:50], verbose=0)),
        "python_random": random.random(), "numpy_random": float(np.random.rand()),
        "tf_random": tf.random.uniform([3]).numpy().tolist(), "keras_random": keras.random.uniform([2]).numpy().tolist(),
        "dataset_shuffle": list(tf.data.Dataset.range(8).shuffle(8).as_numpy_iterator()),
    }
    fastfit.uninstall(); fastfit.install()
    return observed
print("RESULT " + json.dumps([one(v) for v in json.loads(sys.argv[1])], default=str))
'''


def run_fits(tmp_path: Path, variations: list[dict], *, store: Path, record: Path | None = None,
             memo: str = "", threads: str = "1") -> list[dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COURSEKIT_FITMEMO")}
    env.update(KERNEL_ENV)
    env.update({"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads,
                fitmemo.STORE_ENV: str(store), fitmemo.ENV: memo})
    if record is not None:
        env[fitmemo.RECORD_ENV] = str(record)
    script = tmp_path / "fits.py"
    script.write_text(FIT_SCRIPT)
    done = subprocess.run([sys.executable, "-P", str(script), json.dumps(variations)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def build_store(tmp_path: Path, variations: list[dict]) -> Path:
    """A store holding the entries of a (trusted) run of ``variations``."""
    staging, store = tmp_path / "staging", tmp_path / "store"
    staging.mkdir(exist_ok=True)
    recorded = run_fits(tmp_path, variations, store=store, record=staging)
    assert all(r["outcome"] == "trained" for r in recorded)
    assert len(fitmemo_build.promote(staging, store)) == len(variations)
    return store


def observable(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "outcome"}


@pytest.mark.slow
def test_a_served_fit_leaves_exactly_what_the_real_fit_leaves_in_a_fresh_process(tmp_path):
    store = build_store(tmp_path, [{}])
    (real,) = run_fits(tmp_path, [{}], store=store, memo="0")  # memo off: trains, in another process
    (served,) = run_fits(tmp_path, [{}], store=store)
    assert real["outcome"] == "trained" and served["outcome"] == "served"
    assert observable(served) == observable(real)  # weights, optimizer, metrics, history, random state after


@pytest.mark.slow
def test_any_changed_input_trains_and_is_never_served(tmp_path):
    store = build_store(tmp_path, [{}])
    changed = [{"seed": 8}, {"flip_byte": True}, {"epochs": 3}, {"batch_size": 64}, {"bump_weight": True},
               {"lr": 0.002}, {"validation_split": 0.25}, {"shuffle": False}, {"fastfit": "0"},
               {"verbose": 0}, {"callbacks": True}]
    results = run_fits(tmp_path, [{}, *changed, {}], store=store)
    outcomes = [r["outcome"] for r in results]
    # the unchanged fit is served before and after the others (so a miss is the changed input's doing)
    assert outcomes == ["served", *["trained"] * len(changed), "served"], list(zip([{}, *changed, {}], outcomes))
    # and each changed fit trained for real: its results are its own, not the stored ones
    assert all(r["model"] != results[0]["model"] for r in results[1:9])  # the ones that change the weights
    (two_threads,) = run_fits(tmp_path, [{}], store=store, threads="2")
    assert two_threads["outcome"] == "trained"


def test_a_damaged_or_foreign_entry_is_not_opened():
    key, other = hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()
    blob = fitmemo.seal(key, b"final weights")
    assert fitmemo.unseal(key, blob) == b"final weights"
    assert b"final weights" not in blob  # the store tells nothing to whoever lacks the inputs
    assert fitmemo.unseal(other, blob) is None
    damaged = bytearray(blob)
    damaged[-1] ^= 1
    assert fitmemo.unseal(key, bytes(damaged)) is None
    assert fitmemo.entry_name(key) != fitmemo.entry_name(other)


POISON = r'''
import os, sys
store = sys.argv[1]
done = []
for what, act in [
    ("add", lambda: open(os.path.join(store, "0" * 64 + ".fitmemo"), "wb").write(b"forged")),
    ("overwrite", lambda: open(os.path.join(store, sys.argv[2]), "r+b").write(b"forged")),
    ("remove", lambda: os.remove(os.path.join(store, sys.argv[2]))),
    ("chmod", lambda: os.chmod(store, 0o777)),
]:
    try:
        act(); done.append(what)
    except OSError:
        pass
print("POISONED " + ",".join(done))
'''


def _store_snapshot(store: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mode) for p in store.iterdir()} | {".": store.stat().st_mode}


@pytest.mark.parametrize("sandboxed", [False, True], ids=["no-sandbox", "sandbox"])
def test_a_student_kernel_cannot_write_the_memo_store(tmp_path, monkeypatch, capfd, sandboxed):
    """The store is where every grading sandbox finds it (the datasets' cache, mounted read-only):
    without the sandbox student code adds, overwrites and removes entries; with it, nothing changes."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("COURSEKIT_CACHE_DIR", str(cache))
    monkeypatch.delenv(fitmemo.STORE_ENV, raising=False)
    store = fitmemo.store_dir()
    assert store == cache / "fitmemo"
    key = hashlib.sha256(b"inputs").digest()
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / fitmemo.entry_name(key)).write_bytes(fitmemo.seal(key, b"trusted"))
    fitmemo_build.promote(staging, store)
    before = _store_snapshot(store)
    script = tmp_path / "poison.py"
    script.write_text(POISON)
    command = [sys.executable, "-P", "-c", POISON, str(store), fitmemo.entry_name(key)]
    if sandboxed:
        box = sandbox.Sandbox(command, sandbox.Settings(), cwd=None)
        assert box.run(box.prepare()) == 0
        out = capfd.readouterr().out
    else:
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    poisoned = out.split("POISONED ")[-1].split()
    if sandboxed:
        assert poisoned == [] and _store_snapshot(store) == before
        assert fitmemo.lookup(key, store) == b"trusted"
    else:
        assert poisoned == ["add,overwrite,remove,chmod"] and _store_snapshot(store) != before
