"""Property-based tests: any input to the profile loader, the criteria parser and the
run-directory reader yields a result or a clear soak error, never a traceback."""

import json
import shutil
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from soak.cli import app
from soak.criteria import parse_criteria
from soak.errors import ProfileError, RunDirError
from soak.profile import SECTIONS, TARGET_FIELDS, load_profile, profile_from_mapping
from soak.report import build_report
from tests.rundir_factory import FakeRun, write_run

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["10s", "2h", "0.5s", "-1s", "ws://127.0.0.1:1/ws", "${HOME}", "${NOPE_X}"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
known_keys = st.sampled_from(
    sorted({key for spec in SECTIONS.values() for key in spec} | set(TARGET_FIELDS))
)
section = st.dictionaries(st.one_of(known_keys, st.text(max_size=6)), values, max_size=5)
profiles = st.fixed_dictionaries(
    {},
    optional={
        "name": values,
        "targets": st.one_of(values, st.lists(section, max_size=3)),
        **{name: st.one_of(section, values) for name in SECTIONS},
    },
)


@SETTINGS
@given(profiles)
def test_any_profile_mapping_loads_or_says_why(data):
    try:
        profile_from_mapping(data, source="fuzz.toml")
    except ProfileError as exc:
        assert exc.message.startswith("fuzz.toml") and "\n" not in exc.message


@SETTINGS
@given(st.text(alphabet=string.printable, max_size=300))
def test_any_toml_text_loads_or_says_why(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.toml"
        path.write_text(text)
        try:
            load_profile(path)
        except ProfileError as exc:
            assert "fuzz.toml" in exc.message


metric_words = st.sampled_from(
    ["threads.growth_per_hour", "ttft.p95", "stalls.count", "idle_cpu.percent", "x.y", ""]
)
expressions = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda m, op, v: f"{m} {op} {v}",
        metric_words,
        st.sampled_from(["<", "<=", ">", ">=", "==", "!=", "=<", "~"]),
        st.one_of(st.text(max_size=8), st.sampled_from(['"2s"', "250ms", "5", "1e9", "nan"])),
    ),
)


@SETTINGS
@given(st.lists(expressions, max_size=4))
def test_any_criteria_parse_or_say_why(checks):
    try:
        parse_criteria(checks)
    except ValueError as exc:
        assert str(exc)


FILES = [
    "manifest.json",
    "chats.jsonl",
    "anomalies.jsonl",
    "events.jsonl",
    "targets/app/process.jsonl",
    "targets/app/threads.jsonl",
    "targets/app/health.jsonl",
]
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=8,
)
record_keys = st.sampled_from(
    ["t", "pid", "threads", "rss_mb", "cpu_percent", "fds", "target", "outcomes", "ttft_hist",
     "interval_s", "families", "body", "status", "kind", "format_version", "targets", "profile",
     "started_at", "started_at_iso", "in_flight", "turns", "started"]
)  # fmt: skip
records = st.one_of(
    st.dictionaries(record_keys, json_values, max_size=6).map(json.dumps),
    st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
)


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(FILES), st.lists(records, min_size=1, max_size=5), st.booleans())
def test_any_damage_to_a_run_directory_reports_or_says_why(name, lines, append):
    with tempfile.TemporaryDirectory() as folder:
        run_dir = write_run(Path(folder), FakeRun(duration_s=120, checks=["stalls.count == 0"]))
        path = run_dir / name
        text = "\n".join(lines) + "\n"
        if append and name != "manifest.json":
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(text)
        else:
            path.write_text(text, encoding="utf-8")
        try:
            result = build_report(run_dir)
        except RunDirError as exc:
            assert exc.message
        else:
            assert result.summary.verdict in ("pass", "fail", "inconclusive")


def _set_manifest(**changes):
    def damage(run_dir: Path) -> None:
        path = run_dir / "manifest.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))

    return damage


def _directory_in_place_of(name: str):
    def damage(run_dir: Path) -> None:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        path.mkdir()

    return damage


def _file_in_place_of_targets(run_dir: Path) -> None:
    shutil.rmtree(run_dir / "targets" / "app")
    (run_dir / "targets" / "app").write_text("not a folder")


STRUCTURAL_DAMAGE = {
    "started_at 1e300": (_set_manifest(started_at=1e300), "started_at is 1e+300"),
    "started_at a word": (_set_manifest(started_at="yesterday"), "started_at is 'yesterday'"),
    "ended_at negative": (_set_manifest(ended_at=-5), "ended_at is -5"),
    "a target that is a string": (_set_manifest(targets=["app"]), "target entry 'app'"),
    "targets an object": (_set_manifest(targets={"app": 1}), "targets is dict"),
    "targets/app a file": (_file_in_place_of_targets, "Not a directory"),
    "chats.jsonl a directory": (_directory_in_place_of("chats.jsonl"), "Is a directory"),
    "events.jsonl a directory": (_directory_in_place_of("events.jsonl"), "Is a directory"),
    "process.jsonl a directory": (
        _directory_in_place_of("targets/app/process.jsonl"),
        "Is a directory",
    ),
}


@pytest.mark.parametrize("case", STRUCTURAL_DAMAGE)
@pytest.mark.parametrize("command", ["report", "status"])
def test_a_structurally_damaged_run_directory_is_one_line_never_a_traceback(
    tmp_path, case, command
):
    run_dir = write_run(tmp_path, FakeRun(duration_s=120, checks=["stalls.count == 0"]))
    damage, said = STRUCTURAL_DAMAGE[case]
    damage(run_dir)
    result = CliRunner().invoke(app, [command, str(run_dir)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert said in result.output and "damaged" in result.output
