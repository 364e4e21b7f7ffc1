"""The accuracy thresholds in the hidden checks are the calibrated ones, and the recorded
calibration runs support them (every reference seed passes with margin, every misconception
run fails)."""

import re
import sys

import builder
from coursekit.core.course import REPO_ROOT
from coursekit.core.notebook import grade_id

sys.path.insert(0, str(REPO_ROOT / "calibration"))
import calibrate  # noqa: E402


def thresholds_in_notebooks() -> list[tuple[str, float, str]]:
    """(data set, threshold, grade_id) for every accuracy threshold in a hidden check."""
    found = []
    for nb in builder.source().values():
        for cell in nb.cells:
            source = cell.source
            # a call may go on over several lines (the student's preprocessing as a keyword)
            assigned = dict(re.findall(r"(\w+) = checks\.accuracy_on_test_set\(\w+, \"([\w-]+)\"", source))
            for target, value in re.findall(r"expect_at_least\((.+?), (0\.\d+),", source, flags=re.S):
                direct = re.search(r"accuracy_on_test_set\(\w+, \"([\w-]+)\"", target)
                dataset = direct.group(1) if direct else assigned.get(target.strip())
                found.append((dataset, float(value), grade_id(cell)))
    return found


def test_every_accuracy_threshold_is_the_calibrated_one():
    found = thresholds_in_notebooks()
    assert {gid for _, _, gid in found} == {"f7_train_hidden", "m3_train_hidden", "m5_compare_hidden"}
    for dataset, value, gid in found:
        assert dataset in calibrate.THRESHOLDS, f"{gid}: threshold not tied to a calibrated data set"
        assert value == calibrate.THRESHOLDS[dataset], f"{gid}: {value} but calibrated {calibrate.THRESHOLDS[dataset]}"


def test_recorded_runs_cover_twenty_seeds_and_every_misconception():
    runs = calibrate.read_runs()
    for dataset in calibrate.THRESHOLDS:
        reference_seeds = {r["seed"] for r in runs if r["dataset"] == dataset and r["variant"] == "reference"}
        assert len(reference_seeds) >= 20, f"{dataset}: {len(reference_seeds)} reference seeds"
        for variant in calibrate.VARIANTS:
            assert any(r["dataset"] == dataset and r["variant"] == variant for r in runs), (dataset, variant)


def test_recorded_runs_support_the_thresholds_and_results_md_is_current():
    text, ok = calibrate.summarise()
    assert ok, text
    assert (REPO_ROOT / "calibration" / "RESULTS.md").read_text() == text, "run calibration/calibrate.py --summary-only"


def test_summary_flags_a_threshold_that_a_misconception_clears(monkeypatch):
    monkeypatch.setitem(calibrate.THRESHOLDS, "mnist", 0.05)  # everything clears it
    text, ok = calibrate.summarise()
    assert not ok and "NOT CAUGHT" in text


def test_leakage_check_is_recorded_on_twenty_honest_seeds_and_on_leaking_fits():
    rows = calibrate.read_rows(calibrate.HELD_OUT)
    honest = [r for r in rows if r["variant"] == "reference"]
    leaking = [r for r in rows if r["variant"] == "test-set-in-training"]
    assert len({r["seed"] for r in honest}) >= 20 and len({r["seed"] for r in leaking}) >= 5
    assert {r["check"] for r in honest} == {"passes"}
    assert {r["check"] for r in leaking} == {"fails"}


def test_summary_flags_a_leak_the_check_misses(monkeypatch, tmp_path):
    table = tmp_path / "held_out.csv"
    table.write_text(calibrate.HELD_OUT.read_text().replace(",fails,", ",passes,", 1))
    monkeypatch.setattr(calibrate, "HELD_OUT", table)
    text, ok = calibrate.summarise()
    assert not ok and "NOT CAUGHT" in text


def test_m3_m5_leakage_check_is_recorded_on_twenty_honest_seeds_per_data_set_and_on_leaking_fits():
    rows = calibrate.read_rows(calibrate.TRAINED_ON)
    for dataset in calibrate.TRAINED_ON_DATASETS:
        mine = [r for r in rows if r["dataset"] == dataset]
        honest = [r for r in mine if r["variant"] == "reference"]
        assert len({r["seed"] for r in honest}) >= 20, dataset
        assert {r["check"] for r in mine if r["variant"] in calibrate.HONEST_VARIANTS} == {"passes"}, dataset
        for variant in set(calibrate.TRAINED_ON_VARIANTS) - calibrate.HONEST_VARIANTS - calibrate.KNOWN_GAPS:
            leaking = [r for r in mine if r["variant"] == variant]
            assert len({r["seed"] for r in leaking}) >= 5, (dataset, variant)
            assert {r["check"] for r in leaking} == {"fails"}, (dataset, variant)


def test_summary_flags_an_m3_m5_leak_the_check_misses_but_not_the_known_gap(monkeypatch, tmp_path):
    rows = calibrate.TRAINED_ON.read_text().splitlines(keepends=True)
    table = tmp_path / "trained_on.csv"
    monkeypatch.setattr(calibrate, "TRAINED_ON", table)
    table.write_text("".join(r.replace(",fails,", ",passes,") if ",test-set-in-training-batch-256," in r else r
                             for r in rows))
    assert calibrate.summarise()[1], "the known gap, passing, is recorded, not a failure"
    table.write_text("".join(r.replace(",fails,", ",passes,") if ",test-set-only," in r else r for r in rows))
    text, ok = calibrate.summarise()
    assert not ok and "NOT CAUGHT" in text
