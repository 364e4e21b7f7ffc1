"""Running student code: the grading kernels, the bubblewrap sandbox they start in, and exact fast
training inside them.

docs/architecture.md has the table of modules."""
