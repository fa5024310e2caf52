"""The one jinja2 template set of the HTML pages (report, compare, release).

Templates live in soak/templates/ (package data) and do layout only; Python hands them
plain data: strings, rows of cells, numbers already formatted. Autoescaping is on, so
every string from the run or the server (target and thread names, /health fields, error
texts) is escaped by the template; nothing of the run is ever marked safe.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from soak.report.plots import Plot


@dataclass(frozen=True)
class Cell:
    """A table cell shown in a style (the `cell` macro): `badge` (with its colour class
    `tone`, default the text itself), `code`, `mono`, `detail` (pre-wrapped) or `muted`.
    A plain string is a plain cell."""

    text: str
    style: str
    tone: str = ""


@dataclass(frozen=True)
class Figure:
    """A PNG plot embedded as a data URI, so that the page stays one file."""

    title: str
    src: str


def figures(plots: list[Plot]) -> list[Figure]:
    """The plots as figures for the `figures` macro."""
    return [
        Figure(
            plot.title,
            "data:image/png;base64," + base64.b64encode(plot.path.read_bytes()).decode("ascii"),
        )
        for plot in plots
    ]


@cache
def environment() -> Environment:
    """The environment of soak/templates/, built once: autoescape, strict undefined."""
    env = Environment(
        loader=PackageLoader("soak", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=lambda value: "" if value is None else value,  # None shows as nothing
    )
    env.tests["cell"] = lambda value: isinstance(value, Cell)
    # |tojson escapes <, >, & and ' inside <script>; keep the data's own key order
    env.policies["json.dumps_kwargs"] = {"separators": (",", ":"), "allow_nan": False}
    return env


def render(name: str, **context: Any) -> str:
    """Render the template `name` (e.g. "report.html") with `context`."""
    return environment().get_template(name).render(**context)
