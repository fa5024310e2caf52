"""Redaction is a property of every writer; Markdown and JUnit output is inert.

The end-to-end run uses a secret with `#` and `"`: as a URL's token it makes every
connect of one target fail with the URL echoed, and it sits in a health header and in
the argv of a spawned target (whose stdout, stderr and py-spy dump header show it).
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import pytest

from soak import redact
from soak.collect.forensics import PySpy, find_pyspy
from soak.collect.spawn import SpawnedTarget
from soak.errors import ProfileError
from soak.model import read_summary
from soak.profile import Target, profile_from_mapping
from soak.redact import MASK, Redactor, redact_url
from soak.report import build_report
from soak.report.junit import render_junit
from soak.report.markdown import cell
from soak.rundir import JsonlWriter, RunDir, write_text_atomic
from soak.target import start_target
from tests.rundir_factory import FakeRun, FakeTarget, write_run

#: A secret with a URL fragment mark and a JSON quote in it.
SECRET = 'Tok"en#k9Lm2-Pv5Zq'
#: Its longest run that no encoding changes: in every written form of it (JSON-, HTML-,
#: Markdown-escaped, percent-encoded), so "not in the file" covers them all.
CORE = "k9Lm2-Pv5Zq"
#: Markdown a server may send: an image fetched by whoever views the report, a link.
IMAGE = "![](//x.ev/a)"
LINK = "[click](https://x.ev/b)"


@pytest.fixture
def installed():
    """Install a process redactor of SECRET for one test, then none again."""
    yield redact.install([SECRET])
    redact.install([])


# --- the Redactor ------------------------------------------------------------------------
def test_urls_lose_fragment_userinfo_and_secret_query_values():
    assert redact_url("ws://h:1/ws?token=ab#cd") == "ws://h:1/ws?token=***#***"
    assert redact_url("ws://h:1/ws#anything") == "ws://h:1/ws#***"
    assert redact_url("ws://u:p@h:1/ws?access_token=1&api_key=2&sig=3&x=4") == (
        "ws://***@h:1/ws?access_token=***&api_key=***&sig=***&x=4"
    )
    assert redact_url("http://h/p?") == "http://h/p?"  # nothing to mask: unchanged
    text = "connect failed (ws://u:pw@h:1/ws?key=zz#frag). Retry."
    assert Redactor().text(text) == "connect failed (ws://***@h:1/ws?key=***#***). Retry."


def test_a_secret_is_masked_in_every_form_it_is_written_in():
    redactor = Redactor([SECRET, "pässwörd-42"])
    url = f"ws://127.0.0.1:9/ws?t={SECRET}"  # the key does not look secret: the value is
    line = json.dumps({"detail": f"connect failed: {url} isn't valid", "u": "pässwörd-42"})
    masked = redactor.text(line)
    assert CORE not in masked and "p\\u00e4ssw\\u00f6rd" not in masked
    detail = "connect failed: ws://127.0.0.1:9/ws?t=*** isn't valid"
    assert json.loads(masked) == {"detail": detail, "u": MASK}
    for form in (repr(url), url.replace("#", "%23").replace('"', "%22"), f"<{url}>"):
        assert CORE not in redactor.text(form), form
    assert redactor.binary(b"\xff " + SECRET.encode() + b" \xfe") == b"\xff *** \xfe"


def test_short_secrets_are_not_masked_in_free_text_but_are_in_the_profile_copy(monkeypatch):
    redactor = Redactor(["8765", "admin"])
    line = '{"port":8765,"user":"admin"}'
    assert redactor.text(line) == line  # masking them would break the record
    monkeypatch.setenv("SOAK_TEST_PORT", "8765")
    profile = profile_from_mapping({"targets": [{"name": "a", "url": "ws://h:${SOAK_TEST_PORT}"}]})
    assert profile.redacted()["targets"][0]["url"] == "ws://h:***"


def test_digit_secrets_stay_out_of_longer_numbers_and_longer_secrets_go_first():
    redactor = Redactor(["86420975", "abcdef", "abcdefghij"])
    assert redactor.text('{"t":1786420975.5,"pin":86420975}') == '{"t":1786420975.5,"pin":***}'
    assert redactor.text("x abcdefghij y abcdef") == "x *** y ***"
    assert redactor.value({"abcdef": ["abcdefghij", 86420975], "n": 1}) == {
        MASK: [MASK, 86420975],
        "n": 1,
    }


def test_every_writer_of_the_run_directory_redacts(tmp_path, installed):
    with JsonlWriter(tmp_path / "a.jsonl") as writer:
        writer.write({"detail": f"ws://h:1/ws?x={SECRET}", SECRET: 1})
    write_text_atomic(tmp_path / "b.json", json.dumps({"headers": f"Bearer {SECRET}"}))
    for name in ("a.jsonl", "b.json"):
        text = (tmp_path / name).read_text()
        assert CORE not in text and MASK in text
        json.loads(text)


def test_a_profile_error_does_not_quote_the_secret(monkeypatch):
    monkeypatch.setenv("SOAK_TEST_SECRET", SECRET)
    with pytest.raises(ProfileError) as error:
        profile_from_mapping({"targets": [{"name": "a", "url": "http://h/${SOAK_TEST_SECRET}"}]})
    assert "ws://" in error.value.message and CORE not in error.value.message


def test_stdout_stderr_logging_and_tracebacks_of_an_entry_point_are_redacted_and_inert():
    script = textwrap.dedent(
        f"""
        import logging, sys
        from soak import redact
        logging.basicConfig(stream=sys.stderr, format="%(levelname)s %(message)s")
        redact.guard_output()
        redact.install([{SECRET!r}])
        print("stdout", {SECRET!r})
        print("thread \\x1b[2Jnamed\\x07 ok")
        logging.getLogger("x").warning("log %s", {SECRET!r})
        raise RuntimeError({SECRET!r})
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 1 and "RuntimeError: ***" in done.stderr
    assert "stdout ***" in done.stdout and "log ***" in done.stderr
    # a server-controlled name cannot drive the terminal: controls are shown, not sent
    assert "thread \\x1b[2Jnamed\\x07 ok" in done.stdout and "\x1b" not in done.stdout
    assert CORE not in done.stdout + done.stderr


