"""Declarative JSON events against a nerve-style server on loopback: every way a turn fails."""

import json

from soak.protocols.turn import (
    DUPLICATE_DONE,
    ERRORED,
    FIRST_TOKEN_TIMEOUT,
    FRAME_AFTER_DONE,
    MISMATCH,
    NON_JSON,
    OK,
    SEQ_GAP,
    STALL,
    VIOLATION,
    WRONG_REQUEST,
)
from tests.servers import Faults, chat, nerve_server, scripted_chat_server

NONCE = {"require_nonce": True, "prompt": "Repeat {nonce} please"}


def outcomes(results):
    return [(r.outcome, r.subkind) for r in results]


def test_healthy_server_all_ok_with_nonce_ping_and_session():
    with nerve_server() as server:
        pings = []
        results = chat(server.url, NONCE, prompts=3, between=lambda ch: pings.append(ch.probe(2)))
    assert outcomes(results) == [(OK, None)] * 3
    assert all(r.tokens >= 12 and r.ttft_s < r.reply_s for r in results)
    assert len(pings) == 2 and all(0 < p < 2 for p in pings)
    assert server.replies == 3


def test_swallowed_failure_is_a_stall_and_silence_a_first_token_timeout():
    with nerve_server(Faults(swallow_every=1)) as server:
        [stalled] = chat(server.url, timeout=0.8)
    assert stalled.outcome == STALL and stalled.tokens > 0 and "no terminal frame" in stalled.detail
    with nerve_server(Faults(answer_previous=True)) as server:
        [silent] = chat(server.url, timeout=0.8)
    assert silent.outcome == FIRST_TOKEN_TIMEOUT


def test_frame_after_done_and_duplicate_done_are_violations():
    with nerve_server(Faults(frame_after_done_every=1)) as server:
        [late] = chat(server.url)
    with nerve_server(Faults(duplicate_done_every=1)) as server:
        [twice] = chat(server.url)
    assert (late.outcome, late.subkind) == (VIOLATION, FRAME_AFTER_DONE)
    assert (twice.outcome, twice.subkind) == (VIOLATION, DUPLICATE_DONE)
    assert late.reply_s is not None  # the reply itself was measured


def test_frame_after_the_linger_is_charged_to_the_next_turn():
    async def answer(connection, message):
        for word in ("a", "b"):
            await connection.send(json.dumps({"type": "token", "content": word}))
        await connection.send(json.dumps({"type": "done"}))
        if message["content"].startswith("turn 0"):
            await connection.send(json.dumps({"type": "token", "content": "late"}))

    with scripted_chat_server(answer) as url:
        results = chat(url, prompts=2, linger=0.0, between=lambda ch: ch.listen(0.3))
    assert outcomes(results) == [(OK, None), (VIOLATION, FRAME_AFTER_DONE)]
    assert "between turns" in results[1].detail


def test_answer_to_the_previous_prompt_is_a_mismatch():
    with nerve_server(Faults(answer_previous=True)) as server:
        results = chat(server.url, NONCE, prompts=2, timeout=0.8)
    assert [r.outcome for r in results] == [FIRST_TOKEN_TIMEOUT, MISMATCH]
    assert "nonce" in results[1].detail


def test_non_json_frame_and_error_frame():
    with nerve_server(Faults(non_json_every=1)) as server:
        [garbled] = chat(server.url)
    assert (garbled.outcome, garbled.subkind) == (VIOLATION, NON_JSON)
    with nerve_server(Faults(error_every=1)) as server:
        [failed] = chat(server.url)
    assert failed.outcome == ERRORED and "model overloaded" in failed.detail


def test_reply_for_another_request_and_seq_gap():
    async def answer(connection, message):
        rid = message["request_id"]
        frames = [
            {"type": "token", "request_id": "someone-else", "content": "x", "seq": 1},
            {"type": "token", "request_id": rid, "content": "y", "seq": 2},
            {"type": "token", "request_id": rid, "content": "z", "seq": 4},
            {"type": "done", "request_id": rid, "seq": 5},
        ]
        for frame in frames:
            await connection.send(json.dumps(frame))

    with scripted_chat_server(answer) as url:
        [result] = chat(url, {"seq_path": "seq"})
    assert result.outcome == VIOLATION and result.subkind == WRONG_REQUEST
    kinds = [kind for kind, _ in result.violations]
    assert kinds == [WRONG_REQUEST, SEQ_GAP]
    assert result.tokens == 2
