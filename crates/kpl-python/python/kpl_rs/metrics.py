"""Metrics: :class:`MetricsLevel`, the metric names, :class:`MetricKey` and the
:class:`MetricsManager` a producer exposes as ``producer.metrics``.

The statistics are kept by kpl-rs in Rust (the KPL's metrics, by the KPL's
names); this module reads them and exports them to the configured sink on the
producer's event loop. Every name constant of aiokpl is here, valued with the
name the KPL (and kpl-rs) uses. Two differ from aiokpl's values:
``NAME_BUFFERED_TIME`` is ``"BufferingTime"`` (aiokpl: ``"BufferedTime"``) and
``NAME_EXPIRED_RECORDS`` is ``"UserRecordExpired"`` (aiokpl: ``"ExpiredRecords"``).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from kpl_rs.sinks import (
    CloudWatchSink,
    EventfulMetricsSink,
    MetricEvent,
    MetricSnapshot,
    MetricsSink,
    NullSink,
)


class MetricsLevel(enum.Enum):
    """How much the producer records.

    ``NONE`` (the default) keeps nothing. ``SUMMARY`` is the KPL's summary level
    (its summary metrics) kept per stream; ``DETAILED`` is every metric, kept per
    shard, per stream and for all streams together.
    """

    NONE = "none"
    SUMMARY = "summary"
    DETAILED = "detailed"


# The KPL's names (aws/metrics/metrics_constants.h), as kpl-rs records them.
NAME_USER_RECORDS_RECEIVED = "UserRecordsReceived"
NAME_USER_RECORDS_PUT = "UserRecordsPut"
NAME_USER_RECORDS_DATA_PUT = "UserRecordsDataPut"
NAME_USER_RECORDS_PENDING = "UserRecordsPending"
NAME_KINESIS_RECORDS_PUT = "KinesisRecordsPut"
NAME_KINESIS_RECORDS_DATA_PUT = "KinesisRecordsDataPut"
NAME_ALL_ERRORS = "AllErrors"
NAME_ERRORS_BY_CODE = "ErrorsByCode"
NAME_RETRIES_PER_RECORD = "RetriesPerRecord"
#: The KPL's ``BufferingTime`` (aiokpl names it ``"BufferedTime"``).
NAME_BUFFERED_TIME = "BufferingTime"
NAME_REQUEST_TIME = "RequestTime"
#: The KPL's ``UserRecordExpired`` (aiokpl names it ``"ExpiredRecords"``).
NAME_EXPIRED_RECORDS = "UserRecordExpired"
# The KPL's others, which aiokpl does not record.
NAME_USER_RECORDS_PER_KINESIS_RECORD = "UserRecordsPerKinesisRecord"
NAME_KINESIS_RECORDS_PER_PUT_RECORDS_REQUEST = "KinesisRecordsPerPutRecordsRequest"
NAME_USER_RECORDS_PER_PUT_RECORDS_REQUEST = "UserRecordsPerPutRecordsRequest"

#: The window ``snapshot`` covers, in seconds (aiokpl's rolling minute).
WINDOW_SECONDS = 60.0

# kpl-rs' dimension names to aiokpl's.
_DIMENSIONS = {"StreamName": "stream", "ShardId": "shard", "ErrorCode": "error_code"}


@dataclass(slots=True, frozen=True)
class MetricKey:
    """A metric's identity: its name and dimensions (``None`` when it has not that
    dimension: all streams together, or a stream's total)."""

    name: str
    stream: str | None = None
    shard_id: str | None = None
    error_code: str | None = None

    def dimensions(self) -> tuple[tuple[str, str], ...]:
        """The ``(name, value)`` pairs sinks take."""
        dims: list[tuple[str, str]] = []
        if self.stream is not None:
            dims.append(("stream", self.stream))
        if self.shard_id is not None:
            dims.append(("shard", self.shard_id))
        if self.error_code is not None:
            dims.append(("error_code", self.error_code))
        return tuple(dims)


def _uploaded_by_kpl(sink: MetricsSink) -> bool:
    # A CloudWatchSink without a client of its own: kpl-rs uploads, in Rust.
    return isinstance(sink, CloudWatchSink) and sink._client_factory is None


def _key(name: str, dimensions: list[tuple[str, str]]) -> MetricKey:
    dims = {_DIMENSIONS.get(k, k): v for k, v in dimensions}
    return MetricKey(name, dims.get("stream"), dims.get("shard"), dims.get("error_code"))


