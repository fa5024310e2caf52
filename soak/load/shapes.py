"""Load shapes over time (pure arithmetic: importable without Locust).

`plan(load, t)` says how many users should run `t` seconds into the run and in
which phase; `SoakShape` (in runner.py, the module that may import Locust) hands
that to Locust's LoadTestShape machinery once a second and reports each phase
change. Shapes (the [load] table's `shape`):

- steady: `users` for `duration` (phase "load");
- ramp: from `min_users` up to `users` evenly over `duration` ("ramp");
- steps: `steps` equal steps up to `users`, each `duration / steps` long ("step-1", ...);
- waves: day and night, `min_users` to `users` and back every `period` along a cosine,
  starting at night ("night" below the midpoint, "day" above it);
- bursts: `users` for `burst`, then none for `gap`, repeated ("burst", "gap").

Every shape ends with `idle_after` seconds of no users ("idle"), and after that
holds zero users until the runner stops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Step:
    """Users wanted and the phase they belong to."""

    users: int
    phase: str


IDLE = Step(0, "idle")


def plan(load: dict[str, Any], t: float) -> Step | None:
    """The step `t` seconds after the start; None once duration and idle time are over."""
    duration = load["duration"]
    if t >= duration + load["idle_after"]:
        return None
    if t >= duration:
        return IDLE
    shape, users, low = load["shape"], load["users"], load["min_users"]
    if shape == "ramp":
        return Step(round(low + (users - low) * t / duration), "ramp")
    if shape == "steps":
        count = load["steps"]
        index = min(int(t * count / duration), count - 1) + 1
        return Step(max(1, round(users * index / count)), f"step-{index}")
    if shape == "waves":
        level = (1 - math.cos(2 * math.pi * t / load["period"])) / 2
        return Step(round(low + (users - low) * level), "day" if level >= 0.5 else "night")
    if shape == "bursts":
        if t % (load["burst"] + load["gap"]) < load["burst"]:
            return Step(users, "burst")
        return Step(0, "gap")
    return Step(users, "load")
