"""Threads that run blocking calls for one event loop, cheaply per call.

``concurrent.futures.ThreadPoolExecutor`` behind ``asyncio.wrap_future``
costs each call a ``concurrent.futures.Future`` with its condition variable,
an idle-semaphore round, and a write to the loop's self-pipe to hand the
result back, which wakes the loop once per call.  For 20 KB images that was
0.1 ms of CPU a file, as much as the event loop's own work on it.  Here a
call is an item on a C queue, and results that finish close together reach
the loop in one wake-up.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

__all__ = ("ThreadPool",)

_T = TypeVar("_T")

#: A call waiting for a thread: its future, the function and its arguments.
_Call: TypeAlias = tuple[
    asyncio.Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]
]
#: A call's future and its outcome: (result, None) or (None, exception).
_Done: TypeAlias = tuple[asyncio.Future[Any], Any, BaseException | None]


class ThreadPool:
    """*threads* threads that run the calls :meth:`submit` gives them, in order.

    Create it, submit to it and shut it down from the thread that runs the
    event loop.
    """

    def __init__(self, threads: int, *, name: str = "ocr_sse-pool") -> None:
        if threads < 1:
            raise ValueError(f"a pool needs at least one thread, not {threads}")
        self._loop = asyncio.get_running_loop()
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._done: collections.deque[_Done] = collections.deque()
        # Set while a hand-back is scheduled on the loop: a result finishing
        # meanwhile rides along with it instead of waking the loop again.
        self._handing_back = False
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def queued(self) -> int:
        """Calls waiting for a thread."""
        return self._calls.qsize()

    def submit(
        self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any
    ) -> asyncio.Future[_T]:
        """Run ``fn(*args, **kwargs)`` in a thread; its outcome is the future's.

        Cancelling the future before a thread takes the call means it never
        runs; a call already running runs to its end, unheard.
        """
        if self._closed:
            raise RuntimeError("the pool is shut down")
        future: asyncio.Future[_T] = self._loop.create_future()
        self._calls.put((future, fn, args, kwargs))
        return future

    def shutdown(self) -> None:
        """Cancel the calls still waiting; wait for the running ones to end."""
        if self._closed:
            return
        self._closed = True
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                break
            if call is not None:
                call[0].cancel()
        for _ in self._threads:
            self._calls.put(None)
        for thread in self._threads:
            thread.join()
        self._hand_back()

    def _work(self) -> None:
        while (call := self._calls.get()) is not None:
            future, fn, args, kwargs = call
            # Read from this thread without the loop's say: at worst a call
            # cancelled this very moment runs, and its outcome is dropped.
            if future.cancelled():
                continue
            try:
                done: _Done = (future, fn(*args, **kwargs), None)
            except BaseException as exc:
                done = (future, None, exc)
            self._done.append(done)
            if not self._handing_back:
                self._handing_back = True
                try:
                    self._loop.call_soon_threadsafe(self._hand_back)
                except RuntimeError:
                    return  # the loop is closed: no one is left to tell

    def _hand_back(self) -> None:
        # Cleared before the queue is read: a result appended after this
        # schedules a hand-back of its own, one appended before is read here.
        self._handing_back = False
        while self._done:
            future, result, exc = self._done.popleft()
            if future.cancelled():
                continue
            if exc is None:
                future.set_result(result)
            else:
                future.set_exception(exc)
