"""The run directory: the contract between `run`/`collect` and `report`/`compare`.

Layout of one run (`reports/<utc-stamp>_<profile>_<label>/`)::

    manifest.json              format_version, resolved profile (secrets redacted),
                               targets, host, started_at/ended_at, status
    events.jsonl               phases, target restarts, collector errors, run end
    chats.jsonl                one chat aggregate per target per interval
    anomalies.jsonl            one record per non-ok turn (bounded per interval)
    targets/<name>/process.jsonl   process samples (threads, RSS, CPU, fds)
    targets/<name>/threads.jsonl   thread-name families per sample
    targets/<name>/health.jsonl    /health samples (status, latency, JSON body)
    report.html, report.md, summary.json, junit.xml   written by `soak report`

Every data file is JSON Lines, append-only, flushed after each record, so it is
readable while the run goes on and after a kill; a torn last line is skipped.
All timestamps `t` are Unix epoch seconds (float, UTC).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import platform
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import psutil

from soak import __version__
from soak.errors import RunDirError, StorageError
from soak.redact import current as redactor

FORMAT_VERSION = 1

MANIFEST = "manifest.json"
EVENTS = "events.jsonl"
CHATS = "chats.jsonl"
ANOMALIES = "anomalies.jsonl"
GENERATOR = "generator.jsonl"
PROCESS = "process.jsonl"
THREADS = "threads.jsonl"
HEALTH = "health.jsonl"
#: Most thread-name families a threads.jsonl record tells apart (per process); the
#: threads of families first seen after that many others count as THREADS_OTHER.
MAX_FAMILIES = 64
THREADS_OTHER = "other"


class FamilyCap:
    """The family a threads.jsonl record counts a thread under: its own for the first
    MAX_FAMILIES families seen, THREADS_OTHER after; `capped` once that happened."""

    def __init__(self) -> None:
        self.kept: set[str] = set()
        self.capped = False

    def __call__(self, family: str) -> str:
        if family in self.kept:
            return family
        if len(self.kept) < MAX_FAMILIES:
            self.kept.add(family)
            return family
        self.capped = True
        return THREADS_OTHER


#: Event kind: the target's port (or pattern) now leads to a different program.
TARGET_REPLACED = "target_replaced"
#: Room kept on the disk while a run goes, freed to record its end when the disk fills up.
RESERVE = ".reserve"
RESERVE_BYTES = 262_144

STATUS_RUNNING = "running"
STATUS_COMPLETED = "completed"
STATUS_ABORTED = "aborted"
STATUS_CRASHED = "crashed"
#: soak's own environment failed (run directory not writable, stdout closed): see end_message.
STATUS_FAILED = "failed"

#: Exit code of a child process (load, collector) that could not write the run directory.
EXIT_CHILD_STORAGE = 74  # EX_IOERR of sysexits.h

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, fallback: str = "run") -> str:
    """A file-name-safe form of a label or target name (no separators, no '..')."""
    cleaned = _UNSAFE.sub("-", text).strip("-.")[:60]
    return cleaned or fallback


def utc_stamp(when: float | None = None) -> str:
    """A sortable UTC stamp for directory names, e.g. 20261121T124200Z."""
    return datetime.fromtimestamp(when or time.time(), UTC).strftime("%Y%m%dT%H%M%SZ")


def iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds")


def host_info() -> dict[str, Any]:
    """What machine the run came from: for comparability warnings."""
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }


_WHY_NOT_WRITABLE = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EFBIG: "a file reached the size limit (ulimit -f)",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EIO: "an I/O error of the disk",
}
#: errno values that mean "this file cannot be written", whatever soak does.
UNWRITABLE_ERRNOS = frozenset(_WHY_NOT_WRITABLE)
_storage_failures: list[StorageError] = []
_storage_listeners: list[Callable[[StorageError], None]] = []


def storage_error(path: Path, exc: OSError) -> StorageError:
    """A StorageError naming the file and, in words, why it cannot be written."""
    why = _WHY_NOT_WRITABLE.get(exc.errno or 0, exc.strerror or str(exc))
    return StorageError(f"cannot write {path}: {why} ({exc.strerror or exc})")


def on_storage_failure(listener: Callable[[StorageError], None]) -> None:
    """Call `listener` (once) when any writer of this process fails to write the run directory.

    The load and collector processes stop on it: going on would measure without recording.
    """
    _storage_listeners.append(listener)
    if _storage_failures:
        listener(_storage_failures[0])


def forget_storage_failures() -> None:
    """Start a new run in this process with no failure and no listener from an earlier one."""
    _storage_failures.clear()
    _storage_listeners.clear()


def storage_failure() -> StorageError | None:
    """The first failure of this process to write the run directory, if there was one."""
    return _storage_failures[0] if _storage_failures else None


def _storage_failed(error: StorageError) -> StorageError:
    if not _storage_failures:
        _storage_failures.append(error)
        for listener in _storage_listeners:
            listener(error)
    return error


def unwritable(path: Path) -> StorageError:
    """The StorageError of a run directory a child process could not write, from the
    file system's state now (the child's own message may not have reached the disk)."""
    why = "a write failed"
    try:
        stats = os.statvfs(path)
    except OSError as exc:
        why = exc.strerror or str(exc)
    else:
        if stats.f_flag & os.ST_RDONLY:
            why = "the file system is read-only"
        elif stats.f_bavail * stats.f_frsize < 65_536:
            why = "the disk is full"
    return StorageError(
        f"soak could not write the run directory {path}: {why}. What was written so far is "
        f"kept; make room (or make it writable), then: soak report {path}"
    )


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename: a reader never sees half a file.

    The text goes through the process redactor (soak.redact): no secret in a manifest
    or report. A failed write leaves the old file as it was and no temporary file
    behind; it raises StorageError.
    """
    tmp = path.with_name(path.name + ".tmp")
    text = redactor().text(text)
    try:
        tmp.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise _storage_failed(storage_error(path, exc)) from None


