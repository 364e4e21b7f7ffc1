"""nbgrader configuration for the week-2 course ("first steps in computer vision").

Every nbgrader command run from the repository root reads this file. It holds the course's
values (course id, folders, limits, dates, policies, sandbox limits); the course's hooks,
preprocessors, exporters and plugins are installed, in their order, by the one call at the end
(coursekit/pipeline.py, whose docstring says what each does and why).
"""

import os

from coursekit import pipeline
from coursekit.rendering.bounds import Limits
from coursekit.execution.sandbox import Settings

c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)

# --- Course and folders ----------------------------------------------------------------
c.CourseDirectory.course_id = "tf-week2-vision"
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
# The gradebook is a SQLite file under gradebook/ (never committed: it holds student data).
c.CourseDirectory.db_url = "sqlite:///gradebook/gradebook.db"
# Students are added on first autograde; a class list can be imported with
# `nbgrader db student import students.csv` instead.
c.Autograde.create_student = True
# Scratch files nbgrader must not copy from submissions into autograded/.
c.CourseDirectory.ignore = [
    ".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".cache", "*.db", "*.sqlite*",
]

# --- Intake (coursekit/submissions/intake.py; owner: issue 11) --------------------------------------
# Submissions are data, never paths. Before nbgrader reads anything, every submission folder is
# listed without following links and copied from that listing: symbolic and hard links,
# devices, FIFOs and sockets, names the grader writes itself (grading-problems.json, feedback
# pages), files over the limits below and student ids that are not safe as file names, options
# and globs are refused; each refusal is a recorded problem (the TA's report, the student's
# feedback) and the rest of the class is graded. timestamp.txt is parsed strictly. A grading
# that was killed half-way is done again by the same command, and a damaged gradebook stops
# `nbgrader autograde` before anything is deleted. docs/security.md: "What the intake refuses".
# (nbgrader autograde finds submissions through the intake: installed by pipeline.install below.)
c.Intake.max_file_size = 50 * 2**20          # bytes, one file (a notebook with plots is ~2 MB)
c.Intake.max_total_size = 100 * 2**20        # bytes, the whole submission
c.Intake.max_files = 500                     # files and folders in one submission
c.Intake.max_depth = 8                       # folders inside folders
# c.Intake.enabled = False                   # stock nbgrader (links followed, ids globbed): comparisons only

# --- Release ---------------------------------------------------------------------------
# The header notebook (course name, how checks work, honour code) is put in front of
# every released notebook.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# --- Execution (validate, autograde) ---------------------------------------------------
# Every notebook runs in the course's own kernel (coursekit/execution/kernel.py: the course venv's
# Python, with the submission folder off sys.path), set by pipeline.install. Check cells run in
# a kernel of their own: section "Split execution" below.
# Per-cell timeout. A 5-epoch fit of the tutorial model takes ~16 s on an idle 2-core
# machine and 3-4x that when the machine is loaded (parallel grading, a shared host);
# 240 s leaves room for that and still stops an infinite loop within 4 minutes.
c.Execute.timeout = 240
# The grader's kernel may take a while to import TensorFlow on a busy machine.
c.Execute.startup_timeout = 120
# Student output is capped so that a cell printing megabytes cannot bloat the gradebook
# or the feedback page.
c.LimitOutput.max_lines = 200
c.LimitOutput.max_traceback = 60

# nbgrader gives 0 points to a test cell that wrote anything to stderr. TensorFlow logs
# there, and so do Python warnings from libraries; neither says the answer is wrong. Remove
# a stderr output when *every* line of it is such noise (a student's own stderr text and
# real errors still count). The patterns live in coursekit/core/stderr_noise.py, with tests;
# pipeline.install turns this on.

# --- Deadline and late policy ----------------------------------------------------------
# Due date of week2: `python -m coursekit.term.schedule` (run by bin/setup and bin/demo) writes
# it into the gradebook, where nbgrader's late-submission check reads it.
c.CourseSchedule.due_dates = {"week2": "2026-12-04 23:59:00 UTC"}
# A late notebook loses 10 % of its score per started day late; after 5 days it scores 0
# (coursekit.core.late.PercentPerDayLate, installed by pipeline.install).
c.PercentPerDayLate.percent_per_day = 10.0
c.PercentPerDayLate.max_days = 5

