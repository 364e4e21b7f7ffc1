"""Taking submissions in: collect from the exchange, the intake that reads a submission folder as data,
and the repairs done inside nbgrader autograde.

docs/architecture.md has the table of modules."""
