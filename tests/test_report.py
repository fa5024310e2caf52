"""build_report: the four files and the plots, the summary contract, escaping, exit codes."""

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from soak.analyze.anomalies import MAX_GROUPS, OTHER
from soak.errors import EXIT_CRITERIA_FAILED, EXIT_INCONCLUSIVE, EXIT_PASS, RunDirError
from soak.model import read_summary
from soak.report import build_report
from soak.rundir import ANOMALIES, JsonlWriter
from tests.rundir_factory import STARTED_AT, FakeRun, FakeTarget, write_run

SCRIPT = "<script>alert(1)</script>"

TOP_LEVEL = {
    "schema_version", "soak_version", "run_id", "run_dir", "profile_name", "label", "status",
    "started_at_iso", "ended_at_iso", "duration_s", "warmup_s", "verdict", "criteria", "targets",
}  # fmt: skip
DATA = Path(__file__).parent / "data"
CRITERION = {
    "target", "name", "expression", "passed", "status", "value", "threshold", "unit", "message",
}  # fmt: skip
#: Dotted paths every target entry of summary.json (version 3) has.
TARGET = [
    "verdict",
    "verdict_reasons",
    "evidence_gaps",
    "findings",
    "build",
    "url",
    "restarts",
    "samples",
    "top_growing_family",
    "chats.turns",
    "chats.replies",
    "chats.stalls",
    "chats.errors",
    "chats.disconnects",
    "chats.violations",
    "chats.mismatches",
    "chats.first_token_timeouts",
    "chats.stall_rate",
    "chats.ttft.p50",
    "chats.ttft.p95",
    "chats.ttft.p99",
    "chats.ttft.samples",
    "chats.reply.p99",
    "threads.start",
    "threads.end",
    "threads.max",
    "threads.growth_per_hour",
    "threads.growth_ci_per_hour",
    "threads.hours_to_limit",
    "threads.limit",
    "threads.missing",
    "rss.unit",
    "rss.start",
    "rss.end",
    "rss.growth_per_hour",
    "fds.end",
    "fds.growth_per_hour",
    "cpu.idle_percent",
    "cpu.busy_percent",
    "loop_lag.p99",
    "loop_lag.max",
    "drift.signals",
    "health.samples",
    "health.fields",
    "health.latency.p50",
    "anomalies.groups",
]
CHECKS = [
    "threads.growth_per_hour < 5",
    "stalls.count == 0",
    "ttft.p95 < 2s",
    "idle_cpu.percent < 5",
]


def _hostile_target() -> FakeTarget:
    """A target whose health fields, thread names, error texts, anomaly details and close
    reasons all carry markup."""
    return FakeTarget(
        name="evil",
        threads=lambda s: 50 + s // 30,
        health_body=lambda s: {SCRIPT: s, "diagnostics": {"loop_lag_ms": 3, SCRIPT: {"n": s}}},
        health_error=SCRIPT,
        families=lambda s, n: {"MainThread": 1, "math$_{$": 1, SCRIPT: n - 2},  # $: no mathtext
        stalls_per_interval=1,
        disconnects_per_interval=lambda s: 1 if s < 100 else 0,
        violations_per_interval=lambda s: 1 if s < 50 else 0,
        anomaly_detail=f"frame {SCRIPT} | pipe",
        close_reason=SCRIPT,
        ping_s=0.003,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("runs")
    run = FakeRun(
        targets=[_hostile_target(), FakeTarget(name="good")],
        duration_s=900,
        idle_from_s=700,
        checks=CHECKS,
        criteria_targets={"good": {"checks": ["health.diagnostics.loop_lag_ms.max < 50"]}},
        generator=lambda s: {"worker": f"host{SCRIPT}:1", "cpu_percent": 95.0 if s <= 60 else 20.0},
    )
    return build_report(write_run(root, run))


def test_writes_all_files_and_plots(report) -> None:
    for path in (report.summary_path, report.markdown_path, report.html_path, report.junit_path):
        assert path.is_file() and path.stat().st_size > 0
    names = {path.stem for path in report.plot_paths}
    assert names == {
        "threads", "thread_families", "rss", "cpu", "fds", "drift", "health", "latency",
        "throughput", "outcomes", "soak",
    }  # fmt: skip
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in report.plot_paths)


