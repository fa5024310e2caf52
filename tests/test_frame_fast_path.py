"""The per-frame fast path gives what the plain full parse gives, on many generated frames.

No hypothesis here: a seeded generator makes frames (the built-in target's and nerve's,
and adversarial ones: escaped quotes, the matcher's key nested deeper or twice, unicode,
odd whitespace, truncated or trailing text, bytes) and every one is classified both ways.
The reference is soak's classification as it was before the fast path: json.loads, the
`Matcher` / `Condition` classes and `lookup_parts` on every path.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from soak.profile import profile_from_mapping
from soak.protocols import adapter_for
from soak.protocols.base import DONE, ERROR, INVALID, OTHER, PONG, TOKEN, Frame
from soak.protocols.json_events import JsonEventsAdapter
from soak.protocols.matchers import Matcher, compile_matcher
from soak.protocols.turn import NonceWatch
from soak.protocols.wsjson import as_text, lookup_parts, parse

SEED = 20260515
SESSION = "5f0c3a9e2b7d4e1f8a6b0c2d4e6f8a1b"
OTHER_SESSION = "0" * 32
KEYS = ("type", "session_id", "request_id", "content", "seq", "parent_tool_use_id", "error")
KEYS += ("text", "delta", "meta", "usage", "tÿpe", "Type", "type ", "")
STRINGS = ("token", "done", "stopped", "error", "pong", "other", "", "Token", "token ")
STRINGS += (SESSION, OTHER_SESSION, "r1", "word ", 'say "token"', '"type": "token"')
STRINGS += ('\\"type\\": \\"token\\"', "ünïcödé 🦀", "\u2028", "a\\b", "}{", "\x00")


KINDS = ("token", "done", "error", "pong")


def reference_parse(raw: str | bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def reference_classify(adapter: JsonEventsAdapter, raw: str | bytes, session_id: str | None):
    """JsonEventsAdapter.classify as it was before the fast path."""
    config = adapter.config
    matchers = [Matcher(config[name]) if config.get(name) else None for name in KINDS]

    def get(name: str) -> Any:
        path = config.get(name)
        return None if path is None else lookup_parts(data, tuple(path.split(".")))

    def matches(kind: str) -> bool:
        matcher = matchers[KINDS.index(kind)]
        return matcher is not None and matcher(data)

    text = as_text(raw)
    data = reference_parse(raw)
    if not isinstance(data, dict | list):
        return Frame(INVALID, None, "not a JSON object", text)
    if session_id and config.get("session_path") is not None:
        session = get("session_path")
        if session is not None and str(session) != session_id:
            return Frame(OTHER, None, "", text)
    request_id = get("request_id_path")
    request_id = None if request_id is None else str(request_id)
    seq = get("seq_path")
    seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
    if matches("token"):
        token = get("token_text_path")
        return Frame(TOKEN, request_id, "" if token is None else str(token), text, seq)
    if matches("done"):
        final = get("done_text_path")
        return Frame(DONE, request_id, "" if final is None else str(final), text, seq)
    if matches("error"):
        error = get("error_text_path")
        return Frame(ERROR, request_id, str(error or text), text, seq)
    if matches("pong"):
        return Frame(PONG, None, "", text, seq)
    return Frame(OTHER, request_id, "", text, seq)


NERVE = {
    "session_path": "session_id",
    "request_id_path": None,
    "token": [
        {"path": "type", "value": "token"},
        {"path": "parent_tool_use_id", "absent": True},
    ],
    "error_ends_turn": False,
}
PROTOCOLS = {
    "builtin": {},
    "nerve": NERVE,
    "seq": {"seq_path": "seq", "session_path": "session_id", "done_text_path": "text"},
    "nested": {  # paths of several parts: the general path
        "token": {"path": "delta.type", "value": "token"},
        "token_text_path": "delta.content",
        "session_path": "meta.session_id",
        "request_id_path": "meta.0",
    },
    "nested-matcher": {  # flat paths, a matcher deeper down and one on mere presence
        "token": [{"path": "meta.type", "value": ["token", "delta"]}, {"path": "content"}],
        "done": {"path": "usage"},
        "pong": {"path": "type", "value": 1},
    },
    "three": {
        "token": [
            {"path": "type", "value": "token"},
            {"path": "content"},
            {"path": "error", "absent": True},
        ]
    },
}


def value(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value, strings from STRINGS mostly; nested values carry the keys too."""
    roll = rng.random()
    if roll < 0.45:
        return rng.choice(STRINGS)
    if roll < 0.55:
        return rng.choice((0, 1, 2, 3, -1, 2**70, 1.0, 1.5, True, False))
    if roll < 0.62:
        return None
    if depth >= 3:
        return rng.choice(STRINGS)
    if roll < 0.8:
        return [value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(KEYS): value(rng, depth + 1) for _ in range(rng.randrange(4))}


