"""The course's HTML pages (class report, feedback summary and verdicts) from Jinja2 templates.

The templates are in ``coursekit/templates/``. Autoescaping is on for every template: student
names, messages, notebook names and grade ids are hostile input and are only ever shown as
text. Filters: ``points`` (``3.0`` -> ``3``) and ``oneline`` (escaped, line breaks as ``<br>``:
for HTML inside a markdown cell, where a blank line would end the HTML block).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

TEMPLATES = Path(__file__).resolve().parent / "templates"


def points(value) -> str:
    return f"{float(value or 0):g}"


def oneline(value) -> Markup:
    return Markup(str(escape("" if value is None else value)).replace("\r", "").replace("\n", "<br>"))


@lru_cache(maxsize=None)
def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False)
    env.filters.update(points=points, oneline=oneline)
    return env


def render(template: str, **context) -> str:
    return environment().get_template(template).render(**context)
