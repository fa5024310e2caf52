"""Load a run directory into pandas DataFrames, one set per target.

Every frame is sorted by `t` (Unix seconds) and has `elapsed` (seconds since the
manifest's started_at). Frames are empty, with their columns, when a file is missing.
Lines are parsed with orjson (a week of 1 s samples is millions of lines); a line
orjson refuses (NaN, which Python's json writes) falls back to the json module.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson
import pandas as pd

from soak.analyze.anomalies import AnomalyGroups, kind_of
from soak.child import module_argv, module_env
from soak.collect.health import named_fields
from soak.errors import RunDirError
from soak.rundir import (
    ANOMALIES,
    CHATS,
    EVENTS,
    GENERATOR,
    HEALTH,
    PROCESS,
    THREADS,
    FamilyCap,
    RunDir,
    TargetInfo,
    flatten_into,
    open_run_file,
)

#: Turn outcomes as recorded in chats.jsonl `outcomes`.
OUTCOMES = ("ok", "stall", "error", "disconnect", "violation", "mismatch", "first_token_timeout")
#: Prefix of the numeric /health body fields in the health frame ("body.diagnostics.lag_ms").
BODY_PREFIX = "body."
#: Anomaly records kept per target (the report shows the first ones; counts come from chats).
ANOMALY_LIMIT = 200

_PROCESS_COLUMNS = (
    "pid", "create_time", "threads", "rss_mb", "uss_mb", "cpu_percent", "cpu_user_s",
    "cpu_system_s", "fds", "children", "cgroup_memory_mb", "cgroup_cpu_periods",
    "cgroup_cpu_throttled_periods",
)  # fmt: skip
_CHAT_FIELDS = (
    "interval_s", "started", "turns", "in_flight", "connections", "connects", "pings",
    "pings_lost", "ping_max_s", "gap_max_s", "stuck",
)  # fmt: skip
_CHAT_COLUMNS = (*_CHAT_FIELDS, *OUTCOMES)
#: Counts by kind of chats.jsonl (violation kinds, mismatch kinds, outcomes of turns
#: excluded because soak itself stood still), as dicts per row.
CHAT_KINDS = ("violations", "mismatches", "excluded")
#: Sparse latency histograms of chats.jsonl, kept as dicts per row.
CHAT_HISTOGRAMS = (
    "ttft_hist", "reply_hist", "ping_hist", "connect_hist", "itl_hist", "tpot_hist",
)  # fmt: skip
_ANOMALY_COLUMNS = (
    "target", "kind", "subkind", "session", "request_id", "turn_elapsed_s", "detail",
    "close_code", "close_reason",
)  # fmt: skip
_HEALTH_COLUMNS = ("status", "latency_s", "error")
_GENERATOR_COLUMNS = (
    "worker", "cpu_percent", "rss_mb", "loop_lag_max_s", "users", "connections",
)  # fmt: skip
#: Target files larger than this in total (bytes) are parsed by child processes.
PARALLEL_MIN_BYTES = 64 * 1_048_576
#: Most processes parsing target files at once.
MAX_WORKERS = 4
#: Lines read and parsed per chunk of a data file (bounds the memory of raw lines).
CHUNK_LINES = 50_000
#: Bytes of health.jsonl lines read and parsed per chunk (bodies may be a megabyte each).
HEALTH_CHUNK_BYTES = 16 * 1_048_576
#: Numeric /health body fields read as columns per target, besides the named ones (the
#: fields of criteria and the loop-lag field): the first seen are kept, later ones ignored.
MAX_HEALTH_FIELDS = 200


@dataclass
class TargetData:
    """Everything recorded about one target.

    process: t, elapsed, pid, create_time, threads, rss_mb, cpu_percent, fds, children
    threads: t, elapsed, pid of each thread-name sample
    families: one column per thread-name family (count, 0 if absent), rows as in threads
    health: t, elapsed, status, latency_s, error, then `body.<dotted path>` numeric fields
    chats: t, elapsed, interval_s, started, turns, in_flight, connections, connects, pings,
        pings_lost, ping_max_s, gap_max_s (NaN when not recorded), one column per outcome,
        violations (dict subkind -> count) and the CHAT_HISTOGRAMS (sparse histogram dicts)
    anomalies: the first ANOMALY_LIMIT records: t, elapsed, target, kind, subkind, session,
        request_id, turn_elapsed_s, detail, close_code, close_reason
    anomaly_kinds: every anomaly record counted by "kind" or "kind/subkind" (" (excluded)"
        added for turns soak itself caused to fail)
    anomaly_groups: every anomaly record counted by kind and message (soak.analyze.anomalies)
    close_codes: disconnect anomaly records counted by WebSocket close code ("none" if absent)
    stuck_chats: per chat that got stuck (failed turns in a row): session, since (elapsed s
        of its first failed turn), recovered (elapsed s, None when it never did)
    """

    info: TargetInfo
    process: pd.DataFrame
    process_errors: int
    threads: pd.DataFrame
    families: pd.DataFrame
    health: pd.DataFrame
    chats: pd.DataFrame
    anomalies: pd.DataFrame
    anomaly_records: int
    anomaly_kinds: dict[str, int] = field(default_factory=dict)
    close_codes: dict[str, int] = field(default_factory=dict)
    anomaly_groups: list[dict[str, Any]] = field(default_factory=list)
    stuck_chats: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.info.name


@dataclass
class RunData:
    """A loaded run: manifest, status, time span (Unix seconds), events, targets by name.

    has_chats is False when the run has no chats.jsonl (a `soak collect` run: process and
    /health only). generator: soak's own load processes (t, elapsed, worker, cpu_percent,
    rss_mb, loop_lag_max_s, users, connections); empty when generator.jsonl is missing.
    """

    path: Path
    manifest: dict[str, Any]
    status: str
    started_at: float
    ended_at: float
    events: pd.DataFrame
    targets: dict[str, TargetData]
    has_chats: bool = True
    generator: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["t", "elapsed"]))

    @property
    def profile(self) -> dict[str, Any]:
        profile = self.manifest.get("profile")
        return profile if isinstance(profile, dict) else {}


def load_run(path: Path | str, anomaly_limit: int = ANOMALY_LIMIT) -> RunData:
    """Read a run directory (running, finished or killed) into DataFrames.

    Raises RunDirError when it is not a readable run directory of a known format.
    """
    run = RunDir(path)
    manifest = run.manifest()
    status = run.status()
    started_at = _number(manifest.get("started_at"))
    if started_at is None:
        raise RunDirError(f"{run.manifest_path} has no numeric started_at; it is damaged.")
    targets = _target_infos(run)
    with TargetFiles(run, targets) as files:
        chats = _chats(read_chunks(run.file(CHATS)))
        anomalies = _anomalies(read_chunks(run.file(ANOMALIES)), targets, anomaly_limit)
        loaded = {}
        for info in targets:
            process, process_errors = files.result(info.name, PROCESS)
            threads, families = files.result(info.name, THREADS)
            kept, count, kinds, codes, stuck, groups = anomalies[info.name]
            loaded[info.name] = TargetData(
                info=info,
                process=process,
                process_errors=process_errors,
                threads=threads,
                families=families,
                health=files.result(info.name, HEALTH),
                chats=chats[chats["target"] == info.name].reset_index(drop=True),
                anomalies=_numeric(_table([kept], _ANOMALY_COLUMNS), ("turn_elapsed_s",)),
                anomaly_records=count,
                anomaly_kinds=kinds,
                close_codes=codes,
                stuck_chats=[_elapsed_chat(chat, started_at) for chat in stuck.values()],
                anomaly_groups=groups.to_list(started_at),
            )
    events = _table(
        read_chunks(run.file(EVENTS)), ("source", "kind", "message", "target", "pid", "limits")
    )
    generator = _numeric(
        _table(read_chunks(run.file(GENERATOR)), _GENERATOR_COLUMNS), _GENERATOR_COLUMNS[1:]
    )
    frames = [events, generator] + [
        frame
        for data in loaded.values()
        for frame in (data.process, data.threads, data.health, data.chats, data.anomalies)
    ]
    for frame in frames:
        frame["elapsed"] = frame["t"] - started_at
    ended_at = _number(manifest.get("ended_at"))
    if ended_at is None:
        ended_at = max((float(f["t"].iloc[-1]) for f in frames if len(f)), default=started_at)
    return RunData(
        path=run.path,
        manifest=manifest,
        status=status,
        started_at=started_at,
        ended_at=max(ended_at, started_at),
        events=events,
        targets=loaded,
        has_chats=run.file(CHATS).is_file(),
        generator=generator,
    )


Job = tuple[str, str]  # (target name, file name)


class TargetFiles:
    """The per-target data files (process, threads, health), parsed in the background.

    A run whose target files hold more than PARALLEL_MIN_BYTES is parsed by up to
    MAX_WORKERS child interpreters (`python -m soak.analyze.parse_worker`, one per core,
    the files spread over them by size), while the caller reads the shared files: a
    week of 1 s samples is millions of lines, and parsing them is most of a report's
    time. Separate interpreters (not fork or multiprocessing) work from any caller: a
    script, a notebook, a thread. Smaller runs are parsed here, in order.
    """

    def __init__(self, run: RunDir, targets: list[TargetInfo]) -> None:
        self.jobs: dict[Job, Path] = {
            (info.name, kind): run.target_file(info.name, kind)
            for info in targets
            for kind in (HEALTH, THREADS, PROCESS)
        }
        self.pool: ThreadPoolExecutor | None = None
        self.futures: dict[Job, Future[dict[Job, Any]]] = {}
        self.scratch: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> TargetFiles:
        sizes = {job: _size(path) for job, path in self.jobs.items()}
        workers = min(os.cpu_count() or 1, len(self.jobs), MAX_WORKERS)
        if sum(sizes.values()) < PARALLEL_MIN_BYTES or workers < 2:
            return self
        shares: list[list[Job]] = [[] for _ in range(workers)]
        loads = [0] * workers
        for job in sorted(self.jobs, key=lambda j: -sizes[j]):  # largest first, to the least
            least = loads.index(min(loads))  # loaded worker
            shares[least].append(job)
            loads[least] += sizes[job]
        self.scratch = tempfile.TemporaryDirectory(prefix="soak-parse-")
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="soak-parse")
        for index, share in enumerate(shares):
            out = Path(self.scratch.name) / f"{index}.pickle"
            future = self.pool.submit(_parse_in_child, {job: self.jobs[job] for job in share}, out)
            self.futures.update(dict.fromkeys(share, future))
        return self

    def result(self, target: str, kind: str) -> Any:
        """What load_target_file returns for one target's file."""
        job = (target, kind)
        future = self.futures.get(job)
        return load_target_file(kind, self.jobs[job]) if future is None else future.result()[job]

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        if self.scratch is not None:
            self.scratch.cleanup()


