"""``coursekit``: one command for a TA's week (grade, report, feedback, export, extensions, status).

Every subcommand takes ``--course PATH`` (default: the folder holding ``nbgrader_config.py``,
looked for from the working folder upwards) and ``--assignment NAME`` (default: the course's only
assignment, from ``c.CourseSchedule.due_dates`` or else the gradebook; when there are several the
error lists them). ``--help`` only prints: the course is found and read when a command runs.

The subcommands are thin: each calls the module that does the job (coursekit.grading.runner, report,
lms, extensions, schedule, similarity) and the old ``python -m coursekit.<module>`` entry points
run the same functions.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import click

from coursekit.core.layout import CONFIG_FILE, CourseLayout, NotACourse  # noqa: F401
from coursekit.term.context import (  # noqa: F401 (used by the subcommands below)
    EXIT_COURSE, EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE, Context, CourseError, Incomplete, default_assignment,
    find_course_root, gradebook_assignments, load_layout, resolve,
)


GROUP_HELP = f"""One command for the course's grading: grade, report, feedback, export, extensions, status.

\b
A TA's week, from the course folder:
  coursekit grade                  autograde every submission (in the sandbox, in parallel)
  coursekit report                 the class report (reports/<assignment>/report.html)
  coursekit status                 who submitted, late, graded, marked, feedback sent
  coursekit feedback --release     feedback pages, handed out through the hub
  coursekit export --lms canvas --roster canvas.csv

\b
Exit status:
  {EXIT_OK}  done
  {EXIT_INCOMPLETE}  done, but not everything: a submission could not be graded, written answers
     are waiting for a TA, or students are in one list and not the other (export)
  {EXIT_USAGE}  usage error (a bad option or argument, several assignments to choose from)
  {EXIT_COURSE}  the course cannot be used: no {CONFIG_FILE} here or above, the gradebook
     is missing or does not know the assignment, the sandbox cannot start
