"""Which stderr output is harmless noise rather than a sign of a wrong answer.

nbgrader scores a test cell 0 if it wrote anything to stderr. ``IgnorePattern`` (enabled in
``nbgrader_config.py``) drops a stderr output that ``HARMLESS_STDERR`` matches; the pattern
only matches when *every* line of the output is one of the lines below, so a student's own
stderr text still shows.
"""

import re

_NOISE_LINES = [
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"[IWE]\d{4} [\d:. ]+\s+\d+ \S+:\d+\] .*",  # TensorFlow/absl C++ log line
    r"To enable the following instructions: .*",
    r".*:\d+: \w*Warning: .*",  # Python warnings.warn() header line...
    r"  .*",  # ...and the source line that follows it
    r"[ \t]*",
]

HARMLESS_STDERR = re.compile(r"\A(?:(?:" + "|".join(_NOISE_LINES) + r")(?:\r?\n|\Z))+\Z")


def is_harmless(text: str) -> bool:
    return bool(HARMLESS_STDERR.search(text))