def _parse_in_child(jobs: dict[Job, Path], out: Path) -> dict[Job, Any]:
    """load_target_file of each job in a child interpreter; the results come back pickled."""
    parts = [str(part) for (_, kind), path in jobs.items() for part in (kind, path)]
    command = module_argv("soak.analyze.parse_worker", str(out), *parts)
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=module_env())
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise RunDirError(f"could not parse {', '.join(map(str, jobs.values()))}: {last}")
    with open(out, "rb") as handle:
        results = pickle.load(handle)
    return dict(zip(jobs, results, strict=True))


def load_target_file(kind: str, path: Path) -> Any:
    """One target file as frames: process -> (frame, error records), threads -> (frame,
    families), health -> frame."""
    if kind == PROCESS:
        return _process(read_chunks(path))
    if kind == THREADS:
        return _threads(read_chunks(path))
    return _health(read_chunks(path, max_bytes=HEALTH_CHUNK_BYTES), _named_health_fields(path))


def _named_health_fields(path: Path) -> list[str]:
    """The /health fields named by the profile of the run `path` belongs to
    (<run>/targets/<name>/health.jsonl); none when it has no readable manifest."""
    try:
        profile = RunDir(path.parents[2]).manifest().get("profile")
    except (RunDirError, OSError, IndexError):
        return []
    return named_fields(profile) if isinstance(profile, dict) else []


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def read_chunks(
    path: Path, lines: int = CHUNK_LINES, max_bytes: int | None = None
) -> Iterator[list[dict[str, Any]]]:
    """The records of a JSON Lines file, a list of up to `lines` records (and, with
    `max_bytes`, of about that many bytes of lines) at a time.

    Same rules as soak.rundir.read_jsonl (missing file = nothing, torn last line and
    unparsable lines skipped), but parsed with orjson (about three times as fast as json
    for a week of 1 s samples), a bounded chunk at a time.
    """
    handle = open_run_file(path)
    if handle is None:
        return
    with handle:
        while chunk := _next_lines(handle, lines, max_bytes):
            if not chunk[-1].endswith(b"\n"):
                chunk.pop()  # torn last line: the writer was cut off mid-record
            yield _parse_lines(chunk)


