"""A WebSocket chat server cheap enough that the load generator is the limit, for --workers.

Speaks the built-in target's WebSocket protocol (`session_switched` on connect; a `message`
answered by `tokens` `token` frames and one `done`, each carrying the request id; the
prompt's words come first, so a nonce in it is in the reply), but writes each reply's
frames, encoded by hand, in one write: a reply costs it tens of microseconds instead of a
frame's worth of event-loop work per token. On 2 cores the built-in target (as costly per
frame as the client) is the bottleneck of any busy run, so more load workers only share its
output; against this server, frames per second show how the generator itself scales.

    python benchmarks/burst_server.py --tokens 100     # prints {"port": N, "pid": P}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import uuid

from websockets.asyncio.server import ServerConnection, serve

FILLER = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "again")


def text_frame(payload: bytes) -> bytes:
    """One unmasked, final text frame (RFC 6455 section 5.2) around `payload`."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return b"\x81\x7e" + struct.pack("!H", size) + payload
    return b"\x81\x7f" + struct.pack("!Q", size) + payload


def reply_bytes(session_id: str, request_id: object, prompt: str, tokens: int) -> bytes:
    """Every frame of one reply, `tokens` tokens then `done`, as one buffer."""
    words = ["You", "said:", *prompt.split()]
    words += [FILLER[i % len(FILLER)] for i in range(max(tokens - len(words), 0))]
    head = {"type": "token", "session_id": session_id, "request_id": request_id}
    frames = [text_frame(json.dumps({**head, "content": word + " "}).encode()) for word in words]
    done = {"type": "done", "session_id": session_id, "request_id": request_id}
    frames.append(text_frame(json.dumps({**done, "usage": {"tokens": len(words)}}).encode()))
    return b"".join(frames)


async def chat(connection: ServerConnection, tokens: int) -> None:
    session_id = uuid.uuid4().hex
    await connection.send(json.dumps({"type": "session_switched", "session_id": session_id}))
    async for raw in connection:
        message = json.loads(raw)
        if message.get("type") == "ping":
            await connection.send('{"type": "pong"}')
            continue
        reply = reply_bytes(session_id, message.get("request_id"), message["content"], tokens)
        connection.transport.write(reply)  # past websockets' framing: server frames are unmasked


async def main(port: int, tokens: int) -> None:
    async with serve(
        lambda connection: chat(connection, tokens), "127.0.0.1", port, compression=None
    ) as server:
        bound = server.sockets[0].getsockname()[1]
        print(json.dumps({"port": bound, "pid": os.getpid()}), flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: free)")
    parser.add_argument("--tokens", type=int, default=100, help="tokens per reply (100)")
    args = parser.parse_args()
    asyncio.run(main(args.port, args.tokens))
