"""Course tools for the week-2 nbgrader assignment (what nbgrader itself does not do).

Modules, one job each:

- ``datasets``: offline, checksum-verified Fashion-MNIST and MNIST loaders.
"""

__all__ = ["datasets"]
