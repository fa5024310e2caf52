"""Imports the target files of another run directory (a remote `soak collect`) into a run.

One code path for both ways they meet: the receiver of a running `soak run` imports
what a remote collector ships, batch by batch, and `soak merge` imports a separately
recorded collect run afterwards. Either way each record's `t` is moved onto the run's
clock (minus the remote's clock offset), and how far each source file is imported (in
bytes) is kept in remote-imports.json of the run, so importing again (a reconnect, a
second `soak merge`) carries on where it stopped instead of doubling records.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soak.collect.wire import BATCH_BYTES, MAX_MESSAGE_BYTES, TARGET_FILES
from soak.errors import RunDirError, UsageError
from soak.rundir import EVENTS, PROCESS, JsonlWriter, RunDir, parse_lines, write_text_atomic
from soak.units import parse_duration

#: Where a run keeps how far it imported each source file, and into which of its targets:
#: {source: {"offsets": {FILE: bytes}, "into": [TARGET, ...]}}.
IMPORTS = "remote-imports.json"


class ImportGap(Exception):
    """A batch starts past what was imported: records in between would be missing."""


def read_complete_lines(path: Path, offset: int) -> tuple[list[str], int]:
    """The whole lines of `path` from byte `offset`, about BATCH_BYTES of them, and the offset
    after the last one. A torn last line (its writer is mid-record) waits for the next call;
    a line longer than BATCH_BYTES is read whole up to MAX_MESSAGE_BYTES / 2."""
    limit = BATCH_BYTES
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            chunk = handle.read(limit)
            if chunk and b"\n" not in chunk and len(chunk) == limit:
                chunk += handle.read(MAX_MESSAGE_BYTES // 2 - limit)
    except FileNotFoundError:
        return [], offset
    complete = chunk[: chunk.rfind(b"\n") + 1]
    lines = complete.decode("utf-8", errors="replace").splitlines()
    return lines, offset + len(complete)


def source_files(targets: Mapping[str, str]) -> list[str]:
    """The files a source ships, by their wire names: each target's, then events.jsonl."""
    return [f"{remote}/{name}" for remote in targets for name in TARGET_FILES] + [EVENTS]


@dataclass
class Imported:
    """What one batch (or one merge) brought: records written, per file name."""

    records: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.records.values())


class Importer:
    """Writes imported records into a run directory and remembers how far each source got.

    `targets` maps the source's target names to the run's ("TARGET/FILE" names the
    source's file of that target). Thread-safe: several remote collectors may feed one run.
    """

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self._lock = threading.Lock()
        self._writers: dict[Path, JsonlWriter] = {}
        self._state = self._load_state()

    def _load_state(self) -> dict[str, dict[str, Any]]:
        path = self.run.file(IMPORTS)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RunDirError(
                f"{path} cannot be read ({exc}); move it aside to import again from the start "
                "(records already imported would then be doubled)."
            ) from None
        return state if isinstance(state, dict) else {}

    def offsets(self, source: str) -> dict[str, int]:
        """How far each file of `source` is imported, in bytes."""
        with self._lock:
            return dict(self._state.get(source, {}).get("offsets", {}))

    def imported_into(self, target: str) -> bool:
        """Whether any source's process samples were imported for the run's `target`."""
        with self._lock:
            return any(target in imported.get("into", []) for imported in self._state.values())

    def take(
        self,
        source: str,
        file: str,
        offset: int,
        end: int,
        lines: list[str],
        targets: Mapping[str, str],
        clock_offset_s: float,
        host: str,
    ) -> int:
        """Import the lines [offset, end) of the source's `file`; the records written.

        A batch already imported (end at or before what the run has) is skipped; one that
        starts past it raises ImportGap. Each record's `t` loses `clock_offset_s` (the
        remote's clock minus the run's); events keep only the collector's, about `targets`.
        """
        with self._lock:
            imported = self._state.setdefault(source, {"offsets": {}, "into": []})
            have = imported["offsets"].get(file, 0)
            if end <= have:
                return 0
            if offset != have:
                raise ImportGap(f"{file}: batch starts at byte {offset}, imported up to {have}")
            destination, keep = self._destination(file, targets)
            records = [r for r in parse_lines(lines) if keep(r)]
            writer = self._writer(destination)
            for record in records:
                writer.write(_moved(record, clock_offset_s, targets, host, file == EVENTS))
            imported["offsets"][file] = end
            imported["into"] = sorted({*imported["into"], *targets.values()})
            write_text_atomic(self.run.file(IMPORTS), json.dumps(self._state, indent=1))
            return len(records)

    def _destination(
        self, file: str, targets: Mapping[str, str]
    ) -> tuple[Path, Callable[[dict[str, Any]], bool]]:
        """Where the records of a source's `file` go, and which of them are kept."""
        if file == EVENTS:
            return (
                self.run.file(EVENTS),
                lambda r: (
                    r.get("source") == "collector"
                    and r.get("target", next(iter(targets))) in targets
                ),
            )
        remote, _, name = file.partition("/")
        if remote not in targets or name not in TARGET_FILES:
            raise ImportGap(f"{file}: not a file of the targets {', '.join(targets)}")
        return self.run.target_file(targets[remote], name), lambda r: True

    def _writer(self, path: Path) -> JsonlWriter:
        writer = self._writers.get(path)
        if writer is None:
            writer = self._writers[path] = JsonlWriter(path)
        return writer

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()


