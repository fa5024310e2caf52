"""soak's verdicts on servers it was not written with: the gallery (tests/gallery/).

Each server is an independent program in the style of a real family (PROTOCOLS.md),
written from that family's public code and not from soak's detectors, with the known
failure it reproduces and its patched build. Each test starts the faulty and the
patched build as real subprocesses on loopback, runs `soak run` (real Locust users,
the real collector) against both at once with a profile written from the server's
own documentation (tests/gallery/profiles/), and asserts what soak concluded.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from soak.analyze import summarize

GALLERY = Path(__file__).resolve().parent / "gallery"
PROFILES = GALLERY / "profiles"
pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Server:
    port: int
    pid: int

    def url(self, path: str, scheme: str = "ws") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def gallery_server(name: str, *args: str, log: Path) -> Iterator[Server]:
    """tests/gallery/NAME.py on a free loopback port until the block ends (killed by pid)."""
    port = _free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(GALLERY / f"{name}.py"), "--port", str(port), *args],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"{name} did not listen"
                time.sleep(0.1)
        yield Server(port, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Soaked:
    """What one `soak run` said: its exit code, output, summary.json and run directory."""

    code: int
    output: str
    summary: dict
    run_dir: Path

    def target(self, name: str) -> dict:
        return self.summary["targets"][name]

    def statuses(self, name: str) -> dict[str, str]:
        return {c["name"]: c["status"] for c in self.summary["criteria"] if c["target"] == name}

    def anomalies(self, name: str) -> list[dict]:
        path = self.run_dir / "anomalies.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [r for r in records if r.get("target") == name]


def soak_run(profile: str, tmp: Path, targets: dict[str, tuple[Server, str, str]],
             *extra: str, report: bool = False) -> Soaked:  # fmt: skip
    """`soak run PROFILE` (a name in tests/gallery/profiles/, or a path) with targets
    NAME -> (server, ws path, health path), each sampled by pid. Without `report`, the
    summary is made here (no plots: a test needs its numbers, not its pictures)."""
    command = [sys.executable, "-m", "soak", "run", str(PROFILES / profile)]
    for name, (server, path, _) in targets.items():
        command += ["--target", f"{name}={server.url(path)}"]
    for server, _, health in targets.values():
        command += ["--health", server.url(health, "http"), "--pid", str(server.pid)]
    out = tmp / "reports"
    command += ["--out", str(out), "--label", "gallery", *extra]
    command += [] if report else ["--no-report"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    [run_dir] = [p for p in out.iterdir() if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text()) if report else summarize(run_dir)
    assert "Traceback" not in output, output
    return Soaked(proc.returncode, output, summary, run_dir)


def test_per_call_executor_leak_in_plain_cpython_is_named_and_failed(tmp_path: Path) -> None:
    """A ThreadPoolExecutor(thread_name_prefix="gemini-call") per call, kept alive; CPython
    3.11 gives the threads no OS name, so only py-spy's census can name the family."""
    with (
        gallery_server("executor_leak", log=tmp_path / "faulty.log") as faulty,
        gallery_server("executor_leak", "--patched", log=tmp_path / "patched.log") as fixed,
    ):
        path, health = "/ws/chat", "/healthz"
        soaked = soak_run(
            "executor_leak.toml",
            tmp_path,
            {"unpatched": (faulty, path, health), "patched": (fixed, path, health)},
            "--duration", "20s", report=True,
        )  # fmt: skip
    assert soaked.code == 1, soaked.output  # criteria failed, by the report soak wrote
    bad, good = soaked.target("unpatched"), soaked.target("patched")
    assert (bad["verdict"], good["verdict"]) == ("fail", "pass")
    assert soaked.statuses("unpatched")["threads.growth_per_hour"] == "fail"
    assert bad["threads"]["trend"] == "growing"
    assert bad["top_growing_family"]["family"] == "gemini-call_N"
    assert 0.8 < bad["threads"]["growth_per_1k_replies"] / 1000 < 1.2  # one thread per reply
    assert good["threads"]["trend"] in ("flat", "plateau") and good["chats"]["replies"] > 50


def test_answer_to_the_previous_question_is_a_stale_reply(tmp_path: Path) -> None:
    """nerve style, no request ids: every 7th message is swallowed and the next one is
    answered with its content. The chat asks again on the same connection, as a person
    does, so the stale answer reaches it."""
    with (
        gallery_server("stale_answer", log=tmp_path / "faulty.log") as faulty,
        gallery_server("stale_answer", "--patched", log=tmp_path / "patched.log") as fixed,
    ):
        soaked = soak_run(
            "stale_answer.toml",
            tmp_path,
            {"unpatched": (faulty, "/ws", "/health"), "patched": (fixed, "/ws", "/health")},
            "--duration", "20s",
        )  # fmt: skip
    assert soaked.code == 0, soaked.output  # completed (the verdict is below)
    bad, good = soaked.target("unpatched"), soaked.target("patched")
    assert (bad["verdict"], good["verdict"]) == ("fail", "pass")
    stale = bad["chats"]["mismatches_by_kind"].get("stale_reply", 0)
    assert stale >= 3 and stale == bad["chats"]["mismatches"]
    assert (
        bad["chats"]["first_token_timeouts"] >= stale
    )  # each stale answer follows a swallowed prompt
    assert good["chats"]["mismatches"] == 0 and good["chats"]["first_token_timeouts"] == 0
    assert good["chats"]["replies"] > 50
    records = [a for a in soaked.anomalies("unpatched") if a.get("subkind") == "stale_reply"]
    assert records and "of the previous prompt of this chat" in records[0]["detail"]


