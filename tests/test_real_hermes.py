"""The real hermes-agent (PyPI `hermes-agent==0.19.0`, `hermes serve`) on loopback, with
only its model call faked, soaked with profiles/jsonrpc-gateway.toml unchanged.

Needs hermes installed in a virtualenv of its own (tests/realservers/README.md):

    python3 -m venv /tmp/hermes-venv && /tmp/hermes-venv/bin/pip install hermes-agent==0.19.0
    SOAK_HERMES=/tmp/hermes-venv/bin/hermes python -m pytest -m hermes

.ci/run does both, so CI runs it; without SOAK_HERMES it is skipped, saying why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.realservers.start_hermes import start, stop

REPO = Path(__file__).resolve().parent.parent
HERMES = os.environ.get("SOAK_HERMES", "")
pytestmark = [
    pytest.mark.hermes,
    pytest.mark.skipif(
        not (HERMES and Path(HERMES).is_file()),
        reason="the real hermes-agent is not installed here: set SOAK_HERMES to its `hermes` "
        "(tests/realservers/README.md)",
    ),
]


def test_real_hermes_0_19_with_the_shipped_profile(tmp_path: Path) -> None:
    servers = start(HERMES, str(tmp_path / "hermes"))
    try:
        url = servers.ws_url.replace(f"token={servers.token}", "token=${HERMES_TOKEN}")
        proc = subprocess.run(
            [sys.executable, "-m", "soak", "run", str(REPO / "profiles" / "jsonrpc-gateway.toml"),
             "--target", url, "--health", servers.status_url,
             "--duration", "60s", "--idle-after", "5s", "--out", str(tmp_path / "reports")],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "HERMES_TOKEN": servers.token},
        )  # fmt: skip
    finally:
        left = stop(servers)
    assert left == [], f"hermes processes left running: {left}"
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    [run_dir] = (tmp_path / "reports").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    target = summary["targets"]["t1"]
    assert target["chats"]["replies"] >= 4, output
    assert (
        target["chats"]["violations"]
        == target["chats"]["errors"]
        == target["chats"]["disconnects"]
        == 0
    ), output
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    notices = [e for e in events if e["kind"] == "ping_unsupported"]
    assert len(notices) == 1  # 0.19.0 has no ping method: said once, never a violation
    assert len([e for e in events if e["kind"] == "seq_unsupported"]) == 1  # nor seq
    # a minute of the shipped 20-60 s think time is a handful of turns: no pass on that
    assert summary["verdict"] == "inconclusive" and proc.returncode == 4, output
    assert servers.token not in (run_dir / "manifest.json").read_text()
