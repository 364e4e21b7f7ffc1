"""The course on JupyterHub: bin/hub, the students' wheel it installs, grading on submit.

docs/architecture.md has the table of modules."""
