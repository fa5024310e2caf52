"""sse and ndjson: the shipped profiles' [protocol] tables, unchanged, against a
Trinity-style SSE agent server and an agentex-style NDJSON JSON-RPC server on uvicorn
(tests/servers.py), healthy and with each fault."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from soak.errors import ProfileError
from soak.profile import profile_from_mapping
from soak.protocols.turn import (
    DISCONNECT,
    DUPLICATE_DONE,
    ERRORED,
    FRAME_AFTER_DONE,
    OK,
    VIOLATION,
)
from tests.servers import (
    HTTP_FAULTS,
    Faults,
    _asgi_body,
    _stream,
    _uvicorn,
    agentex_server,
    chat,
    trinity_server,
)

PROFILES = Path(__file__).resolve().parent.parent / "profiles"
FAMILIES = {
    "sse": (trinity_server, "sse-agent.toml"),
    "ndjson": (agentex_server, "ndjson-rpc.toml"),
}


def protocol_of(profile: str) -> dict:
    return tomllib.loads((PROFILES / profile).read_text())["protocol"]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_healthy_server_passes_every_turn_on_one_connection(family: str) -> None:
    server_of, profile = FAMILIES[family]
    with server_of() as server:
        results = chat(server.url, protocol_of(profile), prompts=5, timeout=3)
        assert server.replies == 5
    assert [r.outcome for r in results] == [OK] * 5, [r.detail for r in results]
    assert all(r.tokens >= 6 and r.token_gaps_s for r in results)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("faults", "outcome", "subkind"), HTTP_FAULTS)
def test_each_fault_is_its_outcome(family: str, faults: Faults, outcome, subkind) -> None:
    server_of, profile = FAMILIES[family]
    with server_of(faults) as server:
        results = chat(server.url, protocol_of(profile), prompts=3, timeout=1.5)
    later = results[1:]  # answer_previous: the first reply answers nothing before it
    assert {r.outcome for r in later} == {outcome}, [(r.outcome, r.detail) for r in later]
    if subkind:
        assert {r.subkind for r in later} == {subkind}


def test_http_error_text_comes_from_the_servers_error_body() -> None:
    with trinity_server(Faults(http_error_every=1)) as server:
        [result] = chat(server.url, protocol_of("sse-agent.toml"), timeout=2)
    assert result.outcome == ERRORED and "HTTP 503" in result.detail
    assert "agent busy" in result.detail
    with agentex_server(Faults(error_every=1)) as server:
        [result] = chat(server.url, protocol_of("ndjson-rpc.toml"), timeout=2)
    assert result.outcome == ERRORED and "stream failed" in result.detail


def test_idle_keep_alive_closes_are_no_disconnect() -> None:
    """uvicorn closes connections idle for 0.3 s; think time is longer."""
    with trinity_server(keep_alive_s=0.3) as server:
        results = chat(
            server.url, protocol_of("sse-agent.toml"), prompts=3, timeout=3,
            between=lambda channel: channel.next_frame(0.8),
        )  # fmt: skip
    assert [r.outcome for r in results] == [OK] * 3


def test_end_of_body_as_the_terminal_frame() -> None:
    """A server whose streams simply end (no terminal event): end = "body"."""
    protocol = {**protocol_of("sse-agent.toml"), "done": {"path": "type", "value": "never"}}
    with trinity_server() as server:
        truncated = chat(server.url, protocol, prompts=1, timeout=2)
        ended = chat(server.url, {**protocol, "end": "body"}, prompts=2, timeout=2)
    assert truncated[0].outcome == DISCONNECT and "truncated" in truncated[0].detail
    # the stream_end event is then just another event; the body's end ends the turn
    assert [r.outcome for r in ended] == [OK, OK]


def test_bad_http_events_settings_are_profile_errors() -> None:
    cases = [
        (
            {"kind": "sse", "stream_path": "/api/stream"},
            r"stream_path: expected a path with \{id\}",
        ),
        ({"kind": "sse", "start": {"url": "/x"}}, r"start: expected \{ method = "),
        ({"kind": "ndjson", "end": "eof"}, "end: expected one of done, body"),
        ({"kind": "sse", "start": {"path": "/x", "verb": "GET"}}, "unknown key 'verb'"),
        (
            {"kind": "ndjson", "index_path": 3},
            r"\[protocol\] index_path: expected a string, got int 3\. Write for example: "
            r'index_path = "result.index"',
        ),
        (
            {"kind": "ndjson", "index_path": "result..index"},
            r'index_path: expected a dotted path into an event, such as "result.index", '
            r"got 'result..index'",
        ),
        ({"kind": "ndjson", "index_path": ""}, "index_path: expected a dotted path"),
    ]
    for protocol, message in cases:
        with pytest.raises(ProfileError, match=message):
            profile_from_mapping({"protocol": protocol})


# --- several messages per reply (agentex's `index`) ---------------------------------
AGENTEX = protocol_of("ndjson-rpc.toml")
#: What the profile said before it knew of indexes: the first done ends the turn.
FIRST_DONE_ENDS = {**{k: v for k, v in AGENTEX.items() if k != "index_path"},
                   "done": {"path": "result.type", "value": "done"}, "end": "done"}  # fmt: skip


@pytest.mark.parametrize("reasoning", ["delta", "full", "interleaved"])
def test_a_reply_of_several_messages_is_one_turn(reasoning: str) -> None:
    with agentex_server(reasoning=reasoning) as server:
        results = chat(server.url, AGENTEX, prompts=3, timeout=3)
        assert server.replies == 3
    assert [r.outcome for r in results] == [OK] * 3, [r.detail for r in results]
    thoughts = 1 if reasoning == "full" else 5
    assert all(r.tokens == thoughts + 12 for r in results)  # the text: 12 words


def test_the_first_done_no_longer_cuts_a_reply_of_two_messages() -> None:
    with agentex_server(reasoning="delta") as server:
        [cut] = chat(server.url, FIRST_DONE_ENDS, prompts=1, timeout=3)
    assert cut.outcome == VIOLATION and cut.subkind == FRAME_AFTER_DONE
    assert cut.tokens == 5  # only the reasoning: the answer came "after done"


@pytest.mark.parametrize(
    ("reasoning", "faults", "subkind"),
    [
        ("delta", Faults(frame_after_done_every=1), FRAME_AFTER_DONE),
        ("delta", Faults(duplicate_done_every=1), DUPLICATE_DONE),
        ("full", Faults(duplicate_done_every=1), DUPLICATE_DONE),
        ("interleaved", Faults(frame_after_done_every=1), FRAME_AFTER_DONE),
    ],
)
def test_an_event_for_a_closed_message_is_a_violation_mid_reply(reasoning, faults, subkind):
    """The late delta / second done of message 0 comes before message 1 streams (or, when
    both close at the end, after them); the answer is read on either way."""
    with agentex_server(faults, reasoning=reasoning) as server:
        results = chat(server.url, AGENTEX, prompts=2, timeout=3)
    assert {(r.outcome, r.subkind) for r in results} == {(VIOLATION, subkind)}
    index = 1 if reasoning == "interleaved" else 0
    assert all(f"message index {index}" in r.detail for r in results), results[0].detail
    assert all(r.tokens >= 12 and r.reply_s is not None for r in results)


@contextmanager
def ndjson_server(lines: Callable[[object], list[dict]]) -> Iterator[str]:
    """A uvicorn server answering each POST with `lines(rpc_id)` as JSON lines."""

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        rpc_id = json.loads(await _asgi_body(receive)).get("id")
        emit = await _stream(send, b"application/x-ndjson")
        for result in lines(rpc_id):
            await emit((json.dumps({"jsonrpc": "2.0", "id": rpc_id, **result}) + "\n").encode())
        await send({"type": "http.response.body", "body": b""})

    with _uvicorn(app) as port:
        yield f"http://127.0.0.1:{port}"


def test_interleaved_messages_without_start_and_a_done_of_an_empty_one_are_ok() -> None:
    """agentex's own test of several indexes (deltas of 0 and 1 interleaved, no start),
    a done for an index that never had an event (an empty message, accepted by agentex)
    and a message left open when the response ends (agentex's server flushes it)."""

    def delta(index: int, text: str) -> dict:
        return {"result": {"type": "delta", "index": index,
                           "delta": {"type": "text", "text_delta": text}}}  # fmt: skip

    def lines(rpc_id: object) -> list[dict]:
        return [delta(0, "First"), delta(1, "Second"), delta(0, " message"),
                {"result": {"type": "done", "index": 0}}, {"result": {"type": "done", "index": 7}},
                {"result": {"type": "done", "index": 1}}, delta(2, " left open")]  # fmt: skip

    protocol = {**AGENTEX, "require_nonce": False}
    with ndjson_server(lines) as url:
        results = chat(url, protocol, prompts=2, timeout=3)
    assert [(r.outcome, r.tokens) for r in results] == [(OK, 4), (OK, 4)], results[0].detail
