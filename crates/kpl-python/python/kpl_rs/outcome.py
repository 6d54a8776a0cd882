""":class:`Outcome`: a one-shot value a task awaits, on asyncio or trio (aiokpl's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

from kpl_rs import _loop

T = TypeVar("T")

_UNSET: Any = object()


class Outcome(Generic[T]):
    """One-shot async result: set once, awaited by any number of tasks with
    :meth:`wait`. Re-setting raises ``RuntimeError``.

    Set on the event loop of the producer that made it; awaited on that loop.
    """

    __slots__ = ("_exc", "_value", "_waiters")

    def __init__(self) -> None:
        self._value: Any = _UNSET
        self._exc: BaseException | None = None
        self._waiters: list[Callable[[], None]] | None = None

    def set_value(self, value: T) -> None:
        """Resolves the outcome with ``value``. Raises if already set."""
        if self.is_set():
            raise RuntimeError("Outcome already set")
        self._value = value
        self._wake()

    def set_exception(self, exc: BaseException) -> None:
        """Resolves the outcome with an exception. Raises if already set."""
        if self.is_set():
            raise RuntimeError("Outcome already set")
        self._exc = exc
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, None
        if waiters:
            for wake in waiters:
                wake()

    def is_set(self) -> bool:
        """``True`` once the outcome has its value or exception."""
        return self._value is not _UNSET or self._exc is not None

    async def wait(self) -> T:
        """Waits until the outcome is set; returns the value or raises the exception."""
        if self._value is _UNSET:
            if self._exc is None:
                wake, waiting = _loop.current().waiter()
                if self._waiters is None:
                    self._waiters = []
                self._waiters.append(wake)
                await waiting
            if self._exc is not None:
                raise self._exc
        return cast("T", self._value)


__all__ = ["Outcome"]
