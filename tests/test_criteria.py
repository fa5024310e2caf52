"""Criteria: parsing once with clear errors, checking a target summary with actionable messages."""

import pytest

from soak.criteria import (
    FAIL,
    METRICS,
    PASS,
    SKIPPED,
    criteria_by_target,
    parse_criteria,
    parse_criterion,
    parse_target_overrides,
)
from soak.formatting import counted
from soak.model import TargetSummary, read_summary


def flat_target(entry: dict) -> TargetSummary:
    """A target summary from a flat (version 2) entry: the old layout, read by the reader
    of old summary.json files, keeps these fixtures short."""
    return read_summary({"schema_version": 2, "targets": {"t": entry}}).targets["t"]


@pytest.mark.parametrize(
    ("expression", "metric", "op", "threshold"),
    [
        ("ttft.p95 < 2s", "ttft.p95", "<", 2.0),
        ('ttft.p95 < "250ms"', "ttft.p95", "<", 0.25),
        ("reply.p99<=1.5", "reply.p99", "<=", 1.5),
        ("loop_lag.max < 1m", "loop_lag.max", "<", 60.0),
        ("threads.growth_per_hour < 100", "threads.growth_per_hour", "<", 100.0),
        ("stalls.count == 0", "stalls.count", "==", 0.0),
        ("stalls.rate <= 0.1%", "stalls.rate", "<=", 0.001),
        ("errors.rate < 0.02", "errors.rate", "<", 0.02),
        ("idle_cpu.percent < 5%", "idle_cpu.percent", "<", 5.0),
        ("  Replies.Count >= 1000 ", "replies.count", ">=", 1000.0),
        ("restarts.count != 1", "restarts.count", "!=", 1.0),
    ],
)
def test_valid_expressions_parse(expression: str, metric: str, op: str, threshold: float) -> None:
    criterion = parse_criterion(expression)
    assert (criterion.name, criterion.op) == (metric, op)
    assert criterion.threshold == pytest.approx(threshold)


def test_every_required_metric_exists() -> None:
    required = (
        "threads.growth_per_hour threads.max threads.end rss.growth_mb_per_hour rss.max_mb "
        "fds.growth_per_hour stalls.count stalls.rate errors.count errors.rate disconnects.count "
        "disconnects.rate violations.count mismatches.count first_token_timeouts.count "
        "replies.count ttft.p50 ttft.p95 ttft.p99 reply.p50 reply.p95 reply.p99 "
        "idle_cpu.percent loop_lag.p99 loop_lag.max restarts.count threads.hours_to_limit "
        "threads.growth_per_1k_replies threads.growth_per_connection rss.growth_mb_per_1k_replies "
        "fds.hours_to_limit idle_cpu.early_percent idle_cpu.late_percent "
        "idle_cpu.growth_per_1k_replies ping.p99 gap.max health_latency.p99"
    )
    assert set(required.split()) <= set(METRICS)


def test_unknown_metric_lists_valid_metrics() -> None:
    with pytest.raises(ValueError) as info:
        parse_criterion("thread.growth < 5")
    message = str(info.value)
    assert "'thread.growth < 5'" in message and "unknown metric" in message
    assert "threads.growth_per_hour" in message and "ttft.p95" in message
    assert "health.<field>.<stat>" in message


@pytest.mark.parametrize(
    ("expression", "hint"),
    [
        ("stalls.count = 0", "OP one of"),
        ("stalls.count", "OP one of"),
        ("ttft.p95 < fast", "not a duration"),
        ("ttft.p95 < -1", "not a duration"),
        ("stalls.count < 2s", "a number"),
        ("stalls.count < 5%", "a number"),
        ("stalls.rate < nan", "percentage"),
        ("threads.max < inf", "a number"),
    ],
)
def test_invalid_expressions_say_what_is_valid(expression: str, hint: str) -> None:
    with pytest.raises(ValueError, match=hint) as info:
        parse_criterion(expression)
    assert repr(expression) in str(info.value)


def test_non_string_criterion_is_rejected() -> None:
    with pytest.raises(ValueError, match="not a string"):
        parse_criteria(["stalls.count == 0", 5])  # type: ignore[list-item]


SUMMARY = {
    "turns": 1204,
    "stalls": 17,
    "errors": 0,
    "threads_growth_per_hour": 204.0,
    "threads_growth_ci_per_hour": [186.0, 222.0],
    "threads_hours_to_limit": 19.6,
    "threads_limit": 4096,
    "threads_limit_source": "kernel threads-max",
    "ttft_p95_s": 0.41,
    "ttft_samples": 1187,
    "loop_lag_p99_s": None,
    "unavailable": {"loop_lag_p99_s": "no loop-lag field is configured; set it"},
}


def test_failing_count_message_has_numbers() -> None:
    result = parse_criterion("stalls.count == 0").check(flat_target(SUMMARY))
    assert (result.status, result.passed, result.value) == (FAIL, False, 17)
    assert result.message == "17 stalls in 1,204 turns (1.41%); breaks the limit 0."


