"""The `soak` command line: parse arguments, call one core function, map errors to exit codes.

Exit codes: 0 pass, 1 criteria failed, 2 usage or profile error, 3 the run
itself could not be carried out.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from soak import __version__
from soak.errors import EXIT_RUN_FAILED, OutputClosed, SoakError, UsageError
from soak.live import LiveStatus
from soak.redact import guard_output
from soak.rundir import (
    STATUS_COMPLETED,
    STATUS_FAILED,
    UNWRITABLE_ERRNOS,
    RunDir,
    storage_error,
)

if TYPE_CHECKING:
    from soak.model import RunSummary

app = typer.Typer(
    name="soak",
    help="Soak tests for chat and agent servers that stream replies over WebSockets.\n\n"
    "Example: soak demo",
    no_args_is_help=True,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)

# typer prints an argument's Python type after its metavar ("RUN <str>", "RUN...
# <list[str]>"); the metavar and the help already say what to write.
typer.core.TyperArgument.display_type_rich = lambda self, ctx: None  # type: ignore[method-assign]

DEFAULT_OUT = Path("reports")
_ROOT = Annotated[
    Path,
    typer.Option(
        "--root", metavar="DIR", help="Folder where run names (prefix, glob, latest) are found."
    ),
]


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
    """Run a command body; turn SoakError into its message and exit code, never a traceback.

    A file soak cannot write is one line and exit 3; so is a bug of soak's own (its
    traceback goes to a file the line names), never exit 1, which means "criteria failed".
    """
    try:
        code = action()
    except SoakError as exc:
        _say_error(exc.message)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        _say_error("interrupted", prefix="soak: ")
        raise typer.Exit(EXIT_RUN_FAILED) from None
    except OSError as exc:
        if exc.errno not in UNWRITABLE_ERRNOS:
            _say_error(f"internal error: {type(exc).__name__}: {exc} ({_save_traceback()})")
        else:
            _say_error(storage_error(Path(exc.filename or "?"), exc).message)
        raise typer.Exit(EXIT_RUN_FAILED) from None
    except Exception as exc:  # noqa: BLE001 - a bug must still end in one line and exit 3
        _say_error(f"internal error: {type(exc).__name__}: {exc} ({_save_traceback()})")
        raise typer.Exit(EXIT_RUN_FAILED) from None
    raise typer.Exit(code)


def _say_error(message: str, prefix: str = "soak: error: ") -> None:
    """One line on stderr, even when stderr is a closed pipe."""
    with contextlib.suppress(OSError):
        typer.echo(f"{prefix}{message}", err=True)


def _save_traceback() -> str:
    """Write the current exception's traceback to a temporary file; where it went."""
    try:
        with tempfile.NamedTemporaryFile(
            "w", prefix="soak-traceback-", suffix=".txt", delete=False
        ) as handle:
            traceback.print_exc(file=handle)
    except OSError:
        return "no traceback saved: the temporary folder is not writable"
    return f"traceback in {handle.name}; please report it"


def _status_printer() -> Callable[[LiveStatus], None]:
    """Rewrite one line that fits the terminal; print a line every ~10 s otherwise (CI
    logs). A warning that starts gets a line of its own on stderr, either way."""
    tty = sys.stdout.isatty()
    calls = {"n": 0, "closed": False}

    def show(live: LiveStatus) -> None:
        if calls["closed"]:
            return
        try:
            print_status(live)
        except OSError as exc:  # `soak run ... | head`: the reader went away
            calls["closed"] = True
            _detach_stdout()
            raise OutputClosed(
                f"standard output was closed ({exc.strerror or exc}): the run is ended "
                "here, what it recorded so far is kept"
            ) from None

    def print_status(live: LiveStatus) -> None:
        width = shutil.get_terminal_size((200, 24)).columns - 1 if tty else 200
        for warning in live.started:
            if tty:
                sys.stdout.write("\r" + " " * width + "\r")
            typer.echo(f"soak: warning: {warning.message}", err=True)
        for warning in live.cleared:
            typer.echo(f"soak: cleared: {warning.message}", err=True)
        if tty:
            line = live.line(width)
            sys.stdout.write("\r" + line.ljust(width))
            sys.stdout.flush()
        elif calls["n"] % 5 == 0:
            print(live.line(), flush=True)
        calls["n"] += 1

    return show


