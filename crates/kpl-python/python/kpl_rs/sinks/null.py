""":class:`NullSink`: discards every metric (the default)."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

from kpl_rs.sinks._types import MetricSnapshot


class NullSink:
    """Discards every metric: the sink when ``config.metrics_sink`` is ``None``."""

    __slots__ = ()

    async def export(self, snapshots: Sequence[MetricSnapshot]) -> None:
        """Does nothing."""
        return None

    async def __aenter__(self) -> NullSink:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


__all__ = ["NullSink"]
