"""The students' package: what a student's kernel imports (the data loaders, the check helpers and
what they read), built into the students' wheel from this folder alone.

docs/architecture.md has the table of modules."""

# The names the released notebooks import as ``coursekit.<name>`` (coursekit/<name>.py is this
# package's module itself, under the name every release so far has used).
PUBLIC_NAMES = ("checks", "datasets")
