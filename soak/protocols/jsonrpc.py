"""JSON-RPC 2.0 over WebSocket (hermes-style gateways).

Handshake: wait for the `gateway.ready` event, then `session.create` (params
from the profile's `session_params`) gives the session id. A turn is
`prompt.submit {session_id, text}`; the reply streams as `event`
notifications `{type, session_id, payload, seq}`: `message.delta` tokens (the
profile's `token_events`), then `message.complete` whose `payload.status` is
complete (done), error or interrupted (error). RPC errors (e.g. 4009 session
busy) are errors of the turn that caused them. `ping` -> `{pong: true}` is the
round-trip probe. Events of another session carry that session as their
request id, so a turn flags them as a reply to another request.

Versions differ (PROTOCOLS.md): hermes 0.19.0 has no `ping` method (answered
-32601: pings are switched off with one notice, never turned into errors), no
`seq`, and queues a prompt sent while a turn runs (`{"status": "queued"}`),
interrupting that turn. Events name no request, so the reply events of our
session belong to the oldest prompt the server has not finished: a late or
interrupted turn's events go to it (a turn soak gave up on ignores them), and a
`message.start` after one that never completed moves on to the next prompt.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from typing import Any

from soak.protocols.base import (
    DONE,
    ERROR,
    INVALID,
    OTHER,
    PONG,
    TOKEN,
    Adapter,
    ConnectionLost,
    Conversation,
    Frame,
)
from soak.protocols.settings import KEEPALIVE, Spec, non_empty_strings, table
from soak.protocols.wsjson import JsonSocket, as_text, lookup, parse

READY_EVENT = "gateway.ready"
START_EVENT = "message.start"
COMPLETE_EVENT = "message.complete"
ERROR_EVENT = "error"
#: JSON-RPC "method not found": the server has no such method (hermes 0.19.0 and `ping`).
METHOD_NOT_FOUND = -32601
#: Events of a session looked at before a server is said to number none (`seq`).
SEQ_PROBE = 20
#: RPC ids remembered per connection to map late answers back to their request.
RPC_MEMORY = 16


def _event_type(data: Any) -> str | None:
    if not isinstance(data, dict) or data.get("method") != "event":
        return None
    kind = lookup(data, "params.type")
    return kind if isinstance(kind, str) else None


class JsonRpcConversation(Conversation):
    def __init__(self, adapter: JsonRpcAdapter, socket: JsonSocket, url: str) -> None:
        self.adapter = adapter
        self.socket = socket
        self.url = url
        self.session_id: str | None = None
        self.next_id = 0
        self.calls: OrderedDict[int, str | None] = OrderedDict()  # rpc id -> request id / None
        self.ping_ids: set[int] = set()
        self.current_request: str | None = None
        #: Prompts the server has not finished, oldest first; whether the oldest started.
        self.pending: deque[str] = deque(maxlen=RPC_MEMORY)
        self.oldest_started = False
        self.events_seen = 0  # events of our session, and whether any carried a seq
        self.seq_seen = False

    @property
    def supports_ping(self) -> bool:  # type: ignore[override]
        return self.url not in self.adapter.without_ping

    def call(self, method: str, params: dict[str, Any], request_id: str | None = None) -> int:
        """Send one JSON-RPC request; return its id."""
        self.next_id += 1
        self.calls[self.next_id] = request_id
        while len(self.calls) > RPC_MEMORY:
            self.calls.popitem(last=False)
        self.socket.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        return self.next_id

    def send_prompt(self, prompt: str, request_id: str) -> None:
        self.current_request = request_id
        self.pending.append(request_id)
        self.call("prompt.submit", {"session_id": self.session_id, "text": prompt}, request_id)

    def send_ping(self) -> None:
        self.ping_ids = {self.call("ping", {})}

    def receive(self, timeout: float) -> Frame | None:
        raw = self.socket.recv(timeout)
        return None if raw is None else self.classify(raw)

    def classify(self, raw: str | bytes) -> Frame:
        text = as_text(raw)
        data = parse(raw)
        if not isinstance(data, dict) or data.get("jsonrpc") != "2.0":
            return Frame(INVALID, None, "not a JSON-RPC 2.0 object", text)
        if "method" not in data:
            return self._answer(data, text)
        kind = _event_type(data)
        params = data.get("params") if isinstance(data.get("params"), dict) else {}
        seq = params.get("seq")
        seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
        session = params.get("session_id")
        if session is not None and self.session_id is not None and str(session) != self.session_id:
            request_id: str | None = f"session:{session}"
            seq = None  # seq counts per session: another session's numbers are not ours
        else:
            request_id = self._owner(kind)
            self._count_seq(seq)
        payload = params.get("payload") if isinstance(params.get("payload"), dict) else {}
        if kind in self.adapter.config["token_events"]:
            return Frame(TOKEN, request_id, str(payload.get("text") or ""), text, seq)
        if kind == COMPLETE_EVENT:
            status = payload.get("status", "complete")
            if status == "complete":
                return Frame(DONE, request_id, str(payload.get("text") or ""), text, seq)
            said = payload.get("error") or payload.get("text")  # hermes 0.19: only `text`
            reason = f"message.complete with status {status!r}" + (f": {said}" if said else "")
            return Frame(ERROR, request_id, str(reason), text, seq)
        if kind == ERROR_EVENT:
            reason = payload.get("message") or payload.get("error") or text
            return Frame(ERROR, request_id, str(reason), text, seq)
        return Frame(OTHER, request_id, "", text, seq)

    def _count_seq(self, seq: int | None) -> None:
        """After SEQ_PROBE events of our session with no `seq`, say once that lost events
        cannot be seen on this server (hermes 0.19.0 numbers none)."""
        self.seq_seen |= seq is not None
        self.events_seen += 1
        if self.events_seen == SEQ_PROBE and not self.seq_seen:
            self.notice(
                "seq_unsupported",
                f"the server numbers no events (no seq in the first {SEQ_PROBE}), so events "
                "it loses cannot be told; replies are still checked end to end",
            )

    def _owner(self, kind: str | None) -> str | None:
        """The prompt an event of our own session belongs to: the oldest unfinished one."""
        if kind == START_EVENT:
            if self.oldest_started and len(self.pending) > 1:
                self.pending.popleft()  # that turn ended without message.complete
            self.oldest_started = True
        owner = self.pending[0] if self.pending else None
        if kind == COMPLETE_EVENT and self.pending:
            self.pending.popleft()
            self.oldest_started = False
        return owner

    def _answer(self, data: dict[str, Any], text: str) -> Frame:
        """A response to one of our calls: pong, RPC error, or an acknowledgement."""
        rpc_id = data.get("id")
        rpc_id = rpc_id if isinstance(rpc_id, int) and not isinstance(rpc_id, bool) else None
        error = data.get("error")
        if rpc_id in self.ping_ids:
            self.ping_ids.discard(rpc_id)
            if isinstance(error, dict) and error.get("code") == METHOD_NOT_FOUND:
                self.adapter.without_ping.add(self.url)
                self.notice(
                    "ping_unsupported",
                    "the server has no ping method (JSON-RPC -32601), so no ping probes are "
                    "sent; set [load] ping_every = 0 to say so in the profile",
                )
                return Frame(OTHER, None, "", text)
            if not isinstance(error, dict):
                return Frame(PONG, None, "", text)
        request_id = self.current_request if rpc_id is None else self.calls.get(rpc_id)
        if isinstance(error, dict):
            if request_id in self.pending:
                self.pending.remove(request_id)  # refused: the server will not work on it
            reason = f"RPC error {error.get('code')}: {error.get('message', '')}".strip()
            return Frame(ERROR, request_id, reason, text)
        return Frame(OTHER, request_id, "", text)

    def plan_ping(self, at: float) -> None:
        self.socket.plan_send(at)

    def close(self) -> None:
        self.socket.close()


class JsonRpcAdapter(Adapter):
    kind = "jsonrpc"
    settings = {
        "keepalive": KEEPALIVE,
        "session_params": Spec(table, {"source": "soak"}, 'session_params = { source = "soak" }'),
        "token_events": Spec(
            non_empty_strings, ["message.delta"], 'token_events = ["message.delta"]'
        ),
    }

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        #: Target URLs whose server answered `ping` with "method not found": no more pings
        #: on any of their connections (one adapter serves every target of a run).
        self.without_ping: set[str] = set()

    def connect(self, url: str, timeout: float) -> Conversation:
        socket = JsonSocket(url, timeout, self.config.get("keepalive", 0.0))
        conversation = JsonRpcConversation(self, socket, url)
        try:
            self._handshake(conversation, timeout)
        except ConnectionLost:
            socket.close()
            raise
        return conversation

    def _handshake(self, conversation: JsonRpcConversation, timeout: float) -> None:
        """gateway.ready, then session.create, all within `timeout` seconds (frames the
        server sends meanwhile, heartbeats say, do not extend it)."""
        socket = conversation.socket
        deadline = time.monotonic() + timeout

        def frames() -> Iterator[Any]:
            """Parsed frames (None: not JSON) until the deadline."""
            while (raw := socket.recv(deadline - time.monotonic())) is not None:
                yield parse(raw)

        if not any(_event_type(data) == READY_EVENT for data in frames()):
            raise ConnectionLost(None, f"no {READY_EVENT} event within {timeout:g} s")
        params = dict(self.config.get("session_params") or {})
        call_id = conversation.call("session.create", params)
        for data in frames():
            if isinstance(data, dict) and data.get("id") == call_id:
                session = lookup(data, "result.session_id")
                if session is None:
                    raise ConnectionLost(None, f"session.create failed: {str(data)[:300]}")
                conversation.session_id = str(session)
                return
        raise ConnectionLost(None, f"no answer to session.create within {timeout:g} s")
