"""The built-in target, tested as a real server on loopback (subprocess and in-process)."""

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect as async_connect
from websockets.sync.client import ClientConnection, connect

from soak.errors import RunError
from soak.target import OPTIONS, TargetConfig, TargetProcess, serve, start_target

FAST = ["--token-interval", "0.001"]
ONLY = ["--leak-thread-every", "0", "--stall-every", "0", "--block-loop-every", "0"]
ONLY += ["--orphan-ticker-every", "0", "--history-limit", "100"]  # then switch one fault on


@pytest.fixture(scope="module")
def patched() -> Iterator[TargetProcess]:
    with start_target(patched=True, extra_args=FAST) as target:
        yield target


def health(target: TargetProcess) -> dict[str, Any]:
    with urllib.request.urlopen(target.health_url, timeout=5) as response:
        assert response.headers["Content-Type"] == "application/json"
        return json.loads(response.read())


def greet(ws: ClientConnection) -> str:
    first = json.loads(ws.recv(timeout=5))
    assert first["type"] == "session_switched"
    return first["session_id"]


def turn(ws: ClientConnection, content: str, request_id: str | None, wait: float = 5.0) -> list:
    """Send one message; return its frames up to the terminal one, or what came within `wait` s."""
    ws.send(json.dumps({"type": "message", "content": content, "request_id": request_id}))
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            frames.append(json.loads(ws.recv(timeout=deadline - time.monotonic())))
        except TimeoutError:
            break
        if frames[-1]["type"] in ("done", "error"):
            break
    return frames


def test_a_turn_streams_tokens_then_one_done_with_the_request_id() -> None:
    with start_target(patched=True) as target, connect(target.ws_url + "?token=x") as ws:
        session_id = greet(ws)
        frames = turn(ws, "hello nonce-42", "r1")
        tokens, done = frames[:-1], frames[-1]
        assert len(tokens) == 20 and all(f["type"] == "token" for f in tokens)
        assert done == {
            "type": "done",
            "session_id": session_id,
            "request_id": "r1",
            "usage": {"tokens": 20},
        }
        assert all(f["request_id"] == "r1" and f["session_id"] == session_id for f in tokens)
        assert "".join(f["content"] for f in tokens).startswith("You said: hello nonce-42 ")
        assert turn(ws, "again", None)[-1]["request_id"] is None


def test_health_has_the_diagnostics_shape_and_other_paths_are_404(
    patched: TargetProcess,
) -> None:
    body = health(patched)
    assert body["status"] == "ok" and body["build"] == "patched" and body["version"]
    assert body["uptime_s"] >= 0
    assert set(body["diagnostics"]) == {
        "thread_count",
        "asyncio_task_count",
        "active_chats",
        "connections",
        "replies",
        "history_size",
        "history_bytes",
        "loop_lag_ms",
        "loop_lag_max_ms",
        "orphaned_tickers",
        "stale_replies",
        "leaked_executors",
    }
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(patched.health_url.replace("/health", "/nope"), timeout=5)
    assert error.value.code == 404
    error.value.close()


def test_ping_is_answered_while_streaming_and_bad_frames_get_errors(
    patched: TargetProcess,
) -> None:
    with connect(patched.ws_url) as ws:
        greet(ws)
        ws.send(json.dumps({"type": "message", "content": "slow", "request_id": "a"}))
        ws.send(json.dumps({"type": "ping"}))
        ws.send(json.dumps({"type": "message", "content": "too soon", "request_id": "b"}))
        frames = [json.loads(ws.recv(timeout=5))]
        while frames[-1]["type"] != "done":
            frames.append(json.loads(ws.recv(timeout=5)))
        assert {"type": "pong"} in frames
        busy = [f for f in frames if f["type"] == "error"]
        assert [(f["request_id"], f["error"]) for f in busy] == [("b", "session busy")]
        assert frames[-1]["request_id"] == "a"
        ws.send("not json")
        assert json.loads(ws.recv(timeout=5))["error"].startswith("malformed JSON")
        ws.send(json.dumps({"type": "message", "content": 3, "request_id": "c"}))
        assert json.loads(ws.recv(timeout=5))["request_id"] == "c"


def test_a_stalled_reply_never_ends_silently_and_the_connection_stays_usable(
    tmp_path: Path,
) -> None:
    log = tmp_path / "target.log"
    args = [*FAST, *ONLY, "--stall-every", "1"]
    with start_target(patched=False, extra_args=args, log_path=log) as target:
        with connect(target.ws_url) as ws:
            greet(ws)
            first = turn(ws, "one", "1", wait=2.0)
            assert len(first) == 10 and all(f["type"] == "token" for f in first)
            second = turn(ws, "two", "2", wait=0.5)
            assert second and all(f["type"] == "token" for f in second)
            ws.send(json.dumps({"type": "ping"}))
            assert json.loads(ws.recv(timeout=5)) == {"type": "pong"}
        assert health(target)["diagnostics"]["active_chats"] == 0
    assert "never retrieved" not in log.read_text()


