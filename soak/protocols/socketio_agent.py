"""Socket.IO with HTTP send (agent-zero-style servers).

Handshake: `GET {csrf_path}` gives `{token, runtime_id}` and a session cookie;
the client adds cookie `csrf_token_{runtime_id}` and connects with python-socketio's
client (WebSocket transport, `Origin` of the target, auth `{csrf_token, handlers}`)
to the profile's namespace. A turn is `POST {send_path}` `{text, context, message_id}`
with header `X-CSRF-Token`; the reply arrives as `state_push` snapshots after a
`state_request` for the context (with `log_from`, `notifications_from` and an IANA
`timezone`, all required by agent-zero; its ack is nested, `{correlationId, results:
[{handlerId, ok, data: {runtime_epoch, seq_base}}]}`, and a refusal there ends the
connect or turn with what the server said). Each chat is a context of its own, with
an 8-character id the client makes, as the web UI does (`context: ""` would put
every chat into the server's first one). Tokens are what the `response` log items
after our user message grew by (`reply_types`: the `agent` item holds the raw JSON
tool call, which repeats the reply); the turn is done when the context is no
longer running and no log progress is active; an `error` log item is an error.
Push `seq` numbers go to the turn's gap check.

The target URL is given as ws://HOST:PORT (wss:// for TLS): HTTP calls go to
http(s)://HOST:PORT. No protocol-level ping (Socket.IO's own keepalive runs inside
the client, and a lost server shows as a disconnect).
"""

from __future__ import annotations

import contextlib
import json
import queue
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from soak.protocols.base import (
    DONE,
    ERROR,
    INVALID,
    OTHER,
    TOKEN,
    Adapter,
    ConnectionLost,
    Conversation,
    Frame,
)
from soak.protocols.settings import Spec, non_empty_strings, optional_string, string, string_list
from soak.protocols.wsjson import http_base

RAW_EXCERPT = 300
#: Characters of a context id the client makes (as agent-zero's web UI does).
CONTEXT_ID_CHARS = 8


@dataclass
class _Turn:
    """What one turn has seen so far in the pushed snapshots."""

    request_id: str
    user_no: int | None = None
    seen_running: bool = False
    done: bool = False
    consumed: dict[int, int] = field(default_factory=dict)  # log no -> chars already tokens


def _number(item: dict[str, Any]) -> int:
    """A log item's `no` (its position in the context's log), -1 when missing."""
    no = item.get("no")
    return no if isinstance(no, int) else -1


