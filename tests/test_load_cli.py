"""`soak worker` and the load options of `soak run`: help with examples, clear usage errors."""

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from soak.cli import app

DEMO = str(Path(__file__).resolve().parent.parent / "profiles" / "demo.toml")


def test_worker_and_run_load_options_have_help_with_examples():
    worker = CliRunner().invoke(app, ["worker", "--help"])
    assert worker.exit_code == 0 and "Example: soak worker --master" in worker.output
    run = CliRunner().invoke(app, ["run", "--help"]).output
    for option in ("--workers", "--master-bind", "--web", "--web-port"):
        assert option in run


def test_worker_rejects_a_bad_master_address_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "soak", "worker", "--master", "host:port"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--master must be HOST or HOST:PORT" in proc.stderr and "Traceback" not in proc.stderr


def test_negative_workers_is_a_usage_error(tmp_path):
    from soak.target import start_target

    with start_target(patched=True) as target:
        proc = subprocess.run(
            [sys.executable, "-m", "soak", "run", DEMO, "--target", target.ws_url,
             "--workers", "-1", "--out", str(tmp_path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 2 and "--workers must be 0 or more" in proc.stderr
    assert not list(tmp_path.iterdir())
