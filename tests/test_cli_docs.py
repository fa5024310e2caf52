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
    assert expected | {"target", "worker"} == set(COMMANDS)


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