class _Closed:
    """Queue marker: the Socket.IO connection dropped (with the client's reason)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class SocketIoAgentConversation(Conversation):
    resumable = True  # the context id is the client's: a reconnect carries on its chat

    def __init__(self, adapter: SocketIoAgentAdapter, url: str, timeout: float) -> None:
        self.config = adapter.config
        self.base = http_base(url)
        self.timeout = timeout
        self.namespace = self.config["namespace"]
        self.session_id: str | None = uuid.uuid4().hex[:CONTEXT_ID_CHARS]  # this chat's context
        self.reply_types = tuple(self.config.get("reply_types") or ("response",))
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.ready: list[Frame] = []
        self.turn: _Turn | None = None
        self.subscribed: str | None = None
        self.last_user_no = -1
        import requests  # here, not at the top: profile validation imports this module
        import socketio

        self.http = requests.Session()
        self.http.trust_env = False  # a soak of a loopback server must not go through a proxy
        self.origin = self.config.get("origin") or self.base
        self.http.headers["Origin"] = self.origin
        self.client = socketio.Client(
            reconnection=False,
            handle_sigint=False,
            http_session=self.http,
            request_timeout=timeout,
            websocket_extra_options={"origin": self.origin},  # websocket-client's own header
        )
        self.client.on("state_push", self._on_push, namespace=self.namespace)
        self.client.on("disconnect", self._on_disconnect, namespace=self.namespace)
        try:
            self._handshake()
        except ConnectionLost:
            self.close()
            raise

    # -- handshake ----------------------------------------------------------------
    def _handshake(self) -> None:
        import requests
        import socketio.exceptions

        config = self.config
        try:
            response = self.http.get(self.base + config["csrf_path"], timeout=self.timeout)
            body = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise ConnectionLost(None, f"connect failed: CSRF token fetch: {exc}") from None
        if not response.ok or not isinstance(body, dict) or not body.get("token"):
            raise ConnectionLost(
                None, f"connect failed: CSRF token fetch gave HTTP {response.status_code}: "
                f"{response.text[:RAW_EXCERPT]}"
            )  # fmt: skip
        self.csrf = str(body["token"])
        host = urlsplit(self.base).hostname or ""
        self.http.cookies.set(f"csrf_token_{body.get('runtime_id', '')}", self.csrf, domain=host)
        try:
            self.client.connect(
                self.base,
                auth={"csrf_token": self.csrf, "handlers": list(config["handlers"])},
                transports=["websocket"],
                namespaces=[self.namespace],
                wait_timeout=self.timeout,
            )
        except socketio.exceptions.ConnectionError as exc:
            raise ConnectionLost(None, f"connect failed: {exc}") from None

    # -- events from the client's reader (another greenlet/thread) -------------------
    def _on_push(self, data: Any) -> None:
        self.inbox.put(data)

    def _on_disconnect(self, reason: Any = None) -> None:
        self.inbox.put(_Closed(f"socket.io disconnect: {reason or 'closed'}"))

    # -- turns --------------------------------------------------------------------------
    def send_prompt(self, prompt: str, request_id: str) -> None:
        import requests

        self.turn = _Turn(request_id)
        body = {"text": prompt, "context": self.session_id or "", "message_id": request_id}
        try:
            response = self.http.post(
                self.base + self.config["send_path"],
                json=body,
                headers={"X-CSRF-Token": self.csrf},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise ConnectionLost(None, f"POST {self.config['send_path']} failed: {exc}") from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not response.ok or not isinstance(answer, dict):
            reason = f"POST {self.config['send_path']}: HTTP {response.status_code}"
            self.ready.append(Frame(ERROR, request_id, reason, response.text[:RAW_EXCERPT]))
            return
        context = answer.get("context")
        if context:
            self.session_id = str(context)
        if self.session_id and self.subscribed != self.session_id:
            self._subscribe(self.session_id)

    def _subscribe(self, context: str) -> None:
        import socketio.exceptions

        request = {
            "context": context,
            "log_from": 0,
            "notifications_from": 0,
            "timezone": self.config.get("timezone") or "UTC",
            "correlationId": uuid.uuid4().hex,
        }
        try:
            ack = self.client.call("state_request", request, self.namespace, self.timeout)
        except socketio.exceptions.TimeoutError:
            raise ConnectionLost(
                None, f"state_request not acknowledged in {self.timeout:g} s"
            ) from None
        except socketio.exceptions.SocketIOError as exc:
            raise ConnectionLost(None, f"state_request failed: {exc}") from None
        data = _ack_data(ack)
        self.subscribed = context
        seq_base = data.get("seq_base")
        if isinstance(seq_base, int):  # lets the gap check see a lost first push
            self.ready.append(Frame(OTHER, None, "", json.dumps(ack)[:RAW_EXCERPT], seq_base))

    def receive(self, timeout: float) -> Frame | None:
        if not self.ready:
            try:
                item = self.inbox.get(timeout=max(timeout, 0.0))
            except queue.Empty:
                return None
            if isinstance(item, _Closed):
                raise ConnectionLost(None, item.reason)
            self.ready.extend(self._frames(item))
        return self.ready.pop(0)

    def _frames(self, push: Any) -> list[Frame]:
        """The frames one `state_push` means for the turn in progress (at least one)."""
        raw = json.dumps(push, default=str)[:RAW_EXCERPT]
        data = push.get("data") if isinstance(push, dict) else None
        snapshot = data.get("snapshot") if isinstance(data, dict) else None
        if not isinstance(snapshot, dict):
            return [Frame(INVALID, None, "state_push without data.snapshot", raw)]
        seq = data.get("seq") if isinstance(data.get("seq"), int) else None
        turn = self.turn
        frames = [] if turn is None else self._turn_frames(turn, snapshot, raw)
        if not frames:
            return [Frame(OTHER, None, "", raw, seq)]
        first = frames[0]
        frames[0] = Frame(first.kind, first.request_id, first.text, first.raw, seq)
        return frames

    def _turn_frames(self, turn: _Turn, snapshot: dict[str, Any], raw: str) -> list[Frame]:
        logs = [item for item in snapshot.get("logs") or [] if isinstance(item, dict)]
        if turn.user_no is None:
            turn.user_no = self._user_item(logs, turn.request_id)
        frames: list[Frame] = []
        if turn.user_no is not None:
            for item in logs:
                no = _number(item)
                if no <= turn.user_no:
                    continue
                kind, content = item.get("type"), str(item.get("content") or "")
                if kind in self.reply_types and len(content) > turn.consumed.get(no, 0):
                    text = content[turn.consumed.get(no, 0) :]
                    frames.append(Frame(TOKEN, turn.request_id, text, raw))
                    turn.consumed[no] = len(content)
                elif kind == "error" and no not in turn.consumed:
                    turn.consumed[no] = len(content)
                    turn.done = True  # the context stopping after an error is not a second end
                    frames.append(Frame(ERROR, turn.request_id, content or "error log item", raw))
        context = next(
            (
                c
                for c in snapshot.get("contexts") or []
                if isinstance(c, dict) and str(c.get("id")) == self.session_id
            ),
            None,
        )
        running = bool(context and context.get("running")) or bool(
            snapshot.get("log_progress_active")
        )
        turn.seen_running |= running
        if not running and not turn.done and (turn.seen_running or turn.consumed):
            turn.done = True
            frames.append(Frame(DONE, turn.request_id, "", raw))
        return frames

    def _user_item(self, logs: list[dict[str, Any]], message_id: str) -> int | None:
        """`no` of this turn's user log item: the one with our message id, else the first
        user item newer than the previous turn's (for servers that do not keep the id)."""
        users = [item for item in logs if item.get("type") == "user"]
        mine = [item for item in users if str(item.get("id")) == message_id]
        newer = [item for item in users if _number(item) > self.last_user_no]
        found = (mine or newer or [None])[0]
        if found is None:
            return None
        self.last_user_no = _number(found)
        return self.last_user_no

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken connection must never fail a user
            self.client.disconnect()
        self.http.close()


