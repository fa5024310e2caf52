"""The `soak` command line: parse arguments, call one core function, map errors to exit codes.

Exit codes: 0 pass, 1 criteria failed, 2 usage or profile error, 3 the run
itself could not be carried out.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from soak import __version__
from soak.errors import EXIT_RUN_FAILED, SoakError
from soak.rundir import STATUS_COMPLETED

app = typer.Typer(
    name="soak",
    help="Soak tests for chat and agent servers that stream replies over WebSockets.\n\n"
    "Example: soak demo",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)

DEFAULT_OUT = Path("reports")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"soak {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Soak tests for chat and agent servers that stream replies over WebSockets."""


def _guarded(action: Callable[[], int]) -> None:
    """Run a command body; turn SoakError into its message and exit code, never a traceback."""
    try:
        code = action()
    except SoakError as exc:
        typer.echo(f"soak: error: {exc.message}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("soak: interrupted", err=True)
        raise typer.Exit(EXIT_RUN_FAILED) from None
    raise typer.Exit(code)


def _status_printer() -> Callable[[str], None]:
    """Rewrite one line in a terminal; print a line every ~10 s otherwise (CI logs)."""
    if sys.stdout.isatty():

        def show(line: str) -> None:
            width = 200
            sys.stdout.write("\r" + line[:width].ljust(min(width, len(line) + 2)))
            sys.stdout.flush()

        return show
    calls = {"n": 0}

    def log(line: str) -> None:
        if calls["n"] % 5 == 0:
            print(line, flush=True)
        calls["n"] += 1

    return log


# --- soak run ------------------------------------------------------------------
@app.command()
def run(
    profile: Annotated[
        Path, typer.Argument(metavar="PROFILE", help="Profile TOML file, e.g. profiles/demo.toml.")
    ],
    target: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            metavar="URL",
            help="WebSocket URL of a target, as URL or NAME=URL; repeat for several "
            "targets (users split evenly). Replaces the profile's targets.",
        ),
    ] = None,
    health: Annotated[
        list[str] | None,
        typer.Option(
            "--health", metavar="URL", help="/health URL of each --target, in the same order."
        ),
    ] = None,
    pid: Annotated[
        list[int] | None,
        typer.Option("--pid", metavar="PID", help="Process id of each target to sample, in order."),
    ] = None,
    users: Annotated[
        int | None, typer.Option(metavar="N", help="Concurrent chats in total.")
    ] = None,
    duration: Annotated[
        str | None, typer.Option(metavar="DURATION", help="How long to load: 90s, 2h, 3d.")
    ] = None,
    out: Annotated[
        Path, typer.Option(metavar="DIR", help="Folder that receives the run directory.")
    ] = (DEFAULT_OUT),
    label: Annotated[
        str, typer.Option(metavar="NAME", help="Label in the run directory's name.")
    ] = "run",
    report: Annotated[bool, typer.Option(help="Write the report when the run ends.")] = True,
) -> None:
    """Run a soak test: chat load and process/health sampling into a run directory.

    Example: soak run profiles/demo.toml --target ws://127.0.0.1:8765/ws
    --health http://127.0.0.1:8765/health --users 50 --duration 2h --label nightly
    """

    def body() -> int:
        from soak.profile import apply_overrides, load_profile
        from soak.run import execute_run

        loaded = apply_overrides(
            load_profile(profile),
            targets=target,
            health=health,
            pids=pid,
            users=users,
            duration=duration,
        )
        typer.echo(
            f"soak: running {loaded.name} against {', '.join(t.name for t in loaded.targets)}"
        )
        outcome = execute_run(loaded, out_root=out, label=label, on_status=_status_printer())
        typer.echo("")
        typer.echo(f"soak: run {outcome.status}: {outcome.run.path}")
        if outcome.message:
            typer.echo(f"soak: {outcome.message}", err=True)
        code = _report_and_print(outcome.run.path) if report else 0
        return code if outcome.status == STATUS_COMPLETED else EXIT_RUN_FAILED

    _guarded(body)


# --- soak report ----------------------------------------------------------------
@app.command()
def report(
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN_DIR", help="A run directory made by soak run.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR", help="Write the report here instead of into the run directory."
        ),
    ] = None,
) -> None:
    """Analyse a run directory and write report.html, report.md, summary.json and junit.xml.

    Works on finished, running and killed runs. Exit code 1 when a criterion fails.

    Example: soak report reports/20261121T124200Z_demo_ab
    """
    _guarded(lambda: _report_and_print(run_dir, out))


def _report_and_print(run_dir: Path, out: Path | None = None) -> int:
    from soak.report import build_report

    result = build_report(run_dir, out)
    typer.echo(verdict_table(result.summary))
    typer.echo(f"report: {result.paths['html']}")
    return result.exit_code


def verdict_table(summary: dict[str, Any]) -> str:
    """A plain-text verdict table: one row per target, failing criteria named."""
    rows = [("target", "verdict", "failed criteria")]
    for name, numbers in summary["targets"].items():
        failed = [
            c["expression"]
            for c in summary["criteria"]
            if c["target"] == name and c["status"] == "fail"
        ]
        rows.append((name, numbers["verdict"].upper(), ", ".join(failed) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = [f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}" for row in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


# --- soak demo --------------------------------------------------------------------
@app.command()
def demo(
    duration: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="Override the demo's load duration (default: the profile's, 100s).",
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(metavar="DIR", help="Folder that receives the run directory.")
    ] = (DEFAULT_OUT),
    profile: Annotated[
        Path | None,
        typer.Option(metavar="PROFILE", help="Demo profile (default: profiles/demo.toml)."),
    ] = None,
) -> None:
    """Start the built-in target twice (with faults, and --patched), soak both, report.

    Exit code 0 when the demo ran as intended: the faulty build fails its
    criteria and the patched build passes them. Takes about 2.5 minutes.

    Example: soak demo
    """

    def body() -> int:
        from soak.demo import run_demo

        return run_demo(
            out_root=out, duration=duration, profile_path=profile, on_status=_status_printer()
        )

    _guarded(body)


# --- soak target ----------------------------------------------------------------------
def _target_command() -> Callable[..., None]:
    """`soak target`, with one option per field of the target's config (generated)."""
    from soak.target import OPTIONS, TargetConfig
    from soak.target import run as serve_target

    def target(**options: Any) -> None:
        _guarded(lambda: serve_target(TargetConfig(**options)) or 0)

    parameters = []
    for option in OPTIONS:
        kind = (
            option.type if option.default is not None or option.type is bool else option.type | None
        )
        parameters.append(
            inspect.Parameter(
                option.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Option(
                    option.default,
                    option.flag,
                    help=option.help,
                    metavar=option.type.__name__.upper(),
                ),
                annotation=kind,
            )
        )
    target.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    target.__doc__ = (
        "Serve the built-in target: a WebSocket chat server with switchable slow failures.\n\n"
        "Faults (thread leak, silent stalls, event-loop blocks, orphaned tickers, unbounded "
        "history) are on by default; --patched turns them all off.\n\n"
        "Example: soak target --port 8765 --stall-every 20"
    )
    return target


app.command("target")(_target_command())


def main() -> None:
    """Console-script entry point."""
    app()