class MetricsManager:
    """``producer.metrics``: the producer's metrics, and their export to the sink.

    :meth:`snapshot` reads the last minute's statistics; :meth:`flush` exports them
    to the sink now; the producer also exports them every
    ``metrics_upload_interval_ms`` and when it exits. With ``MetricsLevel.NONE``
    both are empty and nothing runs. A :class:`~kpl_rs.sinks.CloudWatchSink` is
    uploaded to by kpl-rs itself, in Rust, on the same interval (its ``flush`` then
    exports nothing: the upload has its own schedule).
    """

    def __init__(
        self,
        *,
        level: MetricsLevel = MetricsLevel.NONE,
        sink: MetricsSink | None = None,
        upload_interval_ms: float = 60_000.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._level = level
        self._sink: MetricsSink = sink if sink is not None else NullSink()
        self._upload_interval = upload_interval_ms / 1000.0
        self._clock = clock
        self._native: Any = None
        self._started = clock()
        self._cancel: Callable[[], None] | None = None

    @property
    def level(self) -> MetricsLevel:
        """The level the producer records at."""
        return self._level

    @property
    def sink(self) -> MetricsSink:
        """Where :meth:`flush` exports."""
        return self._sink

    def snapshot(self) -> dict[MetricKey, tuple[int, float, float, float]]:
        """``(count, sum, min, max)`` per metric and dimensions over the last minute."""
        if self._native is None or self._level is MetricsLevel.NONE:
            return {}
        return {
            _key(name, dims): (count, total, mn, mx)
            for name, dims, count, total, mn, mx in self._native.metrics(None, WINDOW_SECONDS)
            if count > 0
        }

    def snapshots(self) -> tuple[MetricSnapshot, ...]:
        """:class:`MetricSnapshot` of each metric and dimensions over the last minute."""
        end = self._clock()
        start = max(self._started, end - WINDOW_SECONDS)
        return tuple(
            MetricSnapshot(key.name, count, total, mn, mx, key.dimensions(), start, end)
            for key, (count, total, mn, mx) in self.snapshot().items()
        )

    async def flush(self) -> None:
        """Exports the snapshots to the sink now (nothing with ``NONE``, or when there
        is nothing to export)."""
        if self._level is MetricsLevel.NONE or _uploaded_by_kpl(self._sink):
            return
        snaps = self.snapshots()
        if not snaps:
            return
        sink = self._sink
        if isinstance(sink, EventfulMetricsSink):
            now = self._clock()
            for s in snaps:
                sink.record(MetricEvent(s.name, s.sum, now, s.dimensions))
        await sink.export(snaps)

    # The producer's side.

    async def _start(self, native: Any, loop: Any) -> None:
        self._native = native
        if self._level is MetricsLevel.NONE:
            return
        await self._sink.__aenter__()
        if _uploaded_by_kpl(self._sink):
            return
        interval = self._upload_interval
        sleep = loop.sleep

        async def upload() -> None:
            while True:
                await sleep(interval)
                await self.flush()

        self._cancel = loop.spawn(upload)

    async def _stop(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        if self._level is MetricsLevel.NONE or self._native is None:
            return
        if self._cancel is not None:
            self._cancel()
            self._cancel = None
        try:
            await self.flush()
        finally:
            await self._sink.__aexit__(exc_type, exc, tb)


__all__ = [
    "NAME_ALL_ERRORS",
    "NAME_BUFFERED_TIME",
    "NAME_ERRORS_BY_CODE",
    "NAME_EXPIRED_RECORDS",
    "NAME_KINESIS_RECORDS_DATA_PUT",
    "NAME_KINESIS_RECORDS_PER_PUT_RECORDS_REQUEST",
    "NAME_KINESIS_RECORDS_PUT",
    "NAME_REQUEST_TIME",
    "NAME_RETRIES_PER_RECORD",
    "NAME_USER_RECORDS_DATA_PUT",
    "NAME_USER_RECORDS_PENDING",
    "NAME_USER_RECORDS_PER_KINESIS_RECORD",
    "NAME_USER_RECORDS_PER_PUT_RECORDS_REQUEST",
    "NAME_USER_RECORDS_PUT",
    "NAME_USER_RECORDS_RECEIVED",
    "WINDOW_SECONDS",
    "MetricKey",
    "MetricsLevel",
    "MetricsManager",
]
