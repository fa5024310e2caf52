"""Socket.IO with HTTP send against an agent-zero-style server (python-socketio + uvicorn)."""

import pytest

from soak.profile import profile_from_mapping
from soak.protocols import ConnectionLost, adapter_for
from soak.protocols.turn import ERRORED, OK, SEQ_GAP, STALL, VIOLATION
from tests.servers import Faults, agent_zero_server, chat

AGENT = {"kind": "socketio-agent", "require_nonce": True, "prompt": "Repeat {nonce}"}


def test_csrf_cookie_origin_handshake_and_multi_turn_chat():
    with agent_zero_server() as server:
        results = chat(server.url, AGENT, prompts=3)
    assert [r.outcome for r in results] == [OK] * 3
    assert all(r.tokens > 0 and r.reply_s is not None for r in results)
    assert server.replies == 3


def test_wrong_origin_is_refused():
    table = profile_from_mapping({"protocol": {**AGENT, "origin": "http://evil.example"}}).protocol
    with agent_zero_server() as server, pytest.raises(ConnectionLost, match="connect failed"):
        adapter_for(table).connect(server.url, timeout=3)


def test_swallowed_task_exception_is_a_stall():
    with agent_zero_server(Faults(swallow_every=1)) as server:
        [result] = chat(server.url, AGENT, timeout=1.0)
    assert result.outcome == STALL and result.tokens > 0


def test_seq_gap_and_error_log_item():
    with agent_zero_server(Faults(seq_skip_every=2)) as server:
        results = chat(server.url, AGENT, prompts=2)
    assert results[0].outcome == OK
    assert (results[1].outcome, results[1].subkind) == (VIOLATION, SEQ_GAP)
    with agent_zero_server(Faults(error_every=1)) as server:
        [failed] = chat(server.url, AGENT)
    assert failed.outcome == ERRORED and "LLM call failed" in failed.detail
