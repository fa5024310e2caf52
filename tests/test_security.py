"""Security: secrets never reach disk or output, names cannot escape, no shell anywhere."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from soak.errors import RunDirError
from soak.rundir import RunDir, safe_name
from soak.target import start_target

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-Tok3n-4242"


@pytest.mark.e2e
def test_secrets_from_env_are_redacted_everywhere(tmp_path):
    profile = tmp_path / "secret.toml"
    with start_target(patched=True) as target:
        profile.write_text(
            f'[[targets]]\nname = "app"\nurl = "{target.ws_url}?token=${{SOAK_TEST_SECRET}}"\n'
            f'health = "{target.health_url}"\n'
            'health_headers = { Authorization = "Bearer ${SOAK_TEST_SECRET}" }\n'
            '[load]\nusers = 6\nduration = "4s"\ninterval = "1s"\nthink_time = "0.05s"\n'
            '[collector]\ninterval = "1s"\nhealth_interval = "1s"\n'
            '[criteria]\nwarmup = "0s"\nchecks = ["stalls.count == 0"]\n'
        )
        proc = subprocess.run(
            [sys.executable, "-m", "soak", "run", str(profile), "--out", str(tmp_path / "out")],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "SOAK_TEST_SECRET": SECRET},
        )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any(p.name == "report.html" for p in files)
    leaks = [p for p in files if SECRET.encode() in p.read_bytes()]
    assert not leaks, f"secret written to {leaks}"
    manifest = (next((tmp_path / "out").iterdir()) / "manifest.json").read_text()
    assert "token=***" in manifest


@pytest.mark.parametrize("label", ["../../etc", "a/b", "..", "x\x00y", "/abs", "ok label!"])
def test_labels_cannot_escape_the_output_folder(tmp_path, label):
    out = tmp_path / "out"
    run = RunDir.create(out, "p", label, {"targets": []})
    assert run.path.parent == out
    assert "/" not in safe_name(label) and ".." not in safe_name(label)


def test_an_existing_run_directory_is_never_overwritten(tmp_path):
    started = time.time()
    RunDir.create(tmp_path, "p", "same", {"targets": []}, started_at=started)
    with pytest.raises(RunDirError, match="never overwrites"):
        RunDir.create(tmp_path, "p", "same", {"targets": []}, started_at=started)


def test_no_shell_anywhere_in_soak():
    pattern = re.compile(r"shell\s*=\s*True|os\.system\(|os\.popen\(")
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "soak").rglob("*.py")
        if pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert not offenders
