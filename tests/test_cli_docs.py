"""Every command has --help with an example and a section in the README (sqlite-utils style)."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from soak import __version__
from soak.cli import app

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
COMMANDS = sorted(command.name or command.callback.__name__ for command in app.registered_commands)


def test_the_commands_are_the_ones_users_expect():
    expected = {"collect", "compare", "demo", "release", "report", "run", "runs", "status"}
    assert expected | {"merge", "target", "worker"} == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example_and_a_readme_section(command):
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    assert f"### `soak {command}" in README


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    assert "soak --version" in README


@pytest.mark.parametrize("command", COMMANDS)
def test_help_is_readable_and_h_is_help_too(command):
    long, short = (CliRunner().invoke(app, [command, flag]) for flag in ("--help", "-h"))
    assert short.exit_code == 0 and short.output == long.output
    assert "<list[" not in long.output and "<str>" not in long.output


def test_a_bad_demo_duration_is_refused_before_any_target_starts():
    result = CliRunner().invoke(app, ["demo", "--duration", "abc"])
    assert result.exit_code == 2
    assert "'abc' is not a duration" in result.output
    assert "built-in target" not in result.output


def test_status_and_report_take_a_run_name(tmp_path):
    from tests.rundir_factory import FakeRun, write_run

    run_dir = write_run(tmp_path, FakeRun(duration_s=120, checks=["stalls.count == 0"]))
    status = CliRunner().invoke(app, ["status", "--root", str(tmp_path)])  # latest
    assert status.exit_code == 0 and run_dir.name in status.output
    report = CliRunner().invoke(app, ["report", "latest", "--root", str(tmp_path)])
    assert report.exit_code in (0, 4), report.output
    assert (run_dir / "summary.json").is_file()


def test_the_shell_completes_commands_and_options():
    """What bash asks for at a tab (Click's completion protocol), in a real subprocess."""
    import os
    import subprocess
    import sys

    def complete(words: str) -> list[str]:
        env = dict(os.environ, _SOAK_COMPLETE="complete_bash", COMP_WORDS=words)
        env["COMP_CWORD"] = str(len(words.split()) - 1)
        program = [sys.executable, "-c", "from soak.cli import main; main()"]
        done = subprocess.run(program, env=env, capture_output=True, text=True, timeout=60)
        return done.stdout.split()

    assert complete("soak rep") == ["report"]
    assert "--md-images" in complete("soak report --m")