def _detach_stdout() -> None:
    """Point stdout at /dev/null, so later prints (and the exit flush) cannot fail too."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


# --- options shared by soak run and soak collect ---------------------------------------
HealthOption = Annotated[
    list[str] | None,
    typer.Option("--health", metavar="URL", help="/health URL of each --target, in order."),
]
PidOption = Annotated[
    list[int] | None,
    typer.Option("--pid", metavar="PID", help="Process id of each target to sample, in order."),
]
OutOption = Annotated[
    Path, typer.Option(metavar="DIR", help="Folder that receives the run directory.")
]
LabelOption = Annotated[
    str, typer.Option(metavar="NAME", help="Label in the run directory's name.")
]
ReportOption = Annotated[bool, typer.Option(help="Write the report when it ends.")]
SpawnOption = Annotated[
    list[str] | None,
    typer.Option(
        "--spawn",
        metavar="CMD",
        help="Start each target with this command (split like a shell, run without one), "
        "in target order; its stdout/stderr go to the run directory, it is stopped at the "
        'end. Example: --spawn "python -m myserver --port 8765".',
    ),
]
ProcessOption = Annotated[
    list[str] | None,
    typer.Option(
        "--process",
        metavar="REGEX",
        help="Find each target's process by a regular expression on its name or command "
        "line, in target order (also after a restart).",
    ),
]
ContainerOption = Annotated[
    list[str] | None,
    typer.Option(
        "--container",
        metavar="NAME",
        help="Docker or podman container of each target, by name or id, in target order "
        "(its pid by docker inspect). Example: --container chat-server.",
    ),
]
CgroupOption = Annotated[
    list[str] | None,
    typer.Option(
        "--cgroup",
        metavar="PATH",
        help="cgroup of each target, in target order: its oldest process (or the one "
        "--process matches) is the target; any container runtime. "
        "Example: --cgroup /kubepods.slice/kubepods-pod1.slice.",
    ),
]
MetricsPortOption = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        metavar="PORT",
        help="Serve the latest samples for Prometheus at http://127.0.0.1:PORT/metrics "
        "(needs pip install 'soak[metrics]').",
    ),
]


def _argv_lists(commands: list[str] | None) -> list[list[str]] | None:
    """--spawn values as argv lists (shlex rules, no shell)."""
    if not commands:
        return None
    import shlex

    argvs = []
    for command in commands:
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise UsageError(f"--spawn {command!r}: {exc}; check the quotes.") from None
        if not argv:
            raise UsageError("--spawn needs a command, e.g. --spawn 'python -m myserver'.")
        argvs.append(argv)
    return argvs


# --- soak run ------------------------------------------------------------------
@app.command()
def run(
    profile: Annotated[
        Path | None,
        typer.Argument(
            metavar="PROFILE",
            help="Profile TOML file, e.g. profiles/demo.toml (optional with --resume).",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            metavar="RUN_DIR",
            help="Carry on a crashed or aborted run, appending to its directory (path, "
            "prefix under --out, or latest). Secrets: pass PROFILE and the same options again.",
        ),
    ] = None,
    target: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            metavar="URL",
            help="WebSocket URL of a target, as URL or NAME=URL; repeat for several "
            "targets (users split evenly). Replaces the profile's targets.",
        ),
    ] = None,
    health: HealthOption = None,
    pid: PidOption = None,
    users: Annotated[
        int | None, typer.Option(metavar="N", help="Concurrent chats in total.")
    ] = None,
    duration: Annotated[
        str | None, typer.Option(metavar="DURATION", help="How long to load: 90s, 2h, 3d.")
    ] = None,
    idle_after: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="No load for this long after it (idle CPU): 0s, 30s, 10m. Default: the "
            "profile's [load] idle_after.",
        ),
    ] = None,
    out: OutOption = DEFAULT_OUT,
    label: LabelOption = "run",
    report: ReportOption = True,
    spawn: SpawnOption = None,
    process: ProcessOption = None,
    metrics_port: MetricsPortOption = None,
    workers: Annotated[
        int,
        typer.Option(
            metavar="N",
            help="Run the users in N local worker processes under a Locust master "
            "(more than one core's worth of chats). 0: one load process.",
        ),
    ] = 0,
    master_bind: Annotated[
        str | None,
        typer.Option(
            metavar="HOST[:PORT]",
            help="Listen for `soak worker`s from other machines here (port 5557 by default); "
            "the load waits for at least one worker.",
        ),
    ] = None,
    web: Annotated[
        bool, typer.Option("--web", help="Serve Locust's web UI on 127.0.0.1 (live charts).")
    ] = False,
    web_port: Annotated[int, typer.Option(metavar="PORT", help="Port of the --web UI.")] = 8089,
    collector_listen: Annotated[
        str | None,
        typer.Option(
            metavar="HOST:PORT",
            help="Accept `soak collect --join` from the machines of remote = true targets "
            "here (the profile's [collector] listen; its secret comes from [collector] secret). "
            "Example: --collector-listen 0.0.0.0:7557",
        ),
    ] = None,
) -> None:
    """Run a soak test: chat load and process/health sampling into a run directory.

    Example: soak run profiles/demo.toml --target ws://127.0.0.1:8765/ws
    --health http://127.0.0.1:8765/health --users 50 --duration 2h --label nightly

    Distributed: soak run profiles/demo.toml --workers 2 --web   (master + 2 local workers)

    After a crash or kill: soak run --resume latest

    A target on another machine (remote = true, SOAK_COLLECT_SECRET exported):
    soak run profiles/lab.toml --collector-listen 0.0.0.0:7557
    """

    def body() -> int:
        from soak.profile import apply_overrides, load_profile
        from soak.run import execute_run, resumable_profile, resume_run
        from soak.runs import resolve_run

        if profile is None and resume is None:
            raise UsageError(
                "give a PROFILE (e.g. soak run profiles/demo.toml), or --resume RUN_DIR."
            )
        run_dir = None if resume is None else RunDir(resolve_run(str(resume), out))
        loaded = apply_overrides(
            load_profile(profile) if profile else resumable_profile(run_dir),
            targets=target,
            health=health,
            pids=pid,
            users=users,
            duration=duration,
            idle_after=idle_after,
            process=process,
            spawn=_argv_lists(spawn),
            collector_listen=collector_listen,
        )
        names = ", ".join(t.name for t in loaded.targets)
        for warning in loaded.warnings:
            typer.echo(f"soak: warning: {warning}", err=True)
        if run_dir is not None:
            typer.echo(f"soak: resuming {run_dir.path} against {names}")
            outcome = resume_run(
                run_dir, loaded, on_status=_status_printer(), metrics_port=metrics_port
            )
            return _ended(outcome, "run", report)
        typer.echo(f"soak: running {loaded.name} against {names}")
        outcome = execute_run(
            loaded,
            out_root=out,
            label=label,
            on_status=_status_printer(),
            metrics_port=metrics_port,
            workers=workers,
            master_bind=master_bind,
            web_port=web_port if web else None,
        )
        return _ended(outcome, "run", report)

    _guarded(body)


# --- soak worker ------------------------------------------------------------------
@app.command()
def worker(
    master: Annotated[
        str,
        typer.Option(
            metavar="HOST[:PORT]", help="Address of the load master (soak run --master-bind)."
        ),
    ],
) -> None:
    """Join a distributed soak run from another machine and run its share of the chat users.

    The master sends the resolved profile, secrets included: use a trusted network.
    The worker stops when the master's run ends (or on Ctrl-C).

    Example: soak worker --master 10.0.0.5:5557   (master: soak run PROFILE --master-bind 0.0.0.0)
    """

    def body() -> int:
        import os

        host, sep, port = master.rpartition(":")
        if sep and not port.isdigit() or not (host if sep else master):
            raise UsageError(f"--master must be HOST or HOST:PORT, got {master!r}.")
        from soak.child import module_argv, module_env

        argv = module_argv("soak.load", "--worker", master if sep else f"{master}:5557")
        sys.stdout.flush()
        os.execve(sys.executable, argv, module_env())  # gevent must patch a fresh interpreter
        return 0  # not reached

    _guarded(body)


# --- soak collect -----------------------------------------------------------------
@app.command()
def collect(
    profile: Annotated[
        Path | None,
        typer.Argument(
            metavar="PROFILE",
            help="Profile TOML file (optional: targets, [collector] settings and criteria).",
            show_default=False,
        ),
    ] = None,
    target: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            metavar="URL",
            help="Target as URL or NAME=URL (its port finds the process); repeatable. "
            "Replaces the profile's targets.",
        ),
    ] = None,
    health: HealthOption = None,
    pid: PidOption = None,
    port: Annotated[
        list[int] | None,
        typer.Option("--port", metavar="PORT", help="Port each target listens on, in order."),
    ] = None,
    process: ProcessOption = None,
    spawn: SpawnOption = None,
    container: ContainerOption = None,
    cgroup: CgroupOption = None,
    interval: Annotated[
        str | None, typer.Option(metavar="DURATION", help="Sampling interval: 1s, 5s.")
    ] = None,
    duration: Annotated[
        str | None,
        typer.Option(metavar="DURATION", help="How long to watch: 2h, 3d (default: until Ctrl-C)."),
    ] = None,
    pyspy: Annotated[
        bool,
        typer.Option("--pyspy", help="py-spy thread dumps every collector.pyspy_every."),
    ] = False,
    metrics_port: MetricsPortOption = None,
    out: OutOption = DEFAULT_OUT,
    label: LabelOption = "collect",
    report: ReportOption = True,
    join: Annotated[
        str | None,
        typer.Option(
            metavar="HOST:PORT",
            help="Also ship the samples to the running `soak run` listening there "
            "([collector] listen), into its run directory; this collect's own run directory "
            "is the buffer while the network is down. Example: --join 10.0.0.5:7557",
        ),
    ] = None,
    secret_env: Annotated[
        str,
        typer.Option(
            metavar="VAR",
            help="Environment variable holding the secret shared with the run (--join).",
        ),
    ] = "SOAK_COLLECT_SECRET",
) -> None:
    """Watch a target's process and /health with no load of soak's own, into a run directory.

    For a server that someone else is loading (staging, production-like traffic).
    The run directory has the format of soak run's, so soak report and soak status
    work on it. Ctrl-C ends it (as completed when no --duration was given).

    Example: soak collect --port 8765 --health http://127.0.0.1:8765/health
    --interval 1s --duration 3d --metrics-port 9464

    Into a run on another machine (same target name as its profile, same secret):
    SOAK_COLLECT_SECRET=... soak collect --target gpu1=ws://127.0.0.1:8765/ws --port 8765
    --health http://127.0.0.1:8765/health --join 10.0.0.5:7557
    """

    def body() -> int:
        from soak.profile import apply_overrides, load_profile, profile_from_mapping
        from soak.run import execute_collect, join_of
        from soak.units import parse_duration

        base = load_profile(profile) if profile else profile_from_mapping({"name": "collect"})
        loaded = apply_overrides(
            base,
            targets=target,
            health=health,
            pids=pid,
            ports=port,
            process=process,
            spawn=_argv_lists(spawn),
            containers=container,
            cgroups=cgroup,
            interval=interval,
            pyspy=True if pyspy else None,
        )
        try:
            seconds = parse_duration(duration) if duration else None
        except ValueError as exc:
            raise UsageError(f"--duration: {exc}") from None
        joining = join_of(join, secret_env)
        typer.echo(
            f"soak: collecting {', '.join(t.name for t in loaded.targets) or 'nothing'} "
            f"every {loaded.collector['interval']:g} s (Ctrl-C ends)"
            + (f", shipping to {join}" if join else "")
        )
        outcome = execute_collect(
            loaded,
            out_root=out,
            label=label,
            duration_s=seconds,
            metrics_port=metrics_port,
            on_status=_status_printer(),
            join=joining,
        )
        return _ended(outcome, "collect", report)

    _guarded(body)


def _ended(outcome: Any, what: str, report: bool) -> int:
    """Say how a run or collect ended, write its report; the exit code."""
    typer.echo("")
    typer.echo(f"soak: {what} {outcome.status}: {outcome.run.path}")
    if outcome.message:
        _say_error(outcome.message, prefix="soak: ")
    if outcome.status == STATUS_FAILED:  # its disk is what failed: the report waits for room
        return EXIT_RUN_FAILED
    code = _report_and_print(outcome.run.path) if report else 0
    return code if outcome.status == STATUS_COMPLETED else EXIT_RUN_FAILED


# --- soak merge -------------------------------------------------------------------
@app.command()
def merge(
    run_dir: Annotated[
        str,
        typer.Argument(metavar="RUN", help="The run to import into (path, prefix or latest)."),
    ],
    collected: Annotated[
        str,
        typer.Argument(
            metavar="COLLECTED",
            help="A soak collect run of the same target, recorded on the target's machine.",
        ),
    ],
    target: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            metavar="RUN_NAME=COLLECTED_NAME",
            help="Which target of COLLECTED is which of RUN (default: equal names, or the "
            "only one of each); repeatable.",
        ),
    ] = None,
    clock_offset: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="How far the collect machine's clock is ahead of the run machine's "
            "(1.5s, -200ms); its timestamps are moved back by it. Default: 0 (NTP-synced).",
        ),
    ] = None,
    root: _ROOT = DEFAULT_OUT,
) -> None:
    """Import a separately recorded soak collect run's samples into a run, then report it.

    The target's process, thread and /health samples and its collector events land in
    RUN as if sampled there. Idempotent: merging again imports only what is new (the
    same importer a live soak collect --join feeds). Then soak report / compare RUN.

    Example: soak merge reports/20261121T124200Z_lab_run reports/20261121T124155Z_collect_gpu1
    --target gpu1=t1 --clock-offset 1.5s
    """

    def body() -> int:
        from soak.collect.importer import merge_runs
        from soak.runs import resolve_run

        done = merge_runs(
            resolve_run(run_dir, root), resolve_run(collected, root), target, clock_offset
        )
        files = ", ".join(f"{n} {f}" for f, n in done.records.items() if n) or "nothing new"
        typer.echo(f"soak: merged {done.total} records into {run_dir}: {files}")
        return 0

    _guarded(body)


# --- soak status ------------------------------------------------------------------
@app.command()
def status(
    run_dir: Annotated[
        str,
        typer.Argument(
            metavar="RUN",
            help="A run directory (running or finished), or its name: prefix or latest.",
        ),
    ] = "latest",
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    root: _ROOT = DEFAULT_OUT,
) -> None:
    """Show where a run stands: elapsed, latest samples, growth so far, stalls so far.

    Works while the run goes on and after it ended; reads the directory, never writes.

    Example: soak status latest   (the newest run under reports/)
    """

    def body() -> int:
        import json

        from soak.runs import resolve_run
        from soak.status import format_status, run_status

        result = run_status(resolve_run(run_dir, root))
        typer.echo(json.dumps(result, indent=2, default=str) if as_json else format_status(result))
        return 0

    _guarded(body)


# --- soak report ----------------------------------------------------------------
@app.command()
def report(
    run_dir: Annotated[
        str,
        typer.Argument(
            metavar="RUN", help="A run directory made by soak run, or its name: prefix or latest."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR", help="Write the report here instead of into the run directory."
        ),
    ] = None,
    root: _ROOT = DEFAULT_OUT,
    md_images: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Link report.md's plots under this URL (where plots/ will be hosted, e.g. "
            "a CI artifact), so report.md pastes into a pull request; default: relative.",
        ),
    ] = None,
) -> None:
    """Analyse a run directory and write report.html, report.md, summary.json and junit.xml.

    Works on finished, running and killed runs. Exit code 1 when a criterion fails,
    4 when the evidence falls short of a verdict.

    Example: soak report reports/20261121T124200Z_demo_ab   (or: soak report latest)

    Example (plots hosted for a PR): soak report latest --md-images https://ci.example/run/42
    """

    def body() -> int:
        from soak.runs import resolve_run

        if md_images is not None and not md_images.startswith(("http://", "https://", "/")):
            raise UsageError(
                f"--md-images {md_images!r} is not a URL; give where plots/ will be served, "
                "e.g. --md-images https://ci.example/artifacts/run-42 (or leave it out for "
                "links relative to report.md)."
            )
        return _report_and_print(resolve_run(run_dir, root), out, md_images)

    _guarded(body)


def _report_and_print(run_dir: Path, out: Path | None = None, md_images: str | None = None) -> int:
    from soak.report import build_report

    result = build_report(run_dir, out, md_images=md_images)
    typer.echo(verdict_table(result.summary))
    typer.echo(f"report: {result.paths['html']}")
    return result.exit_code


def verdict_table(summary: RunSummary) -> str:
    """A plain-text verdict table: one row per target with why (failed criteria, or what
    keeps it inconclusive); notes on the warm-up and default criteria below."""
    from soak.report.numbers import verdict_rows

    rows = [("target", "verdict", "why")]
    rows += [(name, verdict.upper(), why or "-") for name, _, verdict, why in verdict_rows(summary)]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = [f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}" for row in rows]
    lines.insert(1, "-" * min(max(len(line) for line in lines), 80))
    if summary.criteria_source == "default":
        lines.append("note: the profile has no criteria; soak's default criteria judged it")
    if summary.warmup_note:
        lines.append(f"note: {summary.warmup_note}")
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
    out: OutOption = DEFAULT_OUT,
    profile: Annotated[
        Path | None,
        typer.Option(metavar="PROFILE", help="Demo profile (default: profiles/demo.toml)."),
    ] = None,
    protocol: Annotated[
        str,
        typer.Option(
            metavar="KIND",
            help="What the load speaks to the targets: json-events (WebSocket chat, the "
            "default), openai-chat, sse or ndjson (HTTP streaming, with the [protocol] of "
            "the shipped openai-chat, sse-agent or ndjson-rpc profile).",
        ),
    ] = "json-events",
) -> None:
    """Start the built-in target twice (with faults, and --patched), soak both, report.

    Exit code 0 when the demo ran as intended: the faulty build fails its
    criteria and the patched build passes them. Takes about 2.5 minutes.

    Example: soak demo --protocol openai-chat
    """

    def body() -> int:
        from soak.demo import run_demo

        return run_demo(
            out_root=out,
            duration=duration,
            profile_path=profile,
            protocol=protocol,
            on_status=_status_printer(),
        )

    _guarded(body)


# --- soak compare / release / runs -----------------------------------------------------
_RUN_NAMES = (
    "Runs are named by path, unique prefix of a run directory under --root, glob, or "
    "latest / latest~1; add :TARGET to pick a target (latest:patched)."
)
_FAIL_ON = Annotated[
    str,
    typer.Option(
        "--fail-on",
        metavar="LEVEL",
        help="Exit 1 when a metric's verdict reaches LEVEL: never, new-failure (default: "
        "the candidate fails a criterion the base passed) or regressed (also any "
        "significant change for the worse).",
    ),
]


@app.command()
def compare(
    runs: Annotated[
        list[str],
        typer.Argument(
            metavar="BASE [CANDIDATE]",
            help="The base and the candidate run; one A/B run alone compares its two targets.",
        ),
    ],
    target: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="The target to compare in runs that have several."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Write compare.html/.md/.json here (default: a compare_* folder in the "
            "candidate's run directory).",
        ),
    ] = None,
    root: _ROOT = DEFAULT_OUT,
    fail_on: _FAIL_ON = "new-failure",
) -> None:
    """Compare a candidate build with a base: fixed, improved, unchanged, regressed, new failure.

    Noise-aware: slopes by confidence intervals, outcome rates by a two-proportion
    z-test, latency percentiles by bootstrap intervals, all with minimum effects.
    Prints the table, writes compare.html, compare.md and compare.json, and warns
    when the runs are not comparable (profile, load, duration, host).
    Runs are named by path, unique prefix under --root, glob, or latest / latest~1;
    add :TARGET to pick a target.

    Example: soak compare latest~1 latest --fail-on regressed

    Example (A/B run: its two targets): soak compare latest
    """

    def body() -> int:
        from soak.compare.build import build_compare, check_fail_on
        from soak.compare.render import text_report

        level = check_fail_on(fail_on)
        result = build_compare(runs, root, target, out)
        typer.echo(text_report(result.comparison))
        typer.echo(f"compare: {result.html_path}")
        failed = result.comparison.failed(level)
        if failed:
            names = ", ".join(f"{row.label} {row.verdict}" for row in failed)
            typer.echo(f"soak: --fail-on {level}: {names}", err=True)
        return result.exit_code(level)

    _guarded(body)


@app.command()
def release(
    runs: Annotated[
        list[str],
        typer.Argument(metavar="RUN...", help="The runs of the release. " + _RUN_NAMES),
    ],
    out: Annotated[
        Path, typer.Option(metavar="DIR", help="Folder that receives the release report.")
    ],
    baseline: Annotated[
        str | None,
        typer.Option(
            metavar="RUN",
            help="The previous release's run: every target is compared against it. "
            "Without it, A/B runs compare their first target with the others.",
        ),
    ] = None,
    root: _ROOT = DEFAULT_OUT,
    fail_on: _FAIL_ON = "new-failure",
) -> None:
    """One release report (HTML + Markdown) from several runs, executive summary on top.

    Each run's report, the comparisons, and release.html / release.md / release.json
    go into --out. Exit code 1 when the release fails: a released target fails its
    criteria, or a comparison reaches --fail-on.

    Example: soak release '20261121*_nightly' latest --baseline 20261101T0900Z --out rel-1.5
    """

    def body() -> int:
        from soak.compare.build import check_fail_on
        from soak.compare.release import build_release, text_summary

        result = build_release(runs, root, out, baseline, check_fail_on(fail_on))
        typer.echo(text_summary(result))
        return result.exit_code

    _guarded(body)


@app.command("runs")
def runs_command(
    out: Annotated[
        Path,
        typer.Option(
            "--out", "--root", metavar="DIR", help="Folder that holds the run directories."
        ),
    ] = DEFAULT_OUT,
) -> None:
    """List run directories: status, label, profile, duration and verdict.

    Status is running, completed, aborted, crashed (the writer is gone), or
    unreadable (a broken directory; the table says why). The verdict comes from
    summary.json (written by soak report), "-" without one.

    Example: soak runs --out reports/
    """

    def body() -> int:
        from soak.runs import list_runs, runs_table

        entries = list_runs(out)
        typer.echo(runs_table(entries) if entries else f"no run directories under {out}")
        return 0

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
        "Serve the built-in target: a chat server with switchable slow failures, speaking "
        "WebSocket chat on /ws and, on the same port, OpenAI-compatible chat completions, "
        "Trinity-style SSE and agentex-style NDJSON over HTTP.\n\n"
        "Faults (thread leak, silent stalls, event-loop blocks, orphaned tickers, unbounded "
        "history) are on by default; --patched turns them all off.\n\n"
        "Example: soak target --port 8765 --stall-every 20"
    )
    return target


app.command("target")(_target_command())


def main() -> None:
    """Console-script entry point; what it prints goes through the redactor a run installs."""
    guard_output()
    app(prog_name="soak")  # also as python -m soak: help, errors and completion say soak
