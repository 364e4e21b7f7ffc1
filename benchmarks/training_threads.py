"""TensorFlow threads and steps per execution for the tutorial model, side by side (issue 14).
results/training_threads.txt holds a recorded run.

    .venv/bin/python benchmarks/training_threads.py [--rounds 2]

Each configuration runs in a fresh Python (threads are fixed when TensorFlow starts), alternating,
--rounds times; medians. What one process does, seeded as the notebooks are: the tutorial's
model fitted for EPOCHS (5, the notebooks' count) epochs on MNIST's 60,000 training images
scaled to [0, 1] with validation_split=0.2 (F7's fit), then evaluated on the 60,000 training and 10,000 test images
(M4's two evaluates), then predicted on the 10,000 test images (M3's predict). Each phase is
timed with its first call's tracing included, as a notebook pays it. It prints the SHA-256 of
the trained weights: the same threads must give the same weights at any steps per execution,
and different threads are expected to differ (why the grading kernel fixes one: coursekit/execution/kernel.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

ONE_RUN = r"""
import hashlib, json, os, sys, time
import numpy as np, keras
sys.path.insert(0, {repo!r})
from coursekit.student.datasets import load_mnist
(x, y), (xt, yt) = load_mnist()
x, xt = x / 255.0, xt / 255.0
spe = int(os.environ["BENCH_SPE"])
keras.utils.set_random_seed(2026)
model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(),
                          keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], steps_per_execution=spe)
times = {{}}
t = time.perf_counter(); model.fit(x, y, epochs=5, validation_split=0.2, verbose=0); times["fit"] = time.perf_counter() - t
t = time.perf_counter(); model.evaluate(x, y, verbose=0); model.evaluate(xt, yt, verbose=0); times["evaluate"] = time.perf_counter() - t
t = time.perf_counter(); model.predict(xt, verbose=0); times["predict"] = time.perf_counter() - t
times["weights"] = hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()[:16]
print(json.dumps(times))
"""

CONFIGS = [(threads, spe) for threads in (2, 1) for spe in (1, 100)]


def run(threads: int, spe: int) -> dict:
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0", "BENCH_SPE": str(spe),
                        "TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", ONE_RUN.format(repo=str(REPO))], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"training threads benchmark: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start", flush=True)
    results = {config: [] for config in CONFIGS}
    for _ in range(args.rounds):
        for config in CONFIGS:
            results[config].append(run(*config))
    print(f"{'TF threads':>10} {'steps/exec':>10} {'fit (5 epochs, split 0.2)':>26} {'evaluate (70,000)':>18} "
          f"{'predict (10,000)':>17}  weights")
    for (threads, spe), runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("fit", "evaluate", "predict")}
        digests = sorted({r["weights"] for r in runs})
        print(f"{threads:>10} {spe:>10} {med['fit']:>24.2f} s {med['evaluate']:>16.2f} s {med['predict']:>15.2f} s  "
              f"{', '.join(digests)}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