class JsonlWriter:
    """Appends one JSON object per line and flushes it at once (kill-safe, thread-safe).

    Each line goes through the process redactor (soak.redact): no secret in a data file,
    whatever a record quotes. A write the disk refuses raises StorageError, and so does
    every later write of this writer: a file with a hole in it would read as a quiet
    stretch of the run.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failed: StorageError | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file: TextIO = open(path, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise _storage_failed(storage_error(path, exc)) from None
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = redactor().text(json.dumps(record, separators=(",", ":"), default=str)) + "\n"
        with self._lock:  # one line, one write(2): whole lines even with O_APPEND sharers
            if self.failed:
                raise self.failed
            try:
                self._file.write(line)
                self._file.flush()
            except OSError as exc:
                self.failed = _storage_failed(storage_error(self.path, exc))
                raise self.failed from None

    def close(self) -> None:
        """Close the file; after a failed write its unwritten rest is dropped, not raised."""
        with contextlib.suppress(OSError):
            self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_run_file(path: Path) -> BinaryIO | None:
    """A run-directory file opened for binary reading; None when it does not exist.

    Anything else in its place (a directory, a file where its folder should be, no
    permission) is a RunDirError that names it, never a traceback.
    """
    try:
        return open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RunDirError(
            f"{path} cannot be read ({exc.strerror or exc}): the run directory is damaged; "
            "move that entry aside to report on the rest."
        ) from None


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSON Lines file; missing file = no records.

    Lines that do not parse (a torn last line after a kill) are skipped; an entry that
    is not a readable file (a directory, no permission) is a RunDirError.
    """
    binary = open_run_file(path)
    if binary is None:
        return
    with io.TextIOWrapper(binary, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not line.endswith("\n"):
                break  # torn last line: the writer was cut off mid-record
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def flatten_into(value: dict[str, Any], out: dict[str, Any], prefix: str = "") -> None:
    """Put every int/float (not bool) inside nested dicts into `out` under prefix + dotted path.

    How a schema-free /health body becomes series: {"diagnostics": {"thread_count": 7}}
    gives out["diagnostics.thread_count"] = 7. A loop over exact types, because the
    report runs it once per /health sample (600,000 per target in a week at 1 s).
    """
    for key, item in value.items():
        kind = type(item)
        if kind is float or kind is int:
            out[f"{prefix}{key}"] = item
        elif kind is dict:
            flatten_into(item, out, f"{prefix}{key}.")


@dataclass(frozen=True)
class TargetInfo:
    """One target of a run as recorded in the manifest."""

    name: str
    url: str
    health: str | None = None
    pid: int | None = None
    build: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "health": self.health,
            "pid": self.pid,
            "build": self.build,
        }


