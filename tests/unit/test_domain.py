"""Task states, the transition rule, and retry pacing."""

from __future__ import annotations

import random

import pytest

from app.tasks.domain import Backoff, State, states_before

P, R, S, F = State.PENDING, State.PROCESSING, State.SUCCESS, State.FAIL
ALLOWED = {(P, R), (P, S), (P, F), (R, S), (R, F)}


@pytest.mark.parametrize("target", list(State))
@pytest.mark.parametrize("source", list(State))
def test_task_moves_only_forward_and_never_out_of_a_terminal_state(source, target):
    assert (source in states_before(target)) == ((source, target) in ALLOWED)


@pytest.mark.parametrize(("state", "terminal"), [(P, False), (R, False), (S, True), (F, True)])
def test_only_success_and_fail_are_terminal(state, terminal):
    assert state.terminal is terminal


def test_state_values_are_the_strings_clients_see():
    assert [s.value for s in State] == ["pending", "processing", "success", "fail"]


@pytest.mark.parametrize(
    ("backoff", "attempt", "ceiling"),
    [
        (Backoff(base_s=2.0, cap_s=300.0), 1, 2.0),
        (Backoff(base_s=2.0, cap_s=300.0), 2, 4.0),
        (Backoff(base_s=2.0, cap_s=300.0), 3, 8.0),
        (Backoff(base_s=2.0, cap_s=300.0), 8, 256.0),
        (Backoff(base_s=2.0, cap_s=300.0), 9, 300.0),
        (Backoff(base_s=2.0, cap_s=300.0), 40, 300.0),
        (Backoff(base_s=2.0, cap_s=300.0), 0, 2.0),
        (Backoff(base_s=1.0, cap_s=100.0, factor=3.0), 4, 27.0),
        (Backoff(base_s=1.0, cap_s=100.0, factor=3.0), 5, 81.0),
        (Backoff(base_s=1.0, cap_s=100.0, factor=3.0), 6, 100.0),
        (Backoff(base_s=15.0, cap_s=10.0), 1, 10.0),
    ],
)
def test_delay_is_between_half_and_all_of_the_capped_exponential_step(backoff, attempt, ceiling):
    rng = random.Random(1234)
    delays = [backoff.delay(attempt, rng) for _ in range(500)]

    assert all(0.5 * ceiling <= d <= ceiling for d in delays)
    # Jitter really spreads over the range, so replicas do not retry in lockstep.
    assert min(delays) < 0.55 * ceiling
    assert max(delays) > 0.95 * ceiling


@pytest.mark.parametrize("attempt", range(1, 8))
def test_delay_doubles_per_attempt_below_the_cap(attempt):
    backoff = Backoff(base_s=2.0, cap_s=300.0)

    this = backoff.delay(attempt, random.Random(7))
    after = backoff.delay(attempt + 1, random.Random(7))

    assert after == pytest.approx(2 * this)


def test_delay_stops_growing_at_the_cap():
    backoff = Backoff(base_s=2.0, cap_s=300.0)

    assert backoff.delay(10, random.Random(7)) == backoff.delay(60, random.Random(7)) <= 300.0


def test_delay_without_a_generator_is_still_within_bounds():
    assert all(1.0 <= Backoff(base_s=2.0, cap_s=300.0).delay(1) <= 2.0 for _ in range(200))


def test_delay_for_a_very_late_attempt_is_the_cap():
    assert 150.0 <= Backoff(base_s=2.0, cap_s=300.0).delay(2000, random.Random(7)) <= 300.0
