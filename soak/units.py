"""Parsing and formatting of durations ("90s", "2h", "3d", "1h30m", "250ms")."""

import re

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|min|s|m|h|d)")

DURATION_HINT = 'a number of seconds or a string such as "250ms", "90s", "5m", "2h", "3d", "1h30m"'


def parse_duration(value: object) -> float:
    """Return `value` in seconds; accepts numbers (seconds) and unit strings.

    Raises ValueError with a hint of what is valid.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}; write {DURATION_HINT}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative ({value})")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration, got {type(value).__name__}; write {DURATION_HINT}")
    text = value.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration; write {DURATION_HINT}")
    return total


def format_duration(seconds: float) -> str:
    """Format seconds compactly for people: 42s, 3m05s, 2h10m, 3d04h."""
    seconds = float(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"
