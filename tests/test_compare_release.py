"""soak release: one report from several runs, executive summary on top, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from soak.compare.release import RELEASE_HTML, RELEASE_JSON, RELEASE_MD, build_release
from soak.errors import UsageError
from tests.data.make_compare_runs import RUNS

BASE = "20261118T110640Z_nightly_v1.4.1"
CANDIDATE = "20261119T120640Z_nightly_v1.4.2"
AB_RUN = "20261121T131003Z_demo_ab"


@pytest.fixture(scope="module")
def ab_release(tmp_path_factory: pytest.TempPathFactory):
    """The recorded A/B demo run alone: its patched target is released."""
    return build_release([AB_RUN], RUNS, tmp_path_factory.mktemp("release"))


def test_ab_run_release_judges_the_patched_build_only(ab_release) -> None:
    assert ab_release.verdict == "pass" and ab_release.exit_code == 0
    assert ab_release.runs[0].judged == ["patched"]  # unpatched is the base
    document = json.loads((ab_release.out_dir / RELEASE_JSON).read_text())
    assert document["verdict"] == "pass"
    targets = document["runs"][0]["targets"]
    assert targets["unpatched"] == {"verdict": "fail", "build": "faults", "judged": False}
    fixed = {c["name"] for c in document["comparisons"][0]["changes"] if c["verdict"] == "fixed"}
    assert {"threads.growth_per_hour", "stalls.rate"} <= fixed
    assert (ab_release.out_dir / document["runs"][0]["report"]).is_file()
    assert (ab_release.out_dir / document["comparisons"][0]["report"]).is_file()


def test_release_pages_open_with_the_executive_summary(ab_release) -> None:
    page = (ab_release.out_dir / RELEASE_HTML).read_text()
    assert page.index("Verdict") < page.index("Better") < page.index("Key numbers")
    assert "fixed thread growth" in page and page.count("data:image/png;base64,") == 2
    assert 'href="runs/20261121T131003Z_demo_ab/report.html"' in page
    text = (ab_release.out_dir / RELEASE_MD).read_text()
    assert text.startswith("# soak release report: PASS")
    assert f"](runs/{AB_RUN}/plots/threads.png)" in text
    assert r"| 20261121T131003Z\_demo\_ab:unpatched \(base\) | faults |" in text  # escaped


def test_release_against_a_baseline_fails_on_the_new_failure(tmp_path: Path) -> None:
    release = build_release([CANDIDATE], RUNS, tmp_path, baseline=BASE)
    assert release.verdict == "fail" and release.exit_code == 1
    assert release.reasons == [
        f"{CANDIDATE}:app fails errors.rate < 1%",  # its own criteria
        f"{CANDIDATE}:app vs {BASE}:app: new failure error rate",  # against the baseline
    ]
    never = build_release([CANDIDATE], RUNS, tmp_path / "never", baseline=BASE, fail_on="never")
    assert never.reasons == release.reasons[:1]
    summary = (tmp_path / RELEASE_MD).read_text()
    assert r"fixed thread growth \(120/h → 0/h\), stall rate \(0.88% → 0%\); improved" in summary
    assert r"new failure error rate \(0% → 1.9%\); regressed TTFT p50 \(121 ms → 306" in summary


def test_unknown_runs_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no run directory"):
        build_release(["nope"], RUNS, tmp_path)


def test_cli_release_prints_the_summary_and_gates(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "soak", "release", CANDIDATE[:12], "--baseline", BASE[:12],
         "--root", str(RUNS), "--out", str(tmp_path), "--fail-on", "regressed"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.startswith("Verdict:\n  FAIL:")
    assert "regressed TTFT p50" in proc.stdout and str(tmp_path / RELEASE_HTML) in proc.stdout