def test_count_messages_agree_in_number() -> None:
    one = flat_target({**SUMMARY, "stalls": 1, "turns": 1, "replies": 1})
    assert parse_criterion("stalls.count == 0").check(one).message == (
        "1 stall in 1 turn (100%); breaks the limit 0."
    )
    assert parse_criterion("replies.count >= 2").check(one).message.startswith("1 reply;")
    assert counted(1, "chats stuck to the end") == "1 chat stuck to the end"
    assert counted(2, "first-token timeouts") == "2 first-token timeouts"


def test_growth_message_gives_ci_and_time_to_limit() -> None:
    result = parse_criterion("threads.growth_per_hour < 100").check(flat_target(SUMMARY))
    assert result.status == FAIL and result.unit == "threads/h"
    assert result.message == (
        "threads grow 204/h (95% CI 186–222); 4,096 (kernel threads-max) reached in ~19.6 h; "
        "breaks the limit < 100/h."
    )  # per hour, as the criterion is written; 3.4/min beside "< 100/h" confused readers


def test_growth_message_per_unit_of_work_extrapolates_to_production() -> None:
    summary = {
        **SUMMARY,
        "threads_growth_per_hour": 12.0,
        "threads_growth_ci_per_hour": [11.0, 13.0],
        "threads_trend": "growing",
        "threads_growth_per_1k_replies": 100.0,
        "threads_growth_per_connection": 0.5,
        "replies_per_day": 2000,
        "threads_hours_to_limit_at_replies_per_day": 480.0,
    }
    message = parse_criterion("threads.growth_per_hour < 5").check(flat_target(summary)).message
    assert message.startswith("threads grow 12/h (95% CI 11–13); 100 per 1,000 replies")
    assert "0.5 per new connection: at 2,000 replies a day, 4,096 in ~20 days" in message
    work = parse_criterion("threads.growth_per_1k_replies < 1").check(flat_target(summary))
    assert work.status == FAIL and work.value == 100.0
    assert work.message.startswith("threads grow 100 per 1,000 replies")


def test_plateau_and_sawtooth_messages_say_what_the_series_did() -> None:
    plateau = {
        "threads_growth_per_hour": 0.0,
        "threads_growth_ci_per_hour": [0.0, 0.0],
        "threads_trend": "plateau",
        "threads_start": 1.0,
        "threads_end": 24.0,
        "threads_level_since_s": 690.0,
    }
    result = parse_criterion("threads.growth_per_hour < 5").check(flat_target(plateau))
    assert result.status == PASS
    assert result.message == (
        "threads rose 1 → 24 by +11m30s, then held level: 0/h (95% CI 0–0) since; "
        "meets the limit < 5/h."
    )
    sawtooth = {
        "rss_growth_mb_per_hour": 0.4,
        "rss_growth_ci_mb_per_hour": [-0.2, 0.9],
        "rss_trend": "flat",
        "rss_envelope": True,
        "rss_drops": 6,
    }
    message = parse_criterion("rss.growth_mb_per_hour < 5").check(flat_target(sawtooth)).message
    assert message.startswith(
        "RSS grows 0.4 MB/h (95% CI -0.2–0.9), tooth by tooth (a sawtooth with 6 drops)"
    )


def test_hours_to_limit_is_infinite_when_not_growing() -> None:
    criterion = parse_criterion("threads.hours_to_limit > 7d")
    assert criterion.threshold == 168.0
    failing = criterion.check(flat_target(SUMMARY))
    assert failing.status == FAIL and failing.value == pytest.approx(19.6)
    assert failing.message.startswith("threads reach 4,096 (kernel threads-max) in ~19.6 h")
    flat = {"threads_growth_per_hour": 0.0, "threads_limit": 4096, "threads_hours_to_limit": None}
    passing = criterion.check(flat_target(flat))
    assert passing.status == PASS and passing.value is None  # infinite: null in JSON
    assert "never reach 4,096" in passing.message
    assert criterion.check(flat_target({})).status == SKIPPED


def test_health_field_metrics() -> None:
    summary = {
        "health_fields": {
            "diagnostics.thread_count": {
                "max": 212.0,
                "last": 180.0,
                "growth_per_hour": 30.0,
                "growth_ci_per_hour": [28.0, 32.0],
                "trend": "growing",
                "samples": 300,
            }
        }
    }
    high = parse_criterion("health.diagnostics.thread_count.max < 200").check(flat_target(summary))
    assert (high.status, high.value) == (FAIL, 212.0)
    assert high.message == "/health diagnostics.thread_count max 212; breaks the limit < 200."
    assert (
        parse_criterion("health.diagnostics.thread_count.last < 200")
        .check(flat_target(summary))
        .passed
    )
    growth = parse_criterion("health.diagnostics.thread_count.growth_per_hour < 5").check(
        flat_target(summary)
    )
    assert growth.status == FAIL and "grows 30/h (95% CI 28–32)" in growth.message
    typo = parse_criterion("health.diagnostics.thread_cnt.max < 200").check(flat_target(summary))
    assert typo.status == SKIPPED and "Did you mean diagnostics.thread_count?" in typo.message