def _next_lines(handle: BinaryIO, lines: int, max_bytes: int | None) -> list[bytes]:
    """Up to `lines` lines; with `max_bytes`, fewer once they hold that many bytes."""
    if max_bytes is None:
        return list(islice(handle, lines))
    chunk: list[bytes] = []
    size = 0
    for line in handle:
        chunk.append(line)
        size += len(line)
        if len(chunk) >= lines or size >= max_bytes:
            break
    return chunk


def _parse_lines(lines: list[bytes]) -> list[dict[str, Any]]:
    records = []
    for line in lines:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            try:  # NaN / Infinity, which Python's json writes and orjson rejects
                record = json.loads(line.decode("utf-8", "replace"))
            except ValueError:
                continue
        if type(record) is dict:
            records.append(record)
    return records


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if np.isfinite(value) else None


def _target_infos(run: RunDir) -> list[TargetInfo]:
    """Targets named in the manifest; else the ones that have a directory under targets/."""
    try:
        infos = [info for info in run.targets() if isinstance(info.name, str) and info.name]
    except TypeError as exc:
        raise RunDirError(f"{run.manifest_path} has a malformed targets list ({exc}).") from None
    if infos:
        return infos
    root = run.path / "targets"
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    return [TargetInfo(name=name, url="") for name in names]


