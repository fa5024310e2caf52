"""Compare runs: a patched build against an unpatched one, metric by metric, noise-aware.

`build_compare` names and analyses the two sides, compares them (`core`), and writes
compare.json, compare.md, compare.html and overlay plots; `build_release` turns several
runs into one release report. Never imports locust or gevent.
"""

from soak.compare.build import CompareResult, build_compare, open_sides, write_compare
from soak.compare.core import (
    FAIL_ON,
    VERDICTS,
    Comparison,
    Row,
    Side,
    compare_sides,
)

__all__ = [
    "FAIL_ON",
    "VERDICTS",
    "CompareResult",
    "Comparison",
    "Row",
    "Side",
    "build_compare",
    "compare_sides",
    "open_sides",
    "write_compare",
]
