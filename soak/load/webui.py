"""Locust's own web UI (`--web`) without Locust's per-request statistics growing for days.

Headless runs never fire Locust's `request` event: soak aggregates turns
itself (per interval, in record.py), so Locust's stats stay empty. With the
web UI on, each turn is also fired as one Locust request (name = target,
response time = reply time, failure = the outcome), which is what the charts
show. Locust keeps per-second counters (`num_reqs_per_sec`,
`num_fail_per_sec`) for the whole run; `trim_stats` drops seconds older than
`KEEP_SECONDS` every minute, so a 3-day run holds a minute of them. Errors are
keyed by outcome name (7 at most); response times are rounded by Locust into
a bounded set of buckets; the stats history list is only filled by Locust's
command-line main, which soak does not use.
"""

from __future__ import annotations

import time

import gevent
from locust.env import Environment
from locust.stats import RequestStats

from soak.load.locust_compat import per_second_counters, stats_history
from soak.load.record import ChatRecorder
from soak.protocols.turn import OK, TurnResult

#: Per-second Locust counters kept, in seconds (the UI's current rate needs ~12).
KEEP_SECONDS = 60
#: How often they are trimmed, in seconds.
TRIM_EVERY_S = 60.0


class TurnOutcome(Exception):
    """A turn's non-ok outcome as Locust sees a failure (its text is the outcome name)."""

    def __repr__(self) -> str:
        # Locust names a failure by repr(exception): "stall", not "TurnOutcome('stall')".
        return str(self.args[0]) if self.args else "failed"


def bridge_turns_to_locust(env: Environment, recorder: ChatRecorder) -> None:
    """Fire one Locust `request` per finished turn, for the web UI's charts."""

    def on_turn(target: str, result: TurnResult) -> None:
        seconds = result.reply_s if result.reply_s is not None else result.elapsed_s
        env.events.request.fire(
            request_type="turn",
            name=target,
            response_time=seconds * 1000.0,
            response_length=result.tokens,
            exception=None if result.outcome == OK else TurnOutcome(result.outcome),
            context={},
        )

    recorder.listeners.append(on_turn)


def trim_stats(stats: RequestStats, keep_s: int = KEEP_SECONDS, now: float | None = None) -> None:
    """Drop Locust's per-second counters older than `keep_s` seconds."""
    cutoff = int(now or time.time()) - keep_s
    for per_second in per_second_counters(stats):
        for second in [s for s in per_second if s < cutoff]:
            del per_second[second]
    del stats_history(stats)[:-100]


def start_web_ui(env: Environment, port: int) -> gevent.Greenlet:
    """Serve Locust's web UI on 127.0.0.1:`port` and keep its stats trimmed."""
    env.create_web_ui(host="127.0.0.1", port=port)

    def trim_forever() -> None:
        while True:
            gevent.sleep(TRIM_EVERY_S)
            trim_stats(env.stats)

    return gevent.spawn(trim_forever)
