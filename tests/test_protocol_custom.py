"""Your own adapter: the README's complete example, taken from the README itself, named in a
profile as module:Class and driven against a line-based TCP chat server on loopback."""

import re
import socketserver
import sys
import threading
from pathlib import Path

import pytest

from soak.errors import ProfileError
from soak.profile import profile_from_mapping
from soak.protocols.turn import OK
from tests.servers import chat

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture
def readme_adapter(tmp_path, monkeypatch):
    """The README's example adapter as module `line_adapter_example`."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    [code] = [block for block in blocks if "class LineAdapter(Adapter)" in block]
    (tmp_path / "line_adapter_example.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "line_adapter_example:LineAdapter"
    sys.modules.pop("line_adapter_example", None)


class LineChat(socketserver.StreamRequestHandler):
    """PROMPT <id> <text> -> TOKEN <id> <word> per word of "You said: <text>", DONE <id>."""

    def handle(self) -> None:
        for line in self.rfile:
            _, request_id, text = line.decode().rstrip("\n").split(" ", 2)
            for word in ["You", "said:", *text.split()]:
                self.wfile.write(f"TOKEN {request_id} {word} \n".encode())
            self.wfile.write(f"DONE {request_id}\n".encode())


@pytest.fixture
def line_server():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), LineChat)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"ws://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_readme_adapter_runs_turns_with_nonce_check(readme_adapter, line_server):
    results = chat(line_server, {"kind": readme_adapter, "require_nonce": True}, prompts=3)
    assert [r.outcome for r in results] == [OK] * 3
    assert all(r.tokens >= 5 for r in results)


def test_custom_adapter_gets_its_options_and_no_other_kinds_keys(readme_adapter):
    table = profile_from_mapping(
        {"protocol": {"kind": readme_adapter, "options": {"greeting": "hi"}}}
    ).protocol
    assert table["options"] == {"greeting": "hi"}
    assert set(table) == {"kind", "prompt", "require_nonce", "keepalive", "options"}


def test_unimportable_or_wrong_adapter_fails_when_the_profile_loads():
    with pytest.raises(ProfileError, match="cannot import module 'no_such_module'"):
        profile_from_mapping({"protocol": {"kind": "no_such_module:Adapter"}})
    with pytest.raises(ProfileError, match="no class 'Path' derived from soak.protocols.Adapter"):
        profile_from_mapping({"protocol": {"kind": "pathlib:Path"}})
    with pytest.raises(ProfileError, match=r"\[protocol\] send does not apply to kind = 'jsonrpc'"):
        profile_from_mapping({"protocol": {"kind": "jsonrpc", "send": {"type": "x"}}})
