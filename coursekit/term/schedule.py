"""Due dates: read from ``nbgrader_config.py`` (``c.CourseSchedule.due_dates``), written to
the gradebook, where nbgrader's late-submission check reads them.

``coursekit schedule`` (or ``python -m coursekit.term.schedule``, which bin/setup and bin/demo run from
the course root; ``--course`` for another folder). ``--help`` only prints.
"""

from __future__ import annotations

import argparse
import sys

from coursekit.core.layout import CourseLayout


def sync_due_dates(layout: CourseLayout, only: str | None = None) -> dict[str, str]:
    """Write the due dates of ``layout``'s config (or only ``only``'s) into its gradebook; return them."""
    due_dates = {name: due for name, due in layout.due_dates.items() if only in (None, name)}
    if layout.gradebook_path is not None:
        layout.gradebook_path.parent.mkdir(parents=True, exist_ok=True)
    with layout.gradebook() as gb:
        for assignment, due in due_dates.items():
            gb.update_or_create_assignment(assignment, duedate=due)
    return due_dates


def main(argv: list[str] | None = None) -> int:
    """The old entry point: argparse (so that ``--help`` prints and exits before anything is
    written), then the same code as ``coursekit schedule``."""
    parser = argparse.ArgumentParser(prog="python -m coursekit.term.schedule",
                                     description="Write the due dates of nbgrader_config.py into the gradebook "
                                                 "(same as `coursekit schedule`).")
    parser.add_argument("--course", help="the course's root folder (default: the folder with nbgrader_config.py, "
                                         "from here upwards)")
    parser.add_argument("--assignment", "-a", help="only this assignment's due date (default: every one)")
    args = parser.parse_args(argv)
    from coursekit.term import context

    try:
        layout = context.load_layout(args.course)
        for name, due in run(layout, args.assignment).items():
            print(f"{name}: due {due}")
    except context.click.ClickException as err:
        err.show()
        return err.exit_code
    return 0


def run(layout, assignment: str | None) -> dict:
    """``coursekit schedule``: the due dates written, by assignment (only ``assignment``'s if given)."""
    import click

    if assignment and assignment not in layout.due_dates:
        raise click.UsageError(f"{assignment} has no due date in c.CourseSchedule.due_dates "
                               f"(it has: {', '.join(sorted(layout.due_dates)) or 'none'})")
    return sync_due_dates(layout, only=assignment)


if __name__ == "__main__":
    sys.exit(main())
