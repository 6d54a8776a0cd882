"""Metrics sinks (aiokpl's protocol): where a producer's metric snapshots go."""

from __future__ import annotations

from kpl_rs.sinks._types import (
    EventfulMetricsSink,
    MetricEvent,
    MetricSnapshot,
    MetricsSink,
)
from kpl_rs.sinks.cloudwatch import CloudWatchSink
from kpl_rs.sinks.memory import InMemorySink
from kpl_rs.sinks.null import NullSink

__all__ = [
    "CloudWatchSink",
    "EventfulMetricsSink",
    "InMemorySink",
    "MetricEvent",
    "MetricSnapshot",
    "MetricsSink",
    "NullSink",
]
