"""Grading a class: the runner's local pool, the Dask cluster, the gradebook server for PostgreSQL.

docs/architecture.md has the table of modules."""
