"""The async :class:`Producer` (aiokpl's API) on kpl-rs' Rust pipeline.

One producer is entered on one event loop (asyncio or trio) and used from it.
``put_record`` checks a record at once (an invalid one raises) and gathers
records into batches handed to the Rust pipeline in one call each: when
:data:`BATCH` records are gathered, when the putting task yields to the loop, or
when ``max_outstanding_records`` is near. Outcomes come back in batches from a
thread of the pipeline, scheduled on the loop with its thread-safe call, and
resolve each record's :class:`~kpl_rs.outcome.Outcome`. When the pipeline holds
records back, ``put_record`` waits until it has room (it tells the loop; nothing
polls).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from kpl_rs import _loop
from kpl_rs._build import Forks, native_producer, record_size
from kpl_rs.aggregation import Tag
from kpl_rs.config import Config
from kpl_rs.metrics import MetricsManager
from kpl_rs.outcome import _UNSET, Outcome
from kpl_rs.result import RecordResult

#: How long leaving the block waits for the last outcomes after its flush (seconds;
#: the flush itself waits for every record put before it).
EXIT_TIMEOUT_S = 30.0

#: Most records ``put_record`` gathers before handing them to Rust in one call.
BATCH = 512

_Record = tuple[str, bytes, "str | None"]


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
        # Records checked and not yet handed to Rust, by stream, with their outcomes.
        self._buffers: dict[str, tuple[list[_Record], list[Outcome[RecordResult]]]] = {}
        self._buffered = 0
        # At most half the cap, so that a put at the cap waits for half of it to
        # settle, then goes on in batches.
        self._batch = max(1, min(BATCH, config.max_outstanding_records // 2))
        self._low_water: list[tuple[int, Any]] = []
        self._max = config.max_outstanding_records
        self._soon = False
        self._held = False
        self._room_asked = False
        self._closed = False
        self._forks = Forks.count
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
        on_batch, on_failed = self._on_batch, self._on_failed

        def deliver(batch: list[tuple[int, Any]], failed: bool = False) -> None:
            try:
                call(on_failed if failed else on_batch, batch)
            except RuntimeError:
                # The loop is closed (the program left it without leaving the
                # `async with`): nobody is left to hear these outcomes.
                pass

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
            # Unless kpl_rs closed it at the program's exit (an exit hook leaving
            # the block after it).
            if not self._native.closed:
                await self.flush()
                flushed = True
        finally:
            self._closed = True
            try:
                await self._metrics._stop(exc_type, exc, tb)
            finally:
                if Forks.count == self._forks:
                    self._native.close(EXIT_TIMEOUT_S if flushed else 0.0)
                self._fail_buffered(RuntimeError("the producer closed before the record was sent"))

    # The public API.

    @property
    def outstanding_records(self) -> int:
        """Records put whose :class:`Outcome` is not resolved yet."""
        return len(self._pending) + self._buffered

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
        before or after the ``async with`` block, ``RuntimeError``. ``tags`` are
        accepted and not written (kpl-rs' aggregates carry none).
        """
        native = self._native
        if native is None or self._closed or Forks.count != self._forks:
            native = self._live()  # raises, saying which
        if not partition_key:
            raise ValueError("partition_key must be non-empty")
        if type(data) is not bytes:
            data = bytes(data)
        native.check_record(partition_key, len(data), explicit_hash_key)
        outcome: Outcome[RecordResult] = Outcome()
        buffer = self._buffers.get(stream)
        if buffer is None:
            buffer = self._buffers[stream] = ([], [])
        buffer[0].append((partition_key, data, explicit_hash_key))
        buffer[1].append(outcome)
        self._buffered += 1
        if self._held or self._buffered >= self._batch:
            await self._hand_over()
        elif len(self._pending) + self._buffered >= self._max:
            # At the cap: hand over, and wait until a batch's worth has settled.
            await self._hand_over()
            await self._settled_down_to(self._max - self._batch)
        elif not self._soon:
            self._soon = True
            loop = self._loop
            assert loop is not None
            loop.call_soon(self._hand_over_soon)
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
        items: list[Any] = records if type(records) is list else list(records)
        # After what put_record gathered, in order.
        await self._hand_over()
        outcomes: list[Outcome[RecordResult]] = []
        while True:
            # Checks every record first (one invalid: ValueError naming its index,
            # nothing put), then admits them while there is room.
            ids = native.put_many(stream, items)
            made: list[Outcome[RecordResult]] = [Outcome() for _ in ids]
            self._pending.update(zip(ids, made))
            outcomes += made
            if len(ids) == len(items):
                return outcomes
            items = items[len(ids) :]
            await self._room(stream, record_size(items[0][0], items[0][1]))
            native = self._live()

    async def flush(self) -> None:
        """Sends everything buffered now, and returns when every record put before
        the call has its outcome (aiokpl's returns without waiting for them)."""
        native = self._live(closing_ok=True)
        await self._hand_over()
        before = list(self._pending)
        loop = self._loop
        assert loop is not None
        wake, flushed = loop.waiter()
        native.flush(loop.from_thread(wake))
        await flushed
        # The outcomes settled by then are on their way to the loop: wait for those
        # not delivered yet (a set operation, not a look at each record put).
        pending = self._pending
        for rid in pending.keys() & before:
            outcome = pending.get(rid)
            if outcome is not None and not outcome.is_set():
                wake, delivered = loop.waiter()
                if outcome._waiters is None:
                    outcome._waiters = []
                outcome._waiters.append(wake)
                await delivered

    # Internals.

    def _on_batch(self, batch: Sequence[tuple[int, RecordResult]]) -> None:
        pending = self._pending
        for rid, result in batch:
            outcome = pending.pop(rid, None)
            # As Outcome.set_value, inline (once per record), leaving one set already.
            if outcome is not None and outcome._value is _UNSET and outcome._exc is None:
                outcome._value = result
                if outcome._waiters:
                    outcome._wake()
        if self._low_water:
            left = len(pending)
            still = []
            for mark, wake in self._low_water:
                if left <= mark:
                    wake()
                else:
                    still.append((mark, wake))
            self._low_water = still

    def _on_failed(self, batch: Sequence[tuple[int, BaseException]]) -> None:
        # Records whose result could not be made (the exception says why): their
        # outcome raises it, and they leave the pending ones all the same.
        pending = self._pending
        for rid, error in batch:
            outcome = pending.pop(rid, None)
            if outcome is not None and not outcome.is_set():
                outcome.set_exception(error)
        self._on_batch(())

    async def _settled_down_to(self, mark: int) -> None:
        """Waits until at most ``mark`` records handed to Rust have no outcome yet."""
        if len(self._pending) <= mark:
            return
        loop = self._loop
        assert loop is not None
        wake, settled = loop.waiter()
        self._low_water.append((mark, wake))
        await settled

    def _admit(self) -> bool:
        """Hands the gathered records to Rust while it has room: whether all went."""
        native = self._native
        pending = self._pending
        for stream in list(self._buffers):
            records, outcomes = self._buffers[stream]
            try:
                ids = native.put_many(stream, records)
            except Exception as e:  # closed, or a forked child
                del self._buffers[stream]
                self._buffered -= len(records)
                for outcome in outcomes:
                    if not outcome.is_set():
                        outcome.set_exception(e)
                continue
            pending.update(zip(ids, outcomes))
            n = len(ids)
            self._buffered -= n
            if n == len(records):
                del self._buffers[stream]
            else:
                del records[:n]
                del outcomes[:n]
                self._held = True
                return False
        self._held = False
        return True

    def _first_held(self) -> tuple[str, int]:
        stream, (records, _) = next(iter(self._buffers.items()))
        return stream, record_size(records[0][0], records[0][1])

    async def _hand_over(self) -> None:
        while not self._admit():
            await self._room(*self._first_held())

    def _hand_over_soon(self) -> None:
        # On the loop, when the putting task yielded.
        self._soon = False
        if self._native is None or not self._buffers or self._room_asked:
            return
        if not self._admit():
            # Held back with nobody waiting: go on when there is room.
            self._room_asked = True
            loop = self._loop
            assert loop is not None
            stream, size = self._first_held()

            def room() -> None:
                self._room_asked = False
                self._hand_over_soon()

            try:
                self._native.wait_for_room(stream, size, loop.from_thread(room))
            except RuntimeError as e:
                self._room_asked = False
                self._fail_buffered(e)

    def _fail_buffered(self, error: BaseException) -> None:
        for _, outcomes in self._buffers.values():
            for outcome in outcomes:
                if not outcome.is_set():
                    outcome.set_exception(error)
        self._buffers.clear()
        self._buffered = 0

    async def _room(self, stream: str, size: int) -> None:
        loop = self._loop
        assert loop is not None
        wake, room = loop.waiter()
        self._native.wait_for_room(stream, size, loop.from_thread(wake))
        await room

    def _check_process(self) -> None:
        if Forks.count != self._forks:
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


__all__ = ["BATCH", "EXIT_TIMEOUT_S", "Producer"]
