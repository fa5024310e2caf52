"""CPU cost per streamed frame over HTTP: soak's openai-chat users vs bare asyncio clients.

The HTTP counterpart of load_cpu_per_frame.py. One OpenAI-compatible server on loopback
(`POST /v1/chat/completions`, `"stream": true`, long replies streamed without pauses) is
driven with the same number of concurrent chats by soak's load process (kind
`openai-chat`: gevent, soak's own h11 client) and by a minimal asyncio client in a
subprocess, with httpx (`AsyncClient.stream`, `aiter_lines`) and with aiohttp, whichever
are installed; in rounds (httpx, aiohttp, soak; twice). The baseline is the least a
correct client does: one keep-alive connection per chat, POST, json-parse every SSE data
line until `[DONE]`. A frame is what soak's chats.jsonl counts: a delta with content, or
`[DONE]`; the baseline counts the same (and still parses the role and finish chunks).
soak's figure is its load process's CPU in the load phase (generator.jsonl; the
whole-process figure is printed too). Prints CPU microseconds per frame for each and the
ratio soak / each baseline (goal <= 1.5). The server is the built-in target (patched,
`--token-interval 0`) or, with `--server fake-openai`, tests/realservers/fake_openai.py
(stdlib, a thread per connection, `--delay-ms 0`).

    pip install -e '.[bench]'                                   # httpx and aiohttp
    python benchmarks/load_http_cpu_per_frame.py                # ~2 minutes
    python benchmarks/load_http_cpu_per_frame.py --chats 50 --seconds 20 --server fake-openai
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from load_common import FrameCosts, run_baseline, soak_cpu

from soak.target import start_target

#: The stdlib OpenAI-compatible fake of the real-server tests (one thread per connection).
FAKE_OPENAI = Path(__file__).resolve().parent.parent / "tests" / "realservers" / "fake_openai.py"
SERVERS = ("builtin", "fake-openai")
CLIENTS = ("httpx", "aiohttp")
#: Long enough for 100 one-or-two-character pieces from fake-openai, which echoes it.
PROMPT = (
    "soak check {request_id}: repeat the code {nonce}, then say one short sentence "
    "about the weather, the sea, the harbour and the long slow light of an afternoon."
)

BASELINE = r"""
import asyncio, json, sys, time, uuid

CLIENT, URL, CHATS, SECONDS, PROMPT = sys.argv[1:6]
if CLIENT == "httpx":
    import httpx
else:
    import aiohttp

def body():
    prompt = PROMPT.format(request_id=uuid.uuid4().hex[:12], nonce=uuid.uuid4().hex[:8])
    return {"messages": [{"role": "user", "content": prompt}], "stream": True}

def line_seen(line, counts):
    # counts: frames (content deltas and [DONE], as soak counts them), replies
    if not line.startswith("data:"):
        return
    data = line[5:].strip()
    if data == "[DONE]":
        counts[0] += 1
        counts[1] += 1
        return
    chunk = json.loads(data)
    if any((choice.get("delta") or {}).get("content") for choice in chunk.get("choices") or ()):
        counts[0] += 1

async def httpx_chat(deadline, counts):
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        while time.monotonic() < deadline:
            async with client.stream("POST", URL, json=body()) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    line_seen(line, counts)

async def aiohttp_chat(deadline, counts):
    connector = aiohttp.TCPConnector(limit=1)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        while time.monotonic() < deadline:
            async with session.post(URL, json=body()) as response:
                response.raise_for_status()
                async for line in response.content:
                    line_seen(line.decode(), counts)

async def main():
    chat = httpx_chat if CLIENT == "httpx" else aiohttp_chat
    counts = [0, 0]
    cpu = time.process_time()
    deadline = time.monotonic() + float(SECONDS)
    await asyncio.gather(*(chat(deadline, counts) for _ in range(int(CHATS))))
    cpu = time.process_time() - cpu
    print(json.dumps({"frames": counts[0], "replies": counts[1], "cpu_s": cpu}))

