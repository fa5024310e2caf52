"""One chat turn against real WebSocket servers on loopback: every outcome classified."""

import asyncio
import json

import pytest

from soak.profile import SECTIONS, profile_from_mapping
from soak.protocols import ConnectionLost, adapter_for
from soak.protocols.turn import (
    DISCONNECT,
    ERRORED,
    FIRST_TOKEN_TIMEOUT,
    MISMATCH,
    OK,
    STALE_REPLY,
    STALL,
    VIOLATION,
    WRONG_REQUEST,
    Channel,
    NonceWatch,
    TurnResult,
    run_turn,
)
from soak.target import start_target
from tests.servers import scripted_chat_server


def adapter():
    return adapter_for(profile_from_mapping({}).protocol)


def turn(url: str, request_id: str = "r1", timeout: float = 2.0):
    conversation = adapter().connect(url, timeout=5)
    try:
        return conversation.session_id, run_turn(
            conversation, "hello nonce=abc", request_id,
            first_token_timeout=timeout, reply_timeout=timeout,
        )  # fmt: skip
    finally:
        conversation.close()


def frame(**fields):
    return json.dumps(fields)


def test_default_protocol_matches_the_builtin_target():
    assert SECTIONS["protocol"]["kind"].default == "json-events"
    with start_target(patched=True) as target:
        session, result = turn(target.ws_url)
    assert session
    assert result.outcome == OK
    assert result.tokens == 20 and result.frames == 21
    assert 0 < result.ttft_s < result.reply_s


def test_builtin_target_stall_is_a_stall():
    with start_target(patched=True, extra_args=["--stall-every", "1"]) as target:
        _, result = turn(target.ws_url, timeout=1.5)
    assert result.outcome == STALL
    assert 0 < result.tokens < 20
    assert "no terminal frame" in result.detail
    assert result.last_frames


def test_error_frame_is_an_error():
    async def answer(connection, message):
        await connection.send(frame(type="error", request_id=message["request_id"], error="boom"))

    with scripted_chat_server(answer) as url:
        _, result = turn(url)
    assert result.outcome == ERRORED and "boom" in result.detail


def test_silence_is_a_first_token_timeout():
    async def answer(connection, message):
        pass

    with scripted_chat_server(answer) as url:
        _, result = turn(url, timeout=0.5)
    assert result.outcome == FIRST_TOKEN_TIMEOUT


def test_close_mid_reply_is_a_disconnect_with_code():
    async def answer(connection, message):
        await connection.send(frame(type="token", request_id=message["request_id"], content="a"))
        await connection.close(code=4401, reason="token expired")

    with scripted_chat_server(answer) as url:
        _, result = turn(url)
    assert result.outcome == DISCONNECT
    assert "4401" in result.detail and "token expired" in result.detail


def test_frames_of_another_request_are_not_counted_and_flag_the_turn():
    async def answer(connection, message):
        for request in ("old", message["request_id"]):
            await connection.send(frame(type="token", request_id=request, content="x"))
        await asyncio.sleep(0.01)
        await connection.send(frame(type="done", request_id=message["request_id"]))

    with scripted_chat_server(answer) as url:
        _, result = turn(url)
    assert result.outcome == VIOLATION and result.subkind == WRONG_REQUEST
    assert result.tokens == 1 and result.reply_s is not None


def test_nonce_watch_finds_a_nonce_split_across_tokens():
    watch = NonceWatch("a1b2c3")
    for piece in ("You said: a1", "b2", "c3 and more"):
        watch.feed(piece)
    assert watch.found
    other = NonceWatch("a1b2c3")
    other.feed("You said: a1b2 c3")
    assert not other.found and len(other.tail) == 6


def test_connect_to_closed_port_raises_connection_lost():
    with pytest.raises(ConnectionLost, match="connect failed"):
        adapter().connect("ws://127.0.0.1:9/ws", timeout=2)


def test_nonce_watch_tells_a_stale_reply_from_none():
    stale = NonceWatch("new00000", ("old11111", "older222"))
    for piece in ("You said: old1", "1111 and so on"):
        stale.feed(piece)
    assert not stale.found and stale.stale == "old11111"
    both = NonceWatch("new00000", ("old11111",))
    both.feed("old11111 then new00000")
    assert both.found  # it names this prompt: no mismatch, whatever else it says


def _reply(connection, request_id, words, done=True):
    async def send():
        for word in words:
            await connection.send(frame(type="token", content=word, request_id=request_id))
        if done:
            await connection.send(frame(type="done", request_id=request_id))

    return send()