def _ack_data(ack: Any) -> dict[str, Any]:
    """The `data` of a state_request ack: nested in agent-zero (`results[0].data`), flat
    in older servers. Raises ConnectionLost with the server's words when it refused."""
    if not isinstance(ack, dict):
        return {}
    results = ack.get("results")
    if not isinstance(results, list):
        return ack  # a flat ack {runtime_epoch, seq_base}
    if not results:
        raise ConnectionLost(None, "state_request acknowledged by no handler (results: [])")
    first = results[0] if isinstance(results[0], dict) else {}
    data = first.get("data") if isinstance(first.get("data"), dict) else {}
    error = first.get("error") if isinstance(first.get("error"), dict) else None
    if first.get("ok") is False or error:
        said = (error or {}).get("code") or "refused"
        hint = " (the CSRF token or cookie was not accepted)" if said == "NO_HANDLERS" else ""
        reason = (error or {}).get("error") or (error or {}).get("message") or ""
        raise ConnectionLost(None, f"state_request refused: {said} {reason}{hint}".strip())
    if data.get("code"):
        raise ConnectionLost(
            None, f"state_request rejected: {data.get('code')}: {data.get('message', '')}"
        )
    return data


def _timezone(value: Any) -> str:
    """An IANA time zone name (agent-zero rejects a state_request without a valid one)."""
    import zoneinfo

    name = string(value)
    if name == "UTC" or not zoneinfo.available_timezones():  # no tz database here: trust it
        return name
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone name such as UTC") from None
    return name


class SocketIoAgentAdapter(Adapter):
    kind = "socketio-agent"
    settings = {
        "namespace": Spec(string, "/ws", 'namespace = "/ws"'),
        "handlers": Spec(string_list, ["ws_webui"], 'handlers = ["ws_webui"]'),
        "csrf_path": Spec(string, "/api/csrf_token", 'csrf_path = "/api/csrf_token"'),
        "send_path": Spec(string, "/api/message_async", 'send_path = "/api/message_async"'),
        "origin": Spec(optional_string, None, 'origin = "http://127.0.0.1:50001"'),
        "timezone": Spec(_timezone, "UTC", 'timezone = "Europe/Berlin"  # IANA, for state_request'),
        "reply_types": Spec(
            non_empty_strings, ["response"], 'reply_types = ["response"]  # log items: the reply'
        ),
    }

    def connect(self, url: str, timeout: float) -> Conversation:
        return SocketIoAgentConversation(self, url, timeout)
