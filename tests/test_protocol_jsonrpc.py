"""JSON-RPC 2.0 over WebSocket against a hermes-style gateway on loopback."""

import pytest

from soak.profile import profile_from_mapping
from soak.protocols import ConnectionLost, adapter_for
from soak.protocols.turn import (
    ERRORED,
    OK,
    SEQ_GAP,
    STALL,
    VIOLATION,
    WRONG_REQUEST,
    Channel,
    run_turn,
)
from tests.servers import Faults, chat, hermes_server

RPC = {"kind": "jsonrpc", "require_nonce": True, "prompt": "Say {nonce}"}


def test_handshake_turns_seq_and_ping_on_a_healthy_gateway():
    with hermes_server() as server:
        pings = []
        results = chat(server.url, RPC, prompts=3, between=lambda ch: pings.append(ch.probe(2)))
    assert [r.outcome for r in results] == [OK] * 3
    assert all(r.tokens == 12 for r in results)
    assert all(p is not None and p < 2 for p in pings)
    assert server.replies == 3


def test_bad_token_is_refused_with_the_servers_close_code():
    with hermes_server() as server:
        adapter = adapter_for(profile_from_mapping({"protocol": RPC}).protocol)
        with pytest.raises(ConnectionLost) as lost:
            adapter.connect(server.url.replace("token=secret", "token=wrong"), timeout=3)
    assert lost.value.code == 4401 and "unauthorized" in lost.value.reason


def test_status_error_lost_event_and_foreign_session():
    with hermes_server(Faults(error_every=1)) as server:
        [failed] = chat(server.url, RPC)
    assert failed.outcome == ERRORED and "provider returned 500" in failed.detail
    with hermes_server(Faults(seq_skip_every=1)) as server:
        [gap] = chat(server.url, RPC)
    assert (gap.outcome, gap.subkind) == (VIOLATION, SEQ_GAP)
    with hermes_server(Faults(foreign_every=1)) as server:
        [stray] = chat(server.url, RPC)
    assert (stray.outcome, stray.subkind) == (VIOLATION, WRONG_REQUEST)


def test_second_prompt_while_streaming_is_session_busy_error():
    with hermes_server(Faults(swallow_every=1)) as server:
        table = profile_from_mapping({"protocol": RPC}).protocol
        channel = Channel(adapter_for(table).connect(server.url, timeout=3))
        try:
            first = run_turn(channel, "one", "r1", first_token_timeout=1, reply_timeout=0.6)
            second = run_turn(channel, "two", "r2", first_token_timeout=1, reply_timeout=1)
        finally:
            channel.conversation.close()
    assert first.outcome == STALL
    assert second.outcome == ERRORED and "4009" in second.detail
