"""A check that did not pass: what the check helpers raise and the checker's values raise too.

Its own module so that ``values`` (the records the checks read) and ``checks`` both use it without
importing each other.
"""


class CheckFailed(AssertionError):
    """A check did not pass. ``hint`` is the part safe to show for a hidden check."""

    def __init__(self, what: str, expected=None, found=None, hint: str = ""):
        self.what, self.expected, self.found, self.hint = what, expected, found, hint
        message = what
        if expected is not None or found is not None:
            message += f": expected {expected}, found {found}"
        if hint:
            message += f"\nHint: {hint}"
        super().__init__(message)

