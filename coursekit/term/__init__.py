"""A TA's week: the coursekit command and what it writes (report, item analysis, similarity, LMS export,
extensions, status, summary, schedule).

docs/architecture.md has the table of modules."""
