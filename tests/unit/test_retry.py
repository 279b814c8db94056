"""The one backoff (client/retry.py), on an injected clock: no real waiting."""

from __future__ import annotations

import pytest

from fastxfer.client import retry


def test_waits_double_up_to_the_cap_and_the_budget_ends_it() -> None:
    waits: list[float] = []
    b = retry.Backoff(attempts=8, sleep=waits.append)
    assert [b.again() for _ in range(9)] == [True] * 8 + [False]
    assert waits == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]


def test_zero_attempts_gives_up_at_once_without_waiting() -> None:
    waits: list[float] = []
    assert retry.Backoff(attempts=0, sleep=waits.append).again() is False
    assert waits == []


def test_work_done_starts_a_new_outage() -> None:
    waits: list[float] = []
    b = retry.Backoff(attempts=2, sleep=waits.append)
    assert b.again() and b.again()
    b.reset()
    assert b.again() and b.again() and not b.again()
    assert waits == [0.2, 0.4, 0.2, 0.4]


@pytest.mark.parametrize("value, expected", [("", 8), ("0", 0), ("3", 3), ("-4", 0), ("1000", 100), ("x", 8)])
def test_the_environment_sets_the_budget(monkeypatch, value: str, expected: int) -> None:
    monkeypatch.setenv("FASTXFER_RECONNECTS", value)
    assert retry.Backoff(sleep=lambda _: None).attempts == expected
