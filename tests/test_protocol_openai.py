"""openai-chat: chat completions streamed as SSE, against two servers soak did not shape:
tests/realservers/fake_openai.py (stdlib http.server, written for the hermes tests) and a
vLLM-style ASGI app on uvicorn (tests/servers.py), with its faults one by one."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from soak.errors import ProfileError
from soak.profile import profile_from_mapping
from soak.protocols import adapter_for
from soak.protocols.httpstream import LineDecoder, SseDecoder
from soak.protocols.turn import (
    ERRORED,
    FIRST_TOKEN_TIMEOUT,
    OK,
    Channel,
    run_turn,
)
from soak.target import start_target
from tests.servers import HTTP_FAULTS, Faults, chat, openai_server

FAKE_OPENAI = Path(__file__).resolve().parent / "realservers" / "fake_openai.py"
OPENAI = {"kind": "openai-chat", "require_nonce": True, "prompt": "Repeat {nonce}"}


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[str]:
    """The stdlib fake OpenAI server as a subprocess on a free loopback port."""
    process = subprocess.Popen(
        [sys.executable, str(FAKE_OPENAI), "--port", "0", "--chunks", "8", "--delay-ms", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("FAKE_OPENAI_READY"), line
        yield f"http://127.0.0.1:{line.split('port=')[1].strip()}"
    finally:
        process.kill()
        process.wait(10)
        process.stdout.close()


def _channel(url: str, **protocol) -> Channel:
    table = profile_from_mapping({"protocol": {**OPENAI, **protocol}}).protocol
    return Channel(adapter_for(table).connect(url, timeout=5))


def _turn(channel: Channel, n: int, prompt: str | None = None, timeout: float = 3.0):
    nonce = f"n{n}x{time.monotonic_ns() % 10**6}"
    return run_turn(channel, prompt or f"say {nonce} please", f"r{n}", first_token_timeout=timeout,
                    reply_timeout=timeout, linger=0.2, nonce=nonce)  # fmt: skip


def test_turns_stream_on_one_kept_alive_connection(fake_openai: str) -> None:
    channel = _channel(fake_openai, model="fake-model", system_prompt="Be brief.")
    try:
        results = [_turn(channel, n) for n in range(4)]
        assert [r.outcome for r in results] == [OK] * 4
        assert all(r.tokens >= 4 and r.ttft_s is not None for r in results)
        assert channel.conversation.http.connections == 1  # keep-alive, as a browser
    finally:
        channel.conversation.close()


def _back_to_back(channel: Channel, turns: int) -> list:
    """Turns with no think time and no linger, settled between them as a chat user does."""
    results = []
    for n in range(turns):
        channel.conversation.settle()
        nonce = f"b{n}x{time.monotonic_ns() % 10**6}"
        results.append(run_turn(channel, f"say {nonce}", f"q{n}", first_token_timeout=3,
                                reply_timeout=3, linger=0, nonce=nonce))  # fmt: skip
    return results


def test_back_to_back_turns_reuse_the_connection_of_the_built_in_target() -> None:
    """The end of the chunked body comes after [DONE]: it is read before the next request
    (outside the turn's clock), so no turn opens a new connection."""
    with start_target(patched=True, extra_args=["--token-interval", "0"]) as target:
        channel = _channel(target.http_url)
        try:
            results = _back_to_back(channel, 6)
            assert [r.outcome for r in results] == [OK] * 6
            assert channel.conversation.http.connections == 1
        finally:
            channel.conversation.close()


def test_data_after_done_is_caught_without_linger_and_charged_to_the_next_turn() -> None:
    with openai_server(Faults(frame_after_done_every=1)) as server:
        channel = _channel(server.url)
        try:
            results = _back_to_back(channel, 3)
        finally:
            channel.conversation.close()
    assert results[0].outcome == OK
    assert [(r.outcome, r.subkind) for r in results[1:]] == [("violation", "frame_after_done")] * 2
    assert "earlier request q0" in results[1].detail


def test_an_http_error_and_a_slow_first_token_then_ok_again(fake_openai: str) -> None:
    channel = _channel(fake_openai)
    try:
        error = _turn(channel, 1, "FAKE_ERROR now")
        assert error.outcome == ERRORED and "HTTP 500" in error.detail
        slow = _turn(channel, 2, "FAKE_SLOW=2 then answer", timeout=0.5)
        assert slow.outcome == FIRST_TOKEN_TIMEOUT
        assert _turn(channel, 3).outcome == OK  # a new connection replaces the abandoned one
    finally:
        channel.conversation.close()


def test_a_healthy_server_closing_idle_connections_is_no_disconnect() -> None:
    """uvicorn closes a keep-alive connection idle for 0.5 s; think time is longer."""
    with openai_server(keep_alive_s=0.5) as server:
        channel = _channel(server.url)
        try:
            outcomes = []
            for n in range(3):
                outcomes.append(_turn(channel, n).outcome)
                assert channel.next_frame(1.2) == (None, None)  # think time: listening
            assert outcomes == [OK] * 3
            assert channel.conversation.http.connections >= 2
        finally:
            channel.conversation.close()


@pytest.mark.parametrize(("faults", "outcome", "subkind"), HTTP_FAULTS)
def test_each_fault_of_a_vllm_style_server_is_its_outcome(faults, outcome, subkind) -> None:
    with openai_server(faults) as server:
        results = chat(server.url, {**OPENAI}, prompts=3, timeout=1.5)
    later = results[1:]  # answer_previous: the first reply answers nothing before it
    assert {r.outcome for r in later} == {outcome}, [(r.outcome, r.detail) for r in later]
    if subkind:
        assert {r.subkind for r in later} == {subkind}


def test_a_stream_without_done_after_finish_reason_counts_as_done() -> None:
    with openai_server(Faults(omit_done=True)) as server:
        channel = _channel(server.url, include_usage=True)
        try:
            assert [_turn(channel, n).outcome for n in range(2)] == [OK, OK]
            kinds = [kind for kind, _ in channel.conversation.take_notices()]
            assert kinds.count("no_done_event") == 2
        finally:
            channel.conversation.close()
        request = server.extra["requests"][0]
        assert request["stream"] is True and request["stream_options"] == {"include_usage": True}
        assert request["max_tokens"] == 256 and "model" not in request


def test_history_turns_send_earlier_exchanges_again() -> None:
    with openai_server() as server:
        channel = _channel(server.url, history_turns=1, model="m", extra_body={"temperature": 0})
        try:
            assert [_turn(channel, n).outcome for n in range(3)] == [OK] * 3
        finally:
            channel.conversation.close()
        roles = [[m["role"] for m in r["messages"]] for r in server.extra["requests"]]
        assert roles == [["user"], ["user", "assistant", "user"], ["user", "assistant", "user"]]
        last = server.extra["requests"][-1]
        assert last["model"] == "m" and last["temperature"] == 0
        assert "say" in last["messages"][1]["content"]  # the reply it gave, sent back


def test_profile_checks_the_url_scheme_for_the_kind() -> None:
    with pytest.raises(ProfileError, match=r"starts ws://, but \[protocol\] kind = 'openai-chat'"):
        profile_from_mapping(
            {
                "protocol": {"kind": "openai-chat"},
                "targets": [{"name": "a", "url": "ws://127.0.0.1:1/ws"}],
            }
        )
    with pytest.raises(ProfileError, match="use kind = 'openai-chat'"):
        profile_from_mapping({"targets": [{"name": "a", "url": "http://127.0.0.1:8000"}]})
    with pytest.raises(ProfileError, match=r"\[protocol\] max_tokens: expected a whole number"):
        profile_from_mapping({"protocol": {"kind": "openai-chat", "max_tokens": -1}})


def test_sse_and_line_decoders_follow_the_event_stream_rules() -> None:
    decoder = SseDecoder()
    stream = (
        b": comment\r\ndata: a\r\ndata: b\r\n\r\nevent: error\ndata: {}\n\nid: 7\rdata: x\r\r\n"
    )
    events = [event for i in range(len(stream)) for event in decoder.feed(stream[i : i + 1])]
    assert [(e.event, e.data, e.id) for e in events] == [
        ("message", "a\nb", None),
        ("error", "{}", None),
        ("message", "x", "7"),
    ]
    assert not decoder.pending()
    whole = SseDecoder()  # \n-only chunks take the one-split path; a chunk ends mid-event
    first = whole.feed(b'data:x\ndata\n\n: c\ndata: {"a": 1}\n\ndata: par')
    assert [e.data for e in first] == ["x\n", '{"a": 1}'] and whole.pending()
    assert [e.data for e in whole.feed(b"tial\n\n")] == ["partial"] and not whole.pending()
    lines = LineDecoder()
    assert lines.feed(b'{"a": 1}\n\n{"b"') == ['{"a": 1}'] and lines.pending()
    assert lines.feed(b": 2}\n") == ['{"b": 2}']


def test_token_level_latency_is_measured_per_gap() -> None:
    """The server streams a token every 30 ms: every gap and the time per token say so."""
    with openai_server(Faults(tokens=10, token_interval=0.03)) as server:
        channel = _channel(server.url)
        try:
            result = _turn(channel, 1)
        finally:
            channel.conversation.close()
    assert result.outcome == OK and result.tokens >= 10
    assert len(result.token_gaps_s) == result.tokens - 1
    gaps = sorted(result.token_gaps_s)
    assert 0.02 < gaps[len(gaps) // 2] < 0.1
    assert 0.02 < result.tpot_s < 0.1


def test_usage_counts_the_tokens_a_server_packs_into_each_frame() -> None:
    """3 words a frame, 30 ms apart: time per output token counts the server's 12 tokens,
    not its 4 frames (which would make it 11/3 times as long)."""
    faults = Faults(tokens=12, words_per_frame=3, token_interval=0.03)
    with openai_server(faults) as server:
        channel = _channel(server.url, include_usage=True)
        try:
            result = _turn(channel, 1)  # "say NONCE please": 12 words with the filler
        finally:
            channel.conversation.close()
    assert result.outcome == OK, result.detail
    assert result.tokens == 4 and len(result.token_gaps_s) == 3  # frames, for ITL
    assert (result.usage_prompt_tokens, result.usage_completion_tokens) == (3, 12)
    span = result.reply_s - result.ttft_s
    assert span >= 3 * 0.03 and min(result.token_gaps_s) >= 0.03
    assert result.tpot_s == pytest.approx(span / 11)
    assert span / (result.tokens - 1) > 3 * result.tpot_s  # what counting frames would say


def test_a_server_that_ignores_include_usage_is_no_error() -> None:
    with openai_server(Faults(words_per_frame=3, ignore_usage=True)) as server:
        channel = _channel(server.url, include_usage=True)
        try:
            result = _turn(channel, 1)
        finally:
            channel.conversation.close()
        assert server.extra["requests"][0]["stream_options"] == {"include_usage": True}
    assert result.outcome == OK and result.usage_completion_tokens is None
    assert result.tpot_s == pytest.approx((result.reply_s - result.ttft_s) / (result.tokens - 1))


def test_usage_of_the_stdlib_fake_server_with_more_frames_than_tokens(fake_openai: str) -> None:
    """fake_openai.py cuts its reply into 8 pieces of characters and counts words."""
    channel = _channel(fake_openai, include_usage=True)
    try:
        results = [_turn(channel, n) for n in range(2)]
    finally:
        channel.conversation.close()
    for result in results:
        assert result.outcome == OK and result.tokens == 8
        assert result.usage_prompt_tokens == 3  # "say NONCE please"
        assert result.usage_completion_tokens == 4  # "echo: say NONCE please"
        span = result.reply_s - result.ttft_s
        assert result.tpot_s == pytest.approx(span / 3)
