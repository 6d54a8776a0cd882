"""The blocking :class:`SyncProducer` (aiokpl's API), for programs without an event
loop: thread-safe, with no event loop of its own (the Rust pipeline runs on its
own threads, and outcomes are handed to waiting threads directly).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from kpl_rs._build import Forks, native_producer, record_size
from kpl_rs.aggregation import Tag
from kpl_rs.config import Config
from kpl_rs.result import RecordResult

T = TypeVar("T")

#: How long leaving the ``with`` block waits for outstanding records (seconds).
EXIT_FLUSH_TIMEOUT_S = 30.0

#: The backends aiokpl's ``SyncProducer`` takes (kpl-rs needs no event loop: either
#: works the same).
BACKENDS = ("asyncio", "trio")

_UNSET: Any = object()


class _Failed:
    """An outcome that came before its put registered it, and whose result could
    not be made: the exception its :class:`SyncOutcome` raises."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class SyncOutcomeCancelled(Exception):
    """Raised by :meth:`SyncOutcome.wait` after :meth:`SyncOutcome.cancel`."""


class SyncOutcome(Generic[T]):
    """A record's outcome, waited for by a thread. Made by
    :meth:`SyncProducer.put_record`."""

    __slots__ = ("_cond", "_exc", "_value")

    def __init__(self, cond: threading.Condition) -> None:
        self._cond = cond
        self._value: Any = _UNSET
        self._exc: BaseException | None = None

    def _is_set(self) -> bool:
        return self._value is not _UNSET or self._exc is not None

    def wait(self, timeout: float | None = None) -> T:
        """Blocks until the outcome comes, or raises ``TimeoutError`` after ``timeout``
        seconds. Ctrl-C interrupts it (``KeyboardInterrupt``)."""
        if not self._is_set():
            deadline = None if timeout is None else time.monotonic() + timeout
            with self._cond:
                while not self._is_set():
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError(f"SyncOutcome.wait timed out after {timeout}s")
                    self._cond.wait(left)
        if self._exc is not None:
            raise self._exc
        return self._value  # type: ignore[no-any-return]

    def done(self) -> bool:
        """``True`` once the outcome came (or was cancelled)."""
        return self._is_set()

    def cancel(self) -> bool:
        """Resolves this handle with :class:`SyncOutcomeCancelled`, if it has no
        outcome yet (``True``); the record itself is still sent."""
        with self._cond:
            if self._is_set():
                return False
            self._exc = SyncOutcomeCancelled("SyncOutcome.cancel")
            self._cond.notify_all()
            return True


