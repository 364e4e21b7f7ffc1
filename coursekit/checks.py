"""``coursekit.checks``: the name the released notebooks import, kept stable across releases.

It is ``coursekit.student.checks`` itself (the same module object), not a copy.
"""
import sys

from coursekit.student import checks

sys.modules[__name__] = checks