class RunDir:
    """Paths and access to one run directory."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    # -- layout ---------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def file(self, name: str) -> Path:
        return self.path / name

    def target_dir(self, target: str) -> Path:
        return self.path / "targets" / safe_name(target, "target")

    def target_file(self, target: str, name: str) -> Path:
        return self.target_dir(target) / name

    # -- creation ---------------------------------------------------------
    @classmethod
    def create(
        cls,
        root: Path,
        profile_name: str,
        label: str,
        manifest: dict[str, Any],
        started_at: float | None = None,
    ) -> RunDir:
        """Make a new run directory under `root` and write its manifest.

        Refuses to reuse an existing directory: a run never overwrites another.
        """
        started_at = started_at or time.time()
        name = f"{utc_stamp(started_at)}_{safe_name(profile_name, 'profile')}_{safe_name(label)}"
        path = Path(root) / name
        try:
            path.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise RunDirError(
                f"run directory {path} already exists; soak never overwrites a run. "
                "Use another --label or wait a second."
            ) from None
        except OSError as exc:
            raise RunDirError(f"cannot create run directory {path}: {exc.strerror}") from None
        run = cls(path)
        full = {
            "format_version": FORMAT_VERSION,
            "soak_version": __version__,
            "run_id": name,
            "profile_name": profile_name,
            "label": label,
            "host": host_info(),
            "started_at": started_at,
            "started_at_iso": iso(started_at),
            "ended_at": None,
            "status": STATUS_RUNNING,
            **writer_fields(),
            **manifest,
        }
        run.write_manifest(full)
        run.keep_reserve()
        return run

    def keep_reserve(self) -> None:
        """Set RESERVE_BYTES of disk aside for recording the run's end (best effort)."""
        with contextlib.suppress(OSError):
            self.file(RESERVE).write_bytes(bytes(RESERVE_BYTES))

    def release_reserve(self) -> None:
        """Free the reserve file's room (a full disk): the run's end can then be written."""
        with contextlib.suppress(OSError):
            self.file(RESERVE).unlink()

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Replace the manifest atomically."""
        write_text_atomic(self.manifest_path, json.dumps(manifest, indent=2, default=str))

    def update_manifest(self, **changes: Any) -> dict[str, Any]:
        manifest = self.manifest()
        manifest.update(changes)
        self.write_manifest(manifest)
        return manifest

    def finish(self, status: str, message: str = "") -> None:
        """Record the end of the run: status, end time and (when not completed) why.

        Call `release_reserve` first: on a full disk the reserve's room is what lets the
        manifest say how the run ended.
        """
        ended = time.time()
        manifest = self.manifest()
        manifest.update(status=status, ended_at=ended, ended_at_iso=iso(ended))
        if message and status != STATUS_COMPLETED:
            manifest["end_message"] = message
        self.write_manifest(manifest)

    # -- reading ----------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        """The manifest, checked for a known format_version."""
        if not self.path.is_dir():
            raise RunDirError(f"{self.path} is not a directory; give the path of a run directory.")
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunDirError(
                f"{self.path} has no {MANIFEST}: it is not a soak run directory "
                "(run directories are made by `soak run` or `soak collect` under reports/)."
            ) from None
        except ValueError as exc:
            raise RunDirError(f"{self.manifest_path} is not valid JSON ({exc}).") from None
        if not isinstance(manifest, dict):
            raise RunDirError(f"{self.manifest_path} does not hold a JSON object.")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise RunDirError(
                f"{self.path} has format_version {version!r}; this soak ({__version__}) reads "
                f"format_version {FORMAT_VERSION}. Use the soak version that recorded it "
                f"(manifest soak_version: {manifest.get('soak_version', 'unknown')})."
            )
        problem = _manifest_problem(manifest)
        if problem:
            raise RunDirError(f"{self.manifest_path} is damaged: {problem}.")
        return manifest

    def status(self) -> str:
        """The run's status; a 'running' run whose writer is gone (no such process, a pid
        reused by another, or a directory copied from another machine) reads as 'crashed'."""
        manifest = self.manifest()
        status = manifest.get("status", STATUS_RUNNING)
        if status == STATUS_RUNNING and not _writer_alive(manifest):
            return STATUS_CRASHED
        return status

    def targets(self) -> list[TargetInfo]:
        return [
            TargetInfo(**{k: t.get(k) for k in ("name", "url", "health", "pid", "build")})
            for t in self.manifest().get("targets", [])
        ]

    def records(self, name: str) -> Iterator[dict[str, Any]]:
        return read_jsonl(self.file(name))

    def target_records(self, target: str, name: str) -> Iterator[dict[str, Any]]:
        return read_jsonl(self.target_file(target, name))


#: Latest timestamp a manifest may hold (the year 2286): beyond it, it is damaged.
_LAST_TIME = 1e10


def _manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What makes a manifest unreadable as a run (a field of the wrong type), or None."""
    for key, required in (("started_at", True), ("ended_at", False)):
        value = manifest.get(key)
        if value is None and not required:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{key} is {value!r}, not a Unix time in seconds"
        if not 0 <= value < _LAST_TIME:
            return f"{key} is {value!r}, not a Unix time in seconds between 1970 and 2286"
    targets = manifest.get("targets", [])
    if not isinstance(targets, list):
        return f"targets is {type(targets).__name__}, not a list of target entries"
    for entry in targets:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            return f"the target entry {str(entry)[:80]!r} is not an object with a name"
    if not isinstance(manifest.get("status", STATUS_RUNNING), str):
        return f"status is {manifest.get('status')!r}, not a word"
    return None


