"""Pages a TA or a student opens, none of which runs what a student wrote: the sanitiser, size bounds,
the feedback, formgrader's pages.

docs/architecture.md has the table of modules."""
