"""Listing run directories and naming them: by path, unique prefix, glob or `latest`.

`soak runs` lists the run directories under a root (default `reports/`) with their
status, label, profile, duration and verdict; `soak compare` and `soak release` name
runs the same way:

- a path to a run directory (`reports/20261121T130102Z_demo_ab`);
- a unique prefix of a run directory's name under the root (`20261121T13`);
- a glob over the names under the root (`*_nightly`); `soak compare` needs it to
  match one run, `soak release` takes every match;
- `latest` (the newest run), `latest~1` (the one before), ...

Any of them may end in `:TARGET` to pick one target of a run (`latest:patched`).
"""

from __future__ import annotations

import fnmatch
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from soak.errors import RunDirError, SoakError, UsageError
from soak.formatting import plural
from soak.model import read_summary
from soak.rundir import MANIFEST, RunDir, iso
from soak.units import format_duration

#: Status shown for a directory that looks like a run but cannot be read.
UNREADABLE = "unreadable"
#: File `soak report` writes; its `verdict` is shown by `soak runs`.
SUMMARY_JSON = "summary.json"

#: Directory names made by `soak run`: <utc-stamp>_<profile>_<label>.
_RUN_NAME = re.compile(r"^(\d{8}T\d{6}Z)_")
_LATEST = re.compile(r"^latest(?:~(\d+))?$")
_TARGET = re.compile(r"^[A-Za-z0-9._-]+$")
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class RunEntry:
    """One directory under the root as `soak runs` shows it.

    `status` is running / completed / aborted / crashed, or `unreadable` (with `error`).
    `started_at` is Unix seconds (from the manifest, else the name's stamp, else mtime);
    `duration_s` runs to `ended_at`, or to the newest file for a run without one.
    """

    path: Path
    status: str
    started_at: float
    label: str | None = None
    profile: str | None = None
    duration_s: float | None = None
    verdict: str | None = None
    targets: tuple[str, ...] = ()
    error: str | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def readable(self) -> bool:
        return self.status != UNREADABLE

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.name,
            "path": str(self.path),
            "status": self.status,
            "started_at_iso": iso(self.started_at),
            "label": self.label,
            "profile_name": self.profile,
            "duration_s": self.duration_s,
            "verdict": self.verdict,
            "targets": list(self.targets),
            "error": self.error,
        }


def looks_like_run(path: Path) -> bool:
    """A directory with a manifest, or named like one `soak run` makes (even if broken)."""
    return path.is_dir() and ((path / MANIFEST).exists() or bool(_RUN_NAME.match(path.name)))


def list_runs(root: Path) -> list[RunEntry]:
    """The run directories directly under `root`, oldest first; broken ones as unreadable.

    Raises UsageError when `root` is not a directory.
    """
    if not root.is_dir():
        raise UsageError(
            f"{root} is not a directory; give the folder that holds run directories "
            "(soak run writes them under reports/ by default)."
        )
    entries = [read_entry(path) for path in root.iterdir() if looks_like_run(path)]
    return sorted(entries, key=lambda entry: (entry.started_at, entry.name))


def read_entry(path: Path) -> RunEntry:
    """What `soak runs` shows for one directory; never raises for a broken run."""
    try:
        run = RunDir(path)
        manifest = run.manifest()
        status = run.status()
        started = manifest.get("started_at")
        if isinstance(started, bool) or not isinstance(started, int | float):
            raise RunDirError(f"{run.manifest_path} has no numeric started_at; it is damaged.")
        return RunEntry(
            path=path,
            status=status,
            started_at=float(started),
            label=_text(manifest.get("label")),
            profile=_text(manifest.get("profile_name")),
            duration_s=_duration(path, manifest, float(started)),
            verdict=_verdict(path),
            targets=tuple(t.name for t in run.targets() if isinstance(t.name, str)),
        )
    except (SoakError, OSError, TypeError, ValueError) as exc:
        message = exc.message if isinstance(exc, SoakError) else str(exc)
        return RunEntry(path=path, status=UNREADABLE, started_at=_stamp(path), error=message)


def runs_table(entries: list[RunEntry]) -> str:
    """The plain-text table `soak runs` prints."""
    header = ("run", "status", "label", "profile", "duration", "verdict")
    rows = [header]
    for entry in entries:
        duration = format_duration(entry.duration_s) if entry.duration_s is not None else "-"
        verdict = entry.verdict or "-"
        if not entry.readable:
            verdict = entry.error or "-"
        rows.append(
            (
                entry.name,
                entry.status,
                entry.label or "-",
                entry.profile or "-",
                duration,
                verdict,
            )
        )
    return text_table(rows)


