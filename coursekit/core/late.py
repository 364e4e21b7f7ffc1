"""The course's late policy, as an nbgrader late-submission plugin.

Policy (also in README and nbgrader_config.py): a notebook submitted after the due date
loses 10 % of its score per started day late, up to 5 days; after 5 days it scores 0.
nbgrader calls this once per submitted notebook with that notebook's score.

Late is measured against the student's own due date: nbgrader passes the seconds past
``SubmittedAssignment.duedate``, the assignment's due date plus the student's extension
(``coursekit extend``, coursekit/term/extensions.py). An extension given after grading applies this
same policy again through ``coursekit.term.extensions.reapply_late_policy``, without grading again.
"""

import math

from nbgrader.plugins import LateSubmissionPlugin
from traitlets import Float, Integer

DAY = 24 * 60 * 60


class PercentPerDayLate(LateSubmissionPlugin):
    """Deduct ``percent_per_day`` of the score per started day late; zero after ``max_days``."""

    percent_per_day = Float(10.0, help="Percent of the score lost per started day late").tag(config=True)
    max_days = Integer(5, help="Days after which a late notebook scores zero").tag(config=True)

    def late_submission_penalty(self, student_id, score, total_seconds_late):
        if total_seconds_late <= 0:
            return None
        days = math.ceil(total_seconds_late / DAY)
        fraction = 1.0 if days > self.max_days else min(1.0, days * self.percent_per_day / 100)
        penalty = round(score * fraction, 4)
        self.log.warning("%s is %d day(s) late: penalty %s of %s points", student_id, days, penalty, score)
        return penalty
