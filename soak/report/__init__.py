"""`soak report`: summary.json, report.md, report.html, junit.xml and plots/ from a run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from soak.analyze.summary import analyze_run
from soak.errors import EXIT_CRITERIA_FAILED, EXIT_INCONCLUSIVE, EXIT_PASS, RunDirError
from soak.model import RunSummary
from soak.report.html import render_html
from soak.report.junit import render_junit
from soak.report.markdown import render_markdown
from soak.report.plots import render_plots
from soak.rundir import write_text_atomic

SUMMARY_JSON = "summary.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
JUNIT_XML = "junit.xml"
PLOTS_DIR = "plots"


@dataclass(frozen=True)
class ReportResult:
    """What `build_report` wrote, the summary, and the exit code (0 pass, 1 fail,
    4 inconclusive)."""

    summary: RunSummary
    exit_code: int
    summary_path: Path
    markdown_path: Path
    html_path: Path
    junit_path: Path
    plot_paths: list[Path]

    @property
    def verdict(self) -> str:
        return self.summary.verdict or "inconclusive"

    @property
    def paths(self) -> dict[str, Path]:
        """The four report files by kind: summary, markdown, html, junit."""
        return {
            "summary": self.summary_path,
            "markdown": self.markdown_path,
            "html": self.html_path,
            "junit": self.junit_path,
        }


def verdict_exit_code(verdict: str) -> int:
    """The exit code of a verdict: 0 pass, 1 fail, 4 inconclusive."""
    return {"pass": EXIT_PASS, "fail": EXIT_CRITERIA_FAILED}.get(verdict, EXIT_INCONCLUSIVE)


def build_report(
    run_path: Path, out_dir: Path | None = None, md_images: str | None = None
) -> ReportResult:
    """Analyse a run directory and write the report files into `out_dir` (default: the run).

    md_images: the URL report.md links plots/ under (default: relative to report.md).
    Raises RunDirError when the run directory is unreadable or the output unwritable.
    """
    analysis = analyze_run(run_path)
    out = Path(out_dir) if out_dir is not None else analysis.run.path
    summary = analysis.summary
    try:
        out.mkdir(parents=True, exist_ok=True)
        plots = render_plots(analysis, out / PLOTS_DIR)
        paths = {
            SUMMARY_JSON: json.dumps(
                summary.to_json(), indent=2, allow_nan=False, ensure_ascii=False
            ),
            REPORT_MD: render_markdown(summary, plots, out, md_images),
            REPORT_HTML: render_html(analysis, plots),
            JUNIT_XML: render_junit(summary),
        }
        for name, text in paths.items():
            write_text_atomic(out / name, text)
    except OSError as exc:
        raise RunDirError(
            f"cannot write the report into {out}: {exc.strerror or exc}; "
            "give a writable output directory."
        ) from None
    return ReportResult(
        summary=summary,
        exit_code=verdict_exit_code(summary.verdict or "inconclusive"),
        summary_path=out / SUMMARY_JSON,
        markdown_path=out / REPORT_MD,
        html_path=out / REPORT_HTML,
        junit_path=out / JUNIT_XML,
        plot_paths=[plot.path for plot in plots],
    )
