""":class:`InMemorySink`: keeps every exported batch of snapshots (for tests)."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

from kpl_rs.sinks._types import MetricSnapshot


class InMemorySink:
    """Keeps every batch ``export`` is called with, in order."""

    __slots__ = ("_exports",)

    def __init__(self) -> None:
        self._exports: list[tuple[MetricSnapshot, ...]] = []

    async def export(self, snapshots: Sequence[MetricSnapshot]) -> None:
        """Keeps the batch."""
        self._exports.append(tuple(snapshots))

    async def __aenter__(self) -> InMemorySink:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    @property
    def exports(self) -> tuple[tuple[MetricSnapshot, ...], ...]:
        """Every batch exported, in call order."""
        return tuple(self._exports)

    @property
    def all_snapshots(self) -> tuple[MetricSnapshot, ...]:
        """Every snapshot of every batch, in order."""
        return tuple(s for batch in self._exports for s in batch)

    def by_name(self, name: str) -> tuple[MetricSnapshot, ...]:
        """The snapshots of metric ``name``."""
        return tuple(s for s in self.all_snapshots if s.name == name)


__all__ = ["InMemorySink"]
