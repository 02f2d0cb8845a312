"""The decoding threads: calls in, outcomes back to the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from ocr_sse.pool import ThreadPool


@pytest.fixture
async def make_pool() -> AsyncIterator[Callable[[int], ThreadPool]]:
    pools: list[ThreadPool] = []

    def make(threads: int) -> ThreadPool:
        pools.append(ThreadPool(threads, name="test-pool"))
        return pools[-1]

    yield make
    for pool in pools:
        pool.shutdown()


async def test_a_call_runs_off_the_loop_and_its_result_comes_back(
    make_pool: Callable[[int], ThreadPool],
) -> None:
    """The function runs in one of the pool's threads, with its arguments;
    the awaiting task gets what it returned."""
    pool = make_pool(1)

    def where(a: int, *, b: int) -> tuple[str, int]:
        return threading.current_thread().name, a + b

    assert await pool.submit(where, 2, b=3) == ("test-pool-0", 5)


async def test_an_exception_reaches_the_awaiting_task(
    make_pool: Callable[[int], ThreadPool],
) -> None:
    """What the function raises is raised where its outcome is awaited."""
    pool = make_pool(1)

    def fail() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        await pool.submit(fail)


async def test_calls_run_on_every_thread_at_once_and_the_rest_wait(
    make_pool: Callable[[int], ThreadPool],
) -> None:
    """Three threads run three calls at once (each waits for the other two);
    a fourth call waits in the queue until one is free."""
    pool = make_pool(3)
    barrier = threading.Barrier(3, timeout=5)
    release = threading.Event()

    def meet() -> int:
        barrier.wait()
        release.wait(5)
        return 1

    calls = [pool.submit(meet) for _ in range(3)] + [pool.submit(len, "four")]
    async with asyncio.timeout(5):
        while barrier.n_waiting or pool.queued != 1:
            await asyncio.sleep(0.01)
    assert not calls[3].done()
    release.set()
    assert await asyncio.gather(*calls) == [1, 1, 1, 4]
    assert not barrier.broken


async def test_a_call_cancelled_before_it_starts_never_runs(
    make_pool: Callable[[int], ThreadPool],
) -> None:
    """Cancelling a queued call's future takes it off the pool's hands; the
    calls after it still run, in order."""
    pool = make_pool(1)
    release = threading.Event()
    ran: list[str] = []

    def call(name: str) -> None:
        if name == "first":
            release.wait(5)
        ran.append(name)

    first, second, third = (pool.submit(call, n) for n in ("first", "second", "third"))
    second.cancel()
    release.set()
    await asyncio.gather(first, third)
    assert ran == ["first", "third"]


async def test_a_call_cancelled_while_it_runs_does_not_hold_back_the_others(
    make_pool: Callable[[int], ThreadPool],
) -> None:
    """A call whose future is cancelled while it runs ends unheard; a call
    that finishes with it in the same hand-back still gets its result."""
    pool = make_pool(1)
    release, second_done = threading.Event(), threading.Event()

    def second() -> str:
        second_done.set()
        return "second"

    first = pool.submit(release.wait, 5)
    async with asyncio.timeout(5):
        while pool.queued:  # the first call has started
            await asyncio.sleep(0.01)
    later = pool.submit(second)
    first.cancel()
    release.set()
    assert second_done.wait(5)
    time.sleep(0.1)  # the loop is busy while both calls end
    assert await asyncio.wait_for(later, 5) == "second"


async def test_results_that_finish_together_reach_the_loop_in_one_wake_up(
    make_pool: Callable[[int], ThreadPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty calls that end while the loop is busy are handed back to it
    with one or two wake-ups (one per thread at most), not twenty."""
    loop = asyncio.get_running_loop()
    wake_ups = 0
    call_soon_threadsafe = loop.call_soon_threadsafe

    def counted(*args: Any, **kwargs: Any) -> asyncio.Handle:
        nonlocal wake_ups
        wake_ups += 1
        return call_soon_threadsafe(*args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
    pool = make_pool(2)
    release = threading.Event()
    calls = [pool.submit(release.wait, 5) for _ in range(20)]
    release.set()
    time.sleep(0.3)  # the loop is busy while every call ends
    assert await asyncio.gather(*calls) == [True] * 20
    assert 1 <= wake_ups <= 2


async def test_shutdown_cancels_waiting_calls_and_waits_for_the_running_one(
    make_pool: Callable[[int], ThreadPool],
) -> None:
    """A shut-down pool lets its running call finish and hands back its
    result, cancels the calls still queued, stops its threads, and refuses
    new calls."""
    pool = make_pool(1)
    release = threading.Event()
    running, queued = pool.submit(release.wait, 5), pool.submit(time.sleep, 0)
    async with asyncio.timeout(5):
        while pool.queued != 1:  # the first call has started
            await asyncio.sleep(0.01)
    threading.Timer(0.1, release.set).start()
    pool.shutdown()
    assert queued.cancelled()
    assert await running is True
    assert not [t for t in threading.enumerate() if t.name.startswith("test-pool")]
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(time.sleep, 0)


async def test_a_pool_has_at_least_one_thread() -> None:
    """A pool of no threads would never run anything: it is refused."""
    with pytest.raises(ValueError, match="at least one thread"):
        ThreadPool(0)