def test_summary_json_matches_contract(report) -> None:
    def no_nan(token: str) -> float:
        raise AssertionError(f"{token} in summary.json")

    summary = json.loads(report.summary_path.read_text(), parse_constant=no_nan)
    assert summary == report.summary.to_json()
    assert set(summary) >= TOP_LEVEL and summary["schema_version"] == 3
    assert len(summary["criteria"]) == len(CHECKS) * 2 + 1
    assert summary["generator"]["saturated_percent"] == pytest.approx(60 / 900 * 100)
    assert all(set(row) >= CRITERION for row in summary["criteria"])
    for target in summary["targets"].values():
        for path in TARGET:
            entry = target
            for key in path.split("."):
                assert key in entry, path
                entry = entry[key]
    assert summary["verdict"] == "fail"
    assert summary["targets"]["evil"]["verdict"] == "fail"
    assert summary["targets"]["good"]["verdict"] == "pass"
    assert report.exit_code == EXIT_CRITERIA_FAILED


def test_html_is_self_contained_and_escaped(report) -> None:
    page = report.html_path.read_text()
    assert page.lower().count("<script") == 2  # soak's chart data and chart script, no other
    assert 'src="http' not in page and "<link" not in page  # one file, opens offline
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert escaped in page
    for section in ("health", "anomalies", "soak"):  # health fields, close reasons, workers
        start = page.index(f'<section id="{section}">')
        assert escaped in page[start : page.index("</section>", start)], section
    assert page.index('id="verdict"') < page.index('id="findings"') < page.index('id="plots"')
    assert 'class="warn"' in page  # soak itself was saturated
    assert page.count("data:image/png;base64,") == len(report.plot_paths)
    svg_namespace = "http://www.w3.org/2000/svg"  # a name in the chart script, not a fetch
    assert "http://" not in page.replace("http://127.0.0.1:1", "").replace(svg_namespace, "")
    assert page.index('id="verdict"') < page.index('id="criteria"') < page.index('id="plots"')


def test_markdown_links_plots_and_escapes_cells(report) -> None:
    text = report.markdown_path.read_text()
    assert "](plots/threads.png)" in text
    assert "<script" not in text
    assert "threads grow" in text and "| evil | test | fail |" in text
    assert "## Findings" in text and r"- 140 stalls in 1,400 turns \(10%\)" in text
    assert "soak itself was saturated" in text


def test_junit_has_one_case_per_criterion_per_target(report) -> None:
    root = ET.parse(report.junit_path).getroot()
    cases = root.findall(".//testcase")
    assert len(cases) == len(CHECKS) * 2 + 1
    failures = root.findall(".//failure")
    assert any(f.get("message", "").startswith("threads grow") for f in failures)
    assert root.get("failures") == str(len(failures)) == "2"


def test_passing_run_exits_zero_into_another_dir(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "runs", FakeRun(duration_s=120, checks=["stalls.count == 0"]))
    result = build_report(run_dir, tmp_path / "out")
    assert result.exit_code == EXIT_PASS and result.summary.verdict == "pass"
    assert result.html_path.parent == tmp_path / "out"
    assert not (run_dir / "report.html").exists()


def test_collect_only_run_still_gets_a_report(tmp_path: Path) -> None:
    run = FakeRun(duration_s=300, write_chats=False, checks=["stalls.count == 0"])
    result = build_report(write_run(tmp_path / "runs", run), tmp_path / "out")
    assert result.exit_code == EXIT_INCONCLUSIVE  # its one criterion cannot be measured
    [check] = result.summary.to_json()["criteria"]
    assert check["status"] == "skipped" and "soak collect" in check["message"]
    names = {path.stem for path in result.plot_paths}
    assert {"threads", "rss", "cpu"} <= names and "latency" not in names
    assert "Turns ended</td><td>—" in result.html_path.read_text()


def test_bad_run_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="no manifest.json"):
        build_report(tmp_path)
    with pytest.raises(RunDirError, match="not a directory"):
        build_report(tmp_path / "missing")