class SyncProducer:
    """``with SyncProducer(config) as producer:`` (aiokpl's API).

    :meth:`put_record` is thread-safe and returns a :class:`SyncOutcome` at once
    (it blocks only while ``max_outstanding_records`` are outstanding).
    ``backend`` is accepted as aiokpl's (``"asyncio"`` or ``"trio"``): kpl-rs runs
    no event loop for it.
    """

    __slots__ = ("_backend", "_config", "_cond", "_early", "_forks", "_native", "_pending", "_state")

    def __init__(self, config: Config, *, backend: str = "asyncio") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        self._config = config
        self._backend = backend
        self._native: Any = None
        self._cond = threading.Condition()
        self._pending: dict[int, SyncOutcome[RecordResult]] = {}
        # Outcomes that came before their put registered them.
        self._early: dict[int, Any] = {}
        self._forks = Forks.count
        self._state = "new"

    def __enter__(self) -> SyncProducer:
        if self._state != "new":
            raise RuntimeError("a SyncProducer is entered once")
        self._native = native_producer(self._config, self._deliver)
        self._state = "entered"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._state != "entered":
            return
        flushed = False
        try:
            self._check_process()
            if self._native.closed:
                # Closed by kpl_rs at the program's exit (an exit hook leaving the
                # block after it): its records have their outcomes.
                return
            with contextlib.suppress(TimeoutError):
                self.flush(timeout=EXIT_FLUSH_TIMEOUT_S)
                flushed = True
        finally:
            self._state = "closed"
            if Forks.count == self._forks:
                self._native.close(EXIT_FLUSH_TIMEOUT_S if flushed else 0.0)

    @property
    def outstanding_records(self) -> int:
        """Records put whose :class:`SyncOutcome` has no outcome yet."""
        with self._cond:
            return len(self._pending)

    def put_record(
        self,
        *,
        stream: str,
        partition_key: str,
        data: bytes,
        explicit_hash_key: str | None = None,
        tags: tuple[Tag, ...] = (),
    ) -> SyncOutcome[RecordResult]:
        """Puts a record; returns its :class:`SyncOutcome`. Thread-safe.

        ``ValueError`` for an invalid record (an empty partition key too);
        ``RuntimeError`` before ``with`` or after it. ``tags`` are accepted and not
        written."""
        native = self._live()
        if not partition_key:
            raise ValueError("partition_key must be non-empty")
        if type(data) is not bytes:
            data = bytes(data)
        rid = native.put(stream, partition_key, data, explicit_hash_key)
        while rid is None:
            room = threading.Event()
            native.wait_for_room(stream, record_size(partition_key, data), room.set)
            room.wait()
            native = self._live()
            rid = native.put(stream, partition_key, data, explicit_hash_key)
        outcome: SyncOutcome[RecordResult] = SyncOutcome(self._cond)
        with self._cond:
            item = self._early.pop(rid, None)
            if item is None:
                self._pending[rid] = outcome
            elif type(item) is _Failed:
                outcome._exc = item.error
            else:
                outcome._value = item
        return outcome

    def flush(self, *, timeout: float | None = None) -> None:
        """Blocks until every record put before has its outcome; ``TimeoutError``
        after ``timeout`` seconds. Ctrl-C interrupts it."""
        native = self._live()
        deadline = None if timeout is None else time.monotonic() + timeout
        flushed = threading.Event()
        native.flush(flushed.set)
        if not flushed.wait(timeout):
            raise TimeoutError(f"SyncProducer.flush timed out after {timeout}s")
        # Settled outcomes are on their way from the pipeline's thread.
        with self._cond:
            waiting = list(self._pending.values())
        for outcome in waiting:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                outcome.wait(left)
            except TimeoutError:
                raise TimeoutError(f"SyncProducer.flush timed out after {timeout}s") from None
            except SyncOutcomeCancelled:
                pass

    # Internals.

    def _deliver(self, batch: Sequence[tuple[int, Any]], failed: bool = False) -> None:
        # On the pipeline's outcome thread. `failed`: records whose result could not
        # be made, each with the exception saying why (their outcome raises it).
        with self._cond:
            pending, early = self._pending, self._early
            if failed:
                for rid, error in batch:
                    outcome = pending.pop(rid, None)
                    if outcome is None:
                        early[rid] = _Failed(error)
                    elif not outcome._is_set():
                        outcome._exc = error
            else:
                for rid, result in batch:
                    outcome = pending.pop(rid, None)
                    if outcome is None:
                        early[rid] = result
                    elif not outcome._is_set():
                        outcome._value = result
            self._cond.notify_all()

    def _check_process(self) -> None:
        if Forks.count != self._forks:
            raise RuntimeError(
                "this kpl_rs SyncProducer was made in another process (the parent of a "
                "fork); make a producer in each process"
            )

    def _live(self) -> Any:
        self._check_process()
        if self._state == "new":
            raise RuntimeError("SyncProducer not entered")
        if self._state == "closed":
            raise RuntimeError("SyncProducer is closed")
        return self._native


__all__ = ["EXIT_FLUSH_TIMEOUT_S", "SyncOutcome", "SyncOutcomeCancelled", "SyncProducer"]
