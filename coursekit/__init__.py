"""Course tools for the week-2 nbgrader assignment (what nbgrader itself does not do).

One job per module (docs/architecture.md has the table). Two hold what the others share:
``layout`` (``CourseLayout``: where everything of a course is, and what its
``nbgrader_config.py`` says) and ``notebook`` (the notebook vocabulary: check and answer
cells, questions, check failures, cells stopped by a limit). Problem kinds and their labels
are in ``problems``; the HTML templates in ``templates/``.
"""
