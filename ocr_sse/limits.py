"""Admission limits shared by all uploads of one app: counters, no I/O."""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs

__all__ = ("MemoryBudget", "RateLimiter", "UploadSlots")


@attrs.define
class UploadSlots:
    """At most *limit* uploads in flight; the rest are turned away."""

    limit: int
    in_use: int = 0

    @property
    def full(self) -> bool:
        return self.in_use >= self.limit

    def try_take(self) -> bool:
        """Take a slot if one is free."""
        if self.full:
            return False
        self.in_use += 1
        return True

    def give_back(self) -> None:
        """Free a slot taken by :meth:`try_take`."""
        if self.in_use <= 0:
            raise RuntimeError("no upload slot is taken")
        self.in_use -= 1


@attrs.define
class MemoryBudget:
    """At most *limit* bytes of large files held in memory, across all uploads."""

    limit: int
    in_use: int = 0

    def try_take(self, size: int) -> bool:
        """Take *size* bytes if they fit."""
        if self.in_use + size > self.limit:
            return False
        self.in_use += size
        return True

    def give_back(self, size: int) -> None:
        """Free *size* bytes taken by :meth:`try_take`."""
        if size > self.in_use:
            raise RuntimeError(f"{size} bytes given back, {self.in_use} taken")
        self.in_use -= size


@attrs.define
class RateLimiter:
    """At most *per_minute* uploads a minute per client, in bursts up to that.

    A token bucket per client key: it holds up to *per_minute* tokens and
    refills at *per_minute* a minute; each upload spends one.
    """

    per_minute: int
    clock: Callable[[], float] = time.monotonic
    #: Buckets kept before full ones are forgotten.
    max_clients: int = 10_000
    _buckets: dict[str, tuple[float, float]] = attrs.field(factory=dict, init=False)

    def wait_for(self, client: str, *, spend: bool = True) -> float:
        """Seconds until *client* may start an upload; 0 means now.

        With *spend*, a free upload is counted against the client.
        """
        now = self.clock()
        tokens = self._tokens(client, now)
        if tokens < 1:
            return (1 - tokens) * 60 / self.per_minute
        if spend:
            if len(self._buckets) >= self.max_clients:
                self._forget_full(now)
            self._buckets[client] = (tokens - 1, now)
        return 0.0

    def _tokens(self, client: str, now: float) -> float:
        tokens, then = self._buckets.get(client, (self.per_minute, now))
        return min(self.per_minute, tokens + (now - then) * self.per_minute / 60)

    def _forget_full(self, now: float) -> None:
        # A full bucket is the same as no bucket: dropping it loses nothing.
        for client in [
            c for c in self._buckets if self._tokens(c, now) >= self.per_minute
        ]:
            del self._buckets[client]
