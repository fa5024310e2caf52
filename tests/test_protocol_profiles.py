"""The shipped family profiles, unchanged, through `soak run` against servers that follow
PROTOCOLS.md on loopback; targets and secrets come from the command line and ${ENV}."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from soak.rundir import read_jsonl
from tests.servers import (
    agent_zero_server,
    agentex_server,
    hermes_server,
    nerve_server,
    openai_server,
    trinity_server,
)

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e


def soak_run(tmp_path: Path, profile: str, target: str, health: str, turns: int, env=None):
    """`soak run` until `turns` turns are recorded (the profiles' think time is 20 s+ and
    their idle phase 10 min), then Ctrl-C; returns the chats records and the run dir."""
    process = subprocess.Popen(
        [sys.executable, "-m", "soak", "run", str(REPO / "profiles" / profile),
         "--target", target, "--health", health, "--duration", "30s",
         "--out", str(tmp_path), "--no-report"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    deadline = time.monotonic() + 40
    chats: list[dict] = []
    while time.monotonic() < deadline and sum(r["turns"] for r in chats) < turns:
        time.sleep(0.5)
        run_dirs = list(tmp_path.iterdir())
        chats = list(read_jsonl(run_dirs[0] / "chats.jsonl")) if run_dirs else []
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=60)[0]
    assert "Traceback" not in output, output
    return chats, next(tmp_path.iterdir())


def outcomes(chats: list[dict]) -> dict[str, int]:
    return {k: sum(r["outcomes"][k] for r in chats) for k in chats[0]["outcomes"]}


def test_json_events_profile_against_a_nerve_style_server(tmp_path):
    with nerve_server() as server:
        chats, _ = soak_run(tmp_path, "json-events.toml", server.url, server.health_url, 4)
    assert outcomes(chats)["ok"] == sum(r["turns"] for r in chats) >= 4


def test_jsonrpc_profile_with_token_from_the_environment(tmp_path):
    with hermes_server(token="s3cr3t-token") as server:
        target = server.url.replace("s3cr3t-token", "${HERMES_TOKEN}")
        chats, run_dir = soak_run(
            tmp_path, "jsonrpc-gateway.toml", target, server.health_url, 4,
            env={"HERMES_TOKEN": "s3cr3t-token"},
        )  # fmt: skip
    assert outcomes(chats)["ok"] == sum(r["turns"] for r in chats) >= 4
    manifest = (run_dir / "manifest.json").read_text()
    assert "s3cr3t-token" not in manifest and json.loads(manifest)["targets"][0]["url"]


def test_socketio_agent_profile_against_an_agent_zero_style_server(tmp_path):
    with agent_zero_server() as server:
        chats, _ = soak_run(tmp_path, "socketio-agent.toml", server.url, server.health_url, 2)
    assert outcomes(chats)["ok"] == sum(r["turns"] for r in chats) >= 2


def test_openai_chat_profile_against_a_vllm_style_server(tmp_path):
    """Through Locust and the gevent-patched load process: keep-alive HTTP streaming."""
    with openai_server(keep_alive_s=5.0) as server:
        chats, run_dir = soak_run(tmp_path, "openai-chat.toml", server.url, server.health_url, 8)
    assert outcomes(chats)["ok"] == sum(r["turns"] for r in chats) >= 8
    anomalies = list(read_jsonl(run_dir / "anomalies.jsonl"))
    assert not anomalies, anomalies[:3]
    gaps = sum(sum(r["itl_hist"].values()) for r in chats)  # token-level latency recorded
    assert gaps >= 8 * 5 and sum(sum(r["tpot_hist"].values()) for r in chats) >= 8


@pytest.mark.parametrize(
    ("server_of", "profile", "turns"),
    [(trinity_server, "sse-agent.toml", 4), (agentex_server, "ndjson-rpc.toml", 8)],
    ids=["sse", "ndjson"],
)
def test_http_event_profiles_through_the_load(tmp_path, server_of, profile, turns):
    with server_of() as server:
        chats, run_dir = soak_run(tmp_path, profile, server.url, server.health_url, turns)
    assert outcomes(chats)["ok"] == sum(r["turns"] for r in chats) >= turns
    assert not list(read_jsonl(run_dir / "anomalies.jsonl"))
