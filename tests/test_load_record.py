"""Chat aggregates: bounded per interval, and the same numbers whether one process recorded
the turns or workers shipped them to a master."""

from soak.histogram import quantile
from soak.load.monitor import PauseLog
from soak.load.record import MAX_ANOMALIES_PER_INTERVAL, ChatRecorder
from soak.protocols.turn import DISCONNECT, FIRST_TOKEN_TIMEOUT, OK, STALL, VIOLATION, TurnResult


def turns():
    """A mix of outcomes with latencies, as users would report them."""
    results = []
    for n in range(60):
        result = TurnResult(request_id=f"r{n}", tokens=10, frames=11, longest_gap_s=0.01 * n)
        if n % 10 == 3:
            result.outcome, result.detail = STALL, "no terminal frame"
        elif n % 10 == 7:
            result.outcome, result.subkind = VIOLATION, "frame_after_done"
        elif n % 10 == 9:
            result.outcome, result.close_code, result.close_reason = DISCONNECT, 1011, "keepalive"
        else:
            result.ttft_s, result.reply_s = 0.01 + n / 1000, 0.2 + n / 100
        if n % 2 == 0:  # the server said how many tokens it made (OpenAI usage)
            result.usage_prompt_tokens, result.usage_completion_tokens = 7, 28
        results.append(result)
    return results


def feed(recorder, results, target="a"):
    for result in results:
        recorder.turn_started(target)
        recorder.turn_finished(target, result, "s1")
        recorder.pinged(target, None if result.outcome == DISCONNECT else 0.002)


def test_worker_deltas_merged_by_a_master_equal_one_process():
    alone_chats, alone_anomalies = [], []
    alone = ChatRecorder(["a"], alone_chats.append, alone_anomalies.append)
    feed(alone, turns())
    alone.flush(now=alone.interval_started + 10)

    master_chats, master_anomalies = [], []
    master = ChatRecorder(["a"], master_chats.append, master_anomalies.append)
    results = turns()
    for number, share in enumerate((results[:25], results[25:])):
        worker = ChatRecorder(["a"], None, None, worker=f"w{number}")
        feed(worker, share)
        master.merge_delta(worker.take_delta())
    master.flush(now=master.interval_started + 10)

    [one], [merged] = alone_chats, master_chats
    assert {k: v for k, v in merged.items() if k != "t"} == {
        k: v for k, v in one.items() if k != "t"
    }
    assert one["outcomes"] == {"ok": 42, "stall": 6, "first_token_timeout": 0, "error": 0,
                               "disconnect": 6, "violation": 6, "mismatch": 0}  # fmt: skip
    assert one["pings_lost"] == 6 and one["ping_hist"] and one["gap_max_s"] == 0.59
    assert (one["usage_turns"], one["usage_prompt_tokens"], one["usage_completion_tokens"]) == (
        30, 30 * 7, 30 * 28,
    )  # fmt: skip
    assert one["tokens"] == 600  # token frames, as before
    assert quantile(merged["reply_hist"], 0.5) == quantile(one["reply_hist"], 0.5)
    assert len(master_anomalies) == len(alone_anomalies) == 18
    lost = [a for a in master_anomalies if a["kind"] == "disconnect"]
    assert all(a["close_code"] == 1011 and a["worker"] in ("w0", "w1") for a in lost)
    assert {a["subkind"] for a in master_anomalies if a["kind"] == "violation"} == {
        "frame_after_done"
    }
    assert master.totals == alone.totals


def test_time_per_output_token_uses_the_servers_count_when_it_reported_one():
    chats = []
    recorder = ChatRecorder(["a"], chats.append, None)
    for usage in (None, 21):  # 3 frames over 2 s: 1 s a token by frames, 0.1 s by usage
        result = TurnResult(request_id="r", ttft_s=0.5, reply_s=2.5, tokens=3, frames=4,
                            usage_completion_tokens=usage)  # fmt: skip
        feed(recorder, [result])
        recorder.flush()
    by_frames, by_usage = (quantile(chat["tpot_hist"], 0.5) for chat in chats)
    assert 0.95 < by_frames < 1.05 and 0.095 < by_usage < 0.105
    assert [chat["usage_completion_tokens"] for chat in chats] == [0, 21]


def test_anomalies_are_capped_per_interval_and_counts_stay_exact():
    chats, anomalies = [], []
    recorder = ChatRecorder(["a"], chats.append, anomalies.append)
    stalled = [TurnResult(request_id=str(n), outcome=STALL) for n in range(50)]
    feed(recorder, stalled)
    recorder.flush()
    feed(recorder, stalled[:1])
    recorder.flush()
    assert chats[0]["outcomes"]["stall"] == 50 and chats[0]["anomalies_dropped"] == 30
    assert len(anomalies) == MAX_ANOMALIES_PER_INTERVAL + 1
    assert anomalies[-1]["dropped_before"] == 30
    assert chats[0]["outcomes"][OK] == 0 and chats[1]["turns"] == 1


