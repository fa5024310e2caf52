"""`soak demo`: the whole pipeline on the built-in target, faulty vs patched.

Starts the target twice on loopback (one build with faults, one patched),
drives the same chat load against both at the same time (one run, two
targets), writes the report, and checks that the demo showed what it should:
the faulty build fails its criteria and the patched build passes them.

The load speaks WebSocket chat (json-events) by default; `protocol` picks one of the
target's HTTP streaming protocols instead, with the [protocol] section of its shipped
profile and the demo's load and criteria.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from soak.errors import EXIT_CRITERIA_FAILED, EXIT_PASS, RunError, UsageError
from soak.profile import (
    Profile,
    apply_overrides,
    bundled_profiles_dir,
    load_profile,
    profile_from_mapping,
)
from soak.run import StatusSink
from soak.rundir import STATUS_COMPLETED, safe_name
from soak.target import start_target

UNPATCHED, PATCHED = "unpatched", "patched"
DEMO_PROTOCOLS: dict[str, str | None] = {
    "json-events": None,  # demo.toml's own: WebSocket chat on /ws
    "openai-chat": "openai-chat.toml",
    "sse": "sse-agent.toml",
    "ndjson": "ndjson-rpc.toml",
}
"""Protocols the demo can speak, and the shipped profile whose [protocol] it then takes."""


def bundled_profile(name: str) -> Path:
    """A bundled profile (of the source tree, or installed with the wheel)."""
    candidate = bundled_profiles_dir() / name
    if candidate.is_file():
        return candidate
    raise RunError(
        f"{name} not found in {candidate.parent}: reinstall soak (pip install soak), or "
        "pass --profile PATH."
    )


def default_profile() -> Path:
    """The bundled demo.toml."""
    return bundled_profile("demo.toml")


def with_protocol(profile: Profile, protocol: str) -> Profile:
    """`profile` speaking `protocol` (a `DEMO_PROTOCOLS` key) with its shipped profile's
    [protocol] section; load, collector and criteria stay the demo's."""
    if protocol not in DEMO_PROTOCOLS:
        choices = ", ".join(DEMO_PROTOCOLS)
        raise UsageError(f"--protocol {protocol!r} is not one the demo speaks; use {choices}.")
    shipped = DEMO_PROTOCOLS[protocol]
    if shipped is None:
        return profile
    data = profile.to_dict()
    data["protocol"] = load_profile(bundled_profile(shipped)).to_dict()["protocol"]
    data["targets"] = []  # the demo's own [[targets]] are ws:// ones; run_demo sets them
    source = f"{profile.source} with [protocol] of {shipped}"
    return profile_from_mapping(data, source=source, warmup_given=profile.warmup_given)


def run_demo(
    *,
    out_root: Path,
    duration: str | None = None,
    profile_path: Path | None = None,
    protocol: str = "json-events",
    on_status: StatusSink | None = None,
    say: Callable[[str], None] = print,
) -> int:
    """Run the demo; 0 when the faulty build failed and the patched one passed.

    `protocol`: json-events (WebSocket, the default) or an HTTP streaming kind of
    `DEMO_PROTOCOLS`, spoken to the same built-in targets.
    """
    from soak.cli import verdict_table
    from soak.report import build_report
    from soak.run import execute_run

    profile = with_protocol(load_profile(profile_path or default_profile()), protocol)
    apply_overrides(profile, duration=duration)  # a bad --duration says so before any start
    logs = Path(tempfile.mkdtemp(prefix="soak-demo-"))
    try:
        with (
            start_target(patched=False, log_path=logs / f"{UNPATCHED}.log") as faulty,
            start_target(patched=True, log_path=logs / f"{PATCHED}.log") as fixed,
        ):
            over_http = profile.protocol["kind"] != "json-events"
            faulty_url, fixed_url = (
                (faulty.http_url, fixed.http_url) if over_http else (faulty.ws_url, fixed.ws_url)
            )
            say(f"soak demo: built-in target with faults at {faulty_url} (pid {faulty.pid})")
            say(f"soak demo: built-in target --patched  at {fixed_url} (pid {fixed.pid})")
            profile = apply_overrides(
                profile,
                targets=[f"{UNPATCHED}={faulty_url}", f"{PATCHED}={fixed_url}"],
                health=[faulty.health_url, fixed.health_url],
                pids=[faulty.pid, fixed.pid],
                duration=duration,
            )
            profile.targets[0].build, profile.targets[1].build = "faults", "patched"
            say(
                f"soak demo: {profile.load['users']} {profile.protocol['kind']} chats for "
                f"{profile.planned_duration_s:.0f} s against both builds at once"
            )
            outcome = execute_run(profile, out_root=out_root, label="ab", on_status=on_status)
        for name in (UNPATCHED, PATCHED):
            target_dir = outcome.run.target_dir(name)
            target_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(logs / f"{name}.log", target_dir / "server.log")
    finally:
        shutil.rmtree(logs, ignore_errors=True)

    say("")
    if outcome.status != STATUS_COMPLETED:
        say(f"soak demo: the run was {outcome.status}: {outcome.message}")
    result = build_report(outcome.run.path)
    say(verdict_table(result.summary))
    say(f"report: {result.paths['html']}")
    for name in (UNPATCHED, PATCHED):
        say(f"  {name}: {result.paths['html']}#target-{safe_name(name, 'target')}")
    verdicts = {name: t.verdict for name, t in result.summary.targets.items()}
    if outcome.status == STATUS_COMPLETED and verdicts == {UNPATCHED: "fail", PATCHED: "pass"}:
        say("soak demo: as intended: the faulty build fails, the patched build passes.")
        return EXIT_PASS
    say(f"soak demo: NOT as intended: verdicts {verdicts} (expected unpatched fail, patched pass).")
    return EXIT_CRITERIA_FAILED
