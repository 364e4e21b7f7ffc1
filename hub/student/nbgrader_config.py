"""nbgrader settings of every student's Jupyter server on the course hub.

bin/hub copies this folder out of the repository (which students cannot read) into the hub's
etc/student/ and points the students' JUPYTER_CONFIG_PATH at it; the values come from the
environment the hub gives each server (hub/jupyterhub_config.py).
"""

import os

from nbgrader.exchange.default import ExchangeSubmit

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

c.CourseDirectory.course_id = os.environ["COURSEKIT_COURSE_ID"]  # list this course only
c.Exchange.root = os.environ["COURSEKIT_EXCHANGE"]


class PrivateSubmit(ExchangeSubmit):
    """A submission that only its student and the course staff can open.

    Stock nbgrader leaves a submission in the exchange's inbound folder as a 0777 folder of
    0644 files, hidden only by its unlisted name: any account that learns the name can read it
    (submission_secret.txt included, which names the student's feedback file) or write into it.
    bin/hub makes the course's exchange folder setgid to the staff's group, so the submission
    folder belongs to that group; here it becomes 0770: the student and the staff (collect) can
    enter it, nobody else can reach anything inside.
    """

    def copy_files(self):
        super().copy_files()
        submission = os.path.join(self.inbound_path, self.assignment_filename)
        if os.stat(submission).st_gid != os.stat(self.inbound_path).st_gid:
            self.log.warning("The exchange's inbound folder is not set up by bin/hub: submission left as nbgrader made it")
            return
        os.chmod(submission, 0o770)


c.ExchangeFactory.submit = PrivateSubmit

# Validate runs the student's whole notebook in their own kernel: nbgrader's default of 30 s
# per cell is less than importing TensorFlow takes on a busy hub, and a student would see a
# timeout traceback instead of their checks. The same limits as the grader's.
c.Execute.timeout = 240
c.Execute.startup_timeout = 120
