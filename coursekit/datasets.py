"""``coursekit.datasets``: the name the released notebooks import, kept stable across releases.

It is ``coursekit.student.datasets`` itself (the same module object), not a copy.
"""
import sys

from coursekit.student import datasets

sys.modules[__name__] = datasets
