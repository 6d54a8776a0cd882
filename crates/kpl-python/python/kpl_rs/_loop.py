"""The event loop a producer delivers to: asyncio's or trio's, found when the
producer is entered (no dependency: trio is looked at only if it is imported)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any


class Loop:
    """What kpl_rs needs of an event loop: a thread-safe call, a one-shot waiter,
    and a background task."""

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        """Runs ``fn(*args)`` on the loop, from any thread."""
        raise NotImplementedError

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        """Runs ``fn(*args)`` on the loop when the running task yields (called on the
        loop's thread)."""
        raise NotImplementedError

    def from_thread(self, fn: Callable[[], object]) -> Callable[[], None]:
        """What another thread calls to run ``fn()`` on the loop: nothing once the
        loop has ended (nobody is left to hear it; a producer left open is closed
        at exit, after its loop)."""
        call = self.call_soon_threadsafe

        def run() -> None:
            try:
                call(fn)
            except RuntimeError:  # asyncio's closed loop; trio's RunFinishedError
                pass

        return run

    def waiter(self) -> tuple[Callable[[], None], Awaitable[None]]:
        """``(wake, awaitable)``: awaiting waits until ``wake()`` (on the loop)."""
        raise NotImplementedError

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
        """Runs ``fn()`` in the background; returns what cancels it."""
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        """Sleeps on the loop."""
        raise NotImplementedError


class AsyncioLoop(Loop):
    """asyncio's running loop."""

    __slots__ = ("_loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        self._loop.call_soon_threadsafe(fn, *args)

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        self._loop.call_soon(fn, *args)

    def waiter(self) -> tuple[Callable[[], None], Awaitable[None]]:
        future: asyncio.Future[None] = self._loop.create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        return wake, future

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
        task = self._loop.create_task(fn())

        def cancel() -> None:
            task.cancel()

        return cancel

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class TrioLoop(Loop):
    """trio's run, through its token."""

    __slots__ = ("_token", "_trio")

    def __init__(self, trio: Any) -> None:
        self._trio = trio
        self._token = trio.lowlevel.current_trio_token()

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        self._token.run_sync_soon(fn, *args)

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        self._token.run_sync_soon(fn, *args)

    def waiter(self) -> tuple[Callable[[], None], Awaitable[None]]:
        event = self._trio.Event()
        return event.set, event.wait()

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
        scope = self._trio.CancelScope()

        async def run() -> None:
            with scope:
                await fn()

        self._trio.lowlevel.spawn_system_task(run)

        def cancel() -> None:
            scope.cancel()

        return cancel

    async def sleep(self, seconds: float) -> None:
        await self._trio.sleep(seconds)


def current() -> Loop:
    """The loop running the calling task: trio's if inside ``trio.run``, else
    asyncio's. ``RuntimeError`` outside both."""
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            return TrioLoop(trio)
        except RuntimeError:
            pass
    try:
        return AsyncioLoop(asyncio.get_running_loop())
    except RuntimeError:
        raise RuntimeError("kpl_rs.Producer needs a running asyncio or trio event loop") from None
