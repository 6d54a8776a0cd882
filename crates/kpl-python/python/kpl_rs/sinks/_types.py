"""The sink protocol types: :class:`MetricEvent`, :class:`MetricSnapshot`,
:class:`MetricsSink`, :class:`EventfulMetricsSink` (aiokpl's)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, runtime_checkable


@dataclass(slots=True, frozen=True)
class MetricEvent:
    """One observation: ``dimensions`` is a tuple of ``(name, value)`` pairs
    (``"stream"``, ``"shard"``, ``"error_code"``)."""

    name: str
    value: float
    timestamp: float
    dimensions: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True, frozen=True)
class MetricSnapshot:
    """A metric's statistics over a window (``time.monotonic()`` seconds)."""

    name: str
    count: int
    sum: float
    min: float
    max: float
    dimensions: tuple[tuple[str, str], ...] = ()
    window_start: float = 0.0
    window_end: float = 0.0


@runtime_checkable
class MetricsSink(Protocol):
    """Where metric snapshots go: ``export`` is awaited on the producer's event loop
    every ``metrics_upload_interval_ms`` and at exit."""

    async def export(self, snapshots: Sequence[MetricSnapshot]) -> None: ...

    async def __aenter__(self) -> MetricsSink: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class EventfulMetricsSink(Protocol):
    """A sink that also takes events: ``record`` is called on the event loop, once
    per metric and dimensions at each export, with the window's sum as its value
    (kpl-rs keeps the statistics in Rust, not each observation)."""

    def record(self, event: MetricEvent) -> None: ...


__all__ = ["EventfulMetricsSink", "MetricEvent", "MetricSnapshot", "MetricsSink"]