def test_anomalies_are_grouped_by_kind_and_message(tmp_path: Path) -> None:
    """Stalls at other times and lengths are one group; the groups are bounded."""
    run_dir = write_run(tmp_path, FakeRun(duration_s=300, checks=["stalls.count == 0"]))
    with JsonlWriter(run_dir / ANOMALIES) as out:
        for n in range(40):
            out.write(
                {
                    "t": STARTED_AT + n,
                    "target": "app",
                    "kind": "stall",
                    "request_id": f"r{n}",
                    "detail": f"no terminal frame within {n} s",
                }
            )
        for nonce, previous in (("f58a73e6", "c5acbcc3"), ("2d8641fa", "34bc7ba8")):
            out.write({"t": STARTED_AT + 9, "target": "app", "kind": "mismatch",
                       "subkind": "stale_reply", "detail": f"the reply carries the nonce "
                       f"'{previous}' of the previous prompt, not '{nonce}'"})  # fmt: skip
        for n in range(60):  # a message of its own each ('x' * n): past MAX_GROUPS, "other"
            out.write(
                {
                    "t": STARTED_AT + n,
                    "target": "app",
                    "kind": "violation",
                    "subkind": "non_json",
                    "detail": f"unparseable: <b>{n}</b> {'x' * n}",
                }
            )
        out.write({"t": STARTED_AT + 50, "target": "app", "kind": "stall", "excluded": "soak",
                   "detail": "no terminal frame within 6 s"})  # fmt: skip
    summary = build_report(run_dir).summary.to_json()
    groups = summary["targets"]["app"]["anomalies"]["groups"]
    stalls = next(g for g in groups if g["message"] == "no terminal frame within N s")
    assert stalls["kind"] == "stall" and stalls["count"] >= 40
    assert stalls["first_s"] == 0 and stalls["last_s"] >= 39
    stale = [g for g in groups if g["kind"] == "mismatch/stale_reply"]  # nonces fold to ID
    assert [(g["message"], g["count"]) for g in stale] == [
        ("the reply carries the nonce 'ID' of the previous prompt, not 'ID'", 2)
    ]
    assert len(groups) == 20  # summary.json: the largest groups
    html = (run_dir / "report.html").read_text().split("By kind and message")[1]
    html = html.split("The first records")[0]
    assert "stall (excluded)" in html and OTHER in html and "<b>" not in html
    assert html.count("violation/non_json") <= MAX_GROUPS + 1  # bounded: then "other"
    assert "## Anomalies by kind and message" in (run_dir / "report.md").read_text()


def test_throughput_is_in_the_summary_and_plotted(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, FakeRun(duration_s=300, turns_per_interval=10))
    result = build_report(run_dir)
    app = result.summary.to_json()["targets"]["app"]
    assert app["chats"]["turns_per_s"] == pytest.approx(2.0) and app["chats"][
        "ok_per_s"
    ] == pytest.approx(2.0)
    assert (run_dir / "plots" / "throughput.png").is_file()


def test_summary_json_reads_back_into_the_same_model(report) -> None:
    document = json.loads(report.summary_path.read_text())
    assert read_summary(document) == report.summary
    assert read_summary(document).targets["evil"].rss.unit == "MB"


def test_a_version_2_summary_reads_into_the_model_with_its_numbers() -> None:
    """summary.json written by soak before the nested layout (schema 2, flat target
    entries): every number lands in its section, with its reason when missing."""
    old = json.loads((DATA / "summary_v2.json").read_text())
    summary = read_summary(old)
    for name, entry in old["targets"].items():
        target = summary.targets[name]
        assert target.threads.growth_per_hour == entry["threads_growth_per_hour"]
        assert target.rss.growth_ci_per_hour == entry["rss_growth_ci_mb_per_hour"]
        assert target.rss.end == entry["rss_end_mb"] and target.rss.unit == "MB"
        assert target.chats.stalls == entry["stalls"]
        assert target.chats.ttft.p95 == entry["ttft_p95_s"]
        assert target.cpu.idle_percent == entry["idle_cpu_percent"]
        assert target.loop_lag.max == entry["loop_lag_max_s"]
        assert target.health.latency.p99 == entry["health_latency_p99_s"]
        assert target.anomalies.records == entry["anomaly_records"]
        assert target.drift.bins == entry["drift"]["bins"]
        for key, reason in entry["unavailable"].items():
            if key.startswith("uss_growth_mb_per_hour"):
                assert target.uss.why_missing("growth_per_hour") == reason
    assert [c.expression for c in summary.criteria] == [c["expression"] for c in old["criteria"]]
    assert summary.verdict == old["verdict"] == "fail"


def test_a_summary_of_an_unknown_version_is_refused_with_what_to_do() -> None:
    with pytest.raises(ValueError, match="schema_version 99.*upgrade soak"):
        read_summary({"schema_version": 99})


def test_report_md_links_hosted_plots_so_it_pastes_into_a_pull_request(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, FakeRun(duration_s=300))
    build_report(run_dir, tmp_path / "out", md_images="https://ci.example/run-42/")
    text = (tmp_path / "out" / "report.md").read_text()
    assert "](https://ci.example/run-42/plots/threads.png)" in text
    assert text.index("<details><summary>Plots</summary>") < text.index("plots/threads.png")
    bad = subprocess.run(
        [sys.executable, "-m", "soak", "report", str(run_dir), "--md-images", "plots"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "is not a URL" in bad.stderr
    assert "Traceback" not in bad.stderr
