"""Criteria: parsing once with clear errors, checking a target summary with actionable messages."""

import pytest

from soak.criteria import FAIL, METRICS, PASS, SKIPPED, parse_criteria, parse_criterion


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
        "idle_cpu.percent loop_lag.p99 loop_lag.max restarts.count"
    )
    assert set(required.split()) <= set(METRICS)


def test_unknown_metric_lists_valid_metrics() -> None:
    with pytest.raises(ValueError) as info:
        parse_criterion("thread.growth < 5")
    message = str(info.value)
    assert "'thread.growth < 5'" in message and "unknown metric" in message
    assert "threads.growth_per_hour" in message and "ttft.p95" in message


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
    "ttft_p95_s": 0.41,
    "loop_lag_p99_s": None,
    "unavailable": {"loop_lag_p99_s": "no loop-lag field is configured; set it"},
}


def test_failing_count_message_has_numbers() -> None:
    result = parse_criterion("stalls.count == 0").check(SUMMARY)
    assert (result.status, result.passed, result.value) == (FAIL, False, 17)
    assert result.message == "17 stalls in 1,204 turns (1.41%); breaks the limit 0."


def test_growth_message_gives_ci_and_time_to_limit() -> None:
    result = parse_criterion("threads.growth_per_hour < 100").check(SUMMARY)
    assert result.status == FAIL and result.unit == "threads/h"
    assert "3.4/min" in result.message and "95% CI 186–222/h" in result.message
    assert "4,096 reached in ~19.6 h" in result.message


def test_time_check_passes_with_units() -> None:
    result = parse_criterion("ttft.p95 < 2s").check(SUMMARY)
    assert (result.status, result.passed) == (PASS, True)
    assert result.message == "TTFT p95 410 ms; meets the limit < 2 s."
    lag = parse_criterion("ttft.p95 < 500ms").check({"ttft_p95_s": 0.012})
    assert lag.message == "TTFT p95 12 ms; meets the limit < 500 ms."


def test_rate_is_count_over_turns() -> None:
    result = parse_criterion("stalls.rate < 1%").check(SUMMARY)
    assert result.value == pytest.approx(17 / 1204) and result.status == FAIL
    assert parse_criterion("errors.rate < 1%").check(SUMMARY).status == PASS


def test_missing_value_is_skipped_with_reason() -> None:
    result = parse_criterion("loop_lag.p99 < 100ms").check(SUMMARY)
    assert (result.status, result.passed, result.value) == (SKIPPED, None, None)
    assert "no loop-lag field is configured" in result.message
    no_turns = parse_criterion("stalls.rate < 1%").check({"stalls": 0, "turns": 0})
    assert no_turns.status == SKIPPED and "no turns ended" in no_turns.message
