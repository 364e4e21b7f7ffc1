"""Due dates: read from ``nbgrader_config.py`` (``c.CourseSchedule.due_dates``), written to
the gradebook, where nbgrader's late-submission check reads them.

``python -m coursekit.schedule`` (run from the course root; bin/setup and bin/demo do it).
"""

from __future__ import annotations

from coursekit.layout import CourseLayout


def sync_due_dates(layout: CourseLayout) -> dict[str, str]:
    """Write the due dates of ``layout``'s config into its gradebook; return them."""
    due_dates = layout.due_dates
    if layout.gradebook_path is not None:
        layout.gradebook_path.parent.mkdir(parents=True, exist_ok=True)
    with layout.gradebook() as gb:
        for assignment, due in due_dates.items():
            gb.update_or_create_assignment(assignment, duedate=due)
    return due_dates


if __name__ == "__main__":
    for name, due in sync_due_dates(CourseLayout.load()).items():
        print(f"{name}: due {due}")
