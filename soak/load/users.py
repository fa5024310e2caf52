"""Locust chat users: each holds one conversation with one target and runs turns.

A user is a person chatting: connect (and handshake), then turns separated by
think time. Think time is spent listening on the connection (frames that
arrive then are charged to the next turn, a close is seen at once) and sending
a ping probe when one is due. After a turn that failed (stall, timeout,
violation, mismatch) a person asks again on the same chat: the user stays on
its connection (`after_failure = "stay"`, the default) so that a late or stale
answer reaches the next turn; `"reconnect"` opens a new connection instead.
After `turns_per_connection` turns (0: never) the connection is closed and a
new one opened (churn). After a disconnect or a failed connect the user waits
with exponential backoff before reconnecting; a new connection carries on the
chat's session when the protocol names it in what it sends (`resume_session`),
as a web UI does after a reconnect.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import gevent
from locust import User, constant, task

from soak.load.record import DURING_CONNECT, DURING_IDLE, ChatRecorder
from soak.protocols import Adapter, ConnectionLost
from soak.protocols.base import fill_placeholders
from soak.protocols.turn import (
    DISCONNECT,
    EARLIER_NONCES,
    OK,
    Channel,
    TurnResult,
    run_turn,
    unreadable,
)

#: [load] after_failure values.
STAY, RECONNECT = "stay", "reconnect"
_CHAT_IDS = itertools.count(1)


@dataclass(frozen=True)
class ChatSettings:
    """What every chat user of a run shares: protocol, recorder and the [load] table."""

    adapter: Adapter
    recorder: ChatRecorder
    load: dict[str, Any]
    prompt: str
    require_nonce: bool

    @classmethod
    def from_profile(
        cls, profile: dict[str, Any], adapter: Adapter, recorder: ChatRecorder
    ) -> ChatSettings:
        protocol = profile["protocol"]
        return cls(
            adapter, recorder, profile["load"], protocol["prompt"], protocol["require_nonce"]
        )


def user_classes(targets: list[dict[str, Any]], settings: ChatSettings) -> list[type[User]]:
    """One user class per target, equal weights: Locust splits every user count evenly
    (the first targets get the remainder)."""
    classes = []
    for target in targets:
        attributes = {"target_name": target["name"], "url": target["url"], "settings": settings}
        classes.append(type(f"ChatUser_{target['name']}", (ChatUser,), attributes))
    return classes


def lost_turn(exc: ConnectionLost, detail: str, elapsed_s: float = 0.0) -> TurnResult:
    """The disconnect outcome of a connect that failed or a connection that closed between
    turns (no request of its own: request id "-")."""
    return TurnResult(
        request_id="-",
        outcome=DISCONNECT,
        close_code=exc.code,
        close_reason=exc.reason,
        elapsed_s=elapsed_s,
        detail=detail,
    )


class ChatUser(User):
    """One person chatting with one target (subclassed per target by `user_classes`)."""

    abstract = True
    weight = 1
    wait_time = constant(0)  # think time is spent listening, inside the task
    target_name: str
    url: str
    settings: ChatSettings

    def on_start(self) -> None:
        self.channel: Channel | None = None
        self.backoff_s = self.settings.load["reconnect_backoff"][0]
        self.next_ping_at = 0.0
        self.session_id: str | None = None  # the chat's session, kept across connections
        self.chat_id = next(_CHAT_IDS)
        self.nonces: deque[str] = deque(maxlen=EARLIER_NONCES)

    def on_stop(self) -> None:
        self._drop()

    @task
    def chat(self) -> None:
        load = self.settings.load
        if self.channel is None and not self._connect():
            return
        think = random.uniform(*load["think_time"])
        linger = min(load["linger"], think)
        result = self._turn(self.channel, linger)
        if result.outcome == OK:
            self.backoff_s = load["reconnect_backoff"][0]
        limit = load["turns_per_connection"]
        stays = (
            result.outcome != DISCONNECT
            and not result.runaway  # a reply still pouring in: hang up, as a person would
            and (load["after_failure"] == STAY or result.connection_usable)
        )
        if not stays or (limit and self.channel.turns >= limit):
            self._drop()
        if result.outcome == DISCONNECT:
            self._back_off()
        self._think(think - linger)

    # -- one turn ---------------------------------------------------------------------
    def _turn(self, channel: Channel, linger: float) -> TurnResult:
        settings, load = self.settings, self.settings.load
        request_id = uuid.uuid4().hex[:12]
        nonce = uuid.uuid4().hex[:8]
        prompt = fill_placeholders(
            settings.prompt,
            {
                "request_id": request_id,
                "nonce": nonce,
                "session_id": channel.session_id or "",
                "turn": str(channel.turns + 1),
            },
        )
        recorder = settings.recorder
        channel.conversation.settle()  # outside the turn's clock: reuse the connection
        recorder.turn_started(self.target_name)
        finished = False
        try:
            result = run_turn(
                channel,
                prompt,
                request_id,
                first_token_timeout=load["first_token_timeout"],
                reply_timeout=load["reply_timeout"],
                linger=linger,
                nonce=nonce if settings.require_nonce else None,
            )
            recorder.turn_finished(self.target_name, result, channel.session_id, chat=self.chat_id)
            finished = True
        finally:
            if not finished:
                recorder.turn_abandoned(self.target_name)  # killed by Locust (users stopping)
            self._notices(channel)
        return result

    def _notices(self, channel: Channel) -> None:
        for kind, message in channel.conversation.take_notices():
            self.settings.recorder.notice(self.target_name, kind, message)

    # -- between turns ----------------------------------------------------------------
    def _think(self, seconds: float) -> None:
        """Spend `seconds` listening on the connection, with a ping probe when one is due."""
        deadline = time.monotonic() + max(seconds, 0.0)
        load = self.settings.load
        while (now := time.monotonic()) < deadline:
            channel = self.channel
            if channel is None:
                gevent.sleep(deadline - now)
                return
            try:
                pings = load["ping_every"] and channel.conversation.supports_ping
                if pings and now >= self.next_ping_at:
                    self.next_ping_at = now + load["ping_every"]
                    channel.conversation.plan_ping(self.next_ping_at)
                    rtt = channel.probe(load["connect_timeout"])
                    self._notices(channel)
                    if channel.conversation.supports_ping:  # not: found to have no ping
                        self.settings.recorder.pinged(self.target_name, rtt)
                else:
                    channel.listen(
                        min(deadline, self.next_ping_at) - now if pings else deadline - now
                    )
            except Exception as exc:  # noqa: BLE001 - ConnectionLost, or an adapter that choked
                if not isinstance(exc, ConnectionLost):
                    exc = ConnectionLost(None, unreadable(exc))
                detail = f"connection lost between turns: code {exc.code}, {exc.reason}"
                lost = lost_turn(exc, detail)
                self.settings.recorder.lost(
                    self.target_name, lost, channel.session_id, DURING_IDLE, self.chat_id
                )
                self._drop()
                self._back_off()

    # -- connections ------------------------------------------------------------------
    def _connect(self) -> bool:
        settings = self.settings
        timeout = settings.load["connect_timeout"]
        started = time.monotonic()
        url = self.url
        if self.session_id and settings.load["resume_session"]:
            url = settings.adapter.resume_url(url, self.session_id)
        try:
            conversation = settings.adapter.connect(url, timeout)
        except Exception as exc:  # noqa: BLE001 - ConnectionLost, or an adapter that choked
            if not isinstance(exc, ConnectionLost):
                exc = ConnectionLost(None, f"connect failed: {unreadable(exc)}")
            failed = lost_turn(exc, exc.reason, elapsed_s=time.monotonic() - started)
            settings.recorder.lost(
                self.target_name, failed, self.session_id, DURING_CONNECT, self.chat_id
            )
            self._back_off()
            return False
        settings.recorder.connected(self.target_name, time.monotonic() - started)
        if self.session_id and settings.load["resume_session"] and conversation.resumable:
            conversation.resume(self.session_id)
        self.session_id = conversation.session_id or self.session_id
        self.channel = Channel(conversation, self.nonces)
        self.next_ping_at = time.monotonic() + random.uniform(0, settings.load["ping_every"])
        if settings.load["ping_every"] and conversation.supports_ping:
            conversation.plan_ping(self.next_ping_at)
        return True

    def _back_off(self) -> None:
        """Wait before reconnecting: jittered, doubling up to the cap until a turn is ok."""
        gevent.sleep(self.backoff_s * random.uniform(0.5, 1.0))
        self.backoff_s = min(self.backoff_s * 2, self.settings.load["reconnect_backoff"][1])

    def _drop(self) -> None:
        if self.channel is not None:
            self.channel.conversation.close()
            self.channel = None
            self.settings.recorder.disconnected(self.target_name)
