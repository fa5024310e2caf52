"""An idle chat's WebSocket keepalive ping folds into the application ping planned right
after it (one wake-up instead of two), and fires as before when none is planned or the
planned one is too far off. Real built-in target on loopback."""

import time
from collections.abc import Iterator

import pytest

from soak.protocols.wsjson import KEEPALIVE_FOLD, JsonSocket
from soak.target import TargetProcess, start_target

KEEPALIVE_S = 0.6


@pytest.fixture(scope="module")
def target() -> Iterator[TargetProcess]:
    with start_target(patched=True) as server:
        yield server


def idle_socket(target: TargetProcess) -> JsonSocket:
    socket = JsonSocket(target.ws_url, timeout=5, keepalive=KEEPALIVE_S)
    assert socket.recv(5) is not None  # session_switched
    return socket


def keepalive_pings_while_idle(socket: JsonSocket, seconds: float) -> int:
    """Keepalive pings the socket sent while listening for `seconds` (each moves its
    last-send time)."""
    sent, last = 0, socket._last_sent
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        assert socket.recv(remaining) is None  # nothing but pongs arrives
        if socket._last_sent != last:
            sent, last = sent + 1, socket._last_sent
    return sent


def test_a_keepalive_due_just_before_a_planned_ping_waits_for_it(target) -> None:
    socket = idle_socket(target)
    try:
        planned = socket._last_sent + KEEPALIVE_S * (1 + KEEPALIVE_FOLD / 2)
        socket.plan_send(planned)
        assert keepalive_pings_while_idle(socket, planned - time.monotonic() - 0.05) == 0
    finally:
        socket.close()


def test_without_a_plan_or_with_one_too_far_off_the_keepalive_pings_as_before(target) -> None:
    for plan_after in (None, KEEPALIVE_S * (1 + 2 * KEEPALIVE_FOLD)):
        socket = idle_socket(target)
        try:
            if plan_after is not None:
                socket.plan_send(socket._last_sent + plan_after)
            assert keepalive_pings_while_idle(socket, KEEPALIVE_S * 1.5) == 1
        finally:
            socket.close()
