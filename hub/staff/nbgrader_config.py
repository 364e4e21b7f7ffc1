"""nbgrader settings of the instructor's and the TAs' Jupyter servers on the course hub.

Their servers start in the course folder, so nbgrader also reads the course's own
nbgrader_config.py from there (course id, gradebook, grading settings); this file adds the
exchange. bin/hub copies this folder into the hub's etc/staff/.
"""

import os

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

c.Exchange.root = os.environ["COURSEKIT_EXCHANGE"]

# Collect only what each student really handed in, dated by when it last changed
# (coursekit/submissions/exchange.py says what stock collect would take instead).
c.ExchangeFactory.collect = "coursekit.submissions.exchange.VerifiedCollect"
# Copy without following links (a student's link in a hand-in, a link in feedback/, which TAs may write).
c.ExchangeFactory.release_feedback = "coursekit.submissions.exchange.SafeReleaseFeedback"