# --- spawned targets and py-spy --------------------------------------------------------------
SLEEPER = "import sys, time; print('argv', sys.argv[1:], flush=True); " + (
    "print('err', sys.argv[1:], file=sys.stderr, flush=True); time.sleep(60)"
)


def test_a_spawned_targets_logs_and_its_pyspy_dump_are_redacted(tmp_path, installed):
    target = Target(name="app", spawn=[sys.executable, "-c", SLEEPER, f"--token={SECRET}"])
    spawned = SpawnedTarget(target, tmp_path / "targets" / "app")
    try:
        spawned.wait_ready(None, 5.0)
        problems: list[str] = []
        dump = None
        if find_pyspy() is not None:
            dump = PySpy(RunDir(tmp_path), lambda message, _: problems.append(message)).dump(
                "app", spawned.pid, "test"
            )
    finally:
        spawned.stop(grace_s=2.0)
    for log in (spawned.stdout_path, spawned.stderr_path):
        text = log.read_text()
        assert "--token=***" in text and CORE not in text, text
    if find_pyspy() is None:
        pytest.skip("py-spy is not installed here: the dump part is not tested")
    if dump is None:
        pytest.skip(f"py-spy could not dump here: {problems}")
    header = dump.read_text()
    assert f"Process {spawned.pid}" in header and "--token=***" in header
    assert CORE not in header


# --- Markdown and JUnit --------------------------------------------------------------------
def _rendered(markdown: str) -> str:
    markdown_it = pytest.importorskip("markdown_it")
    return markdown_it.MarkdownIt("commonmark").enable("table").render(markdown)


def test_a_cell_is_inert_markdown_on_one_line():
    hostile = f"{IMAGE} {LINK} <img src=//x.ev/c> *b* `c` # h | d\n- e &amp; $x$"
    page = _rendered(f"| a | b |\n|---|---|\n| {cell(hostile)} | z |\n")
    assert "<img" not in page and "<a " not in page and "<em>" not in page
    assert "<code>" not in page and page.count("<td>") == 2  # the pipe stayed in its cell
    assert "&amp;amp;" in page  # an entity is shown as written, not decoded


def _hostile_markdown_target() -> FakeTarget:
    return FakeTarget(
        name="md",
        threads=lambda s: 50 + s // 30,
        families=lambda s, n: {"MainThread": 1, IMAGE: n - 1},
        stalls_per_interval=1,
        anomaly_detail=f"{LINK} | {IMAGE}",
        close_reason=IMAGE,
        health_error=LINK,
    )


