"""`soak compare`: name the two sides, analyse, compare, write compare.{json,md,html} + plots."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from soak.analyze.summary import Analysis, analyze_run
from soak.compare.core import FAIL_ON, Comparison, Side, compare_sides
from soak.compare.plots import render_compare_plots
from soak.compare.render import compare_json, render_html, render_markdown
from soak.errors import EXIT_CRITERIA_FAILED, EXIT_PASS, RunDirError, UsageError
from soak.model import to_json
from soak.rundir import safe_name, write_text_atomic
from soak.runs import resolve_run, split_target

COMPARE_JSON = "compare.json"
COMPARE_MD = "compare.md"
COMPARE_HTML = "compare.html"
PLOTS_DIR = "plots"


@dataclass(frozen=True)
class CompareResult:
    """What `build_compare` wrote and the comparison it wrote it from."""

    comparison: Comparison
    out_dir: Path
    json_path: Path
    markdown_path: Path
    html_path: Path
    plot_paths: list[Path]

    def exit_code(self, fail_on: str) -> int:
        """1 when a row's verdict trips `fail_on` (see core.FAIL_ON), else 0."""
        return EXIT_CRITERIA_FAILED if self.comparison.failed(fail_on) else EXIT_PASS


class Analyses:
    """Analyses by resolved run directory: a run named twice is analysed once."""

    def __init__(self) -> None:
        self._done: dict[Path, Analysis] = {}

    def get(self, path: Path) -> Analysis:
        key = path.resolve()
        if key not in self._done:
            self._done[key] = analyze_run(path)
        return self._done[key]


def pick_target(analysis: Analysis, wanted: str | None) -> str:
    """The target `wanted`, or the run's only target; UsageError says which exist."""
    names = list(analysis.targets)
    run_id = analysis.summary.run_id
    if wanted is not None:
        if wanted in names:
            return wanted
        raise UsageError(
            f"run {run_id} has no target {wanted!r}; its targets: {', '.join(names) or 'none'}."
        )
    if len(names) == 1:
        return names[0]
    if not names:
        raise RunDirError(f"run {run_id} has no targets in its manifest or targets/ folder.")
    raise UsageError(
        f"run {run_id} has targets {', '.join(names)}: pick one with {run_id}:{names[0]} "
        "or --target NAME."
    )


def open_sides(
    specs: list[str], root: Path, target: str | None = None, analyses: Analyses | None = None
) -> tuple[Side, Side]:
    """(base, candidate) from `BASE CANDIDATE` or from one A/B run (its first two targets).

    Each spec is a run name (see soak.runs) with an optional `:TARGET`; `target` picks
    the target of a run that names none.
    """
    analyses = analyses or Analyses()
    if len(specs) == 1:
        run_spec, named = split_target(specs[0])
        analysis = analyses.get(resolve_run(run_spec, root))
        names = list(analysis.targets)
        if named is None and len(names) == 2:
            return Side(analysis, names[0]), Side(analysis, names[1])
        run_id = analysis.summary.run_id
        if len(names) > 2:
            hint = f"name two of its targets ({', '.join(names)}): {run_id}:A {run_id}:B"
        else:
            hint = "give a second run: soak compare BASE CANDIDATE"
        raise UsageError(f"one run compares with itself only as an A/B run; {hint}.")
    if len(specs) != 2:
        raise UsageError(
            f"compare takes a base and a candidate (or one A/B run), got {len(specs)} runs; "
            "for several runs use soak release."
        )
    sides = []
    for spec in specs:
        run_spec, named = split_target(spec)
        analysis = analyses.get(resolve_run(run_spec, root))
        sides.append(Side(analysis, pick_target(analysis, named or target)))
    return sides[0], sides[1]


def default_out(comparison: Comparison) -> Path:
    """Where compare writes by default: a folder inside the candidate's run directory."""
    base, cand = comparison.base, comparison.candidate
    if comparison.paired:
        name = f"compare_{safe_name(base.target)}_vs_{safe_name(cand.target)}"
    else:
        name = f"compare_vs_{safe_name(base.run_summary.run_id)}"
    return cand.analysis.run.path / name


def build_compare(
    specs: list[str], root: Path, target: str | None = None, out_dir: Path | None = None
) -> CompareResult:
    """Name, analyse and compare the two sides; write the compare files into `out_dir`."""
    base, candidate = open_sides(specs, root, target)
    comparison = compare_sides(base, candidate)
    return write_compare(comparison, out_dir or default_out(comparison))


def write_compare(comparison: Comparison, out: Path) -> CompareResult:
    """Write compare.json, compare.md, compare.html and plots/ into `out`."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        plots = render_compare_plots(comparison, out / PLOTS_DIR)
        texts = {
            COMPARE_JSON: json.dumps(to_json(compare_json(comparison)), indent=2, allow_nan=False),
            COMPARE_MD: render_markdown(comparison, plots, out),
            COMPARE_HTML: render_html(comparison, plots),
        }
        for name, text in texts.items():
            write_text_atomic(out / name, text)
    except OSError as exc:
        raise RunDirError(
            f"cannot write the comparison into {out}: {exc.strerror or exc}; "
            "give a writable folder with --out."
        ) from None
    return CompareResult(
        comparison=comparison,
        out_dir=out,
        json_path=out / COMPARE_JSON,
        markdown_path=out / COMPARE_MD,
        html_path=out / COMPARE_HTML,
        plot_paths=[plot.path for plot in plots],
    )


def check_fail_on(fail_on: str) -> str:
    """`fail_on` when it is a known level; UsageError naming the levels otherwise."""
    if fail_on not in FAIL_ON:
        raise UsageError(f"--fail-on {fail_on!r} is not a level; use one of {', '.join(FAIL_ON)}.")
    return fail_on