def test_health_metric_needs_a_statistic_and_keeps_case() -> None:
    criterion = parse_criterion("health.Diag.ThreadCount.MAX < 5")
    assert criterion.name == "health.Diag.ThreadCount.max"
    with pytest.raises(ValueError, match="does not end in a statistic") as info:
        parse_criterion("health.diagnostics.thread_count < 200")
    assert "health.diagnostics.thread_count.max < 200" in str(info.value)


def test_target_overrides_replace_add_and_skip() -> None:
    general = parse_criteria(["threads.growth_per_hour < 5", "stalls.count == 0", "ttft.p95 < 2s"])
    overrides = parse_target_overrides(
        {"legacy": {"checks": ["threads.growth_per_hour < 50", "rss.max_mb < 900"],
                    "skip": ["ttft.p95"]}}
    )  # fmt: skip
    by_target = criteria_by_target(general, overrides, ["legacy", "new"])
    assert [c.expression for c in by_target["new"]] == [c.expression for c in general]
    legacy = by_target["legacy"]
    assert [(c.expression, c.scope) for c in legacy] == [
        ("stalls.count == 0", "profile"),
        ("threads.growth_per_hour < 50", "target"),
        ("rss.max_mb < 900", "target"),
    ]


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ({"a": {"chex": []}}, "unknown key 'chex'"),
        ({"a": {"checks": "stalls.count == 0"}}, "must be a list of strings"),
        ({"a": {"skip": ["thread.max"]}}, "skip names unknown metric 'thread.max'"),
        ({"a": {"checks": ["bogus < 1"]}}, "unknown metric 'bogus'"),
        ([1], "expected tables"),
    ],
)
def test_bad_target_overrides_say_what_to_write(value: object, hint: str) -> None:
    with pytest.raises(ValueError, match=hint):
        parse_target_overrides(value)


def test_latency_message_warns_when_soak_was_saturated() -> None:
    result = parse_criterion("ttft.p95 < 2s").check(
        flat_target({"ttft_p95_s": 2.5, "ttft_samples": 500, "soak_saturated_percent": 12})
    )
    assert result.message == (
        "TTFT p95 2.5 s (soak itself was saturated for 12% of the run, which can inflate this: "
        "see soak's own health); breaks the limit < 2 s."
    )
    lag = parse_criterion("loop_lag.max < 1s").check(
        flat_target({"loop_lag_max_s": 0.5, "loop_lag_samples": 50, "soak_saturated_percent": 12})
    )
    assert "saturated" not in lag.message


def test_time_check_passes_with_units() -> None:
    result = parse_criterion("ttft.p95 < 2s").check(flat_target(SUMMARY))
    assert (result.status, result.passed) == (PASS, True)
    assert result.message == "TTFT p95 410 ms; meets the limit < 2 s."
    lag = parse_criterion("ttft.p95 < 500ms").check(
        flat_target({"ttft_p95_s": 0.012, "ttft_samples": 20})
    )
    assert lag.message == "TTFT p95 12 ms; meets the limit < 500 ms."


def test_rate_is_count_over_turns() -> None:
    result = parse_criterion("stalls.rate < 1%").check(flat_target(SUMMARY))
    assert result.value == pytest.approx(17 / 1204) and result.status == FAIL
    assert parse_criterion("errors.rate < 1%").check(flat_target(SUMMARY)).status == PASS


def test_missing_value_is_skipped_with_reason() -> None:
    result = parse_criterion("loop_lag.p99 < 100ms").check(flat_target(SUMMARY))
    assert (result.status, result.passed, result.value) == (SKIPPED, None, None)
    assert "no loop-lag field is configured" in result.message
    no_turns = parse_criterion("stalls.rate < 1%").check(flat_target({"stalls": 0, "turns": 0}))
    assert no_turns.status == SKIPPED and "no turns ended" in no_turns.message


def test_token_level_latency_criteria() -> None:
    target = TargetSummary()
    target.chats.itl.p99, target.chats.itl.samples = 0.35, 4000
    target.chats.tpot.p50, target.chats.tpot.samples = 0.025, 300
    target.chats.tokens_per_s = 40.0
    itl = parse_criterion("itl.p99 < 200ms").check(target)
    assert itl.status == FAIL and itl.message == (
        "inter-token latency p99 350 ms; breaks the limit < 200 ms."
    )
    assert parse_criterion("tpot.p50 <= 30ms").check(target).status == "pass"
    speed = parse_criterion("tokens_per_s.p50 > 50").check(target)
    assert speed.status == FAIL and "40 tokens/s" in speed.message
    target.chats.tpot.samples = 2
    assert parse_criterion("tokens_per_s.p50 > 10").check(target).status == "inconclusive"
