"""What the endpoint counts, and Prometheus to count it.

The handler reports to a :class:`Metrics`; the base class records nothing, so
the endpoint needs no metrics library.  :class:`PrometheusMetrics` keeps the
figures in a ``prometheus_client`` registry (the ``metrics`` extra:
``pip install 'ocr-sse[metrics]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ("Metrics", "PrometheusMetrics")

# Seconds: from a millisecond up to the whole-upload timeout.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """Receives what happens to uploads; records nothing."""

    def refused(self, status: int) -> None:
        """An upload was refused before its stream, with *status*."""

    def upload_started(self, *, first_event_seconds: float) -> None:
        """A stream started; its first event took *first_event_seconds*."""

    def file_validated(self, result: str, *, seconds: float) -> None:
        """A file's result (``valid`` or its error code) came *seconds* after
        its last byte."""

    def upload_ended(
        self, outcome: str, *, received_bytes: int, started: bool = True
    ) -> None:
        """A stream ended: ``complete``, an ``error_type``, or
        ``ClientDisconnected``; the request body held *received_bytes*.

        *started* is false for a client that left before the first event:
        :meth:`upload_started` was never called for it.
        """


class PrometheusMetrics(Metrics):
    """Counts uploads, files, bytes and latencies in a Prometheus registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry if registry is not None else CollectorRegistry()
        where = self.registry
        self._in_flight = Gauge(
            "ocr_sse_uploads_in_flight", "Uploads being streamed.", registry=where
        )
        self._uploads = Counter(
            "ocr_sse_uploads", "Uploads by how their stream ended.", ["outcome"],
            registry=where,
        )  # fmt: skip
        self._refusals = Counter(
            "ocr_sse_refusals", "Uploads refused before the stream, by status.",
            ["status"], registry=where,
        )  # fmt: skip
        self._files = Counter(
            "ocr_sse_files", "Files by validation result or error code.", ["result"],
            registry=where,
        )  # fmt: skip
        self._bytes = Counter(
            "ocr_sse_received_bytes", "Bytes of upload request bodies read.",
            registry=where,
        )  # fmt: skip
        self._disconnects = Counter(
            "ocr_sse_client_disconnects", "Uploads whose client went away.",
            registry=where,
        )  # fmt: skip
        self._first_event = Histogram(
            "ocr_sse_first_event_seconds", "Time from request to upload_started.",
            buckets=_BUCKETS, registry=where,
        )  # fmt: skip
        self._files_by_result: dict[str, Counter] = {}
        self._file_latency = Histogram(
            "ocr_sse_file_result_seconds",
            "Time from a file's last byte to its result.",
            buckets=_BUCKETS, registry=where,
        )  # fmt: skip

    def refused(self, status: int) -> None:
        self._refusals.labels(status=str(status)).inc()

    def upload_started(self, *, first_event_seconds: float) -> None:
        self._in_flight.inc()
        self._first_event.observe(first_event_seconds)

    def file_validated(self, result: str, *, seconds: float) -> None:
        # Called for every file: looking the labelled counter up in a dict
        # halves what labels() takes (1.9 us a file against 1.0).  Results
        # are "valid" and the five error codes.
        files = self._files_by_result.get(result)
        if files is None:
            files = self._files_by_result[result] = self._files.labels(result=result)
        files.inc()
        self._file_latency.observe(seconds)

    def upload_ended(
        self, outcome: str, *, received_bytes: int, started: bool = True
    ) -> None:
        if started:
            self._in_flight.dec()
        self._uploads.labels(outcome=outcome).inc()
        self._bytes.inc(received_bytes)
        if outcome == "ClientDisconnected":
            self._disconnects.inc()