def test_a_server_that_sends_nothing_on_connect_needs_no_adapter(tmp_path: Path) -> None:
    """`ready = false`. Its faulty build swallows a background task's exception, so every
    5th reply stops mid-stream: stalls. Its patched build still fails those requests but
    says so (error frames); the build without the fault passes."""
    fault = ("--fault", "silent-stop")
    with (
        gallery_server("silent_connect", *fault, log=tmp_path / "a.log") as unpatched,
        gallery_server("silent_connect", *fault, "--patched", log=tmp_path / "b.log") as patched,
        gallery_server("silent_connect", log=tmp_path / "c.log") as healthy,
    ):
        path, health = "/api/v1/stream", "/v1/health"
        soaked = soak_run(
            "silent_connect.toml",
            tmp_path,
            {
                "unpatched": (unpatched, path, health),
                "patched": (patched, path, health),
                "healthy": (healthy, path, health),
            },
            "--duration", "20s", "--users", "6",
        )  # fmt: skip
    bad, told, good = (soaked.target(n) for n in ("unpatched", "patched", "healthy"))
    assert (
        min(bad["chats"]["replies"], told["chats"]["replies"], good["chats"]["replies"]) > 30
    )  # no ready frame needed
    assert (
        bad["chats"]["stalls"] == pytest.approx(bad["chats"]["turns"] / 5, rel=0.3)
        and bad["chats"]["errors"] == 0
    )
    assert (
        told["chats"]["errors"] == pytest.approx(told["chats"]["turns"] / 5, rel=0.3)
        and told["chats"]["stalls"] == 0
    )
    assert soaked.statuses("unpatched")["stalls.count"] == "fail"
    assert soaked.statuses("patched")["errors.count"] == "fail"
    assert (bad["verdict"], told["verdict"], good["verdict"]) == ("fail", "fail", "pass")


def test_a_healthy_server_whose_pool_and_cache_move_passes(tmp_path: Path) -> None:
    """Threads rise in steps to the pool's size and stay; a capped cache is flushed every
    few seconds (RSS saw-teeth, an allocator that keeps some): no leak, so a pass."""
    with gallery_server(
        "healthy_pool_cache", "--cache-clear-every", "4", "--cache-max-mb", "24",
        "--cache-entry-kb", "256", log=tmp_path / "server.log",
    ) as server:  # fmt: skip
        soaked = soak_run(
            "healthy_pool_cache.toml",
            tmp_path,
            {"app": (server, "/api/ws", "/health")},
            "--duration", "50s",
        )  # fmt: skip
    assert soaked.code == 0, soaked.output  # completed
    app = soaked.target("app")
    assert app["verdict"] == "pass" and set(soaked.statuses("app").values()) == {"pass"}
    assert app["threads"]["max"] > app["threads"]["start"] or app["threads"]["trend"] in (
        "flat",
        "plateau",
    )
    assert app["rss"]["max"] - app["rss"]["end"] > 5 or app["rss"]["drops"] >= 3  # it does move


def test_an_orphaned_ticker_shows_as_idle_cpu_that_climbs_with_every_stream(tmp_path: Path) -> None:
    """agentex style: a 50 ms coalescing ticker per stream, left running when the stream
    ends with `full`. Bursts of load with idle gaps between them."""
    path, health = "/agents/fake-agent/ws", "/healthz"
    with (
        gallery_server("orphan_ticker", log=tmp_path / "faulty.log") as faulty,
        gallery_server("orphan_ticker", "--patched", log=tmp_path / "patched.log") as fixed,
    ):
        soaked = soak_run(
            "orphan_ticker.toml",
            tmp_path,
            {"unpatched": (faulty, path, health), "patched": (fixed, path, health)},
        )
    bad, good = soaked.target("unpatched"), soaked.target("patched")
    assert (bad["verdict"], good["verdict"]) == ("fail", "pass")
    assert bad["cpu"]["idle_growth_per_1k_replies"] > 10 * max(
        good["cpu"]["idle_growth_per_1k_replies"], 0.1
    )
    assert bad["cpu"]["idle_late_percent"] > bad["cpu"]["idle_early_percent"]
    assert soaked.statuses("unpatched")["idle_cpu.growth_per_1k_replies"] == "fail"
    assert (
        bad["chats"]["violations"] == good["chats"]["violations"] == 0
        and bad["chats"]["replies"] > 50
    )


def test_a_cpu_heavy_turn_on_the_event_loop_is_loop_lag_and_keepalive_kills(tmp_path: Path) -> None:
    """hermes style: every 25th turn runs 5 s of CPU work on the event loop; the server's
    own keepalive then closes healthy connections with 1011. Patched: in a thread."""
    args = ("--block-every", "25", "--block-seconds", "5", "--ping-interval", "2",
            "--ping-timeout", "1")  # fmt: skip
    with (
        gallery_server("loop_starve", *args, log=tmp_path / "faulty.log") as faulty,
        gallery_server("loop_starve", "--patched", *args, log=tmp_path / "patched.log") as fixed,
    ):
        soaked = soak_run(
            "loop_starve.toml",
            tmp_path,
            {
                "unpatched": (faulty, "/api/ws", "/api/status"),
                "patched": (fixed, "/api/ws", "/api/status"),
            },
        )
    bad, good = soaked.target("unpatched"), soaked.target("patched")
    assert (bad["verdict"], good["verdict"]) == ("fail", "pass")
    assert bad["loop_lag"]["max"] > 2 and good["loop_lag"]["max"] < 0.5
    assert (
        bad["chats"]["disconnect_close_codes"].get("1011", 0) >= 1
        and good["chats"]["disconnects"] == 0
    )
