"""The built-in target's HTTP side (OpenAI-compatible, Trinity-style SSE, agentex-style
NDJSON, /health) as a real subprocess on loopback, and `soak demo --protocol` telling its
faulty build from its patched one over each HTTP protocol."""

import http.client
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from soak.target import TargetProcess, start_target
from tests.test_target import ONLY

FAST = ["--token-interval", "0.001", "--tokens", "12"]


@pytest.fixture(scope="module")
def patched() -> Iterator[TargetProcess]:
    with start_target(patched=True, extra_args=FAST) as target:
        yield target


def client(target: TargetProcess, timeout: float = 5.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(target.host, target.port, timeout=timeout)


def post(conn: http.client.HTTPConnection, path: str, body: Any) -> http.client.HTTPResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, data, {"Content-Type": "application/json"})
    return conn.getresponse()


def sse_data(raw: bytes) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    return [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]


def health(target: TargetProcess) -> dict[str, Any]:
    conn = client(target)
    conn.request("GET", "/health")
    body = json.loads(conn.getresponse().read())
    conn.close()
    return body["diagnostics"]


def chat(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": prompt}], **extra}


def test_openai_stream_has_role_words_finish_usage_done_on_one_keep_alive_connection(
    patched: TargetProcess,
) -> None:
    conn = client(patched)
    bodies, sockets = [], []
    for prompt in ("first nonce-a1", "second nonce-b2"):
        request = chat(prompt, stream=True, stream_options={"include_usage": True})
        response = post(conn, "/v1/chat/completions", request)
        assert response.status == 200
        assert response.getheader("Content-Type").startswith("text/event-stream")
        bodies.append(sse_data(response.read()))
        sockets.append(conn.sock)
    conn.close()
    assert sockets[0] is sockets[1] is not None  # the second turn reused the connection
    data = bodies[1]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    words = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert words.startswith("You said: second nonce-b2 ") and len(words.split()) == 12
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] == "stop" and set(finish[:-1]) == {None}
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 12, "total_tokens": 14}
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["object"] == "chat.completion.chunk"


def test_openai_whole_reply_max_tokens_and_errors_in_the_openai_shape(
    patched: TargetProcess,
) -> None:
    conn = client(patched)
    whole = json.loads(post(conn, "/v1/chat/completions", chat("hello", max_tokens=3)).read())
    choice = whole["choices"][0]
    assert whole["object"] == "chat.completion" and choice["finish_reason"] == "length"
    assert choice["message"]["content"].split() == ["You", "said:", "hello"]
    assert whole["usage"]["completion_tokens"] == 3
    streamed = post(conn, "/v1/chat/completions", chat("hi", stream=True, max_tokens=2)).read()
    finish = [json.loads(d)["choices"][0]["finish_reason"] for d in sse_data(streamed)[:-1]]
    assert finish[-1] == "length" and len(finish) == 4  # role, 2 words, finish

    for body, param in ((b"{not json", None), ({"messages": []}, "messages")):
        response = post(conn, "/v1/chat/completions", body)
        error = json.loads(response.read())["error"]
        assert response.status == 400 and error["type"] == "invalid_request_error"
        assert error["param"] == param and error["message"]
    conn.request("GET", "/v1/chat/completions")
    response = conn.getresponse()
    assert response.status == 405 and "not allowed" in json.loads(response.read())["error"]
    conn.request("GET", "/ws")  # no upgrade
    response = conn.getresponse()
    assert response.status == 426 and response.reason == "Upgrade Required"
    response.read()
    conn.request("GET", "/nope")
    response = conn.getresponse()
    assert response.status == 404 and json.loads(response.read()) == {"error": "not found"}
    conn.close()


def test_trinity_style_execution_streams_once_then_is_gone(patched: TargetProcess) -> None:
    conn = client(patched)
    started = json.loads(post(conn, "/api/chat", {"message": "trinity nonce-t7"}).read())
    assert started["status"] == "started"
    stream_path = f"/api/executions/{started['execution_id']}/stream"
    conn.request("GET", stream_path)
    response = conn.getresponse()
    events = [json.loads(d) for d in sse_data(response.read())]
    assert response.status == 200
    assert [e["type"] for e in events] == ["token"] * 12 + ["stream_end"]
    assert "".join(e["content"] for e in events[:-1]).startswith("You said: trinity nonce-t7")
    conn.request("GET", stream_path)
    response = conn.getresponse()
    assert response.status == 404 and "no execution" in json.loads(response.read())["detail"]
    response = post(conn, "/api/chat", {"message": 5})
    assert response.status == 400 and "message" in json.loads(response.read())["detail"]
    conn.close()


def test_agentex_style_rpc_answers_json_lines_or_a_whole_result(patched: TargetProcess) -> None:
    conn = client(patched)
    content = {"type": "text", "author": "user", "content": "agentex nonce-x9"}
    call = {"jsonrpc": "2.0", "id": "r-1", "method": "message/send"}
    response = post(conn, "/rpc", {**call, "params": {"content": content, "stream": True}})
    assert response.getheader("Content-Type") == "application/x-ndjson"
    lines = [json.loads(line) for line in response.read().decode().splitlines()]
    assert {line["id"] for line in lines} == {"r-1"}
    results = [line["result"] for line in lines]
    assert [r["type"] for r in results] == ["start"] + ["delta"] * 12 + ["done"]
    assert {r["index"] for r in results} == {0}
    text = "".join(r["delta"]["text_delta"] for r in results if r["type"] == "delta")
    assert text.startswith("You said: agentex nonce-x9 ")

    whole = json.loads(post(conn, "/rpc", {**call, "params": {"content": "plain"}}).read())
    assert whole["result"]["content"].startswith("You said: plain")
    unknown = json.loads(post(conn, "/rpc", {**call, "method": "task/cancel"}).read())
    assert unknown["id"] == "r-1" and unknown["error"]["code"] == -32601
    conn.close()


