"""nbgrader's collect, with the checks a machine shared by the whole class needs (the course hub).

Stock ``nbgrader collect`` believes what the submitting student wrote:

- the student id in the name of the submission folder (``<student>+<assignment>+<time>+<random>``):
  ``nbgrader submit week2 --student=<someone else>`` hands work in under another student's
  name, and stock collect takes it as that student's newest submission (it only logs
  "cheating attempt?");
- the time, which the student's own process writes into that name and into timestamp.txt,
  and the files, which stay the student's: a student can submit before the deadline and
  replace the notebooks in the exchange afterwards (or write an earlier time), and the late
  work is graded as on time.

``VerifiedCollect`` (the staff's nbgrader setting on the hub, hub/staff/nbgrader_config.py)
skips a submission whose folder does not belong to the student it names, and dates every
submission no earlier than the last change the file system recorded in it: the inode change
time, which no user can set back. A submission changed after its stated time is collected as
handed in at that change, and the collected timestamp.txt says so (the late policy then
applies as usual).
"""

from __future__ import annotations

import datetime
import glob
import os
import pwd
from collections import defaultdict

from nbgrader.exchange.default import ExchangeCollect

# nbgrader stamps a submission when `submit` starts and finishes writing it a moment later.
SLACK = datetime.timedelta(seconds=60)


def owner(path: str) -> str:
    uid = os.stat(path).st_uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def last_change(path: str) -> datetime.datetime:
    """The latest inode change time of ``path`` and everything in it, as naive UTC (nbgrader's)."""
    latest = os.lstat(path).st_ctime
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            latest = max(latest, os.lstat(os.path.join(folder, name)).st_ctime)
    return datetime.datetime.fromtimestamp(latest, datetime.timezone.utc).replace(tzinfo=None)


class VerifiedCollect(ExchangeCollect):
    def init_src(self):
        super().init_src()  # nbgrader's checks and the due date; which submission to take is redone here
        student = self.coursedir.student_id if self.coursedir.student_id else "*"
        pattern = os.path.join(self.inbound_path, f"{student}+{self.coursedir.assignment_id}+*")
        by_student = defaultdict(list)
        for path in sorted(glob.glob(pattern)):
            record = self._path_to_record(path)
            handed_in_by = owner(path)
            if handed_in_by != record["username"]:
                self.log.warning("Skipping %s: it is handed in under the name %s by the account %s",
                                 record["filename"], record["username"], handed_in_by)
                continue
            changed = last_change(path)
            if changed > record["timestamp"] + SLACK:
                self.log.warning("%s was changed at %s UTC, after the time it states (%s UTC): collected as handed in then",
                                 record["filename"], changed, record["timestamp"])
                record["timestamp"], record["changed"] = changed, True
            by_student[record["username"]].append(record)
        chosen = []
        for records in by_student.values():
            records = self._sort_by_timestamp(records)
            on_time = [r for r in records if self.duedate is not None and r["timestamp"] <= self.duedate]
            chosen.append(on_time[0] if self.before_duedate and self.duedate is not None and on_time else records[0])
        self.src_records = chosen

    def copy_files(self):
        super().copy_files()
        for record in self.src_records:
            if not record.get("changed"):
                continue
            dest = self.coursedir.format_path(self.coursedir.submitted_directory, record["username"],
                                              self.coursedir.assignment_id)
            if self.coursedir.get_existing_timestamp(dest) < record["timestamp"]:  # this copy, not a newer one
                stamp = record["timestamp"].replace(tzinfo=datetime.timezone.utc)
                with open(os.path.join(dest, "timestamp.txt"), "w") as f:
                    f.write(stamp.strftime(self.timestamp_format))
