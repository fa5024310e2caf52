"""`soak demo`: the whole pipeline on the built-in target, faulty vs patched.

Starts the target twice on loopback (one build with faults, one patched),
drives the same chat load against both at the same time (one run, two
targets), writes the report, and checks that the demo showed what it should:
the faulty build fails its criteria and the patched build passes them.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from soak.errors import EXIT_CRITERIA_FAILED, EXIT_PASS, RunError
from soak.profile import apply_overrides, bundled_profiles_dir, load_profile
from soak.run import StatusSink
from soak.rundir import STATUS_COMPLETED, safe_name
from soak.target import start_target

UNPATCHED, PATCHED = "unpatched", "patched"


def default_profile() -> Path:
    """The bundled demo.toml (of the source tree, or installed with the wheel)."""
    candidate = bundled_profiles_dir() / "demo.toml"
    if candidate.is_file():
        return candidate
    raise RunError(
        f"demo.toml not found in {candidate.parent}: reinstall soak (pip install soak), or "
        "pass --profile PATH."
    )


def run_demo(
    *,
    out_root: Path,
    duration: str | None = None,
    profile_path: Path | None = None,
    on_status: StatusSink | None = None,
    say: Callable[[str], None] = print,
) -> int:
    """Run the demo; 0 when the faulty build failed and the patched one passed."""
    from soak.cli import verdict_table
    from soak.report import build_report
    from soak.run import execute_run

    profile = load_profile(profile_path or default_profile())
    apply_overrides(profile, duration=duration)  # a bad --duration says so before any start
    logs = Path(tempfile.mkdtemp(prefix="soak-demo-"))
    try:
        with (
            start_target(patched=False, log_path=logs / f"{UNPATCHED}.log") as faulty,
            start_target(patched=True, log_path=logs / f"{PATCHED}.log") as fixed,
        ):
            say(f"soak demo: built-in target with faults at {faulty.ws_url} (pid {faulty.pid})")
            say(f"soak demo: built-in target --patched  at {fixed.ws_url} (pid {fixed.pid})")
            profile = apply_overrides(
                profile,
                targets=[f"{UNPATCHED}={faulty.ws_url}", f"{PATCHED}={fixed.ws_url}"],
                health=[faulty.health_url, fixed.health_url],
                pids=[faulty.pid, fixed.pid],
                duration=duration,
            )
            profile.targets[0].build, profile.targets[1].build = "faults", "patched"
            say(
                f"soak demo: {profile.load['users']} chats for "
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