def test_late_frames_of_a_turn_soak_gave_up_on_are_its_tail_not_a_violation():
    """The first prompt is answered after the first-token timeout; the chat stays on the
    connection and its second turn sees the late frames of the first: they are ignored."""

    async def answer(connection, message):
        request_id = message["request_id"]
        if message["content"] == "one":
            await asyncio.sleep(0.8)  # later than the first-token timeout
        await _reply(connection, request_id, ["You said:", message["content"]])

    with scripted_chat_server(answer) as url:
        conversation = adapter().connect(url, timeout=5)
        try:
            channel = Channel(conversation)
            first = run_turn(channel, "one", "r1", first_token_timeout=0.3, reply_timeout=1)
            second = run_turn(channel, "two", "r2", first_token_timeout=2, reply_timeout=2)
        finally:
            conversation.close()
    assert first.outcome == FIRST_TOKEN_TIMEOUT
    assert second.outcome == OK and not second.violations


def test_stale_reply_is_a_mismatch_with_its_subkind():
    """No request ids (nerve style): the answer to the first prompt arrives in the second turn."""
    state = {"parked": None}

    async def answer(connection, message):
        if state["parked"] is None:
            state["parked"] = message["content"]  # swallowed: no answer
            return
        await _reply(connection, None, ["You said:", state["parked"]])
        state["parked"] = "done"

    with scripted_chat_server(answer) as url:
        conversation = adapter().connect(url, timeout=5)
        try:
            channel = Channel(conversation)
            kwargs = {"first_token_timeout": 0.5, "reply_timeout": 1}
            first = run_turn(channel, "q1 nonce=aaaa1111", "r1", nonce="aaaa1111", **kwargs)
            second = run_turn(channel, "q2 nonce=bbbb2222", "r2", nonce="bbbb2222", **kwargs)
        finally:
            conversation.close()
    assert first.outcome == FIRST_TOKEN_TIMEOUT
    assert (second.outcome, second.subkind) == (MISMATCH, STALE_REPLY)
    assert "'aaaa1111' of the previous prompt of this chat" in second.detail


def test_an_error_frame_followed_by_done_is_one_error_turn_when_errors_do_not_end_turns():
    """nerve ends a failed turn with its usual `done` after the `error`."""

    async def answer(connection, message):
        await connection.send(frame(type="error", error="Agent error: boom"))
        await connection.send(frame(type="done"))

    table = profile_from_mapping({"protocol": {"error_ends_turn": False}}).protocol
    with scripted_chat_server(answer) as url:
        conversation = adapter_for(table).connect(url, timeout=5)
        try:
            channel = Channel(conversation)
            results = [
                run_turn(
                    channel, f"p{n}", f"r{n}", first_token_timeout=1, reply_timeout=1, linger=0.2
                )
                for n in range(2)
            ]
        finally:
            conversation.close()
    assert [r.outcome for r in results] == [ERRORED, ERRORED]
    assert not any(r.violations for r in results)  # the done after the error is no extra


def test_a_reply_nested_too_deep_to_parse_is_garbage_not_a_vanished_turn():
    """100,000 brackets: json.loads raises RecursionError, not ValueError."""

    async def answer(connection, message):
        await connection.send("[" * 100_000 + "]" * 100_000)

    with scripted_chat_server(answer) as url:
        _, result = turn(url, timeout=1)
    assert (result.outcome, result.subkind) == (VIOLATION, "non_json")


def test_an_adapter_that_chokes_ends_the_turn_as_a_disconnect_that_says_so():
    class Choking:
        session_id = None
        supports_ping = False
        error_ends_turn = True

        def send_prompt(self, prompt, request_id):
            pass

        def receive(self, timeout):
            raise KeyError("payload")

        def close(self):
            pass

    result = run_turn(Choking(), "hi", "r1", first_token_timeout=1, reply_timeout=1)
    assert result.outcome == DISCONNECT
    assert "soak could not read what the server sent (KeyError" in result.close_reason


def test_time_per_output_token_counts_the_servers_tokens_when_it_said():
    frames_only = TurnResult(request_id="r", ttft_s=0.1, reply_s=1.3, tokens=4)
    assert frames_only.output_tokens == 4 and frames_only.tpot_s == pytest.approx(0.4)
    counted = TurnResult(request_id="r", ttft_s=0.1, reply_s=1.3, tokens=4,
                         usage_completion_tokens=13)  # fmt: skip
    assert counted.output_tokens == 13 and counted.tpot_s == pytest.approx(0.1)
    one = TurnResult(request_id="r", ttft_s=0.1, reply_s=0.2, tokens=1, usage_completion_tokens=1)
    assert one.tpot_s is None
