"""Admission limits shared by all uploads of one app: counters, no I/O."""

from __future__ import annotations

import attrs

__all__ = ("UploadSlots",)


@attrs.define
class UploadSlots:
    """At most *limit* uploads in flight; the rest are turned away."""

    limit: int
    in_use: int = 0

    def try_take(self) -> bool:
        """Take a slot if one is free."""
        if self.in_use >= self.limit:
            return False
        self.in_use += 1
        return True

    def give_back(self) -> None:
        """Free a slot taken by :meth:`try_take`."""
        if self.in_use <= 0:
            raise RuntimeError("no upload slot is taken")
        self.in_use -= 1
