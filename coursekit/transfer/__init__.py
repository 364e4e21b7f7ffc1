"""From the student's kernel to the checker's: values as data, check cells outside the student's kernel.

docs/architecture.md has the table of modules."""