"""


def run_standalone(command: click.Command, args: list[str]) -> int:
    """Run one subcommand as its own program (the old ``python -m coursekit.<module>`` entry
    points); its exit status."""
    try:
        command.main(args=args, prog_name=f"coursekit {command.name}", standalone_mode=True)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return 0


def course_options(func):
    """--course and --assignment, as every subcommand takes them."""

    @click.option("--assignment", "-a", metavar="NAME",
                  help="the assignment (default: the course's only one, from its configuration)")
    @click.option("--course", metavar="PATH", type=click.Path(file_okay=False),
                  help=f"the course's root folder (default: the folder with {CONFIG_FILE}, from here upwards)")
    @functools.wraps(func)
    def wrapper(course, assignment, **kwargs):
        return func(Context(course, assignment), **kwargs)

    return wrapper


def apply_extensions(ctx: Context) -> None:
    """Recorded extensions written into submission rows that appeared since (see coursekit.term.extensions)."""
    from coursekit.term import extensions

    try:
        changed = extensions.apply(ctx.layout, ctx.assignment)
    except extensions.ExtensionError as err:
        raise CourseError(str(err)) from None
    if changed:
        click.echo(f"extensions applied (late penalties computed again): {', '.join(changed)}", err=True)


# --- the group ---------------------------------------------------------------------------------


@click.group(help=GROUP_HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main():
    pass


@main.command(help="Autograde every submission of the assignment, in parallel, each in the sandbox "
                   "(coursekit.grading.runner; docs/operations.md). Graded submissions are skipped "
                   "unless --force; exit 1 when some could not be graded.")
@course_options
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="parallel workers (default: fitted to this machine)")
@click.option("--force", is_flag=True, help="grade again submissions that are already graded")
@click.option("--student", "students", multiple=True, metavar="ID", help="grade only this student (repeatable)")
@click.option("--no-progress", is_flag=True, help="no progress bar")
@click.option("--scheduler", metavar="ADDRESS", help="grade on this Dask scheduler's cluster (tls://HOST:8786: plain tcp:// is refused)")
@click.option("--threads", type=click.IntRange(min=1), help="NumPy threads per submission for the checks")
def grade(ctx: Context, jobs, force, students, no_progress, scheduler, threads):
    from coursekit.grading import runner

    if scheduler and jobs:
        raise click.UsageError("--jobs is for grading here; on a cluster the workers' threads decide")
    layout = ctx.layout
    job = runner.Runner(layout.root, ctx.assignment, jobs, force, list(students) or None, not no_progress,
                        scheduler=scheduler, threads=threads)
    try:
        outcomes = job.run()
    except runner.RunnerError as err:
        raise CourseError(str(err)) from None
    except KeyboardInterrupt:
        click.echo("\ninterrupted; what was graded is kept: run the same command again to finish", err=True)
        sys.exit(130)
    click.echo(runner.report(outcomes, job.root))
    apply_extensions(ctx)
    if not all(o.ok for o in outcomes):
        sys.exit(EXIT_INCOMPLETE)


@main.command(help="Generate the students' feedback pages (nbgrader generate_feedback, with the course's "
                   "pages: feedback/<student>/<assignment>/*.html); --release hands them out through "
                   "nbgrader's exchange (the course hub).")
@course_options
@click.option("--release", is_flag=True, help="then release them (nbgrader release_feedback)")
@click.option("--student", "students", multiple=True, metavar="ID", help="only this student (repeatable)")
def feedback(ctx: Context, release, students):
    assignment = ctx.known_assignment()
    apply_extensions(ctx)
    extra = [f"--student={s}" for s in students]
    notebooks = _submitted_notebooks(ctx, students)
    _nbgrader_with_progress(ctx.layout, ["generate_feedback", assignment, "--force", *extra],
                            "generating feedback", notebooks, r"Converting notebook")
    if release:
        _nbgrader_with_progress(ctx.layout, ["release_feedback", assignment, *extra],
                                "releasing feedback", notebooks, r"Releasing feedback for")
    click.echo(f"feedback of {assignment}: {ctx.layout.feedback('*', assignment)}")


def _submitted_notebooks(ctx: Context, students) -> int:
    from nbgrader.api import MissingEntry

    count = 0
    with ctx.layout.gradebook() as gb:
        for student in gb.students:
            if students and student.id not in students:
                continue
            try:
                count += len(gb.find_submission(ctx.assignment, student.id).notebooks)
            except MissingEntry:
                pass
    return count


def _nbgrader_with_progress(layout: CourseLayout, args: list[str], label: str, total: int, step: str) -> None:
    """``nbgrader <args>`` in the course folder, a progress bar advanced by its log lines."""
    from coursekit.core import nbgrader_command
    from coursekit.core.course import grading_env

    pattern = re.compile(step)
    tail: list[str] = []
    proc = subprocess.Popen([*nbgrader_command.command(), *args], cwd=layout.root, env=grading_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace")
    with click.progressbar(length=max(total, 1), label=label, file=sys.stderr) as bar:
        for line in proc.stdout:
            tail = (tail + [line])[-60:]
            if pattern.search(line):
                bar.update(1)
    if proc.wait() != 0:
        raise Incomplete(f"nbgrader {args[0]} exited {proc.returncode}:\n{''.join(tail)}")


@main.command(help="Write the class report (coursekit.term.report): reports/<assignment>/report.html and "
                   "report.csv. It only reads the gradebook and autograded/.")
@course_options
@click.option("--out", type=click.Path(file_okay=False), help="folder for the report (default: reports/<assignment>)")
def report(ctx: Context, out):
    from coursekit.term import report as report_module

    assignment = ctx.known_assignment()
    apply_extensions(ctx)
    args = [assignment, "--course", str(ctx.layout.root)] + (["--out", out] if out else [])
    sys.exit(report_module.main(args))


@main.command(help="Grades into the LMS. Canvas: the gradebook export (--roster) written back with this "
                   "assignment's column filled in, every other cell as it was. Moodle: Moodle's grade import "
                   "CSV. Score = autograded + TA marks - late penalty; blank for a student who never "
                   "submitted. Students in one list and not the other are listed (exit 1), never guessed.")
@course_options
@click.option("--lms", type=click.Choice(["canvas", "moodle"]), required=True, help="the LMS's format")
@click.option("--roster", type=click.Path(dir_okay=False, exists=True),
              help="Canvas: its gradebook export (required). Moodle: its grade export, to check the class (optional)")
@click.option("--out", type=click.Path(dir_okay=False),
              help="where to write (Canvas default: the roster itself; Moodle: exports/<assignment>-moodle.csv)")
@click.option("--map", "mapping", type=click.Path(dir_okay=False, exists=True),
              help="a CSV nbgrader_id,lms_id for students whose LMS id is not their nbgrader id")
@click.option("--column", metavar="NAME", help="Canvas: the assignment's column, as named in the roster")
@click.option("--moodle-id", type=click.Choice(["email", "idnumber"]), default="email", show_default=True,
              help="Moodle: how students are identified")
def export(ctx: Context, lms, roster, out, mapping, column, moodle_id):
    from coursekit.term import lms as lms_module

    assignment = ctx.known_assignment()
    apply_extensions(ctx)
    try:
        if lms == "canvas":
            if not roster:
                raise click.UsageError("--lms canvas needs --roster (Canvas: Grades → Export)")
            result = lms_module.export_canvas(ctx.layout, assignment, Path(roster), Path(out) if out else None,
                                              Path(mapping) if mapping else None, column)
        else:
            target = Path(out) if out else ctx.layout.root / "exports" / f"{assignment}-moodle.csv"
            target.parent.mkdir(parents=True, exist_ok=True)
            result = lms_module.export_moodle(ctx.layout, assignment, target, moodle_id,
                                              Path(roster) if roster else None, Path(mapping) if mapping else None)
    except lms_module.LmsError as err:
        raise click.UsageError(str(err)) from None
    click.echo(result.report())
    if not result.complete:
        for name in result.not_in_roster + result.not_in_gradebook + result.no_identifier:
            click.echo(f"coursekit export: not matched: {name}", err=True)
        sys.exit(EXIT_INCOMPLETE)


@main.command(help="Give a student a due date of their own (--until DATE or --hours N after the due "
                   "date), take it back (--remove), or list the extensions (--list). Submissions already "
                   "graded get the late policy applied again, without grading again.")
@course_options
@click.argument("student", required=False)
@click.option("--until", metavar="DATE", help="the student's due date, e.g. '2026-12-08 23:59 UTC' (no zone: UTC)")
@click.option("--hours", type=float, help="hours after the assignment's due date")
@click.option("--reason", default="", help="why (kept beside the gradebook, for the staff)")
@click.option("--remove", is_flag=True, help="take the student's extension back")
@click.option("--list", "list_", is_flag=True, help="list the extensions of the assignment")
def extend(ctx: Context, student, until, hours, reason, remove, list_):
    from coursekit.term import extensions

    if list_:
        if student or until or hours is not None or remove:
            raise click.UsageError("--list takes no student or other option")
    elif not student:
        raise click.UsageError("give a STUDENT (or --list)")
    elif remove and (until or hours is not None):
        raise click.UsageError("--remove takes no --until or --hours")
    elif not remove and (until is None) == (hours is None):
        raise click.UsageError("give either --until DATE or --hours N")
    assignment = ctx.known_assignment()
    try:
        if list_:
            rows = extensions.listing(ctx.layout, assignment)
            if not rows:
                click.echo(f"no extensions for {assignment}")
            for e in rows:
                where = {None: "applied when the submission is graded", True: "in the gradebook",
                         False: "not yet in the gradebook"}[e.in_gradebook]
                click.echo(f"{e.student}: due {e.until:%Y-%m-%d %H:%M:%S} UTC ({where})"
                           + (f" — {e.reason}" if e.reason else ""))
            return
        if remove:
            had = extensions.remove(ctx.layout, assignment, student)
            click.echo(f"{student}: due date of {assignment} is the class's again" if had
                       else f"{student} had no extension for {assignment}")
            return
        extensions.check_student(student)
        if student not in extensions.known_students(ctx.layout, assignment):
            click.echo(f"coursekit extend: {student} is not in the gradebook and has not submitted {assignment}: "
                       "check the spelling", err=True)
        when = extensions.parse_date(until) if until else None
        granted = extensions.grant(ctx.layout, assignment, student, until=when, hours=hours, reason=reason)
    except extensions.ExtensionError as err:
        raise click.UsageError(str(err)) from None
    click.echo(f"{student}: {assignment} due {granted.until:%Y-%m-%d %H:%M:%S} UTC"
               + ("" if granted.in_gradebook else " (applied when the submission is graded)"))


@main.command(help="Write the similarity report of the assignment's submissions (coursekit.term.similarity).")
@course_options
@click.option("--out", type=click.Path(file_okay=False), help="folder for the report")
@click.option("--threshold", type=float, help="similarity above which a pair is listed")
def similarity(ctx: Context, out, threshold):
    try:
        from coursekit.term.similarity import write_report
    except ImportError as err:
        raise CourseError(f"the similarity report is not available here ({err})") from None
    path = write_report(ctx.layout, ctx.known_assignment(), out_dir=Path(out) if out else None, threshold=threshold)
    click.echo(f"similarity report of {ctx.assignment}: {path}")


@main.command(help="Per student: submitted? when, late (against their own due date)? graded? autograded "
                   "score, written answers waiting for a TA, feedback generated and released. Exit 1 while "
                   "something is left to do.")
@course_options
def status(ctx: Context):
    from coursekit.term import cli_status as status_module

    assignment = ctx.known_assignment()
    apply_extensions(ctx)
    rows = status_module.student_status(ctx.layout, assignment)
    click.echo(status_module.format_table(assignment, rows))
    if any(r.left_to_do for r in rows):
        sys.exit(EXIT_INCOMPLETE)


@main.command(help="Write the due dates of nbgrader_config.py (c.CourseSchedule.due_dates) into the "
                   "gradebook, where nbgrader's late check reads them (all of them, or --assignment's).")
@click.option("--assignment", "-a", metavar="NAME", help="only this assignment's (default: every one in the config)")
@click.option("--course", metavar="PATH", type=click.Path(file_okay=False),
              help=f"the course's root folder (default: the folder with {CONFIG_FILE}, from here upwards)")
def schedule(course, assignment):
    from coursekit.term import schedule as schedule_module

    for name, due in schedule_module.run(load_layout(course), assignment).items():
        click.echo(f"{name}: due {due}")


if __name__ == "__main__":
    main()