asyncio.run(main())
"""


@contextmanager
def openai_server(kind: str, tokens: int) -> Iterator[str]:
    """Run an OpenAI-compatible server on loopback (`builtin`: soak's target, patched;
    `fake-openai`: the tests' stdlib fake) replying `tokens` pieces without pauses; yields
    its base URL and stops it (by pid) afterwards."""
    if kind == "builtin":
        extra = ["--tokens", str(tokens), "--token-interval", "0"]
        with start_target(patched=True, extra_args=extra) as target:
            yield f"http://{target.host}:{target.port}"
        return
    argv = [sys.executable, str(FAKE_OPENAI), "--port", "0", "--chunks", str(tokens)]
    process = subprocess.Popen(
        [*argv, "--delay-ms", "0", "--log", os.devnull],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("FAKE_OPENAI_READY"):
            raise SystemExit(f"{FAKE_OPENAI} did not start: {line!r}")
        yield f"http://127.0.0.1:{line.split('port=')[1].strip()}"
    finally:
        process.kill()  # a test fake with nothing to flush
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def check_streams(endpoint: str, server: str) -> None:
    """One streamed completion from `endpoint` (10 s at most), or SystemExit saying why not."""
    body = b'{"messages": [{"role": "user", "content": "hi"}], "stream": true}'
    request = urllib.request.Request(endpoint, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = response.read()
    except OSError as exc:
        answer = str(exc).encode()
    if b"data: [DONE]" not in answer:
        raise SystemExit(
            f"the {server} server does not stream POST {endpoint} (it said "
            f"{answer[:200]!r}); try --server {'fake-openai' if server == 'builtin' else 'builtin'}"
        )


def installed_clients(wanted: list[str]) -> list[str]:
    """The baseline clients of `wanted` that this interpreter can import (the subprocess
    runs it too); SystemExit with the install line when none can, or a named one cannot."""
    found = [name for name in wanted if importlib.util.find_spec(name) is not None]
    missing = [name for name in wanted if name not in found]
    if not found:
        raise SystemExit(
            f"{' and '.join(missing)} not installed for {sys.executable}; "
            "install the benchmark extra: pip install -e '.[bench]'"
        )
    for name in missing:
        print(f"({name} not installed, its baseline is skipped: pip install -e '.[bench]')")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=20, help="concurrent chats (default 20)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement (10)")
    parser.add_argument("--tokens", type=int, default=100, help="token frames per reply (100)")
    parser.add_argument("--server", choices=SERVERS, default="builtin",
                        help="the OpenAI-compatible server (default builtin)")  # fmt: skip
    parser.add_argument("--clients", default=",".join(CLIENTS),
                        help="baseline clients, comma-separated (httpx,aiohttp)")  # fmt: skip
    args = parser.parse_args()
    wanted = [name.strip() for name in args.clients.split(",") if name.strip()]
    if unknown := sorted(set(wanted) - set(CLIENTS)):
        parser.error(f"unknown client(s) {', '.join(unknown)}; choose from {', '.join(CLIENTS)}")
    clients = installed_clients(wanted)
    protocol = {"kind": "openai-chat", "prompt": PROMPT, "require_nonce": True, "max_tokens": 0}
    costs = FrameCosts()
    print(f"server: {args.server}; {args.chats} chats, {args.seconds:g} s each, "
          f"{args.tokens} tokens per reply", flush=True)  # fmt: skip
    with openai_server(args.server, args.tokens) as url, tempfile.TemporaryDirectory() as tmp:
        endpoint = f"{url}/v1/chat/completions"
        check_streams(endpoint, args.server)
        for round_number in (1, 2):
            for client in clients:
                argv = (client, endpoint, str(args.chats), str(args.seconds), PROMPT)
                result = run_baseline(BASELINE, *argv, timeout=args.seconds + 60)
                costs.add(
                    round_number, client, result["cpu_s"], result["frames"], result["replies"]
                )
            folder = Path(tmp) / f"r{round_number}"
            steady, whole, frames, replies = soak_cpu(
                url, args.chats, args.seconds, folder, protocol
            )
            costs.add(round_number, "soak", steady, frames, replies, whole_s=whole)
    costs.summary(args.chats)


if __name__ == "__main__":
    main()