def _time_order(frame: pd.DataFrame) -> np.ndarray:
    """Row positions of the records with a numeric t, in time order (stable)."""
    t = pd.to_numeric(frame["t"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    valid = np.flatnonzero(np.isfinite(t))
    return valid[np.argsort(t[valid], kind="stable")]


def _table(
    chunks: Iterable[list[dict[str, Any]]], columns: Iterable[str] | None = None
) -> pd.DataFrame:
    """One frame of the records, sorted by a numeric t (rows without one are dropped).

    With `columns`, exactly t and those columns (missing ones are all-NA); without, every key.
    """
    wanted = None if columns is None else ["t", *columns]
    parts = [pd.DataFrame.from_records(chunk, columns=wanted) for chunk in chunks if chunk]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=wanted or ["t"])
    frame = frame.iloc[_time_order(frame)].reset_index(drop=True)
    frame["t"] = frame["t"].astype(float)
    return frame


def _numeric(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    for column in columns:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame


AnomalyCounts = tuple[
    list[dict[str, Any]],
    int,
    dict[str, int],
    dict[str, int],
    dict[Any, dict[str, Any]],
    AnomalyGroups,
]


def _anomalies(
    chunks: Iterable[list[dict[str, Any]]], targets: list[TargetInfo], limit: int
) -> dict[str, AnomalyCounts]:
    """Per target: the first `limit` records (without last_frames), the record count, the
    records per kind (or kind/subkind), the disconnect records per close code, and the
    last state of each chat that got stuck (by worker and chat)."""
    kept: dict[str, list[dict[str, Any]]] = {info.name: [] for info in targets}
    groups = {name: AnomalyGroups() for name in kept}
    counts = dict.fromkeys(kept, 0)
    kinds: dict[str, Counter[str]] = {name: Counter() for name in kept}
    codes: dict[str, Counter[str]] = {name: Counter() for name in kept}
    stuck: dict[str, dict[Any, dict[str, Any]]] = {name: {} for name in kept}
    for chunk in chunks:
        for record in chunk:
            name = record.get("target")
            if not isinstance(name, str) or name not in kept:
                continue
            counts[name] += 1
            kind = str(record.get("kind"))
            if kind in STUCK_KINDS:
                _follow_stuck(stuck[name], record)
            kinds[name][kind_of(record)] += 1
            groups[name].add(record)
            if kind == "disconnect":
                code = record.get("close_code")
                codes[name]["none" if code is None else str(code)] += 1
            if len(kept[name]) < limit:
                kept[name].append({key: record.get(key) for key in ("t", *_ANOMALY_COLUMNS)})
    return {
        name: (
            kept[name], counts[name], dict(kinds[name]), dict(codes[name]), stuck[name],
            groups[name],
        )
        for name in kept
    }  # fmt: skip


#: Anomaly records of chats, not turns: a chat stuck, and recovered.
STUCK_KINDS = ("chat_stuck", "chat_recovered")
#: Stuck chats followed per target, at most.
MAX_STUCK_CHATS = 1000


def _elapsed_chat(chat: dict[str, Any], started_at: float) -> dict[str, Any]:
    recovered = chat["recovered_at"]
    return {
        "session": chat["session"],
        "since_s": chat["since"] - started_at,
        "recovered_s": None if recovered is None else recovered - started_at,
    }


def _follow_stuck(chats: dict[Any, dict[str, Any]], record: dict[str, Any]) -> None:
    key = (record.get("worker"), record.get("chat"))
    since, t = _number(record.get("since")), _number(record.get("t"))
    if since is None or t is None or (key not in chats and len(chats) >= MAX_STUCK_CHATS):
        return
    if record.get("kind") == "chat_stuck":
        chats[key] = {"session": record.get("session"), "since": since, "recovered_at": None}
    elif key in chats:
        chats[key]["recovered_at"] = t


def _chats(chunks: Iterable[list[dict[str, Any]]]) -> pd.DataFrame:
    """All targets' chat aggregates with the outcomes as columns."""

    def rows(chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
        flat = []
        for record in chunk:
            outcomes = record.get("outcomes")
            outcomes = outcomes if isinstance(outcomes, dict) else {}
            row = {key: record.get(key) for key in ("t", "target", *_CHAT_FIELDS)}
            row.update({name: outcomes.get(name, 0) for name in OUTCOMES})
            for extra in (*CHAT_KINDS, *CHAT_HISTOGRAMS):
                value = record.get(extra)
                row[extra] = value if isinstance(value, dict) else {}
            flat.append(row)
        return flat

    columns = ("target", *_CHAT_COLUMNS, *CHAT_KINDS, *CHAT_HISTOGRAMS)
    frame = _numeric(_table((rows(chunk) for chunk in chunks), columns), _CHAT_COLUMNS)
    counts = [c for c in _CHAT_COLUMNS if c not in ("interval_s", "ping_max_s", "gap_max_s")]
    frame[counts] = frame[counts].fillna(0.0)
    return frame


def _process(chunks: Iterable[list[dict[str, Any]]]) -> tuple[pd.DataFrame, int]:
    """Process samples without the error records, and how many error records there were."""
    frame = _numeric(_table(chunks, (*_PROCESS_COLUMNS, "error")), _PROCESS_COLUMNS)
    failed = frame["error"].notna() | frame["threads"].isna()
    good = frame.loc[~failed].drop(columns="error").reset_index(drop=True)
    return good, int(failed.sum())


def _threads(chunks: Iterable[list[dict[str, Any]]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(t, pid) per thread-name sample, and the family counts of each sample (same rows).

    At most MAX_FAMILIES families get a column, the first seen; the rest are summed as
    THREADS_OTHER (as the collector does), so a run recorded before that cap, with a
    new name every thread, stays a bounded frame.
    """
    samples, families = [], []
    cap = FamilyCap()

    def bounded(counts: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for family, count in counts.items():
            key = cap(family)
            out[key] = out.get(key, 0) + count if isinstance(count, int | float) else count
        return out

    for chunk in chunks:
        samples.append(pd.DataFrame.from_records(chunk, columns=["t", "pid"]))
        counts = [bounded(r["families"]) if isinstance(r.get("families"), dict) else {}
                  for r in chunk]  # fmt: skip
        families.append(pd.DataFrame.from_records(counts, index=samples[-1].index))
    if not samples:
        return _numeric(pd.DataFrame(columns=["t", "pid"]), ["t", "pid"]), pd.DataFrame()
    frame = pd.concat(samples, ignore_index=True)
    order = _time_order(frame)
    frame = _numeric(frame.iloc[order].reset_index(drop=True), ["t", "pid"])
    counts = pd.concat(families, ignore_index=True).iloc[order].reset_index(drop=True)
    counts = counts.apply(pd.to_numeric, errors="coerce").astype(float).fillna(0.0)
    return frame, counts


def _health(chunks: Iterable[list[dict[str, Any]]], named: Iterable[str] = ()) -> pd.DataFrame:
    """The health frame; `body.` columns as _BodyColumns picks them."""
    picked = _BodyColumns(named)

    def rows(chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
        flat = []
        for record in chunk:
            row = {key: record.get(key) for key in ("t", *_HEALTH_COLUMNS)}
            body = record.get("body")
            if type(body) is dict:
                row.update(picked.fields(body))
            flat.append(row)
        return flat

    frame = _table(rows(chunk) for chunk in chunks)
    for column in _HEALTH_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    body = [c for c in frame.columns if c.startswith(BODY_PREFIX)]
    numbers = frame[body].apply(pd.to_numeric, errors="coerce").astype(float)
    frame = _numeric(frame.drop(columns=body), ["status", "latency_s"])
    return pd.concat([frame, numbers], axis=1)  # one block: hundreds of columns stay fast


class _BodyColumns:
    """The numeric /health body fields that become health columns: the first
    MAX_HEALTH_FIELDS seen, and every `named` one (the fields criteria or the loop-lag
    field read) whenever it first appears.

    A server that answered 100,000 keys, or new keys every poll, to a soak that stored
    them all, would otherwise get one column per distinct key for every row.
    """

    def __init__(self, named: Iterable[str]) -> None:
        self.wanted = {BODY_PREFIX + path for path in named}
        self.columns: set[str] = set()
        self.others = 0
        #: Once the columns are full: every top-level key a column can come from.
        self.roots: set[str] | None = None

    def fields(self, body: dict[str, Any]) -> dict[str, Any]:
        """The `body.` fields of one body that have (or get) a column."""
        if self.roots is not None:  # C-speed set algebra instead of flattening junk
            body = {key: body[key] for key in sorted(body.keys() & self.roots)}
        fields: dict[str, Any] = {}
        flatten_into(body, fields, BODY_PREFIX)
        if not fields.keys() <= self.columns:
            for key in [k for k in fields if k not in self.columns]:
                if key in self.wanted or self.others < MAX_HEALTH_FIELDS:
                    self.columns.add(key)
                    self.others += key not in self.wanted
                else:
                    del fields[key]
            if self.roots is None and self.others >= MAX_HEALTH_FIELDS:
                paths = [c[len(BODY_PREFIX) :].split(".") for c in self.columns | self.wanted]
                self.roots = {".".join(p[:i]) for p in paths for i in range(1, len(p) + 1)}
        return fields
