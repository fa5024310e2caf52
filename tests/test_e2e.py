"""End to end: real targets on loopback, `soak run` / `soak demo` as subprocesses, real Locust.

The demo is the A/B run of the built-in target (faulty and patched builds at once): its
run directory and verdicts are checked here; the gallery's runs (test_gallery_verdicts)
check soak on servers it was not written with.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from soak.rundir import RunDir
from soak.target import start_target

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e


def only_run_dir(root: Path) -> RunDir:
    runs = [p for p in root.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return RunDir(runs[0])


def failed_names(summary: dict, target: str) -> set[str]:
    return {
        c["name"] for c in summary["criteria"] if c["target"] == target and c["status"] == "fail"
    }


def test_soak_demo_runs_as_intended(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "soak", "demo", "--duration", "30s", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "as intended" in proc.stdout
    assert "unpatched" in proc.stdout and "FAIL" in proc.stdout and "PASS" in proc.stdout
    run = only_run_dir(tmp_path)
    assert (run.target_dir("unpatched") / "server.log").exists()
    manifest = run.manifest()
    assert manifest["status"] == "completed"
    assert [t["name"] for t in manifest["targets"]] == ["unpatched", "patched"]
    for name in ("unpatched", "patched"):
        assert sum(1 for _ in run.target_records(name, "process.jsonl")) >= 40
        assert sum(1 for _ in run.target_records(name, "health.jsonl")) >= 40
    chats = list(run.records("chats.jsonl"))
    assert {c["target"] for c in chats} == {"unpatched", "patched"}
    anomalies = list(run.records("anomalies.jsonl"))
    assert "stall" in {a["kind"] for a in anomalies if a["target"] == "unpatched"}
    assert not [a for a in anomalies if a["target"] == "patched"]

    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["verdict"] == "fail"
    bad, good = summary["targets"]["unpatched"], summary["targets"]["patched"]
    assert bad["verdict"] == "fail" and good["verdict"] == "pass"
    assert {"threads.growth_per_hour", "stalls.count"} <= failed_names(summary, "unpatched")
    assert bad["chats"]["stalls"] > 0 and good["chats"]["stalls"] == 0
    assert bad["threads"]["growth_per_hour"] > 100 > good["threads"]["growth_per_hour"]
    assert good["chats"]["replies"] > 100 and bad["chats"]["replies"] > 100
    for name in ("report.html", "report.md", "junit.xml"):
        assert (run.path / name).stat().st_size > 0


def test_run_against_a_closed_port_is_exit_3_without_run_dir(tmp_path):
    proc = subprocess.run(
        [
            sys.executable, "-m", "soak", "run", str(REPO / "profiles" / "demo.toml"),
            "--target", "ws://127.0.0.1:9/ws", "--duration", "5s", "--out", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 3
    assert "not reachable" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())


def test_a_folder_named_soak_in_the_working_directory_does_not_shadow_soak(tmp_path):
    """The load and collector children used to import ./soak/ instead of soak itself."""
    impostor = tmp_path / "soak"
    impostor.mkdir()
    (impostor / "__init__.py").write_text("raise ImportError('not the real soak')\n")
    script = Path(sys.executable).with_name("soak")  # the console script, as users run it
    profile = tmp_path / "quick.toml"
    profile.write_text(
        '[load]\nusers = 2\nduration = "5s"\ninterval = "1s"\nthink_time = "0.1s"\n'
        '[collector]\ninterval = "1s"\n'
    )
    with start_target(patched=True) as target:
        proc = subprocess.run(
            [str(script), "run", "quick.toml", "--target", target.ws_url,
             "--out", "reports", "--no-report"],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = only_run_dir(tmp_path / "reports")
    assert run.manifest()["status"] == "completed"
    assert sum(r["turns"] for r in run.records("chats.jsonl")) > 10
    assert "not the real soak" not in (run.path / "load.log").read_text()
