"""The wire between a remote `soak collect --join` and a run's receiver, over real loopback TCP.

A Receiver (the orchestrator's side) and a Shipper (the remote's) run in this process
on two real run directories; the remote's files are written here by hand, so each test
says exactly which records exist and checks that each arrives once, in order.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from soak.collect import receiver as receiver_module
from soak.collect import shipper as shipper_module
from soak.collect.importer import (
    IMPORTS,
    Importer,
    ImportGap,
    merge_runs,
    read_complete_lines,
)
from soak.collect.receiver import Receiver
from soak.collect.shipper import Shipper
from soak.collect.wire import (
    PROTOCOL,
    Channel,
    Clock,
    ClockSample,
    client_proof,
    nonce,
)
from soak.errors import RunError, UsageError
from soak.run import check_listen
from soak.rundir import EVENTS, PROCESS, JsonlWriter, RunDir

SECRET = "s3cret-shared-by-both-sides"
TARGET = "gpu1"


def make_run(root: Path, name: str, targets: list[str]) -> RunDir:
    manifest = {"targets": [{"name": t, "url": None} for t in targets], "mode": "collect"}
    return RunDir.create(root, name, "test", manifest)


class Events:
    """Collects the events either side writes, for the test to read."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def __call__(self, kind: str, message: str, target: str | None = None, **fields: Any) -> None:
        self.records.append({"kind": kind, "message": message, "target": target, **fields})

    def kinds(self) -> list[str]:
        return [r["kind"] for r in self.records]

    def wait_for(self, kind: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [r for r in self.records if r["kind"] == kind]
            if found:
                return found[-1]
            time.sleep(0.05)
        raise AssertionError(f"no {kind} event in {self.kinds()}")


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[tuple[RunDir, RunDir]]:
    yield (
        make_run(tmp_path / "orchestrator", "lab", [TARGET]),
        make_run(tmp_path / "remote", "collect", [TARGET]),
    )


def write_samples(remote: RunDir, first: int, count: int) -> None:
    with JsonlWriter(remote.target_file(TARGET, PROCESS)) as out:
        for n in range(first, first + count):
            out.write({"t": 1_800_000_000.0 + n, "pid": 42, "threads": n})


def shipped(run: RunDir) -> list[int]:
    return [r["threads"] for r in run.target_records(TARGET, PROCESS)]


def wait_until(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def start_pair(orchestrator: RunDir, remote: RunDir, remote_secret: str = SECRET):
    run_events, remote_events = Events(), Events()
    receiver = Receiver(orchestrator, ("127.0.0.1", 0), SECRET, [TARGET], run_events)
    receiver.start()
    shipper = Shipper(remote, receiver.address, remote_secret, [TARGET], remote_events)
    shipper.start()
    return receiver, shipper, run_events, remote_events


def test_every_record_arrives_once_in_order_with_its_events(runs):
    orchestrator, remote = runs
    write_samples(remote, 0, 50)
    with JsonlWriter(remote.file(EVENTS)) as out:
        out.write({"t": 1_800_000_000.0, "source": "run", "kind": "run_start", "message": "x"})
        out.write(
            {"t": 1_800_000_001.0, "source": "collector", "kind": "target_found",
             "target": TARGET, "message": "found"}
        )  # fmt: skip
    receiver, shipper, run_events, remote_events = start_pair(orchestrator, remote)
    try:
        wait_until(lambda: len(shipped(orchestrator)) == 50)
        write_samples(remote, 50, 25)
        wait_until(lambda: len(shipped(orchestrator)) == 75)
    finally:
        shipper.finish()
        receiver.close()
    assert shipped(orchestrator) == list(range(75))
    events = list(orchestrator.records(EVENTS))
    assert [e["kind"] for e in events] == ["target_found"]  # the remote's run events stay there
    assert events[0]["remote"] == socket.gethostname()
    assert {"remote_joined", "clock_offset", "remote_backfilled", "remote_lost"} <= set(
        run_events.kinds()
    )
    assert not [r for r in run_events.records if "source" in r]  # events.jsonl's own field
    backfilled = run_events.wait_for("remote_backfilled")
    assert backfilled["records"] == 50 + 1  # the samples and the one collector event
    offset = run_events.wait_for("clock_offset")
    assert abs(offset["offset_s"]) < 0.5 and offset["delay_s"] < 1.0  # one machine, one clock


def test_a_wrong_secret_is_refused_on_both_sides_and_nothing_is_imported(runs):
    orchestrator, remote = runs
    write_samples(remote, 0, 5)
    receiver, shipper, run_events, remote_events = start_pair(
        orchestrator, remote, remote_secret="not-the-secret-at-all"
    )
    try:
        wait_until(lambda: shipper.failure is not None)
    finally:
        shipper.finish()
        receiver.close()
    assert "wrong secret" in shipper.failure
    assert remote_events.kinds() == ["remote_refused"]
    assert "wrong secret" in run_events.wait_for("remote_refused")["message"]
    assert shipped(orchestrator) == []
    assert SECRET not in json.dumps(run_events.records + remote_events.records)


def test_a_server_that_cannot_prove_the_secret_is_refused_by_the_remote(runs):
    _, remote = runs
    server = socket.create_server(("127.0.0.1", 0))

    def impostor() -> None:
        sock, _ = server.accept()
        channel = Channel(sock)
        channel.send({"type": "challenge", "protocol": PROTOCOL, "nonce": nonce()})
        channel.receive()  # the hello: an impostor cannot check its proof, and says welcome
        channel.send({"type": "welcome", "proof": "0" * 64, "offsets": {}})
        time.sleep(1.0)
        channel.close()

    thread = threading.Thread(target=impostor, daemon=True)
    thread.start()
    events = Events()
    shipper = Shipper(remote, server.getsockname()[:2], SECRET, [TARGET], events)
    shipper.start()
    try:
        wait_until(lambda: shipper.failure is not None)
    finally:
        shipper.finish()
        server.close()
    assert "did not prove it knows the secret" in shipper.failure


def test_a_torn_last_line_waits_until_it_is_complete(tmp_path):
    path = tmp_path / "process.jsonl"
    path.write_bytes(b'{"n":1}\n{"n":2}\n{"n":')
    lines, end = read_complete_lines(path, 0)
    assert lines == ['{"n":1}', '{"n":2}'] and end == 16
    assert read_complete_lines(path, end) == ([], end)
    with path.open("ab") as handle:
        handle.write(b"3}\n")
    assert read_complete_lines(path, end) == (['{"n":3}'], end + 8)


def test_a_torn_line_is_not_shipped_until_its_writer_completes_it(runs):
    orchestrator, remote = runs
    path = remote.target_file(TARGET, PROCESS)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'{"t":1,"threads":0}\n{"t":2,"thr')
    receiver, shipper, _, _ = start_pair(orchestrator, remote)
    try:
        wait_until(lambda: shipped(orchestrator) == [0])
        time.sleep(1.5)  # a few polls of the torn line
        assert shipped(orchestrator) == [0]
        with path.open("ab") as handle:
            handle.write(b'eads":1}\n')
        wait_until(lambda: shipped(orchestrator) == [0, 1])
    finally:
        shipper.finish()
        receiver.close()


def test_a_reconnect_resumes_from_the_offsets_the_run_has(runs):
    orchestrator, remote = runs
    write_samples(remote, 0, 30)
    receiver, shipper, run_events, _ = start_pair(orchestrator, remote)
    wait_until(lambda: len(shipped(orchestrator)) == 30)
    receiver.close()  # the orchestrator goes away; the remote goes on sampling
    write_samples(remote, 30, 40)
    time.sleep(1.0)
    address = receiver.address
    again = Receiver(orchestrator, address, SECRET, [TARGET], run_events)
    again.start()
    try:
        wait_until(lambda: len(shipped(orchestrator)) >= 70)
        time.sleep(1.0)
    finally:
        shipper.finish()
        again.close()
    assert shipped(orchestrator) == list(range(70))
    state = json.loads(orchestrator.file(IMPORTS).read_text())
    assert (
        state[shipper.source]["offsets"][f"{TARGET}/{PROCESS}"]
        == remote.target_file(TARGET, PROCESS).stat().st_size
    )


def test_the_importer_skips_what_it_has_and_refuses_a_gap(runs):
    orchestrator, _ = runs
    importer = Importer(orchestrator)
    names = {TARGET: TARGET}
    file = f"{TARGET}/{PROCESS}"
    lines = ['{"t":10.0,"threads":1}', '{"t":11.0,"threads":2}']
    end = sum(len(line) + 1 for line in lines)
    assert importer.take("src", file, 0, end, lines, names, 2.0, "h") == 2
    assert importer.take("src", file, 0, end, lines, names, 2.0, "h") == 0  # resent: skipped
    with pytest.raises(ImportGap):
        importer.take("src", file, end + 5, end + 10, ['{"t":1}'], names, 0.0, "h")
    importer.close()
    assert [r["t"] for r in orchestrator.target_records(TARGET, PROCESS)] == [8.0, 9.0]
    assert Importer(orchestrator).offsets("src") == {file: end}  # kept across restarts


def test_the_send_window_and_the_receive_queue_stay_bounded(runs, monkeypatch):
    orchestrator, remote = runs
    monkeypatch.setattr(shipper_module, "SEND_WINDOW", 3)
    monkeypatch.setattr(receiver_module, "RECEIVE_QUEUE", 2)
    monkeypatch.setattr("soak.collect.importer.BATCH_BYTES", 200)  # ~4 records a batch
    write_samples(remote, 0, 200)
    gate = threading.Event()
    original = Importer.take
    most_queued: list[int] = []

    def slow_take(self: Importer, *args: Any) -> int:  # a disk that does not keep up
        gate.wait()
        return original(self, *args)

    monkeypatch.setattr(Importer, "take", slow_take)
    receiver, shipper, _, _ = start_pair(orchestrator, remote)
    try:
        wait_until(lambda: bool(receiver._connections))
        connection = next(iter(receiver._connections.values()))
        for _ in range(20):
            most_queued.append(connection.batches.qsize())
            time.sleep(0.1)
        assert max(most_queued) <= 2
        assert connection.received <= 3  # the sender stopped at its window
        assert shipped(orchestrator) == []
        gate.set()
        wait_until(lambda: len(shipped(orchestrator)) == 200)
    finally:
        gate.set()
        shipper.finish()
        receiver.close()
    assert shipped(orchestrator) == list(range(200))


def test_the_window_blocks_a_sender_with_nothing_acknowledged():
    window = shipper_module.Window(size=2)
    window.acquire()
    window.acquire()
    blocked = threading.Thread(target=window.acquire, daemon=True)
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()  # a third batch waits for an acknowledgement
    window.release()
    blocked.join(2.0)
    assert not blocked.is_alive() and window.in_flight == 2


def test_the_clock_offset_is_the_fastest_round_trips():
    clock = Clock()
    clock.add(ClockSample.of(t0=100.0, t1=160.4, t2=101.0))  # slow: queued on the way back
    clock.add(ClockSample.of(t0=200.0, t1=260.01, t2=200.02))
    assert clock.best is not None and clock.best.delay_s == pytest.approx(0.02)
    assert clock.offset_s == pytest.approx(60.0)


def test_a_client_proof_binds_the_targets_it_names():
    hello = {"nonce": "c", "source": "run-1", "targets": ["a"]}
    other = {**hello, "targets": ["b"]}
    assert client_proof(SECRET, "s", hello) != client_proof(SECRET, "s", other)


def test_merge_imports_a_collect_run_once_with_its_clock_offset(tmp_path):
    load = make_run(tmp_path, "lab", ["t1"])
    collected = make_run(tmp_path, "collect", [TARGET])
    write_samples(collected, 0, 10)
    first = merge_runs(load.path, collected.path, [f"t1={TARGET}"], "-1.5s")
    again = merge_runs(load.path, collected.path, [f"t1={TARGET}"], "-1.5s")
    assert first.total == 10 and again.total == 0
    times = [r["t"] for r in load.target_records("t1", PROCESS)]
    assert times == [1_800_000_001.5 + n for n in range(10)]
    with pytest.raises(UsageError, match="RUN_NAME=COLLECTED_NAME"):
        merge_runs(load.path, collected.path, ["t1=nosuch"], None)


def test_merge_refuses_a_target_with_samples_of_its_own(tmp_path):
    load = make_run(tmp_path, "lab", [TARGET])
    collected = make_run(tmp_path, "collect", [TARGET])
    write_samples(load, 0, 3)
    write_samples(collected, 0, 3)
    with pytest.raises(UsageError, match="samples of its own"):
        merge_runs(load.path, collected.path, None, None)


def test_a_busy_listen_port_fails_before_the_run_starts():
    busy = socket.create_server(("127.0.0.1", 0))
    try:
        with pytest.raises(RunError, match="cannot listen there"):
            check_listen(f"127.0.0.1:{busy.getsockname()[1]}")
    finally:
        busy.close()
