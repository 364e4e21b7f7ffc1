"""Due dates: read from ``nbgrader_config.py`` (``c.CourseSchedule.due_dates``), written to
the gradebook, where nbgrader's late-submission check reads them.

``python -m coursekit.schedule`` (run from the course root; bin/setup and bin/demo do it).
"""

from __future__ import annotations

from pathlib import Path

from traitlets import Dict
from traitlets.config import Configurable
from traitlets.config.loader import PyFileConfigLoader


class CourseSchedule(Configurable):
    due_dates = Dict(help="assignment id -> due date, e.g. '2026-12-04 23:59:00 UTC'").tag(config=True)


def load_course_config(root: Path = Path(".")):
    return PyFileConfigLoader("nbgrader_config.py", path=str(root.resolve())).load_config()


def sync_due_dates(root: Path = Path(".")) -> dict[str, str]:
    from nbgrader.api import Gradebook

    config = load_course_config(root)
    schedule = CourseSchedule(config=config)
    db_url = config.CourseDirectory.db_url
    (root / "gradebook").mkdir(exist_ok=True)
    with Gradebook(db_url, config.CourseDirectory.course_id) as gb:
        for assignment, due in schedule.due_dates.items():
            gb.update_or_create_assignment(assignment, duedate=due)
    return dict(schedule.due_dates)


if __name__ == "__main__":
    for name, due in sync_due_dates().items():
        print(f"{name}: due {due}")