# --- Header ----------------------------------------------------------------------------
# Put in front of every released notebook: course name, honour code, how checks work.
c.IncludeHeaderFooter.header = "source/header.ipynb"
# Mark schemes sit in the read-only prompt cell above each written answer, between
# "### BEGIN MARK SCHEME" and "### END MARK SCHEME": removed from the release, restored
# from the gradebook at autograde so that formgrader shows them to TAs (and removed again
# from feedback by coursekit.rendering.feedback). nbgrader only expects them in task cells, hence:
c.ClearMarkScheme.enforce_metadata = False

# --- Feedback --------------------------------------------------------------------------
# `nbgrader generate_feedback week2` writes feedback/<student>/week2/<notebook>.html. After
# nbgrader's GetGrades, coursekit/rendering/feedback.py puts problems found while grading and the
# score per question at the top, shows public check messages (expected vs found), and for
# hidden checks only passed/failed with a hint; it removes hidden test code and mark
# schemes, which stock nbgrader would show (jupyter/nbgrader#917, #1363).
# `nbgrader export` writes grades.csv with real CSV quoting, and no cell a spreadsheet would run as a
# formula (a name or id starting with = + - @): coursekit/core/csvsafe.py.
# Both installed by pipeline.install.

# --- Pages a TA or a student opens (coursekit/rendering/safehtml.py, bounds.py, pages.py; owner: issue 12) --
# Stock nbgrader renders a student's markdown and HTML outputs as they are: a written answer
# holding <img src=x onerror=...> runs as script in the browser of the TA who opens it in
# formgrader, with the TA's Jupyter session (files written into the course, a terminal opened),
# and in the student's own feedback page. The course's pages sanitise everything a student wrote
# (coursekit/rendering/safehtml.py: math, images as data: URIs, tables and code highlighting kept) and
# render nothing over the size limits below (a 2.5 MB written answer blocked the Jupyter server).
# The feedback pages are written by coursekit.rendering.pages.FeedbackExporter; formgrader's submission
# view is coursekit.rendering.pages.FormgradeExporter, installed by the course's Jupyter config
# (jupyter_server_config.py, with its Content-Security-Policy).
# Characters: a markdown or raw cell (a written answer); an output's text and its HTML or
# Markdown; an image's base64; and, per notebook, all that a student wrote that a renderer parses,
# and all outputs. Longer is cut, with a note, before grading (sanitize) and before rendering.
RENDER_LIMITS = Limits(cell_source=20_000, output_text=100_000, output_markup=20_000, output_image=2_000_000,
                       notebook_markup=200_000, notebook_outputs=10_000_000)

# --- Submission repairs (coursekit/submissions/sanitize.py; owner: issue 4) -------------------------
# Stock nbgrader mishandles broken submissions: one notebook with copied graded cells
# aborts the whole batch, invalid JSON fails the student with exit code 1, a renamed notebook
# is skipped (0 points), a deleted check cell is left "to be graded". coursekit.submissions.sanitize fixes
# these inside `nbgrader autograde` (the table in its docstring says what happens in each
# case) and notes each problem in the graded notebook and in grading-problems.json
# (installed by pipeline.install).

# --- Sandbox (coursekit/execution/sandbox.py; owner: issue 6) -------------------------------------
# Every kernel nbgrader starts (autograde, validate) runs student code inside bubblewrap, as a
# user of its own: no network; it sees the Python environment, coursekit and the data, and a
# scratch copy of its own submission folder, nothing of source/, gradebook/, submitted/,
# release/, feedback/, other students' autograded/ folders, the autograded copy that holds the
# hidden tests, or your home directory. Limits, per notebook: memory (address space of each
# process and resident memory of all), wall time of the whole kernel, processes + threads,
# file size, disk space and files for everything it writes, output it prints; and no
# environment variable of yours but an allow-list. If the sandbox cannot start,
# `nbgrader autograde` refuses before grading anything.
# SANDBOX = Settings(enabled=False) is the explicit opt-out: student code then runs with your
# rights, and can read the hidden tests and overwrite the gradebook. docs/security.md: "Sandboxed and
# parallel grading".

