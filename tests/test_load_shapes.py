"""Load shapes: users and phase over time, from the [load] table."""

import pytest

from soak.errors import ProfileError
from soak.load.shapes import plan
from soak.profile import profile_from_mapping


def load(**fields):
    return profile_from_mapping({"load": {"duration": "100s", "idle_after": "10s", **fields}}).load


def at(table, *times):
    return [(step.users, step.phase) if step else None for step in (plan(table, t) for t in times)]


def test_steady_then_idle_then_over():
    assert at(load(users=8), 0, 99.9, 100, 109.9, 110) == [
        (8, "load"), (8, "load"), (0, "idle"), (0, "idle"), None,
    ]  # fmt: skip


def test_ramp_from_min_users_to_users():
    table = load(shape="ramp", users=100, min_users=10)
    assert at(table, 0, 50, 99.99) == [(10, "ramp"), (55, "ramp"), (100, "ramp")]


def test_steps_are_equal_and_named():
    table = load(shape="steps", users=40, steps=4)
    assert at(table, 0, 24.9, 25, 60, 99) == [
        (10, "step-1"), (10, "step-1"), (20, "step-2"), (30, "step-3"), (40, "step-4"),
    ]  # fmt: skip


def test_waves_start_at_night_and_peak_at_half_period():
    table = load(shape="waves", users=100, min_users=20, period="40s")
    assert at(table, 0, 9, 11, 20, 40) == [
        (20, "night"), (54, "night"), (66, "day"), (100, "day"), (20, "night"),
    ]  # fmt: skip


def test_bursts_separated_by_gaps():
    table = load(shape="bursts", users=30, burst="10s", gap="20s")
    assert at(table, 0, 9.9, 10, 29.9, 30, 45) == [
        (30, "burst"), (30, "burst"), (0, "gap"), (0, "gap"), (30, "burst"), (0, "gap"),
    ]  # fmt: skip


def test_shape_keys_for_another_shape_are_rejected():
    with pytest.raises(ProfileError, match=r"\[load\] period does not apply to shape = 'steps'"):
        load(shape="steps", period="1h")
    with pytest.raises(ProfileError, match="min_users = 50 exceeds users = 10"):
        load(shape="ramp", users=10, min_users=50)
    with pytest.raises(ProfileError, match="unknown load shape 'sine'"):
        load(shape="sine")
