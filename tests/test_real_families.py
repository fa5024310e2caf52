"""The shipped profiles against the real server families, as their code behaves.

agent-zero and nerve do not install from PyPI, so tests/gallery/ holds stand-ins
written from their code (nested acks, required fields, one context per chat, the
channel's shared last session, sessions made over HTTP); hermes-agent 0.19.0 itself
runs in tests/test_real_hermes.py, its newer protocol as a stand-in here. Each run
uses the shipped profile's [protocol] unchanged (asserted); only [load] is compressed
from hours to seconds so that faults show in a test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from soak.profile import load_profile
from tests.test_gallery_verdicts import Soaked, gallery_server, soak_run

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e

#: Seconds, not hours: enough turns in a test for the faults to show (and the collector
#: samples every second, not every 5).
FAST_LOAD = {
    "users": "4",
    "think_time": '["0.2s", "0.5s"]',
    "first_token_timeout": '"3s"',
    "reply_timeout": '"5s"',
    "connect_timeout": '"5s"',
    "ping_every": '"2s"',
    "idle_after": '"10s"',
    "interval": '"2s"',
}


def compressed(name: str, tmp_path: Path, **load: str) -> str:
    """profiles/NAME.toml with its [load] timing compressed; its [protocol] untouched."""
    shipped = REPO / "profiles" / f"{name}.toml"
    head, _, rest = shipped.read_text().partition("\n[load]\n")
    section, _, tail = rest.partition("\n[")
    settings = {**FAST_LOAD, **load}
    kept = [line for line in section.splitlines() if line.split("=")[0].strip() not in settings]
    text = head + "\n[load]\n" + "\n".join([*kept, *(f"{k} = {v}" for k, v in settings.items())])
    text += "\n[" + tail
    text = re.sub(r'\nwarmup = "[^"]*"', '\nwarmup = "3s"', text)
    text = re.sub(r'\n\[collector\]\ninterval = "[^"]*"', '\n[collector]\ninterval = "1s"', text)
    copy = tmp_path / f"{name}.toml"
    copy.write_text(text)
    assert load_profile(copy).protocol == load_profile(shipped).protocol
    return str(copy)


def events(soaked: Soaked) -> list[dict]:
    lines = (soaked.run_dir / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_agent_zero_wedge_stops_every_chat_and_the_patched_build_answers(tmp_path: Path) -> None:
    """agent-zero: CSRF, Origin, state_request with notifications_from and timezone, a
    nested ack, a context per chat. The faulty build wedges its one handler worker after
    6 messages: every chat stops getting answers, for good."""
    profile = compressed("socketio-agent", tmp_path)
    with (
        gallery_server("agent_zero_like", "--wedge-after", "6", "--swallow-every", "0",
                       log=tmp_path / "faulty.log") as faulty,
        gallery_server("agent_zero_like", "--patched", log=tmp_path / "patched.log") as fixed,
    ):  # fmt: skip
        soaked = soak_run(
            profile,
            tmp_path,
            {"unpatched": (faulty, "", "/api/health"), "patched": (fixed, "", "/api/health")},
            "--duration", "25s",
        )  # fmt: skip
    bad, good = soaked.target("unpatched"), soaked.target("patched")
    assert good["chats"]["replies"] >= 40 and good["verdict"] == "pass", good["verdict_reasons"]
    assert (
        good["chats"]["violations"] == good["chats"]["errors"] == good["chats"]["mismatches"] == 0
    )
    assert bad["verdict"] == "fail"
    assert bad["chats"]["replies"] <= 8 and bad["chats"]["first_token_timeouts"] >= 4
    assert bad["chats"]["chats_never_recovered"] == 2  # both chats of this target, to the end
    assert any("never recovered (every chat" in f for f in bad["findings"])
    assert soaked.statuses("unpatched")["stuck_chats.count"] == "fail"


def test_nerve_chats_get_a_session_each_and_a_hung_call_answers_late(tmp_path: Path) -> None:
    """nerve: every client is bound to the channel's last session unless it makes one
    (POST /api/sessions) and sends on it; sub-agent text, other sessions' events and the
    `done` after an `error` are no reply of ours. The faulty build hangs every 6th model
    call for 6 s while holding the session lock; the retry then answers that old prompt
    in a later turn: the answer to the previous question."""
    profile = compressed("nerve", tmp_path)
    faulty_args = ("--hang-every", "6", "--hang-seconds", "6", "--error-every", "7")
    with (
        gallery_server("nerve_like", *faulty_args, log=tmp_path / "faulty.log") as faulty,
        gallery_server("nerve_like", "--patched", "--error-every", "7",
                       log=tmp_path / "patched.log") as fixed,
    ):  # fmt: skip
        soaked = soak_run(
            profile,
            tmp_path,
            {"unpatched": (faulty, "/ws", "/health"), "patched": (fixed, "/ws", "/health")},
            "--duration", "25s",
        )  # fmt: skip
    bad, good = soaked.target("unpatched"), soaked.target("patched")
    assert good["chats"]["replies"] >= 40, good
    assert (
        good["chats"]["violations"]
        == good["chats"]["mismatches"]
        == good["chats"]["first_token_timeouts"]
        == 0
    )
    assert good["chats"]["errors"] == pytest.approx(
        good["chats"]["turns"] / 7, rel=0.5
    )  # error, then done
    assert bad["chats"]["first_token_timeouts"] >= 2
    assert bad["chats"]["mismatches_by_kind"].get("stale_reply", 0) >= 1
    assert bad["verdict"] == "fail"
    assert soaked.statuses("unpatched")["mismatches.count"] == "fail"


def test_hermes_gateways_old_and_new_with_one_profile(tmp_path: Path) -> None:
    """hermes 0.19.0 has no ping method and no seq; newer gateways have both. The same
    profile, both at once: no violation either way, pings switched off with one event
    where they are missing, measured where they are not."""
    profile = compressed("jsonrpc-gateway", tmp_path)
    flavors = ("old", "new")
    with (
        gallery_server("hermes_like", "--flavor", "old", "--patched", "--token", "secret",
                       log=tmp_path / "old.log") as old,
        gallery_server("hermes_like", "--flavor", "new", "--patched", "--token", "secret",
                       log=tmp_path / "new.log") as new,
    ):  # fmt: skip
        path = "/api/ws?token=secret"
        soaked = soak_run(
            profile,
            tmp_path,
            {"old": (old, path, "/api/status"), "new": (new, path, "/api/status")},
            "--duration", "15s",
        )  # fmt: skip
    for flavor in flavors:
        gateway = soaked.target(flavor)
        assert (
            gateway["chats"]["replies"] >= 15
            and gateway["chats"]["violations"] == gateway["chats"]["errors"] == 0
        )
    notices = [e for e in events(soaked) if e["kind"] == "ping_unsupported"]
    assert [n["target"] for n in notices] == ["old"] and "no ping method" in notices[0]["message"]
    no_seq = [e for e in events(soaked) if e["kind"] == "seq_unsupported"]
    assert [n["target"] for n in no_seq] == ["old"]  # said once, for the old gateway only
    assert (
        soaked.target("old")["chats"]["pings"] == 0
        and soaked.target("new")["chats"]["ping"]["samples"] > 5
    )
