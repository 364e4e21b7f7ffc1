"""The course's grading pipeline, installed into nbgrader's configuration in one call.

``nbgrader_config.py`` holds the course's values (course id, folders, limits, dates, policies,
sandbox limits) and ends with ``pipeline.install(c, sandbox=SANDBOX, limits=RENDER_LIMITS,
checker_preamble=...)``. Everything below is wiring: which course class stands in for which
nbgrader step, and in which order. It used to be spread over the config file as side effects
whose order mattered (a monkeypatch, a hook that had to be set after another, a patched
validator); here it is one function, tested by tests/test_pipeline.py.

What ``install`` sets, in the order a submission meets it:

1. **Intake** (coursekit/submissions/intake.py). nbgrader 0.9.6's ``AutogradeApp`` makes its converter from
   a module-level name, with no option to choose the class: ``intake.install()`` replaces that
   name with ``IntakeAutograde`` (which lists and copies submissions without following links).
   ``nbgrader_config.py`` is loaded by every nbgrader command before it starts, so this is the
   earliest point at which the course decides how submissions are found.
   ``sanitize.SubmissionExporter`` refuses to grade when the converter is not an
   ``IntakeAutograde`` and the intake is on, so a future nbgrader that stops reading that name
   cannot silently grade without the intake.
2. **Pre-convert hook**: ``sandbox.PreflightHook`` first (no submission is touched unless the
   sandbox its kernels get can start: it raises SystemExit, which nbgrader does not catch per
   submission), then ``sanitize.ExpectedNotebooks`` (every notebook of the assignment is graded,
   a missing or renamed one from its release).
3. **Sanitize preprocessors**: ``sanitize.RepairCells`` first, before nbgrader's own checks see
   the cells, then nbgrader's ``ClearOutput, DeduplicateIds, OverwriteKernelspec,
   OverwriteCells, CheckCellMetadata``; the exporter is ``sanitize.SubmissionExporter``.
4. **Execution**: every notebook runs in the course's kernel (``kernel.GRADER_KERNEL``), started
   by the sandbox wrapper with the sandbox's settings as kernel arguments
   (``Settings.kernel_arguments``: nbgrader appends ``Execute.extra_arguments`` to the kernel's
   command; the wrapper is another process, so arguments are how they reach it). Check cells
   run in a second, trusted kernel (``split_execute.SplitExecute``), whose own names come from
   ``checker_preamble``.
5. **Autograde preprocessors**: ``SplitExecute, IgnorePattern`` (stderr lines that are only
   library noise, ``stderr_noise.HARMLESS_STDERR``, do not cost points)``, ClearMetadata,
   LimitOutput, SaveAutoGrades, AssignLatePenalties`` (``late.PercentPerDayLate``)``,
   CheckCellMetadata``.
6. **Validate**: nbgrader 0.9.6 hard-codes the Validator's preprocessors (not a config option);
   their trait is tagged configurable here and set to ``CheckCellMetadata, ClearOutput,
   SplitExecute``, so that ``nbgrader validate`` runs checks as autograde does.
7. **Feedback and export**: ``GetGrades, CSSHTMLHeaderPreprocessor, feedback.CourseFeedback``,
   written by ``pages.FeedbackExporter``; ``nbgrader export`` through
   ``csvsafe.SafeCsvExportPlugin``.
8. **Render limits** (``bounds.Limits``) for the three places that cut what a student wrote:
   ``RepairCells`` (before grading), ``SubmissionExporter`` and ``BoundedRendering`` (pages).

Values set in the config *after* the call override it (tests append ``c.X.y = ...`` lines to a
course copy's config, and ``SANDBOX = Settings(...)`` with ``c.Execute.extra_arguments =
SANDBOX.kernel_arguments()``); the consumers read the running application's config, never a
copy taken here. A key ``install`` owns that is already set when it is called is refused:
``install`` does not silently overwrite a value, and a second call on the same config is an
error (the hooks would otherwise be chained twice).
"""

from __future__ import annotations

from coursekit.rendering.bounds import Limits
from coursekit.execution.sandbox import Settings

