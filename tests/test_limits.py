"""Shared limits (:mod:`ocr_sse.limits`): upload slots, rates, the memory budget."""

from __future__ import annotations

import pytest

from ocr_sse.limits import MemoryBudget, RateLimiter, UploadSlots


def test_new_slots_are_all_free() -> None:
    """A new UploadSlots has none in use."""
    assert UploadSlots(limit=3).in_use == 0


def test_take_up_to_the_limit() -> None:
    """Exactly *limit* slots can be taken; each take counts one."""
    slots = UploadSlots(limit=3)

    assert [slots.try_take() for _ in range(3)] == [True, True, True]
    assert slots.in_use == 3


def test_take_past_the_limit_is_refused() -> None:
    """Once all slots are taken, try_take() says no and counts nothing."""
    slots = UploadSlots(limit=2)
    slots.try_take()
    slots.try_take()

    assert slots.try_take() is False
    assert slots.try_take() is False
    assert slots.in_use == 2


def test_give_back_frees_one_slot() -> None:
    """A slot given back can be taken again, by exactly one more upload."""
    slots = UploadSlots(limit=1)
    assert slots.try_take() is True

    slots.give_back()

    assert slots.in_use == 0
    assert slots.try_take() is True
    assert slots.try_take() is False


def test_give_back_without_take_raises() -> None:
    """Giving back a slot never taken is a bug, reported, not counted below 0."""
    slots = UploadSlots(limit=2)

    with pytest.raises(RuntimeError, match="no upload slot is taken"):
        slots.give_back()
    assert slots.in_use == 0


def test_give_back_once_too_often_raises() -> None:
    """A second give_back() for one take raises and leaves the count at 0."""
    slots = UploadSlots(limit=2)
    slots.try_take()
    slots.give_back()

    with pytest.raises(RuntimeError):
        slots.give_back()
    assert slots.in_use == 0


def test_zero_limit_refuses_everything() -> None:
    """With a limit of 0 no upload is ever admitted."""
    slots = UploadSlots(limit=0)

    assert slots.try_take() is False
    assert slots.in_use == 0


def test_many_takes_and_gives_balance() -> None:
    """Any sequence of takes and matching give-backs ends with all slots free."""
    slots = UploadSlots(limit=5)
    taken = 0
    for step in range(100):
        if step % 3 == 2 and taken:
            slots.give_back()
            taken -= 1
        elif slots.try_take():
            taken += 1
        assert slots.in_use == taken <= 5
    for _ in range(taken):
        slots.give_back()

    assert slots.in_use == 0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_allows_a_burst_then_says_how_long_to_wait() -> None:
    """per_minute uploads pass at once; the next waits for one token."""
    clock = FakeClock()
    limiter = RateLimiter(per_minute=3, clock=clock)

    assert [limiter.wait_for("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait_for("a") == pytest.approx(20.0)
    clock.now += 20
    assert limiter.wait_for("a") == 0.0


def test_rate_limiter_bursts_no_more_than_per_minute_after_a_long_idle() -> None:
    """A client idle for an hour may send per_minute uploads at once again,
    not sixty times as many: the bucket refills to per_minute and no more."""
    clock = FakeClock()
    limiter = RateLimiter(per_minute=3, clock=clock)

    assert [limiter.wait_for("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    clock.now += 3600
    assert [limiter.wait_for("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait_for("a") == pytest.approx(20.0)


def test_rate_limiter_counts_each_client_apart() -> None:
    """One client's uploads do not count against another's."""
    limiter = RateLimiter(per_minute=1, clock=FakeClock())

    assert limiter.wait_for("a") == 0.0
    assert limiter.wait_for("b") == 0.0
    assert limiter.wait_for("a") > 0


def test_rate_limiter_peeks_without_spending() -> None:
    """spend=False answers without counting the upload."""
    limiter = RateLimiter(per_minute=1, clock=FakeClock())

    assert limiter.wait_for("a", spend=False) == 0.0
    assert limiter.wait_for("a", spend=False) == 0.0
    assert limiter.wait_for("a") == 0.0
    assert limiter.wait_for("a", spend=False) == pytest.approx(60.0)


def test_rate_limiter_forgets_full_buckets_past_its_client_bound() -> None:
    """Memory stays bounded: refilled clients are dropped when room is needed."""
    clock = FakeClock()
    limiter = RateLimiter(per_minute=1, clock=clock, max_clients=2)
    limiter.wait_for("a")
    limiter.wait_for("b")
    clock.now += 60  # both buckets are full again
    limiter.wait_for("c")

    assert set(limiter._buckets) == {"c"}


def test_rate_limiter_past_its_client_bound_still_limits_busy_clients() -> None:
    """Making room drops only refilled buckets: a client that has spent its
    uploads still waits, however many other clients come."""
    clock = FakeClock()
    limiter = RateLimiter(per_minute=1, clock=clock, max_clients=2)
    limiter.wait_for("a")
    limiter.wait_for("b")
    clock.now += 30  # both half refilled

    assert limiter.wait_for("c") == 0.0
    assert limiter.wait_for("a") == pytest.approx(30.0)


def test_memory_budget_takes_what_fits_and_refuses_the_rest() -> None:
    """Bytes are taken while they fit; a take that would pass the limit takes
    nothing."""
    budget = MemoryBudget(limit=100)

    assert budget.try_take(60) is True
    assert budget.try_take(41) is False
    assert budget.try_take(40) is True
    assert budget.in_use == 100
    assert budget.try_take(1) is False


def test_memory_budget_given_back_can_be_taken_again() -> None:
    """What is given back is free for the next take."""
    budget = MemoryBudget(limit=100)
    budget.try_take(100)

    budget.give_back(30)

    assert budget.in_use == 70
    assert budget.try_take(30) is True


def test_memory_budget_of_zero_keeps_nothing() -> None:
    """A budget of 0 refuses every take but an empty one."""
    budget = MemoryBudget(limit=0)

    assert budget.try_take(1) is False
    assert budget.try_take(0) is True
    assert budget.in_use == 0


def test_memory_budget_refuses_to_give_back_more_than_taken() -> None:
    """Giving back more than was taken is a bug, not a silent negative count."""
    budget = MemoryBudget(limit=100)
    budget.try_take(10)

    with pytest.raises(RuntimeError, match="11 bytes given back, 10 taken"):
        budget.give_back(11)
    assert budget.in_use == 10