def writer_fields() -> dict[str, Any]:
    """Manifest fields naming the process that writes the run: which pid, started when,
    on which machine (a pid alone is reused, and means nothing on another machine)."""
    return {
        "pid": os.getpid(),
        "pid_started_at": psutil.Process().create_time(),
        "writer_host": socket.gethostname(),
    }


def _writer_alive(manifest: dict[str, Any]) -> bool:
    """Whether the process that wrote a `running` manifest still runs (on this machine)."""
    pid = manifest.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return False
    host = manifest.get("writer_host") or (manifest.get("host") or {}).get("hostname")
    if host is not None and host != socket.gethostname():
        return False  # copied from another machine: its writer is not one of our pids
    if pid == os.getpid():
        return True
    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True
    recorded = manifest.get("pid_started_at")
    return not isinstance(recorded, int | float) or abs(started - recorded) < 1.0


class JsonlTail:
    """Reads the records appended to a JSON Lines file since the last call (live views)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def new_records(self) -> list[dict[str, Any]]:
        handle = open_run_file(self.path)
        if handle is None:
            return []
        with handle:
            handle.seek(self.offset)
            chunk = handle.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # leave a half-written line for next time
        self.offset += len(complete)
        return parse_lines(complete.splitlines())


def parse_lines(lines: Iterable[bytes | str]) -> list[dict[str, Any]]:
    """The JSON objects among `lines`; blank, unparsable and non-object lines are skipped."""
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
