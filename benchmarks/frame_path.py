"""CPU per frame of soak's per-frame path (json-events), without sockets.

Feeds recorded-looking frames through the code a turn uses in the load: the adapter's
`JsonEventsConversation.receive` (frame classification) on a socket that hands out
ready-made frames, and `run_turn` (seq, request and token bookkeeping, inter-token gaps,
the nonce watch). Two shapes: the built-in target's frames (`{"type": "token",
"session_id": HEX32, "request_id": HEX12, "content": "word "}`, the default profile) and
nerve's (`session_path`, a token matcher with `absent`, a nonce to find). The baseline in
the same run is a bare `json.loads` of each frame. Prints microseconds per frame, best of
`--repeat` interleaved rounds (CPU time), and the ratio to the baseline.

    python benchmarks/frame_path.py                      # ~10 s
    python benchmarks/frame_path.py --frames 200000 --profile builtin
"""

from __future__ import annotations

import argparse
import json
import time
import tomllib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from soak.profile import profile_from_mapping
from soak.protocols import adapter_for
from soak.protocols.json_events import JsonEventsAdapter, JsonEventsConversation
from soak.protocols.turn import OK, Channel, run_turn

ROOT = Path(__file__).resolve().parent.parent
#: Token frames per reply (then one terminal frame).
TOKENS = 100
#: Distinct replies cycled through (each its own nonce, so the stale check has nonces).
REPLIES = 8
WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "again")


class ScriptedSocket:
    """Stands in for JsonSocket: `recv` hands out the current reply's frames in order."""

    def __init__(self) -> None:
        self.frames: list[str] = []
        self.at = 0

    def load(self, frames: list[str]) -> None:
        self.frames, self.at = frames, 0

    def send(self, message: Any) -> None:
        pass

    def recv(self, timeout: float) -> str | None:
        if self.at >= len(self.frames):
            return None
        self.at += 1
        return self.frames[self.at - 1]

    def close(self) -> None:
        pass


def builtin_replies(session: str) -> tuple[dict[str, Any], list[tuple[str, str, list[str]]]]:
    """The default profile's protocol and REPLIES replies of the built-in target:
    (request id, nonce, frames) each."""
    replies = []
    for _ in range(REPLIES):
        request_id, nonce = uuid.uuid4().hex[:12], uuid.uuid4().hex[:8]
        base = {"type": "token", "session_id": session, "request_id": request_id}
        frames = [
            json.dumps({**base, "content": WORDS[i % len(WORDS)] + " "}) for i in range(TOKENS)
        ]
        done = {"type": "done", "session_id": session, "request_id": request_id}
        frames.append(json.dumps({**done, "usage": {"tokens": TOKENS}}))
        replies.append((request_id, nonce, frames))
    return {}, replies


def nerve_replies(session: str) -> tuple[dict[str, Any], list[tuple[str, str, list[str]]]]:
    """profiles/nerve.toml's protocol (no session_create: no HTTP here) and nerve-style
    replies whose text carries the nonce."""
    protocol = tomllib.loads((ROOT / "profiles" / "nerve.toml").read_text())["protocol"]
    protocol.pop("session_create")
    replies = []
    for _ in range(REPLIES):
        nonce = uuid.uuid4().hex[:8]
        words = [WORDS[i % len(WORDS)] for i in range(TOKENS)]
        words[TOKENS // 2] = nonce
        frames = [
            json.dumps({"type": "token", "session_id": session, "content": word + " "})
            for word in words
        ]
        frames.append(json.dumps({"type": "done", "session_id": session}))
        replies.append(("", nonce, frames))
    return protocol, replies


SHAPES: dict[str, Callable[[str], tuple[dict[str, Any], list[tuple[str, str, list[str]]]]]] = {
    "builtin": builtin_replies,
    "nerve": nerve_replies,
}


def soak_us(shape: str, total: int) -> float:
    """Microseconds per frame of `total` frames (whole replies) through run_turn."""
    session = uuid.uuid4().hex
    protocol, replies = SHAPES[shape](session)
    table = profile_from_mapping({"protocol": protocol}).protocol
    adapter = adapter_for(table)
    assert isinstance(adapter, JsonEventsAdapter)
    socket = ScriptedSocket()
    conversation = JsonEventsConversation(adapter, socket, "http://127.0.0.1:1", 5.0)  # type: ignore[arg-type]
    conversation.session_id = session
    channel = Channel(conversation)
    nonce_needed = bool(table.get("require_nonce"))
    turns = max(1, total // (TOKENS + 1))
    started = time.process_time()
    for n in range(turns):
        request_id, nonce, frames = replies[n % REPLIES]
        socket.load(frames)
        result = run_turn(
            channel,
            "prompt",
            request_id or uuid.uuid4().hex[:12],
            first_token_timeout=60.0,
            reply_timeout=60.0,
            nonce=nonce if nonce_needed else None,
        )
        if result.outcome != OK or result.tokens != TOKENS:
            raise SystemExit(f"{shape}: turn {n} was {result.outcome} {result.detail}")
    return (time.process_time() - started) * 1e6 / (turns * (TOKENS + 1))


def loads_us(shape: str, total: int) -> float:
    """Microseconds per frame of a bare json.loads of the same frames."""
    _, replies = SHAPES[shape](uuid.uuid4().hex)
    turns = max(1, total // (TOKENS + 1))
    loads = json.loads
    started = time.process_time()
    for n in range(turns):
        for raw in replies[n % REPLIES][2]:
            loads(raw)
    return (time.process_time() - started) * 1e6 / (turns * (TOKENS + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000, help="per round (100000)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; best is kept (5)")
    parser.add_argument("--profile", choices=[*SHAPES, "all"], default="all")
    args = parser.parse_args()
    shapes = list(SHAPES) if args.profile == "all" else [args.profile]
    print(f"{'frames':<8} {'json.loads µs':>14} {'soak µs':>10} {'ratio':>7}")
    for shape in shapes:
        bases, soaks = [], []
        for _ in range(args.repeat):  # interleaved: a busy moment hits both alike
            bases.append(loads_us(shape, args.frames))
            soaks.append(soak_us(shape, args.frames))
        base, soak = min(bases), min(soaks)
        print(f"{shape:<8} {base:>14.2f} {soak:>10.2f} {soak / base:>6.2f}x")


if __name__ == "__main__":
    main()