SANDBOX = Settings(
    enabled=True,
    memory="8G",       # address space of each process, and resident memory of all of them plus their files
    wall_time=1200,    # seconds, the whole kernel
    file_size="1G",    # largest file one process may write
    disk="1G",         # everything the kernel writes, together (work folder, /tmp, home, /dev/shm): one tmpfs
    files=10_000,      # files and folders it may create there, together (the tmpfs's inodes)
    output="32M",      # what it may print (iopub), counted before nbgrader buffers it; past it, output is
                       # dropped but each cell keeps its first error and stderr text (they decide its grade)
)
# Only these environment variables reach student code, by exact name: coursekit.execution.sandbox.ENV_ALLOW.
# pipeline.install passes SANDBOX to the kernels (c.Execute.extra_arguments: nbgrader appends them to the
# kernel's command) and checks, before any submission is touched, that the sandbox can start.
# --- end of Sandbox ---------------------------------------------------------------------

# --- Split execution (coursekit/transfer/split_execute.py; owner: issue 10) ----------------------
# Check cells run in a second, trusted kernel (week2-checker, in a sandbox of its own) that
# never executes student code; answer cells run in the student's kernel as before. Before each
# check cell, the values it reads are taken from the student's kernel as data (arrays, numbers,
# strings, a model as its layers and weights, a figure as its panels), never as code or pickles;
# a student function a check calls runs in the student's kernel with the checker's arguments,
# and only its result comes back. Hidden tests never enter the student's kernel, and nothing
# the student's code does in its process (input transformers, hooks, patched NumPy or Keras)
# changes a verdict. `--SplitExecute.split=False` runs every cell in the student's kernel, as
# stock nbgrader does (for comparisons only). docs/security.md: "Grading: what nbgrader is told".
# `nbgrader validate` runs the same split execution (pipeline.install sets the Validator's preprocessors).
# The checker's own names (never read from the student's kernel): what the check cells use.
CHECKER_PREAMBLE = (
    "import numpy as np\n"
    "from coursekit.student import checks\n"
    "from coursekit.student.datasets import load_fashion_mnist, load_mnist\n"
)
# --- end of Split execution -------------------------------------------------------------

# --- The pipeline ------------------------------------------------------------------------
# Installs, in their order, the course's intake, the sandbox's preflight and the sanitize hooks,
# the course kernel with the sandbox's settings as its arguments, split execution, the stderr
# filter, the late plugin, the validator's preprocessors, the feedback pages and the CSV export
# (coursekit/pipeline.py says what and why). Settings written below this call override it.
pipeline.install(c, sandbox=SANDBOX, limits=RENDER_LIMITS, checker_preamble=CHECKER_PREAMBLE)

# --- Grading on submit (coursekit/hosting/submit_service.py; owner: issue 28) ---------------------
# On the course hub (bin/hub), a service can grade each hand-in as it arrives and release that
# student's feedback without staff action. It grades into a private copy of the course
# (.submit-service/ in the course folder): the staff's gradebook, autograded/ and feedback/
# are never written, and a feedback page the staff released is never replaced. Before the
# student's deadline the page shows each check's verdict (hidden checks: passed or not, never
# their code; their hints only if allowed below); after it, the full feedback. TA marks and the
# final grade come, as before, from the staff's collect, grading and release.
# Off (the default): the hub runs no service, exactly as before.
# c.SubmitGrading.enabled = True
c.SubmitGrading.max_per_hour = 3                          # gradings per student in any hour
c.SubmitGrading.show_hidden_hints_before_deadline = False
# c.SubmitGrading.limit_message = "..."                   # {next} is the time the next grading may start
# c.SubmitGrading.down_message = "..."
