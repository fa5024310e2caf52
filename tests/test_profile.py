"""Profile loading: strict validation with errors that name file, field and a fix."""

import subprocess
import sys
from pathlib import Path

import pytest

from soak.errors import ProfileError
from soak.profile import apply_overrides, load_profile, profile_from_mapping, redact_url

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ProfileError) as caught:
        load_profile(write(tmp_path, text))
    return caught.value.message


def test_demo_profile_loads_with_durations_in_seconds():
    profile = load_profile(REPO / "profiles" / "demo.toml")
    assert [t.name for t in profile.targets] == ["unpatched", "patched"]
    assert profile.load["duration"] == 100.0
    assert profile.load["think_time"] == [0.2, 0.6]
    assert profile.criteria["warmup"] == 15.0
    assert profile.planned_duration_s == 120.0


def test_every_shipped_profile_is_valid():
    for path in (REPO / "profiles").glob("*.toml"):
        load_profile(path)


def test_defaults_fill_missing_sections(tmp_path):
    profile = load_profile(
        write(tmp_path, '[[targets]]\nname = "a"\nurl = "ws://127.0.0.1:1/ws"\n')
    )
    assert profile.name == "p"
    assert profile.load["users"] == 10
    assert profile.protocol["kind"] == "json-events"


def test_unknown_key_names_file_section_and_suggestion(tmp_path):
    message = error_of(tmp_path, "[load]\nuser = 5\n")
    assert "p.toml" in message and "[load] user" in message
    assert "Did you mean 'users'?" in message


def test_unknown_section(tmp_path):
    message = error_of(tmp_path, "[lode]\nusers = 5\n")
    assert "lode" in message and "Did you mean 'load'?" in message


def test_wrong_type_says_what_to_write(tmp_path):
    message = error_of(tmp_path, '[load]\nusers = "ten"\n')
    assert "[load] users" in message and "whole number" in message
    assert "users = 20" in message


def test_bad_duration_says_what_is_valid(tmp_path):
    message = error_of(tmp_path, '[load]\nduration = "2 fortnights"\n')
    assert "[load] duration" in message and '"90s"' in message


def test_bad_url_scheme(tmp_path):
    message = error_of(tmp_path, '[[targets]]\nname = "a"\nurl = "http://x/ws"\n')
    assert "targets[0]] url" in message and "ws://" in message


def test_missing_required_target_field(tmp_path):
    message = error_of(tmp_path, '[[targets]]\nname = "a"\n')
    assert "url is required" in message


def test_invalid_toml(tmp_path):
    assert "not valid TOML" in error_of(tmp_path, "[load\nusers = 1\n")


def test_missing_file_lists_ready_profiles(tmp_path):
    with pytest.raises(ProfileError, match="demo.toml"):
        load_profile(tmp_path / "nope.toml")


def test_bad_criterion_is_rejected_at_load_time(tmp_path):
    message = error_of(tmp_path, '[criteria]\nchecks = ["threads.growth < 5"]\n')
    assert "threads.growth" in message


def test_inconsistent_timeouts(tmp_path):
    message = error_of(tmp_path, '[load]\nfirst_token_timeout = "20s"\nreply_timeout = "10s"\n')
    assert "first_token_timeout" in message


def test_env_secret_resolved_and_redacted(monkeypatch):
    monkeypatch.setenv("SOAK_TEST_TOKEN", "s3cr3t")
    profile = profile_from_mapping(
        {"targets": [{"name": "a", "url": "ws://127.0.0.1:1/ws?token=${SOAK_TEST_TOKEN}"}]}
    )
    assert profile.targets[0].url.endswith("token=s3cr3t")
    assert "s3cr3t" not in str(profile.redacted())


def test_missing_env_variable_names_it(monkeypatch):
    monkeypatch.delenv("SOAK_NOT_SET", raising=False)
    with pytest.raises(ProfileError, match="SOAK_NOT_SET is not set"):
        profile_from_mapping({"targets": [{"name": "a", "url": "ws://h/ws?token=${SOAK_NOT_SET}"}]})


def test_redact_url_masks_secret_parameters():
    assert redact_url("ws://u:p@h:1/ws?token=abc&x=1") == "ws://***@h:1/ws?token=***&x=1"


def test_overrides_replace_targets_and_validate():
    profile = load_profile(REPO / "profiles" / "demo.toml")
    changed = apply_overrides(
        profile,
        targets=["ws://127.0.0.1:9/ws", "b=ws://127.0.0.1:10/ws"],
        health=["http://127.0.0.1:9/health"],
        users=4,
        duration="2h",
    )
    assert [(t.name, t.url) for t in changed.targets] == [
        ("t1", "ws://127.0.0.1:9/ws"),
        ("b", "ws://127.0.0.1:10/ws"),
    ]
    assert changed.targets[0].health == "http://127.0.0.1:9/health"
    assert changed.load["users"] == 4 and changed.load["duration"] == 7200.0
    with pytest.raises(ProfileError, match="--duration|duration"):
        apply_overrides(profile, duration="soon")


