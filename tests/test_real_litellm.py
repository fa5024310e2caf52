"""A real LiteLLM proxy (PyPI `litellm[proxy]`, an OpenAI-compatible gateway nobody here
wrote) in front of the built-in target's OpenAI-compatible endpoint, soaked with the
[protocol] of profiles/openai-chat.toml: a healthy build passes, with keep-alive
connections, server token counts and no false violation; a faulty one shows its stalls
and stale replies (mismatches) through the gateway.

Needs LiteLLM in a virtualenv of its own:

    python3 -m venv /tmp/litellm-venv && /tmp/litellm-venv/bin/pip install 'litellm[proxy]==1.108.7'
    SOAK_LITELLM=/tmp/litellm-venv/bin/litellm python -m pytest -m litellm

.ci/run does both, so CI runs it; without SOAK_LITELLM it is skipped, saying why.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from soak.target import TargetProcess, start_target

REPO = Path(__file__).resolve().parent.parent
LITELLM = os.environ.get("SOAK_LITELLM", "")
MASTER_KEY = "sk-soak-test-0123456789abcdef"  # the proxy refuses to start without one
pytestmark = [
    pytest.mark.litellm,
    pytest.mark.skipif(
        not (LITELLM and Path(LITELLM).is_file()),
        reason="LiteLLM is not installed here: set SOAK_LITELLM to its `litellm` command "
        "(see this file's docstring)",
    ),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict]]:
    """LiteLLM on loopback routing model "healthy" to a patched built-in target and "faulty"
    to one with stalls and stale replies; yields its URL and the two targets."""
    folder = tmp_path_factory.mktemp("litellm")
    faults = ["--stall-every", "15", "--stale-reply-every", "12"]
    with (
        start_target(patched=True) as healthy,
        start_target(patched=True, extra_args=faults) as faulty,
    ):
        models = "".join(
            f"  - model_name: {name}\n    litellm_params:\n      model: openai/soak-target\n"
            f"      api_base: {target.http_url}/v1\n      api_key: unused\n"
            for name, target in (("healthy", healthy), ("faulty", faulty))
        )
        config = folder / "config.yaml"
        config.write_text(f"model_list:\n{models}litellm_settings:\n  telemetry: false\n")
        port = free_port()
        env = {
            **os.environ,
            "LITELLM_MASTER_KEY": MASTER_KEY,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # offline: no model price list download
            "LITELLM_TELEMETRY": "False",
        }
        log = open(folder / "litellm.log", "wb")  # noqa: SIM115 - closed below
        proxy = subprocess.Popen(
            [LITELLM, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/health/liveliness", timeout=2):
                        break
                except (urllib.error.URLError, ConnectionError):
                    assert proxy.poll() is None, (folder / "litellm.log").read_text()[-2000:]
                    assert time.monotonic() < deadline, "LiteLLM did not start in 120 s"
                    time.sleep(0.5)
            yield url, {"healthy": healthy, "faulty": faulty}
        finally:
            proxy.send_signal(signal.SIGTERM)
            try:
                proxy.wait(15)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait()
            log.close()


def soak_through(gateway: str, model: str, target: TargetProcess, tmp_path: Path) -> Path:
    """`soak run` of openai-chat.toml's [protocol] (model and key set) through the gateway,
    30 s of load; the built-in target behind it is the process sampled."""
    shipped = (REPO / "profiles" / "openai-chat.toml").read_text()
    protocol = shipped.split("\n[protocol]\n")[1].split("\n[load]\n")[0]
    protocol = protocol.replace('model = ""', f'model = "{model}"')
    profile = tmp_path / f"{model}.toml"
    profile.write_text(
        f'name = "litellm-{model}"\n[protocol]\n{protocol}\napi_key = "${{LITELLM_KEY}}"\n'
        '[load]\nusers = 6\nspawn_rate = 6\nthink_time = ["0s", "0.3s"]\nduration = "30s"\n'
        'idle_after = "5s"\nfirst_token_timeout = "4s"\nreply_timeout = "4s"\n'
        'interval = "5s"\n[collector]\ninterval = "1s"\n[criteria]\nwarmup = "5s"\n'
        'checks = ["ok.rate >= 99%", "stalls.count == 0", "mismatches.count == 0", '
        '"violations.count == 0", "disconnects.rate < 0.01"]\n'
    )
    out = tmp_path / model
    proc = subprocess.run(
        [sys.executable, "-m", "soak", "run", str(profile), "--target", gateway,
         "--health", f"{gateway}/health/liveliness", "--pid", str(target.pid),
         "--out", str(out)],
        capture_output=True, text=True, timeout=240,
        env={**os.environ, "LITELLM_KEY": MASTER_KEY},
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output and out.is_dir(), output
    (run,) = out.iterdir()
    return run


def chats(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "chats.jsonl").read_text().splitlines()]
    totals = {k: sum(r[k] for r in rows) for k in ("turns", "connects", "usage_turns")}
    totals["outcomes"] = {k: sum(r["outcomes"][k] for r in rows) for k in rows[0]["outcomes"]}
    return totals


def test_a_healthy_build_behind_litellm_passes_on_keep_alive(gateway, tmp_path) -> None:
    url, targets = gateway
    run = soak_through(url, "healthy", targets["healthy"], tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    totals = chats(run)
    assert summary["verdict"] == "pass", summary["targets"]["t1"]["verdict_reasons"]
    assert totals["outcomes"]["ok"] == totals["turns"] >= 100
    assert totals["connects"] <= 12  # 6 chats: one keep-alive connection each, give or take
    assert totals["usage_turns"] == totals["turns"]  # LiteLLM passes usage on
    chat_summary = summary["targets"]["t1"]["chats"]
    assert 0.005 < chat_summary["itl"]["p50"] < 0.2  # the target streams a word every 20 ms


def test_a_faulty_build_behind_litellm_shows_its_stalls_and_stale_replies(
    gateway, tmp_path
) -> None:
    url, targets = gateway
    run = soak_through(url, "faulty", targets["faulty"], tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    outcomes = chats(run)["outcomes"]
    assert summary["verdict"] == "fail"
    assert outcomes["stall"] > 0 and outcomes["mismatch"] > 0
    assert outcomes["violation"] == outcomes["disconnect"] == 0  # nothing false on top
    # LiteLLM pools its upstream connections, so the "previous prompt" the target answers
    # is often another chat's: a mismatch either way, never a pass
    anomalies = [json.loads(line) for line in (run / "anomalies.jsonl").read_text().splitlines()]
    mismatches = [a for a in anomalies if a["kind"] == "mismatch"]
    assert mismatches and {a["subkind"] for a in mismatches} <= {"stale_reply", "no_nonce"}