# The keys install() sets: (section, trait). A config that already has one is refused.
OWNED = (
    ("Execute", "kernel_name"), ("Execute", "extra_arguments"),
    ("IgnorePattern", "enabled"), ("IgnorePattern", "pattern"),
    ("Autograde", "exporter_class"), ("Autograde", "pre_convert_hook"), ("Autograde", "sanitize_preprocessors"),
    ("Autograde", "autograde_preprocessors"), ("Validator", "preprocessors"),
    ("SplitExecute", "checker_preamble"), ("AssignLatePenalties", "plugin_class"),
    ("GenerateFeedback", "preprocessors"), ("GenerateFeedback", "exporter_class"), ("ExportApp", "plugin_class"),
    ("RepairCells", "limits"), ("SubmissionExporter", "limits"), ("BoundedRendering", "limits"),
)


class AlreadyInstalled(RuntimeError):
    """``install`` was called on a config that already has (some of) the course's pipeline."""


def install(c, *, sandbox: Settings, limits: Limits, checker_preamble: str) -> None:
    """Install every nbgrader hook, preprocessor, exporter and plugin of the course into the
    config ``c``, in order (the module docstring says what and why)."""
    if not isinstance(sandbox, Settings):
        raise TypeError(f"sandbox: a coursekit.execution.sandbox.Settings, not {type(sandbox).__name__}")
    if not isinstance(limits, Limits):
        raise TypeError(f"limits: a coursekit.rendering.bounds.Limits, not {type(limits).__name__}")
    already = [f"{section}.{trait}" for section, trait in OWNED if section in c and trait in c[section]]
    if already:
        raise AlreadyInstalled(
            "coursekit.pipeline.install: the config already sets " + ", ".join(already)
            + " (install() was called twice, or these are set before it: set them after the call to override)")

    from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
    from nbgrader.preprocessors import (
        AssignLatePenalties, CheckCellMetadata, ClearOutput, DeduplicateIds, GetGrades, IgnorePattern, LimitOutput,
        OverwriteCells, OverwriteKernelspec, SaveAutoGrades)
    from nbgrader.validator import Validator

    from coursekit.submissions import intake, sanitize
    from coursekit.rendering.feedback import CourseFeedback
    from coursekit.execution.kernel import GRADER_KERNEL
    from coursekit.execution.sandbox import PreflightHook
    from coursekit.transfer.split_execute import SplitExecute
    from coursekit.core.stderr_noise import HARMLESS_STDERR

    # 1. intake: nbgrader autograde finds submissions through it
    intake.install()
    # 2. pre-convert hook: the sandbox's preflight, then the expected notebooks
    c.Autograde.pre_convert_hook = PreflightHook(then=sanitize.ExpectedNotebooks())
    # 3. sanitize
    c.Autograde.exporter_class = "coursekit.submissions.sanitize.SubmissionExporter"
    c.Autograde.sanitize_preprocessors = [
        sanitize.RepairCells,  # first: before nbgrader's own checks see the cells
        ClearOutput, DeduplicateIds, OverwriteKernelspec, OverwriteCells, CheckCellMetadata,
    ]
    # 4. execution: the course's kernel, in the sandbox; checks in the checker's kernel
    c.Execute.kernel_name = GRADER_KERNEL
    c.Execute.extra_arguments = sandbox.kernel_arguments()
    c.SplitExecute.checker_preamble = checker_preamble
    # 5. autograde
    c.IgnorePattern.enabled = True
    c.IgnorePattern.pattern = HARMLESS_STDERR.pattern
    c.AssignLatePenalties.plugin_class = "coursekit.core.late.PercentPerDayLate"
    c.Autograde.autograde_preprocessors = [
        SplitExecute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades, AssignLatePenalties,
        CheckCellMetadata,
    ]
    # 6. validate (nbgrader 0.9.6 hard-codes these; tagging the trait is idempotent)
    Validator.preprocessors.tag(config=True)
    c.Validator.preprocessors = [CheckCellMetadata, ClearOutput, SplitExecute]
    # 7. feedback and export
    c.GenerateFeedback.preprocessors = [GetGrades, CSSHTMLHeaderPreprocessor, CourseFeedback]
    c.GenerateFeedback.exporter_class = "coursekit.rendering.pages.FeedbackExporter"
    c.ExportApp.plugin_class = "coursekit.core.csvsafe.SafeCsvExportPlugin"
    # 8. render limits
    c.RepairCells.limits = limits
    c.SubmissionExporter.limits = limits
    c.BoundedRendering.limits = limits