def text_table(rows: list[tuple[str, ...]]) -> str:
    """Rows of plain-text cells as aligned columns; the first row is the header.

    The last column is not padded (it holds the longest texts).
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    ]
    lines.insert(1, "-" * min(max(len(line) for line in lines), 120))
    return "\n".join(line.rstrip() for line in lines)


def split_target(spec: str) -> tuple[str, str | None]:
    """`RUN:TARGET` -> (RUN, TARGET); a spec without a target suffix -> (spec, None).

    An existing path is never split, so a directory name with a colon still works.
    """
    head, sep, tail = spec.rpartition(":")
    if not sep or not head or not _TARGET.match(tail) or Path(spec).exists():
        return spec, None
    return head, tail


def resolve_run(spec: str, root: Path) -> Path:
    """The one run directory `spec` names (path, unique prefix, glob, latest, latest~N).

    Raises UsageError when nothing or more than one run matches.
    """
    matches = _matches(spec, root)
    if len(matches) == 1:
        return matches[0]
    names = ", ".join(path.name for path in matches[-8:])
    raise UsageError(
        f"{spec!r} matches {len(matches)} runs under {root} ({names}); name one run: "
        "a longer prefix, its path, or latest."
    )


def resolve_runs(specs: list[str], root: Path) -> list[Path]:
    """Every run the specs name, in the order given (a glob adds all its matches, oldest first).

    A run named twice is kept once. Raises UsageError when a spec matches nothing, or a
    prefix matches more than one run.
    """
    found: list[Path] = []
    for spec in specs:
        paths = _matches(spec, root)
        if len(paths) > 1 and not _is_glob(spec):
            names = ", ".join(path.name for path in paths[-8:])
            raise UsageError(
                f"{spec!r} is a prefix of {len(paths)} runs under {root} ({names}); "
                "make it longer, or use a glob such as '20261121*' to take them all."
            )
        found += [path for path in paths if path not in found]
    return found


def _matches(spec: str, root: Path) -> list[Path]:
    """The run directories `spec` names; UsageError when none."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return [path]
    latest = _LATEST.match(spec)
    if latest or _is_glob(spec) or (spec and "/" not in spec):
        if not root.is_dir():
            raise UsageError(
                f"{spec!r} is not a directory, and there is no run folder {root} to look it "
                "up in; give the path of a run directory, or --root DIR."
            )
        runs = [e for e in list_runs(root) if e.readable]
        if latest:
            back = int(latest.group(1) or 0)
            if back < len(runs):
                return [runs[-1 - back].path]
            raise UsageError(
                f"{spec!r}: there {'are' if len(runs) > 1 else 'is'} "
                f"{'only ' + plural(len(runs), 'readable run') if runs else 'no readable run'} "
                f"under {root}; see soak runs --out {root}."
            )
        if _is_glob(spec):
            hits = [e.path for e in runs if fnmatch.fnmatchcase(e.name, spec)]
        else:
            hits = [e.path for e in runs if e.name.startswith(spec)]
        if hits:
            return hits
    raise UsageError(
        f"no run directory {spec!r}: not a path, and no run under {root} starts with or "
        "matches it; list them with soak runs."
    )


def _is_glob(spec: str) -> bool:
    return any(char in _GLOB_CHARS for char in spec)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _stamp(path: Path) -> float:
    """Start time from a run directory's name, else its modification time (Unix s)."""
    match = _RUN_NAME.match(path.name)
    if match:
        stamp = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        return stamp.timestamp()
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _duration(path: Path, manifest: dict[str, Any], started: float) -> float:
    """Seconds from start to `ended_at`; without one, to the newest file (or now, if running)."""
    ended = manifest.get("ended_at")
    if isinstance(ended, int | float) and not isinstance(ended, bool):
        return max(0.0, float(ended) - started)
    if manifest.get("status") == "running" and RunDir(path).status() == "running":
        return max(0.0, time.time() - started)
    newest = max((p.stat().st_mtime for p in path.rglob("*.jsonl")), default=started)
    return max(0.0, newest - started)


def _verdict(path: Path) -> str | None:
    """`PASS`, `FAIL: target, ...` or `INCONCLUSIVE: target, ...` from summary.json; None
    without a readable one of a known schema."""
    try:
        summary = read_summary(json.loads((path / SUMMARY_JSON).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    verdict = summary.verdict
    if verdict not in ("pass", "fail", "inconclusive"):
        return None
    if verdict == "pass":
        return "PASS"
    named = [name for name, entry in summary.targets.items() if entry.verdict == verdict]
    return verdict.upper() + (": " + ", ".join(named) if named else "")