def _moved(
    record: dict[str, Any], offset_s: float, targets: Mapping[str, str], host: str, event: bool
) -> dict[str, Any]:
    """The record on the run's clock (and, for an event, named for the run's target)."""
    if isinstance(record.get("t"), int | float) and not isinstance(record["t"], bool):
        record["t"] = round(record["t"] - offset_s, 3)
    if event:
        record["target"] = targets[record.get("target", next(iter(targets)))]
        record["remote"] = host
    return record


def merge_collected(
    run: RunDir, collected: RunDir, pairs: Mapping[str, str], clock_offset_s: float
) -> Imported:
    """`soak merge`: import the collect run's files of the targets `pairs` names (collected
    name -> run's name) into `run`, from where an earlier import stopped."""
    run.manifest()  # a readable run directory, or a RunDirError that says why not
    manifest = collected.manifest()
    source = manifest.get("run_id") or collected.path.name
    host = (manifest.get("host") or {}).get("hostname", "")
    importer = Importer(run)
    known = {t.name for t in run.targets()}
    for remote, local in pairs.items():
        if local not in known:
            raise UsageError(
                f"{run.path} has no target {local!r} (its targets: {', '.join(sorted(known))}); "
                "pair them with --target RUN_NAME=COLLECTED_NAME."
            )
        has_own = any(True for _ in run.target_records(local, PROCESS))
        if has_own and not importer.imported_into(local):
            raise UsageError(
                f"target {local!r} of {run.path} has process samples of its own; importing "
                f"{remote!r} would mix two machines' samples. Merge into a run whose target "
                "was not sampled there (a target on another machine)."
            )
    done = Imported()
    try:
        for file in source_files(pairs):
            path = source_path(collected, file)
            offset = importer.offsets(source).get(file, 0)
            while True:
                lines, end = read_complete_lines(path, offset)
                if end == offset:
                    break
                count = importer.take(source, file, offset, end, lines, pairs, clock_offset_s, host)
                done.records[file] = done.records.get(file, 0) + count
                offset = end
    finally:
        importer.close()
    return done


def source_path(run: RunDir, file: str) -> Path:
    """Where the file a wire name ("TARGET/process.jsonl", "events.jsonl") names is in `run`."""
    if file == EVENTS:
        return run.file(EVENTS)
    target, _, name = file.partition("/")
    return run.target_file(target, name)


def merge_runs(
    run_path: Path, collected_path: Path, targets: list[str] | None, clock_offset: str | None
) -> Imported:
    """`soak merge RUN COLLECTED`: pair the targets (RUN_NAME=COLLECTED_NAME, or by equal
    names, or the only one of each) and import; `clock_offset` is the collect machine's
    clock minus the run machine's ("1.5s", "-200ms")."""
    run, collected = RunDir(run_path), RunDir(collected_path)
    offset_s = _signed_seconds(clock_offset) if clock_offset else 0.0
    theirs = [t.name for t in collected.targets()]
    pairs: dict[str, str] = {}
    for spec in targets or []:
        local, sep, remote = spec.partition("=")
        if not sep or remote not in theirs:
            raise UsageError(
                f"--target {spec!r}: write RUN_NAME=COLLECTED_NAME, the second one of "
                f"{collected.path}'s targets: {', '.join(theirs) or 'none'}."
            )
        pairs[remote] = local
    if not pairs:
        ours = {t.name for t in run.targets()}
        pairs = {name: name for name in theirs if name in ours}
        if not pairs and len(theirs) == 1 and len(ours) == 1:
            pairs = {theirs[0]: next(iter(ours))}
    if not pairs:
        raise UsageError(
            f"no target of {collected.path} ({', '.join(theirs) or 'none'}) has a name of "
            f"{run.path}'s; pair them with --target RUN_NAME=COLLECTED_NAME."
        )
    return merge_collected(run, collected, pairs, offset_s)


def _signed_seconds(text: str) -> float:
    """A duration that may be negative: "1.5s", "-200ms", "+2m"."""
    sign = -1.0 if text.startswith("-") else 1.0
    try:
        return sign * parse_duration(text.lstrip("+-"))
    except ValueError as exc:
        raise UsageError(
            f"--clock-offset {text!r}: {exc}; write how far the collect machine's clock is "
            "ahead of the run machine's, e.g. 1.5s or -200ms."
        ) from None
