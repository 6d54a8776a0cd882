"""The async :class:`Producer` (aiokpl's API) on kpl-rs' Rust pipeline.

One producer is entered on one event loop (asyncio or trio) and used from it.
Records are admitted by the Rust pipeline at once; their outcomes come back in
batches from a thread of the pipeline, scheduled on the loop with its thread-safe
call, and resolve each record's :class:`~kpl_rs.outcome.Outcome`. When
``max_outstanding_records`` are outstanding, ``put_record`` waits until the
pipeline has room (it tells the loop; nothing polls).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from kpl_rs import _loop
from kpl_rs._build import native_producer, record_size
from kpl_rs.aggregation import Tag
from kpl_rs.config import Config
from kpl_rs.metrics import MetricsManager
from kpl_rs.outcome import Outcome
from kpl_rs.result import RecordResult

#: How long leaving the block waits for the last outcomes after its flush (seconds;
#: the flush itself waits for every record put before it).
EXIT_TIMEOUT_S = 30.0


class Producer:
    """``async with Producer(config) as producer:`` (aiokpl's API).

    On enter the Rust pipeline starts on its own threads; on exit every record put
    is flushed and has its outcome, and the pipeline stops.
    """

    def __init__(self, config: Config) -> None:
        self._config = config
        self._native: Any = None
        self._loop: _loop.Loop | None = None
        self._pending: dict[int, Outcome[RecordResult]] = {}
        self._closed = False
        self._pid = os.getpid()
        self._metrics = MetricsManager(
            level=config.metrics_level,
            sink=config.metrics_sink,
            upload_interval_ms=config.metrics_upload_interval_ms,
        )

    async def __aenter__(self) -> Producer:
        if self._native is not None or self._closed:
            raise RuntimeError("a Producer is entered once")
        loop = _loop.current()
        self._loop = loop
        call = loop.call_soon_threadsafe
        on_batch = self._on_batch

        def deliver(batch: list[Any]) -> None:
            call(on_batch, batch)

        self._native = native_producer(self._config, deliver)
        try:
            await self._metrics._start(self._native, loop)
        except BaseException:
            self._closed = True
            self._native.close(0.0)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._closed or self._native is None:
            return
        flushed = False
        try:
            self._check_process()
            await self.flush()
            flushed = True
        finally:
            self._closed = True
            try:
                await self._metrics._stop(exc_type, exc, tb)
            finally:
                if os.getpid() == self._pid:
                    self._native.close(EXIT_TIMEOUT_S if flushed else 0.0)

    # The public API.

    @property
    def outstanding_records(self) -> int:
        """Records put and not yet resolved."""
        if self._native is None or self._native.closed:
            return 0
        return int(self._native.outstanding_records)

    @property
    def metrics(self) -> MetricsManager:
        """The producer's metrics (empty with ``MetricsLevel.NONE``)."""
        return self._metrics

    async def put_record(
        self,
        *,
        stream: str,
        partition_key: str,
        data: bytes,
        explicit_hash_key: str | None = None,
        tags: tuple[Tag, ...] = (),
    ) -> Outcome[RecordResult]:
        """Puts a record; returns its :class:`Outcome`, which resolves with its
        :class:`RecordResult` (every attempt).

        Waits while ``max_outstanding_records`` are outstanding. An empty
        partition key, or a record Kinesis would refuse (key over 256 characters,
        explicit hash key out of range, over 1 MiB), raises ``ValueError``;
        after the ``async with`` block, ``RuntimeError``. ``tags`` are accepted
        and not written (as aiokpl's aggregates, kpl-rs' carry none).
        """
        native = self._live()
        if not partition_key:
            raise ValueError("partition_key must be non-empty")
        if type(data) is not bytes:
            data = bytes(data)
        rid = native.put(stream, partition_key, data, explicit_hash_key)
        while rid is None:
            await self._room(stream, record_size(partition_key, data))
            native = self._live()
            rid = native.put(stream, partition_key, data, explicit_hash_key)
        outcome: Outcome[RecordResult] = Outcome()
        self._pending[rid] = outcome
        return outcome

    async def put_records(
        self,
        stream: str,
        records: Iterable[tuple[str, bytes] | tuple[str, bytes, str | None]],
    ) -> list[Outcome[RecordResult]]:
        """kpl-rs: puts many records into one stream, each ``(partition_key, data)``
        or ``(partition_key, data, explicit_hash_key)``; their outcomes, in order.
        One call into Rust for the lot while there is room (waiting as
        ``put_record`` does when there is none). Every record is checked first: an
        invalid one raises ``ValueError`` (naming its index) and none is put."""
        native = self._live()
        items: list[tuple[str, bytes, str | None]] = []
        for i, r in enumerate(records):
            key, data = r[0], r[1]
            if not key:
                raise ValueError(f"record {i}: partition_key must be non-empty")
            items.append((key, data if type(data) is bytes else bytes(data), r[2] if len(r) > 2 else None))
        outcomes: list[Outcome[RecordResult]] = []
        pending = self._pending
        while True:
            ids = native.put_many(stream, items)
            for rid in ids:
                outcome: Outcome[RecordResult] = Outcome()
                pending[rid] = outcome
                outcomes.append(outcome)
            if len(ids) == len(items):
                return outcomes
            items = items[len(ids) :]
            await self._room(stream, record_size(items[0][0], items[0][1]))
            native = self._live()

    async def flush(self) -> None:
        """Sends everything buffered now, and returns when every record put before
        the call has its outcome (aiokpl's returns without waiting for them)."""
        native = self._live(closing_ok=True)
        waiting = list(self._pending.values())
        loop = self._loop
        assert loop is not None
        wake, flushed = loop.waiter()
        native.flush(lambda: loop.call_soon_threadsafe(wake))
        await flushed
        # The outcomes settled by then are on their way to the loop.
        for outcome in waiting:
            if not outcome.is_set():
                wake, delivered = loop.waiter()
                if outcome._waiters is None:
                    outcome._waiters = []
                outcome._waiters.append(wake)
                await delivered

    # Internals.

    def _on_batch(self, batch: Sequence[Any]) -> None:
        pending = self._pending
        for item in batch:
            outcome = pending.pop(item[0], None)
            if outcome is not None:
                outcome._set_native(item)

    async def _room(self, stream: str, size: int) -> None:
        loop = self._loop
        assert loop is not None
        wake, room = loop.waiter()
        self._native.wait_for_room(stream, size, lambda: loop.call_soon_threadsafe(wake))
        await room

    def _check_process(self) -> None:
        if os.getpid() != self._pid:
            raise RuntimeError(
                "this kpl_rs Producer was made in another process (the parent of a fork); "
                "make a producer in each process"
            )

    def _live(self, closing_ok: bool = False) -> Any:
        self._check_process()
        if self._native is None:
            raise RuntimeError("Producer not entered: use `async with Producer(config)`")
        if self._closed and not closing_ok:
            raise RuntimeError("Producer is closed")
        return self._native


__all__ = ["EXIT_TIMEOUT_S", "Producer"]