def test_a_chat_that_keeps_failing_is_stuck_until_an_ok_turn():
    chats, anomalies = [], []
    recorder = ChatRecorder(["a"], chats.append, anomalies.append)
    timeout = TurnResult(request_id="-", outcome="first_token_timeout")
    for _ in range(4):
        recorder.turn_started("a")
        recorder.turn_finished("a", timeout, "s7", chat=7)
    recorder.turn_started("a")
    recorder.turn_finished("a", TurnResult(request_id="x"), "s8", chat=8)  # another chat: fine
    recorder.flush(now=recorder.interval_started + 5)
    assert chats[-1]["stuck"] == 1
    [stuck] = [r for r in anomalies if r["kind"] == "chat_stuck"]
    assert (stuck["chat"], stuck["session"], stuck["failed_turns"]) == (7, "s7", 3)
    recorder.turn_started("a")
    recorder.turn_finished("a", TurnResult(request_id="y"), "s7", chat=7)
    recorder.flush(now=recorder.interval_started + 5)
    assert chats[-1]["stuck"] == 0
    [back] = [r for r in anomalies if r["kind"] == "chat_recovered"]
    assert back["chat"] == 7 and back["failed_turns"] == 4


def test_stuck_chats_of_workers_reach_the_master():
    worker = ChatRecorder(["a"], None, None, worker="w1")
    for _ in range(3):
        worker.turn_started("a")
        worker.turn_finished("a", TurnResult(request_id="-", outcome=STALL), "s1", chat=1)
    chats, anomalies = [], []
    master = ChatRecorder(["a"], chats.append, anomalies.append)
    master.merge_delta(worker.take_delta())
    master.flush()
    assert chats[-1]["stuck"] == 1
    assert [r["kind"] for r in anomalies].count("chat_stuck") == 1


def test_a_pause_log_counts_the_span_in_progress_too():
    cpu = [0.0]
    pauses = PauseLog(cpu_s=lambda: cpu[0])
    start = pauses.last_tick
    pauses.tick(start + 0.1, start + 0.12)  # on time: no pause
    pauses.tick(start + 0.22, start + 20.2)  # SIGSTOP for 20 s: no CPU time meanwhile
    assert 19.9 < pauses.paused_s(start, start + 20.25) < 20.0
    for n in range(100):  # running again: the probe on time every 0.1 s
        due = start + 20.3 + n / 10
        pauses.tick(due, due + 0.01)
    assert pauses.paused_s(start + 25, start + 30) == 0
    # stopped again, and a turn's timeout runs before the probe after SIGCONT
    assert 9.9 < pauses.paused_s(start + 28, start + 40.3) < 10.1


def test_a_probe_late_because_soak_was_busy_is_no_pause():
    cpu = [0.0]
    pauses = PauseLog(cpu_s=lambda: cpu[0])
    start = pauses.last_tick
    cpu[0] = 2.9  # reading a flood of frames for 3 s: on the CPU all along
    pauses.tick(start + 0.1, start + 3.0)
    assert pauses.paused_s(start, start + 3.0) == 0


class StoodStill:
    """A pause source: soak stood still `seconds` during any span asked about."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def paused_s(self, start: float, end: float) -> float:
        return min(self.seconds, end - start)


def test_a_failed_turn_is_soaks_only_when_soak_stood_still_for_a_share_of_it():
    recorder = ChatRecorder(["a"], None, None)
    for paused, outcome in ((20.0, STALL), (1.2, STALL), (20.0, OK), (5.0, FIRST_TOKEN_TIMEOUT)):
        recorder.pauses = StoodStill(paused)
        elapsed = 30.0 if outcome in (STALL, OK) else 6.0
        result = TurnResult(request_id="r", outcome=outcome, elapsed_s=elapsed)
        recorder.turn_started("a")
        recorder.turn_finished("a", result, "s1", chat=1)
    stats = recorder.current["a"]
    # 20 s of a 30 s stall: soak's; 1.2 s of it: the target's; 5 s of a 6 s FTT: soak's
    assert stats.excluded == {STALL: 1, FIRST_TOKEN_TIMEOUT: 1}
    assert stats.outcomes == {STALL: 1, OK: 1}
    assert [a["excluded"] is not None for a in recorder.outbox if "excluded" in a] == [True, True]
    assert ("a", 1) not in recorder.streaks  # the ok turn ended it; the excluded FTT began none