def test_a_stalled_http_reply_goes_silent_and_the_client_leaving_frees_it() -> None:
    args = [*FAST, *ONLY, "--stall-every", "1"]
    with start_target(patched=False, extra_args=args) as target:
        sock = socket.create_connection((target.host, target.port), timeout=5)
        body = json.dumps(chat("stall please", stream=True)).encode()
        head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}"
        sock.sendall(head.encode() + b"\r\n\r\n" + body)
        received = b""
        sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            while chunk := sock.recv(65536):
                received += chunk
        body = received.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")
        contents = [json.loads(d)["choices"][0]["delta"].get("content") for d in sse_data(body)]
        assert b"[DONE]" not in received and len([c for c in contents if c]) == 6
        assert health(target)["connections"] == 2  # the stalled one and this health check
        sock.close()
        deadline = time.monotonic() + 5
        while health(target)["connections"] != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert health(target)["connections"] == 1 and health(target)["active_chats"] == 0
        assert target.stop(timeout=5) == 0


def test_http_replies_carry_the_same_faults_and_the_target_survives_garbage() -> None:
    args = [*FAST, *ONLY, "--leak-thread-every", "1", "--orphan-ticker-every", "1"]
    with start_target(patched=False, extra_args=args) as target:
        before = health(target)
        conn = client(target)
        for _ in range(3):
            post(conn, "/v1/chat/completions", chat("x", stream=True)).read()
        conn.close()
        after = health(target)
        assert after["thread_count"] - before["thread_count"] == 3
        assert after["orphaned_tickers"] == 3 and after["replies"] == 3
        with socket.create_connection((target.host, target.port), timeout=5) as sock:
            sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 400 ")
        with connect(target.ws_url) as ws:  # WebSocket chat on the same port, unaffected
            assert json.loads(ws.recv(timeout=5))["type"] == "session_switched"
        assert health(target)["replies"] == 3


def test_a_stale_reply_over_http_answers_the_connections_previous_prompt() -> None:
    with start_target(patched=False, extra_args=[*FAST, *ONLY, "--stale-reply-every", "2"]) as t:
        conn = client(t)
        texts = []
        for n in (1, 2, 3):
            whole = json.loads(post(conn, "/v1/chat/completions", chat(f"q{n}")).read())
            texts.append(whole["choices"][0]["message"]["content"].split()[2])
        rpc = {"jsonrpc": "2.0", "id": 4, "method": "message/send", "params": {"content": "q4"}}
        other = client(t)  # prompt 4 on a new connection: nothing before it there
        texts.append(json.loads(post(other, "/rpc", rpc).read())["result"]["content"].split()[2])
        assert texts == ["q1", "q1", "q3", "q4"]
        assert health(t)["stale_replies"] == 1
        conn.close()
        other.close()


def test_sigterm_stops_the_target_with_a_stalled_stream_and_an_idle_keep_alive_open() -> None:
    with start_target(patched=False, extra_args=[*FAST, *ONLY, "--stall-every", "2"]) as target:
        idle = client(target)
        post(idle, "/v1/chat/completions", chat("one", stream=True)).read()  # kept alive
        stalled = client(target)
        post(stalled, "/v1/chat/completions", chat("two", stream=True))  # reply 2 stalls
        started = time.monotonic()
        assert target.stop(timeout=5) == 0
        assert time.monotonic() - started < 3
        idle.close()
        stalled.close()


@pytest.mark.e2e
@pytest.mark.parametrize("protocol", ["openai-chat", "sse", "ndjson"])
def test_demo_tells_the_faulty_build_from_the_patched_one_over_http(
    tmp_path: Path, protocol: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "soak", "demo", "--protocol", protocol, "--duration", "30s",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "as intended" in proc.stdout and "http://127.0.0.1:" in proc.stdout
    (run,) = tmp_path.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["profile"]["protocol"]["kind"] == protocol
    bad, good = summary["targets"]["unpatched"], summary["targets"]["patched"]
    assert bad["verdict"] == "fail" and good["verdict"] == "pass"
    failed = {c["name"] for c in summary["criteria"] if c["target"] == "unpatched"
              and c["status"] == "fail"}  # fmt: skip
    assert {"stalls.count", "threads.growth_per_hour"} <= failed
    assert bad["chats"]["stalls"] > 0 and good["chats"]["stalls"] == 0
    assert good["chats"]["replies"] > 100 and bad["chats"]["replies"] > 100
    assert good["chats"]["mismatches"] == good["chats"]["violations"] == 0
    for target in (bad, good):  # 20 ms between words: the median gap is about that
        assert 0.005 < target["chats"]["itl"]["p50"] < 0.2