def test_a_stale_reply_answers_the_chats_previous_prompt_a_turn_late() -> None:
    args = [*FAST, *ONLY, "--stale-reply-every", "2"]
    with start_target(patched=False, extra_args=args) as target:
        with connect(target.ws_url) as ws:
            greet(ws)
            replies = [turn(ws, f"question {n}", str(n)) for n in (1, 2, 3)]
        with connect(target.ws_url) as other:  # prompt 4: no previous one in this chat
            greet(other)
            replies.append(turn(other, "question 4", "4"))
        texts = ["".join(f["content"] for f in frames[:-1]) for frames in replies]
        assert [t.split()[2:4] for t in texts] == [
            ["question", "1"],
            ["question", "1"],  # prompt 2 answered as prompt 1
            ["question", "3"],
            ["question", "4"],
        ]
        assert [frames[-1]["request_id"] for frames in replies] == ["1", "2", "3", "4"]
        assert health(target)["diagnostics"]["stale_replies"] == 1


def test_the_thread_leak_adds_one_thread_per_reply() -> None:
    args = [*FAST, *ONLY, "--leak-thread-every", "1"]
    with start_target(patched=False, extra_args=args) as target, connect(target.ws_url) as ws:
        greet(ws)
        before = health(target)["diagnostics"]["thread_count"]
        assert all(turn(ws, "x", str(i))[-1]["type"] == "done" for i in range(10))
        after = health(target)["diagnostics"]
    assert after["thread_count"] - before == 10
    assert after["leaked_executors"] == 10


def test_patched_build_finishes_every_turn_with_flat_threads_and_bounded_history(
    patched: TargetProcess,
) -> None:
    with connect(patched.ws_url) as ws:
        greet(ws)
        before = health(patched)["diagnostics"]
        assert all(turn(ws, "x", str(i))[-1]["type"] == "done" for i in range(50))
        after = health(patched)["diagnostics"]
    assert after["thread_count"] == before["thread_count"]
    assert after["orphaned_tickers"] == after["leaked_executors"] == 0
    assert after["history_size"] <= 100


def test_orphaned_tickers_and_unbounded_history_pile_up_in_the_faulty_build() -> None:
    args = [*FAST, *ONLY, "--orphan-ticker-every", "1", "--history-limit", "0"]
    with start_target(patched=False, extra_args=args) as target, connect(target.ws_url) as ws:
        greet(ws)
        before = health(target)["diagnostics"]
        assert all(turn(ws, "x", str(i))[-1]["type"] == "done" for i in range(5))
        after = health(target)["diagnostics"]
    assert after["orphaned_tickers"] == 5
    assert after["asyncio_task_count"] - before["asyncio_task_count"] >= 5
    assert after["history_bytes"] - before["history_bytes"] == 5 * 20000


def test_blocking_the_event_loop_shows_in_the_heartbeat_lag() -> None:
    args = [*FAST, *ONLY, "--block-loop-every", "1", "--block-loop-seconds", "0.5"]
    with start_target(patched=False, extra_args=args) as target, connect(target.ws_url) as ws:
        greet(ws)
        assert turn(ws, "x", "1")[-1]["type"] == "done"
        time.sleep(0.3)  # let the heartbeat record its late wake-up
        lag = health(target)["diagnostics"]["loop_lag_max_ms"]
    assert lag >= 350  # the block minus at most one 100 ms heartbeat period


def test_patched_picks_defaults_and_explicit_faults_win() -> None:
    assert TargetConfig().build == "faults"
    assert TargetConfig().stall_every == 40
    assert TargetConfig(patched=True).build == "patched"
    mixed = TargetConfig(patched=True, stall_every=5)
    assert (mixed.stall_every, mixed.leak_thread_every, mixed.build) == (5, 0, "faults")
    flags = {option.flag for option in OPTIONS}
    assert {"--port", "--patched", "--ready-file", "--stall-every"} <= flags
    assert all(option.help for option in OPTIONS)


def test_a_target_that_cannot_start_raises_run_error_with_its_log() -> None:
    with pytest.raises(RunError, match="unrecognized arguments: --bogus"):
        start_target(patched=True, extra_args=["--bogus"])


def test_sigterm_stops_the_target_cleanly_even_during_a_loop_block() -> None:
    args = [*ONLY, "--block-loop-every", "1", "--block-loop-seconds", "30"]
    target = start_target(patched=False, extra_args=args)
    with connect(target.ws_url) as ws:
        greet(ws)
        ws.send(json.dumps({"type": "message", "content": "x"}))
        time.sleep(0.3)
        assert target.stop(timeout=5) == 0


def test_serve_runs_in_process_until_stopped(tmp_path: Path) -> None:
    async def scenario() -> dict[str, Any]:
        ready = tmp_path / "ready.json"
        stop = asyncio.Event()
        config = TargetConfig(port=0, patched=True, token_interval=0, ready_file=str(ready))
        server = asyncio.create_task(serve(config, stop))
        while not ready.exists():
            await asyncio.sleep(0.01)
        info = json.loads(ready.read_text())
        async with async_connect(info["ws_url"]) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "message", "content": "hi", "request_id": 7}))
            while (frame := json.loads(await ws.recv()))["type"] == "token":
                pass
        stop.set()
        await asyncio.wait_for(server, 2)
        return {**info, "last": frame}

    info = asyncio.run(scenario())
    assert info["build"] == "patched" and info["port"] > 0
    assert info["last"]["type"] == "done" and info["last"]["request_id"] == 7
