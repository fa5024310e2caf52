"""Your own adapter: the README's complete example, taken from the README itself, named in a
profile as module:Class and driven against a line-based TCP chat server on loopback."""

import re
import socketserver
import sys
import threading
from pathlib import Path

import pytest

from soak.errors import ProfileError
from soak.profile import SECTIONS, profile_from_mapping
from soak.protocols import Adapter, ConnectionLost, Conversation, adapter_for, registry
from soak.protocols.settings import Spec, integer, string
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


class EchoAdapter(Adapter):
    """A protocol added the way the built-in ones are: a class with its kind and settings."""

    kind = "echo-test"
    settings = {
        "greeting": Spec(string, "hello", 'greeting = "hello"'),
        "rounds": Spec(integer(1), 3, "rounds = 3"),
    }

    def connect(self, url: str, timeout: float) -> Conversation:
        raise ConnectionLost(None, "not a real protocol")


@pytest.fixture
def echo_registered(monkeypatch):
    """EchoAdapter registered once (in a copy of the registry, gone after the test)."""
    monkeypatch.setattr(registry, "ADAPTERS", dict(registry.ADAPTERS))
    registry.register(EchoAdapter)
    return EchoAdapter.kind


def test_an_adapter_registered_once_is_a_kind_with_its_own_keys(echo_registered):
    protocol = profile_from_mapping({"protocol": {"kind": "echo-test", "rounds": 5}}).protocol
    assert protocol == {
        "kind": "echo-test",
        "prompt": SECTIONS["protocol"]["prompt"].default,
        "require_nonce": False,
        "greeting": "hello",
        "rounds": 5,
    }
    adapter = adapter_for(protocol)
    assert isinstance(adapter, EchoAdapter) and adapter.config["rounds"] == 5
    with pytest.raises(ProfileError, match=r"\[protocol\] rounds: expected a whole number >= 1"):
        profile_from_mapping({"protocol": {"kind": "echo-test", "rounds": 0}}, source="p.toml")
    with pytest.raises(ProfileError) as other_kinds_key:
        profile_from_mapping({"protocol": {"kind": "echo-test", "send": {}}}, source="p.toml")
    assert other_kinds_key.value.message == (
        "p.toml: [protocol] send does not apply to kind = 'echo-test' (it is for json-events). "
        "Keys for 'echo-test': greeting, kind, prompt, require_nonce, rounds."
    )
    with pytest.raises(ProfileError, match=r"greeting does not apply .* \(it is for echo-test\)"):
        profile_from_mapping({"protocol": {"kind": "jsonrpc", "greeting": "hi"}})
    with pytest.raises(ProfileError, match=r"ndjson, echo-test, or your own adapter"):
        profile_from_mapping({"protocol": {"kind": "echo"}})
    with pytest.raises(ProfileError, match="Did you mean 'greeting'"):
        profile_from_mapping({"protocol": {"kind": "echo-test", "greting": "hi"}})


def test_registering_checks_the_kind_and_its_settings(echo_registered):
    class Clash(EchoAdapter):
        settings = {"prompt": Spec(string, "", 'prompt = "..."')}

    class Untyped(EchoAdapter):
        kind = "untyped"
        settings = {"greeting": "hello"}

    class Plugin(EchoAdapter):
        kind = "mypkg.proto:Plugin"

    with pytest.raises(ValueError, match="'echo-test' is EchoAdapter already"):
        registry.register(Clash)
    with pytest.raises(ValueError, match="must map \\[protocol\\] key names to .*Spec"):
        registry.register(Untyped)
    with pytest.raises(ValueError, match="kind must be a name without ':'"):
        registry.register(Plugin)
    assert registry.register(EchoAdapter) is EchoAdapter  # again: nothing changes
    assert list(registry.ADAPTERS).count("echo-test") == 1


def test_your_own_adapter_may_declare_its_settings(tmp_path, monkeypatch):
    (tmp_path / "typed_adapter_example.py").write_text(
        "from soak.protocols import Adapter\n"
        "from soak.protocols.settings import Spec, boolean\n"
        "class Typed(Adapter):\n"
        "    settings = {'loud': Spec(boolean, False, 'loud = true')}\n"
        "    def connect(self, url, timeout): ...\n"
        "class Clash(Typed):\n"
        "    settings = {'kind': Spec(boolean, False, 'kind = true')}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "typed_adapter_example", raising=False)
    kind = "typed_adapter_example:Typed"
    protocol = profile_from_mapping({"protocol": {"kind": kind, "loud": True}}).protocol
    assert protocol["loud"] is True and "options" not in protocol
    with pytest.raises(ProfileError, match=r"options does not apply to kind = .*your own adapter"):
        profile_from_mapping({"protocol": {"kind": kind, "options": {}}})
    with pytest.raises(ProfileError, match="Clash.settings declares 'kind', which every kind"):
        profile_from_mapping({"protocol": {"kind": "typed_adapter_example:Clash"}})
