"""Locust chat users: each holds one conversation with one target and runs turns."""

from __future__ import annotations

import random
import uuid
from typing import Any

import gevent
from locust import User, between, task

from soak.load.record import ChatRecorder
from soak.protocols import Adapter, ConnectionLost, Conversation
from soak.protocols.turn import DISCONNECT, TurnResult, run_turn

#: Reconnect backoff after a failed connect, in seconds: doubles up to the cap.
BACKOFF_START_S = 0.5
BACKOFF_CAP_S = 30.0


def user_classes(
    targets: list[dict[str, Any]],
    users: int,
    load: dict[str, Any],
    prompt: str,
    adapter: Adapter,
    recorder: ChatRecorder,
) -> list[type[User]]:
    """One user class per target with `users` split evenly (the first targets get the rest)."""
    share, rest = divmod(users, len(targets))
    return [
        _chat_user_class(
            target, share + (1 if index < rest else 0), load, prompt, adapter, recorder
        )
        for index, target in enumerate(targets)
    ]


def _chat_user_class(
    target: dict[str, Any],
    count: int,
    load: dict[str, Any],
    prompt_template: str,
    adapter: Adapter,
    recorder: ChatRecorder,
) -> type[User]:
    name = target["name"]
    low, high = load["think_time"]

    class ChatUser(User):
        """A person chatting: connect once, then turns separated by think time."""

        fixed_count = count
        wait_time = between(low, high)
        host = target["url"]

        def on_start(self) -> None:
            self.conversation: Conversation | None = None
            self.turns_on_connection = 0
            self.backoff_s = BACKOFF_START_S

        def on_stop(self) -> None:
            self._drop_connection()

        @task
        def chat_turn(self) -> None:
            if self.conversation is None and not self._connect():
                return
            request_id = uuid.uuid4().hex[:12]
            nonce = uuid.uuid4().hex[:8]
            prompt = prompt_template.replace("{request_id}", request_id).replace("{nonce}", nonce)
            recorder.turn_started(name)
            finished = False
            try:
                result = run_turn(
                    self.conversation,
                    prompt,
                    request_id,
                    first_token_timeout=load["first_token_timeout"],
                    reply_timeout=load["reply_timeout"],
                )
                recorder.turn_finished(name, result, self.conversation.session_id)
                finished = True
            finally:
                if not finished:
                    recorder.turn_abandoned(name)
            self.turns_on_connection += 1
            limit = load["turns_per_connection"]
            if not result.connection_usable or (limit and self.turns_on_connection >= limit):
                self._drop_connection()

        def _connect(self) -> bool:
            try:
                self.conversation = adapter.connect(self.host, load["connect_timeout"])
            except ConnectionLost as exc:
                failed = TurnResult(request_id="-", outcome=DISCONNECT, detail=exc.reason)
                recorder.turn_started(name)
                recorder.turn_finished(name, failed, None)
                gevent.sleep(self.backoff_s * random.uniform(0.5, 1.0))
                self.backoff_s = min(self.backoff_s * 2, BACKOFF_CAP_S)
                return False
            self.backoff_s = BACKOFF_START_S
            self.turns_on_connection = 0
            recorder.connected(name)
            return True

        def _drop_connection(self) -> None:
            if self.conversation is not None:
                self.conversation.close()
                self.conversation = None
                recorder.disconnected(name)

    ChatUser.__name__ = f"ChatUser_{name}"
    return ChatUser