def frame_text(rng: random.Random) -> str | bytes:
    """One frame: a realistic token frame, a random object, or an adversarial text."""
    roll = rng.random()
    if roll < 0.3:  # the built-in target's or nerve's token frame, maybe with extras
        fields: dict[str, Any] = {
            "type": "token",
            "session_id": rng.choice((SESSION, OTHER_SESSION)),
        }
        if rng.random() < 0.5:
            fields["request_id"] = rng.choice(("r1", "r2", 7))
        fields["content"] = rng.choice(STRINGS)
        for _ in range(rng.randrange(3)):
            fields[rng.choice(KEYS)] = value(rng, 1)
        if rng.random() < 0.3:  # the same keys deeper down (what "nested" matches)
            fields["delta"] = {"type": rng.choice(STRINGS[:3]), "content": rng.choice(STRINGS)}
            fields["meta"] = rng.choice(({"session_id": SESSION, "type": "token"}, ["r1"]))
    else:
        fields = {rng.choice(KEYS): value(rng, 1) for _ in range(rng.randrange(6))}
    items = list(fields.items())
    rng.shuffle(items)
    if items and rng.random() < 0.2:  # a key twice: json.loads keeps the last
        items.insert(rng.randrange(len(items) + 1), (items[0][0], value(rng, 1)))
    sep = rng.choice(((", ", ": "), (",", ":"), (" ,  ", " :\t"), (",\n", ":\r\n")))
    ascii_only = rng.random() < 0.5
    body = sep[0].join(
        json.dumps(key, ensure_ascii=ascii_only)
        + sep[1]
        + json.dumps(item, ensure_ascii=ascii_only)
        for key, item in items
    )
    text = "{" + body + "}"
    roll = rng.random()
    if roll < 0.05:
        text = text[: rng.randrange(len(text))]  # truncated
    elif roll < 0.1:
        text += rng.choice((" ", "\n", " \t\r\n", "x", "}", "{}", " 1", "\ufeff"))
    elif roll < 0.13:
        text = rng.choice((" ", "\n", "\ufeff", "[", "[1, ")) + text
    elif roll < 0.16:
        text = rng.choice(("[]", "[{}]", '"token"', "1", "null", "", "<html>", "NaN", "{" * 5000))
    elif roll < 0.18:
        text = "[" * 100_000 + "]" * 100_000  # too deep
    if rng.random() < 0.1:
        return text.encode(rng.choice(("utf-8", "utf-16", "utf-8-sig")), "surrogatepass")
    return text


def frames(seed: int, count: int) -> list[str | bytes]:
    rng = random.Random(seed)
    return [frame_text(rng) for _ in range(count)]


def same(left: Any, right: Any) -> bool:
    return repr(left) == repr(right)  # NaN == NaN here, and the types must agree


def test_parse_is_json_loads_on_generated_frames():
    raws = frames(SEED, 4000)
    raws += ["{}", "{} ", '{"a": 1}x', '{"a": NaN}', '{"a": 1e999}', "{\ufeff}", '{"\\ud800": 1}']
    for raw in raws:
        assert same(parse(raw), reference_parse(raw)), raw


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_classify_is_the_full_parse_on_generated_frames(name):
    table = profile_from_mapping({"protocol": PROTOCOLS[name]}).protocol
    adapter = adapter_for(table)
    assert isinstance(adapter, JsonEventsAdapter)
    assert adapter.flat == (name != "nested")
    kinds = set()
    for n, raw in enumerate(frames(SEED + len(name), 3000)):
        for session in (None, SESSION):
            got = adapter.classify(raw, session)
            assert got == reference_classify(adapter, raw, session), (n, raw, session)
            kinds.add(got.kind)
    assert kinds >= {TOKEN, OTHER, INVALID}  # the generator does reach the branches


def test_compiled_matchers_are_the_matcher_classes():
    rng = random.Random(SEED)
    paths = ("type", "meta.type", "delta", "0", "meta.0", "content")
    conditions: list[dict[str, Any]] = []
    for path in paths:
        conditions += [{"path": path, "absent": True}, {"path": path, "value": None}]
        conditions += [{"path": path, "value": v} for v in ("token", 1, True, 1.0, ["done", 1])]
    datas = [value(rng) for _ in range(600)] + [{"type": "token"}, [{"type": "token"}], "token"]
    datas += [{"type": ["token"]}, {"type": {"x": 1}}, {"type": True}, {"meta": ["token"]}]
    for _ in range(300):
        matcher: Any = rng.choice(conditions)
        if rng.random() < 0.6:
            matcher = rng.sample(conditions, rng.randrange(1, 4))
        compiled, reference = compile_matcher(matcher), Matcher(matcher)
        for data in datas:
            assert bool(compiled(data)) == bool(reference(data)), (matcher, data)


def reference_watch(nonce: str, earlier: tuple[str, ...], pieces: list[str]):
    """found, stale: the whole reply searched after every piece."""
    reply = ""
    stale = None
    for piece in pieces:
        reply += piece
        if stale is None:
            stale = next((n for n in earlier if n != nonce and n in reply), None)
    return nonce in reply, stale


def test_nonce_watch_is_a_search_of_the_whole_reply():
    rng = random.Random(SEED)
    alphabet = "ab01"  # few letters: nonces turn up, split anywhere, overlapping
    for _ in range(3000):
        nonce = "".join(rng.choices(alphabet, k=rng.randrange(1, 6)))
        earlier = tuple("".join(rng.choices(alphabet, k=rng.randrange(1, 7))) for _ in range(3))
        reply = "".join(rng.choices(alphabet + " ", k=rng.randrange(30)))
        cuts = sorted(rng.sample(range(len(reply) + 1), min(len(reply) + 1, rng.randrange(6))))
        pieces = [reply[a:b] for a, b in zip([0, *cuts], [*cuts, len(reply)], strict=True)]
        watch = NonceWatch(nonce, earlier)
        for piece in pieces:
            watch.feed(piece)
        found, stale = reference_watch(nonce, earlier, pieces)
        assert watch.found == found, (nonce, pieces)
        if not found:  # the stale nonce only counts while the reply lacks this one
            assert watch.stale == stale, (nonce, earlier, pieces)
