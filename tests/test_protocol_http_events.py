"""sse and ndjson: the shipped profiles' [protocol] tables, unchanged, against a
Trinity-style SSE agent server and an agentex-style NDJSON JSON-RPC server on uvicorn
(tests/servers.py), healthy and with each fault."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from soak.errors import ProfileError
from soak.profile import profile_from_mapping
from soak.protocols.turn import (
    DISCONNECT,
    ERRORED,
    OK,
)
from tests.servers import HTTP_FAULTS, Faults, agentex_server, chat, trinity_server

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
    ]
    for protocol, message in cases:
        with pytest.raises(ProfileError, match=message):
            profile_from_mapping({"protocol": protocol})