def test_cli_bad_profile_is_one_paragraph_and_exit_2(tmp_path):
    path = write(tmp_path, '[load]\nusers = "many"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "soak", "run", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "[load] users" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_profile_language_for_servers_that_are_not_the_built_in_target(tmp_path):
    profile = load_profile(
        write(
            tmp_path,
            "[protocol]\nready = false\n"
            'token = [{ path = "type", value = "token" }, '
            '{ path = "parent_tool_use_id", absent = true }]\n'
            'session_path = "session_id"\nerror_ends_turn = false\nresume_query = "session_id"\n'
            'session_create = { path = "/api/sessions", body = { source = "web" }, '
            'id_path = "id" }\n'
            '[load]\nafter_failure = "reconnect"\nresume_session = false\n',
        )
    )
    protocol = profile.protocol
    assert protocol["ready"] is False and protocol["error_ends_turn"] is False
    assert protocol["token"][1] == {"path": "parent_tool_use_id", "absent": True}
    assert protocol["session_create"]["method"] == "POST"
    assert (profile.load["after_failure"], profile.load["resume_session"]) == ("reconnect", False)
    again = profile_from_mapping(profile.to_dict())  # the run's processes get it as JSON
    assert again.protocol == protocol


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("[protocol]\nready = true\n", "false for none"),
        ('[protocol]\nready = "none"\n', "or false when the server sends nothing on connect"),
        ('[protocol]\ntoken = { path = "type", absent = false }\n', "absent must be true"),
        ("[protocol]\ntoken = []\n", "at least one condition"),
        ('[protocol]\nsession_create = { path = "/s" }\n', 'id_path = "id"'),
        ('[protocol]\nsession_create = { path = "s", id_path = "id" }\n', "must start with /"),
        ('[load]\nafter_failure = "retry"\n', "valid: stay, reconnect"),
    ],
)
def test_bad_profile_language_says_what_to_write(tmp_path, text, hint):
    assert hint in error_of(tmp_path, text)


def test_a_warmup_longer_than_a_third_of_the_load_is_cut_with_a_warning(tmp_path):
    given = load_profile(write(tmp_path, '[load]\nduration = "90s"\n[criteria]\nwarmup = "60s"\n'))
    [warning] = given.warnings
    assert "trends are fitted after 30s instead" in warning and "lower [criteria] warmup" in warning
    assert apply_overrides(given, duration="60s").warnings  # still said after --duration
    default = load_profile(write(tmp_path, '[load]\nduration = "90s"\n'))  # warmup: default
    assert default.warnings == []


REMOTE = '[[targets]]\nname = "gpu1"\nurl = "ws://gpu1:8765/ws"\nremote = true\n'
LISTEN = '[collector]\nlisten = "0.0.0.0:7557"\nsecret = "${SOAK_TEST_COLLECT_SECRET}"\n'


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        (REMOTE.replace("remote = true", "remote = true\nport = 8765"), "drop port (or remote)"),
        (REMOTE, 'write listen = "0.0.0.0:7557"'),
        (REMOTE + '[collector]\nlisten = "0.0.0.0:7557"\n', "needs a secret of at least 16"),
        (REMOTE + '[collector]\nlisten = "7557"\n', "must be HOST:PORT"),
        (REMOTE + LISTEN.replace("${SOAK_TEST_COLLECT_SECRET}", "x" * 20), "environment ref"),
    ],
)
def test_remote_targets_need_a_listen_address_and_a_secret_from_the_environment(
    tmp_path, monkeypatch, text, hint
):
    monkeypatch.setenv("SOAK_TEST_COLLECT_SECRET", "0123456789abcdef")
    assert hint in error_of(tmp_path, text)


def test_a_remote_target_with_listen_and_secret_loads_redacted(tmp_path, monkeypatch):
    monkeypatch.setenv("SOAK_TEST_COLLECT_SECRET", "0123456789abcdef")
    profile = load_profile(write(tmp_path, REMOTE + LISTEN))
    assert profile.targets[0].remote and profile.collector["secret"] == "0123456789abcdef"
    assert "0123456789abcdef" not in str(profile.redacted())
    moved = apply_overrides(profile, collector_listen="127.0.0.1:9000")
    assert moved.collector["listen"] == "127.0.0.1:9000"
