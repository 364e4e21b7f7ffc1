"""The course's shared vocabulary: the course on disk, its notebooks' cells, the record of what happened
to a submission, the gradebook, the late policy. Imports nothing else of coursekit but the students' package.

docs/architecture.md has the table of modules."""