def test_report_md_shows_server_strings_as_text(tmp_path):
    run = FakeRun(
        targets=[_hostile_markdown_target()], duration_s=600, checks=["stalls.count == 0"]
    )
    report = build_report(write_run(tmp_path, run))
    text = report.markdown_path.read_text()
    assert "\\!\\[\\]\\(//x.ev/a\\)" in text  # the fastest-growing family, escaped
    page = _rendered(text)
    images = [part.split('"', 1)[0] for part in page.split('<img src="')[1:]]
    assert images and all(src.startswith("plots/") for src in images), images
    assert "x.ev" not in "".join(part.split('"', 1)[0] for part in page.split('href="')[1:])


def test_junit_strips_what_xml_cannot_hold_and_escapes_the_rest():
    summary = {
        "run_id": "r\x00\x1b[31m",
        "started_at_iso": "2026-11-21T12:00:00+00:00",
        "duration_s": 1.0,
        "targets": {"a\x0bb": {"verdict": "fail"}},
        "criteria": [
            {
                "target": "a\x0bb",
                "name": "x",
                "passed": False,
                "expression": "x\ud800 < 1",
                "status": "fail",
                "message": 'm\x07 <&> " \uffff',
                "value": 2,
                "unit": "",
                "threshold": 1,
            }
        ],
    }
    root = ET.fromstring(render_junit(read_summary(summary)).encode("utf-8"))
    assert root.get("name") == "soak r[31m"
    case = root.find("testsuite/testcase")
    assert case is not None and case.get("name") == "x < 1" and case.get("classname") == "soak.ab"
    assert case.find("failure").get("message") == 'm <&> " '


# --- end to end ----------------------------------------------------------------------------
#: A spawned built-in target that first prints its argv (which holds the secret).
SPAWNED = (
    "import runpy, sys; print('started with', sys.argv[1:], flush=True); "
    "print('argv', sys.argv[1:], file=sys.stderr, flush=True); "
    "sys.argv[1:] = ['--host', '127.0.0.1', '--port', sys.argv[2], '--patched']; "
    "runpy.run_module('soak.target', run_name='__main__')"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.e2e
def test_a_secret_with_hash_and_quote_reaches_no_file_and_no_terminal(tmp_path):
    port = _free_port()
    profile = tmp_path / "secret.toml"
    out = tmp_path / "out"
    with start_target(patched=True) as target:
        profile.write_text(
            textwrap.dedent(
                f"""
                [[targets]]
                name = "app"
                url = "{target.ws_url}"
                health = "{target.health_url}"
                health_headers = {{ Authorization = "Bearer ${{SOAK_TEST_SECRET}}" }}
                [[targets]]
                name = "bad"  # the token's '#' makes the URL invalid: every connect echoes it
                url = "{target.ws_url}?token=${{SOAK_TEST_SECRET}}"
                [[targets]]
                name = "spawned"
                url = "ws://127.0.0.1:{port}/ws"
                spawn = [{json.dumps(sys.executable)}, "-c", {json.dumps(SPAWNED)},
                         "--token=${{SOAK_TEST_SECRET}}", "{port}"]
                [load]
                users = 6
                duration = "4s"
                interval = "1s"
                think_time = "0.05s"
                [collector]
                interval = "1s"
                health_interval = "1s"
                pyspy = true
                pyspy_every = "2s"
                [criteria]
                warmup = "0s"
                checks = ["stalls.count == 0"]
                """
            )
        )
        proc = subprocess.run(
            [sys.executable, "-m", "soak", "run", str(profile), "--out", str(out)],
            capture_output=True, text=True, timeout=180,
            env={**os.environ, "SOAK_TEST_SECRET": SECRET},
        )  # fmt: skip
    terminal = proc.stdout + proc.stderr
    assert proc.returncode in (0, 1, 4), terminal  # ran and judged (bad has no ok turn)
    assert CORE not in terminal and SECRET not in terminal
    run_dir = next(out.iterdir())
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {"report.html", "report.md", "load.log", "anomalies.jsonl"} <= {p.name for p in files}
    leaks = [str(p.relative_to(run_dir)) for p in files if CORE.encode() in p.read_bytes()]
    assert not leaks, f"the secret was written to {leaks}"
    anomalies = (run_dir / "anomalies.jsonl").read_text()
    assert "?token=***" in anomalies  # the failed connects echoed the URL, masked
    for log in ("stdout.log", "stderr.log"):
        assert "--token=***" in (run_dir / "targets" / "spawned" / log).read_text()
    assert "token=***" in (run_dir / "manifest.json").read_text()
