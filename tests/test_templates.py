"""The jinja2 template set of the HTML pages: real pages from a real run, autoescaped."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2 import UndefinedError
from markupsafe import escape

from soak.compare.release import RELEASE_HTML, Release, build_release
from soak.report.templating import Cell, environment, render
from tests.rundir_factory import FakeRun, FakeTarget, write_run

#: Markup, an attribute break-out, quotes and an entity: every one must stay text.
HOSTILE = "<img src=x onerror=\"alert('t')\">&amp;"
TEMPLATES = Path(__file__).resolve().parent.parent / "soak" / "templates"


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    """One A/B run whose target names, /health fields, thread names, error texts, close
    reasons and load process names are hostile: its report, comparison and release."""
    root = tmp_path_factory.mktemp("runs")
    base = FakeTarget(
        name=f"base {HOSTILE}",
        threads=lambda s: 50 + s // 30,
        health_body=lambda s: {HOSTILE: s, "diagnostics": {"loop_lag_ms": 3, HOSTILE: s}},
        health_error=HOSTILE,
        families=lambda s, n: {"MainThread": 1, HOSTILE: n - 1},
        stalls_per_interval=1,
        disconnects_per_interval=1,
        anomaly_detail=f"frame {HOSTILE}",
        close_reason=HOSTILE,
    )
    run = FakeRun(
        targets=[base, FakeTarget(name=f"cand {HOSTILE}")],
        duration_s=300,
        checks=["stalls.count == 0", "threads.growth_per_hour < 5"],
        generator=lambda s: {"worker": f"host {HOSTILE}", "cpu_percent": 20.0},
    )
    run_dir = write_run(root, run)
    return build_release([run_dir.name], root, tmp_path_factory.mktemp("release"))


def _pages(release: Release) -> dict[str, str]:
    [comparison] = release.comparisons
    return {
        "report": release.runs[0].report.html_path.read_text(),
        "compare": comparison.html_path.read_text(),
        "release": (release.out_dir / RELEASE_HTML).read_text(),
    }


@pytest.mark.parametrize("name", ["report", "compare", "release"])
def test_every_page_escapes_what_the_run_and_server_said(release, name) -> None:
    page = _pages(release)[name]
    assert HOSTILE not in page and 'onerror="' not in page
    assert str(escape(HOSTILE)) in page  # shown as written: &amp; as "&amp;amp;"
    scripts = 2 if name == "report" else 0  # the report's own chart data and script
    assert page.lower().count("<script") == scripts
    assert page.startswith("<!doctype html>") and page.endswith("</body></html>\n")
    assert page.count("<style>") == 1 + (name == "report")  # one CSS; the charts' own


def test_the_report_escapes_each_section(release) -> None:
    page = _pages(release)["report"]
    escaped = str(escape(HOSTILE))
    for section in ("verdict", "findings", "numbers", "anomalies", "soak", "health"):
        start = page.index(f'<section id="{section}">')
        assert escaped in page[start : page.index("</section>", start)], section
    assert 'class="badge fail verdict"' in page and 'id="target-' in page
    assert page.index('id="charts"') < page.index('id="plots"') < page.index('id="drift"')
    assert page.count("data:image/png;base64,") == len(release.runs[0].report.plot_paths)


def test_the_comparison_and_release_pages_keep_their_sections(release) -> None:
    pages = _pages(release)
    compare, summary = pages["compare"], pages["release"]
    for anchor in ('id="metrics"', 'id="plots"', 'id="method"'):
        assert anchor in compare
    assert compare.count('<td class="num">') >= 3 and 'class="badge ' in compare
    assert summary.index("Verdict") < summary.index("Key numbers") < summary.index("Run ")
    assert 'href="runs/' in summary and 'href="compare/' in summary
    assert summary.count("data:image/png;base64,") == 2


def test_macros_render_cells_badges_and_tables() -> None:
    macros = environment().get_template("macros.html").module
    rows = [("a<b", Cell("pass", "badge"), None), (1.5, Cell("x<y", "code"), Cell("-", "muted"))]
    table = str(macros.table(("H&", "V", "W"), rows, numeric=range(1)))
    assert table == (
        "<table><thead><tr><th>H&amp;</th><th>V</th><th>W</th></tr></thead><tbody>"
        '<tr><td class="num">a&lt;b</td><td><span class="badge pass">pass</span></td><td></td></tr>'
        '<tr><td class="num">1.5</td><td><code>x&lt;y</code></td>'
        '<td><span class="muted">-</span></td></tr></tbody></table>'
    )
    badge = str(macros.badge('"><b>', extra="verdict"))
    assert badge == '<span class="badge &#34;&gt;&lt;b&gt; verdict">&#34;&gt;&lt;b&gt;</span>'
    assert str(macros.cell(Cell("fixed", "badge", "good"))) == (
        '<span class="badge good">fixed</span>'
    )


def test_the_environment_is_strict_and_built_once() -> None:
    assert environment() is environment() and environment().autoescape is True
    with pytest.raises(UndefinedError):
        render("base.html")  # soak_version missing: an error, not an empty string


def test_no_template_marks_anything_safe() -> None:
    """Autoescape must cover everything: no template opts out of it."""
    for path in TEMPLATES.glob("*.html"):
        text = path.read_text().replace(" ", "")
        assert "|safe" not in text and "autoescape" not in text, path.name
