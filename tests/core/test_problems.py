"""coursekit.core.problems: one list of problem kinds, each with the words students and TAs read."""

from __future__ import annotations

import pytest

from coursekit.core import problems


def test_every_kind_has_a_label_and_the_report_kinds_are_never_recorded(tmp_path):
    assert all(kind.label and kind.meaning for kind in problems.KINDS.values())
    assert problems.label("late") == "Late submission" and problems.label("from-an-old-run") == "from-an-old-run"
    problems.record(tmp_path, "timeout", "fashion_mnist", "f4_functions", "stopped")
    problems.record(tmp_path, "timeout", "fashion_mnist", "f4_functions", "stopped")  # once only
    assert problems.load(tmp_path) == [{"kind": "timeout", "notebook": "fashion_mnist", "cell": "f4_functions",
                                        "message": "stopped"}]
    for kind in ("errors-in-answers", "not-autograded", "no-such-kind"):
        with pytest.raises(ValueError, match="unknown problem kind"):
            problems.record(tmp_path, kind, None, None, "x")
