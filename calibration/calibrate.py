"""Calibrate the accuracy thresholds of the hidden checks against TensorFlow's randomness.

Trains the reference solution (exactly as the notebooks do: the tutorial's model, adam,
sparse categorical cross-entropy, EPOCHS epochs) under many seeds, and the same recipe with
each named misconception, and measures every model with the function the hidden checks use,
``coursekit.student.checks.accuracy_on_test_set`` (the model's own weights, the course's copy of the
test set scaled to [0, 1]). Writes

- ``calibration/runs.csv``: one row per training run (resumable: runs already there are skipped);
- ``calibration/held_out.csv``: F7's fit, honest (20 seeds) and with the test images shuffled in,
  and what F7's leakage check says of each (resumable too);
- ``calibration/trained_on.csv``: M3's and M5's fit (no validation split), honest (20 seeds per
  data set) and leaking, and what their leakage check (``checks.expect_trained_on``) says of each;
- ``calibration/RESULTS.md``: the table per variant, and whether each threshold passes every
  reference seed with margin and fails every misconception run.

    .venv/bin/python calibration/calibrate.py                 # 20 reference seeds, 5 per misconception
    .venv/bin/python calibration/calibrate.py --seeds 30 --misconception-seeds 10

The thresholds below must equal the ones in the hidden test cells of source/week2/*.ipynb;
tests/notebooks/test_calibration.py checks that they do, and that RESULTS.md supports them.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # as in the grading kernel

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs.csv"
RESULTS = HERE / "RESULTS.md"
EPOCHS = 5

# Thresholds used by the hidden checks (F7 and M5 for Fashion-MNIST, M3 for MNIST).
THRESHOLDS = {"fashion-mnist": 0.82, "mnist": 0.95}
# The reference run with the lowest accuracy must clear its threshold by at least this much.
REQUIRED_MARGIN = 0.01

# variant -> (description, how the notebooks' recipe is changed)
VARIANTS = {
    "reference": "the solution: pixels / 255, softmax output, sparse categorical cross-entropy",
    "pixels-not-scaled": "trained on raw 0..255 pixels (misconception: no scaling)",
    "no-softmax-output": "last layer Dense(10) with no activation, loss unchanged (misconception)",
    "wrong-loss-categorical": "loss='categorical_crossentropy' on integer labels (misconception: wrong loss;"
                              " Keras refuses the label shape, so fit raises and the model stays untrained,"
                              " which is the model the check then measures)",
}
# Fashion-MNIST: F7 trains with validation_split=0.2; M5 trains on all 60000 images.
FIELDS = ["dataset", "variant", "validation_split", "seed", "test_accuracy", "seconds"]

# F7's leakage check (checks.expect_validation_held_out) on honest fits and on leaking ones.
HELD_OUT = HERE / "held_out.csv"
LEAK_VARIANTS = {
    "reference": "the solution's fit: the 60,000 training images / 255, validation_split=0.2",
    "test-set-in-training": "training and test images shuffled together, then validation_split=0.2 "
                            "(misconception: data leakage)",
}
HELD_OUT_FIELDS = ["variant", "seed", "steps", "val_accuracy", "held_out_accuracy", "test_accuracy", "check",
                   "seconds"]


def train_and_measure(dataset: str, variant: str, seed: int, validation_split: float) -> float:
    import tensorflow as tf

    from coursekit.student import checks
    from coursekit.student.datasets import load

    checks.seed_everything(seed)
    (x_train, y_train), _ = load(dataset)
    images = x_train if variant == "pixels-not-scaled" else x_train / 255.0
    output_activation = None if variant == "no-softmax-output" else "softmax"
    loss = "categorical_crossentropy" if variant == "wrong-loss-categorical" else "sparse_categorical_crossentropy"
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(28, 28)),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(128, activation="relu"),
        tf.keras.layers.Dense(10, activation=output_activation),
    ])
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    try:
        model.fit(images, y_train, epochs=EPOCHS, validation_split=validation_split, verbose=0)
    except ValueError as err:  # what a student's fit cell would raise; the check sees the model as it is
        print(f"  fit raised {type(err).__name__}: {str(err).splitlines()[0][:120]}", flush=True)
    return checks.accuracy_on_test_set(model, dataset)


def compiled_as_graded():
    """The solution's model, compiled as the grading kernel compiles it (coursekit/execution/fastfit.py:
    steps_per_execution=100, which trains the same weights)."""
    import tensorflow as tf

    model = tf.keras.Sequential([
        tf.keras.Input(shape=(28, 28)),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(128, activation="relu"),
        tf.keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=100)
    return model


def with_test_images_shuffled_in(images, labels, x_test, y_test, seed: int):
    """The leak: the training images with the test images / 255 appended, shuffled together."""
    import numpy as np

    images, labels = np.concatenate([images, x_test / 255.0]), np.concatenate([labels, y_test])
    order = np.random.default_rng(seed).permutation(len(labels))
    return images[order], labels[order]


def fit_for_leakage(variant: str, seed: int) -> dict:
    """F7's fit, honest or leaking, and what the leakage check says of it. Fitted with
    steps_per_execution=100, as the grading kernel fits it (coursekit/execution/fastfit.py)."""

    from coursekit.student import checks
    from coursekit.student.datasets import load

    checks.seed_everything(seed)
    (x_train, y_train), (x_test, y_test) = load("fashion-mnist")
    images, labels = x_train / 255.0, y_train
    if variant == "test-set-in-training":
        images, labels = with_test_images_shuffled_in(images, labels, x_test, y_test, seed)
    model = compiled_as_graded()
    history = model.fit(images, labels, epochs=EPOCHS, validation_split=0.2, verbose=0)
    try:
        checks.expect_validation_held_out(model, history, x_train / 255.0, y_train)
        verdict = "passes"
    except checks.CheckFailed:
        verdict = "fails"
    held, _ = checks.held_out_gap(model, history.history["val_accuracy"][-1], x_train / 255.0, y_train)
    return {"steps": history.params.get("steps"), "val_accuracy": f"{history.history['val_accuracy'][-1]:.4f}",
            "held_out_accuracy": f"{held:.4f}", "test_accuracy": f"{checks.accuracy_on_test_set(model, 'fashion-mnist'):.4f}",
            "check": verdict}


def run_leakage(seeds: int, misconception_seeds: int) -> None:
    done = {(r["variant"], int(r["seed"])) for r in read_rows(HELD_OUT)}
    todo = [(v, s) for v in LEAK_VARIANTS for s in range(seeds if v == "reference" else misconception_seeds)
            if (v, s) not in done]
    new_file = not HELD_OUT.exists()
    with open(HELD_OUT, "a", newline="") as f:
        writer = csv.DictWriter(f, HELD_OUT_FIELDS)
        if new_file:
            writer.writeheader()
        for n, (variant, seed) in enumerate(todo, 1):
            start = time.perf_counter()
            row = fit_for_leakage(variant, seed)
            writer.writerow({"variant": variant, "seed": seed, **row, "seconds": f"{time.perf_counter() - start:.1f}"})
            f.flush()
            print(f"[{n}/{len(todo)}] leakage {variant} seed={seed}: {row}", flush=True)


# M3's and M5's leakage check (checks.expect_trained_on) on honest fits and on leaking ones.
TRAINED_ON = HERE / "trained_on.csv"
TRAINED_ON_DATASETS = {"mnist": "M3", "fashion-mnist": "M5"}
TRAINED_ON_VARIANTS = {
    "reference": "the solution's fit: the 60,000 training images / 255, batch 32, no validation split",
    "validation-split-0.1": "the solution's fit with validation_split=0.1 added (not asked for, not leakage: "
                            "1,688 steps, which 60,000 images make at no batch size)",
    "test-set-in-training": "training and test images shuffled together, batch 32 (misconception: data leakage)",
    "test-set-only": "the 10,000 test images alone, batch 32: 313 steps, as many as 60,000 images make in "
                     "batches of 192 (misconception: data leakage)",
    "test-set-in-training-batch-256": "training and test images together in batches of 256: 274 steps, as many "
                                      "as 60,000 images make in batches of 219 (the known gap: README)",
}
# Honest fits besides the reference, which must pass; leaks the check is not expected to catch,
# recorded so that the gap is measured, not assumed.
HONEST_VARIANTS = {"reference", "validation-split-0.1"}
KNOWN_GAPS = {"test-set-in-training-batch-256"}
TRAINED_ON_FIELDS = ["dataset", "variant", "seed", "steps", "train_accuracy", "test_accuracy", "check", "seconds"]


def fit_for_trained_on(dataset: str, variant: str, seed: int) -> dict:
    """M3's (MNIST) or M5's (Fashion-MNIST) fit, honest or leaking, and what their leakage check
    says of it; fitted with steps_per_execution=100, as the grading kernel fits it."""

    from coursekit.student import checks
    from coursekit.student.datasets import load

    checks.seed_everything(seed)
    (x_train, y_train), (x_test, y_test) = load(dataset)
    images, labels, batch = x_train / 255.0, y_train, 32
    split = 0.1 if variant == "validation-split-0.1" else 0.0
    if variant.startswith("test-set-in-training"):
        images, labels = with_test_images_shuffled_in(images, labels, x_test, y_test, seed)
        batch = 256 if variant.endswith("batch-256") else 32
    elif variant == "test-set-only":
        images, labels = x_test / 255.0, y_test
    model = compiled_as_graded()
    history = model.fit(images, labels, epochs=EPOCHS, batch_size=batch, validation_split=split, verbose=0)
    try:
        checks.expect_trained_on(model, 60000, "model", dataset=dataset)
        verdict = "passes"
    except checks.CheckFailed:
        verdict = "fails"
    data = checks.model_data(model)
    return {"steps": history.params.get("steps"),
            "train_accuracy": f"{checks._accuracy_in_chunks(data, x_train, y_train):.4f}",
            "test_accuracy": f"{checks._accuracy_in_chunks(data, x_test, y_test):.4f}", "check": verdict}


def run_trained_on(seeds: int, misconception_seeds: int) -> None:
    done = {(r["dataset"], r["variant"], int(r["seed"])) for r in read_rows(TRAINED_ON)}
    todo = [(d, v, s) for d in TRAINED_ON_DATASETS for v in TRAINED_ON_VARIANTS
            for s in range(seeds if v == "reference" else misconception_seeds) if (d, v, s) not in done]
    new_file = not TRAINED_ON.exists()
    with open(TRAINED_ON, "a", newline="") as f:
        writer = csv.DictWriter(f, TRAINED_ON_FIELDS)
        if new_file:
            writer.writeheader()
        for n, (dataset, variant, seed) in enumerate(todo, 1):
            start = time.perf_counter()
            row = fit_for_trained_on(dataset, variant, seed)
            writer.writerow({"dataset": dataset, "variant": variant, "seed": seed, **row,
                             "seconds": f"{time.perf_counter() - start:.1f}"})
            f.flush()
            print(f"[{n}/{len(todo)}] trained-on {dataset} {variant} seed={seed}: {row}", flush=True)


def summarise_trained_on() -> tuple[list[str], bool]:
    from coursekit.student import checks

    rows = read_rows(TRAINED_ON)
    lines = ["", "## M3's and M5's leakage check", "",
             "`checks.expect_trained_on` on M3's fit (MNIST) and M5's (Fashion-MNIST), which the questions ask",
             "on all 60,000 training images: each epoch a whole number of batches of them (or of the part a",
             "common validation split leaves), and the model not more accurate on the test images than on the",
             "training images by more than",
             f"{checks.TEST_ABOVE_TRAIN_TOLERANCE} (`TEST_ABOVE_TRAIN_TOLERANCE`). Rows from `calibration/trained_on.csv`.",
             "", "| data set | variant | runs | steps per epoch | test - train accuracy, min | max | check | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    ok = bool(rows)
    for dataset in TRAINED_ON_DATASETS:
        for variant in TRAINED_ON_VARIANTS:
            mine = [r for r in rows if r["dataset"] == dataset and r["variant"] == variant]
            if not mine:
                lines.append(f"| {dataset} | {variant} | 0 | | | | | NO RUNS |")
                ok = False
                continue
            gaps = [float(r["test_accuracy"]) - float(r["train_accuracy"]) for r in mine]
            checks_said = {r["check"] for r in mine}
            if variant in HONEST_VARIANTS:
                good = checks_said == {"passes"}
                verdict = (f"passes every run, largest gap {checks.TEST_ABOVE_TRAIN_TOLERANCE - max(gaps):+.4f} "
                           "below the tolerance" if good else "FAILS an honest run")
            elif variant in KNOWN_GAPS:
                good = True
                verdict = "caught in every run" if checks_said == {"fails"} else "not caught: the known gap"
            else:
                good = checks_said == {"fails"}
                verdict = "caught in every run" if good else "NOT CAUGHT"
            ok &= good
            steps = sorted({r["steps"] for r in mine})
            lines.append(f"| {dataset} | {variant} | {len(mine)} | {', '.join(steps)} | {min(gaps):+.4f} | "
                         f"{max(gaps):+.4f} | {', '.join(sorted(checks_said))} | {verdict} |")
    lines += ["", "Variants:", ""] + [f"- `{v}`: {d}" for v, d in TRAINED_ON_VARIANTS.items()]
    return lines, ok


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def summarise_leakage(honest_best: float) -> tuple[list[str], bool]:
    rows = read_rows(HELD_OUT)
    lines = ["", "## F7's leakage check", "",
             "`checks.expect_validation_held_out` on F7's fit (Fashion-MNIST, validation_split=0.2): the epochs",
             "ran over 48,000 images, and the last `val_accuracy` is the model's accuracy on the last 12,000",
             f"training images (tolerance {_held_out_tolerance()}). Rows from `calibration/held_out.csv`.", "",
             "| variant | runs | steps per epoch | largest gap val/held-out | test accuracy max | check | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    ok = bool(rows)
    honest_best = max([honest_best] + [float(r["test_accuracy"]) for r in rows if r["variant"] == "reference"])
    for variant in LEAK_VARIANTS:
        mine = [r for r in rows if r["variant"] == variant]
        if not mine:
            lines.append(f"| {variant} | 0 | | | | | NO RUNS |")
            ok = False
            continue
        gaps = [abs(float(r["val_accuracy"]) - float(r["held_out_accuracy"])) for r in mine]
        checks_said = {r["check"] for r in mine}
        best = max(float(r["test_accuracy"]) for r in mine)
        worst = min(float(r["test_accuracy"]) for r in mine)
        if variant == "reference":
            good = checks_said == {"passes"}
            verdict = "passes every run" if good else "FAILS an honest run"
        else:
            good = checks_said == {"fails"}
            verdict = "caught in every run" if good else "NOT CAUGHT"
            verdict += (f"; every one's test accuracy above every honest run's ({worst:.4f} > {honest_best:.4f})"
                        if worst > honest_best else "")
        ok &= good
        steps = sorted({r["steps"] for r in mine})
        lines.append(f"| {variant} | {len(mine)} | {', '.join(steps)} | {max(gaps):.4f} | {best:.4f} | "
                     f"{', '.join(sorted(checks_said))} | {verdict} |")
    lines += ["", "Variants:", ""] + [f"- `{v}`: {d}" for v, d in LEAK_VARIANTS.items()]
    return lines, ok


def _held_out_tolerance() -> float:
    from coursekit.student import checks

    return checks.HELD_OUT_TOLERANCE


def planned_runs(seeds: int, misconception_seeds: int) -> list[tuple[str, str, float, int]]:
    runs = []
    for dataset, splits in (("fashion-mnist", (0.2, 0.0)), ("mnist", (0.0,))):
        for split in splits:
            count = seeds if split == splits[0] else max(5, misconception_seeds)
            runs += [(dataset, "reference", split, s) for s in range(count)]
        for variant in VARIANTS:
            if variant != "reference":
                runs += [(dataset, variant, splits[0], s) for s in range(misconception_seeds)]
    return runs


def read_runs() -> list[dict]:
    return read_rows(RUNS)


def key(row) -> tuple:
    return (row["dataset"], row["variant"], float(row["validation_split"]), int(row["seed"]))


def run(seeds: int, misconception_seeds: int) -> None:
    done = {key(r) for r in read_runs()}
    todo = [r for r in planned_runs(seeds, misconception_seeds) if r not in done]
    new_file = not RUNS.exists()
    with open(RUNS, "a", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        if new_file:
            writer.writeheader()
        for n, (dataset, variant, split, seed) in enumerate(todo, 1):
            start = time.perf_counter()
            acc = train_and_measure(dataset, variant, seed, split)
            seconds = time.perf_counter() - start
            writer.writerow({"dataset": dataset, "variant": variant, "validation_split": split,
                             "seed": seed, "test_accuracy": f"{acc:.4f}", "seconds": f"{seconds:.1f}"})
            f.flush()
            print(f"[{n}/{len(todo)}] {dataset} {variant} split={split} seed={seed}: {acc:.4f} ({seconds:.0f} s)",
                  flush=True)


def summarise() -> tuple[str, bool]:
    rows = read_runs()
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["variant"], float(r["validation_split"])), []).append(float(r["test_accuracy"]))
    lines = [
        "# Calibration of the accuracy thresholds",
        "",
        f"Generated by `calibration/calibrate.py` from `calibration/runs.csv` ({len(rows)} training runs,",
        f"{EPOCHS} epochs each, TensorFlow {_tf_version()}, CPU). Accuracy is measured the way the hidden",
        "checks measure it: `checks.accuracy_on_test_set` (own forward pass from the model's weights on",
        "the course's copy of the test set, pixels / 255).",
        "",
        "| data set | variant | validation split | runs | min | mean | max | threshold | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    ok = True
    for (dataset, variant, split), accs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "reference", kv[0][1], kv[0][2])):
        threshold = THRESHOLDS[dataset]
        if variant == "reference":
            verdict_ok = min(accs) >= threshold + REQUIRED_MARGIN
            verdict = f"passes all, margin {min(accs) - threshold:+.4f}" if verdict_ok else "FAILS: threshold too high"
        else:
            verdict_ok = max(accs) < threshold
            verdict = f"fails all, gap {threshold - max(accs):+.4f}" if verdict_ok else "NOT CAUGHT by the threshold"
        ok &= verdict_ok
        lines.append(f"| {dataset} | {variant} | {split:g} | {len(accs)} | {min(accs):.4f} | "
                     f"{statistics.mean(accs):.4f} | {max(accs):.4f} | {threshold:.2f} | {verdict} |")
    lines += ["", "Variants:", ""] + [f"- `{v}`: {d}" for v, d in VARIANTS.items()]
    lines += ["", f"Required margin for the reference runs: {REQUIRED_MARGIN}."]
    honest = [float(r["test_accuracy"]) for r in rows if r["dataset"] == "fashion-mnist" and r["variant"] == "reference"]
    leakage, leakage_ok = summarise_leakage(max(honest, default=0.0))
    lines += leakage
    trained_on, trained_on_ok = summarise_trained_on()
    lines += trained_on
    good = ok and leakage_ok and trained_on_ok
    lines += ["", f"Overall: {'every threshold passes every reference run and fails every misconception run; the leakage checks pass every honest fit and catch every leaking one but the known gap' if good else 'RECALIBRATE'}."]
    return "\n".join(lines) + "\n", good


def _tf_version() -> str:
    try:
        import tensorflow as tf

        return tf.__version__
    except ImportError:  # pragma: no cover
        return "?"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="reference seeds per data set")
    parser.add_argument("--misconception-seeds", type=int, default=5, help="seeds per misconception")
    parser.add_argument("--summary-only", action="store_true", help="rewrite RESULTS.md from runs.csv")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    if not args.summary_only:
        run(args.seeds, args.misconception_seeds)
        run_leakage(args.seeds, args.misconception_seeds)
        run_trained_on(args.seeds, args.misconception_seeds)
    text, ok = summarise()
    RESULTS.write_text(text)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
