"""kpl_rs: a Kinesis producer for Python on kpl-rs' Rust core, with aiokpl's API.

Replace ``aiokpl`` by ``kpl_rs`` in a program's imports: :class:`Config`,
:class:`Producer` (asyncio or trio), :class:`SyncProducer` (threads),
:class:`RecordResult` and :class:`Attempt`, the metrics and sinks are aiokpl's,
by name, keyword arguments and defaults. aiokpl's pipeline stages (``Aggregator``,
``Collector``, ``Limiter``, ``Reducer``, ``Retrier``, ``Sender``, ``ShardMap``,
``TokenBucket`` ...) are kpl-rs' Rust pipeline here and are not exported.

Beyond aiokpl: :meth:`Producer.put_records`, :meth:`Config.from_kpl_properties`,
:func:`deaggregate` and :func:`aggregate` for consumers, and results that say
when a record may be stored twice (:attr:`RecordResult.may_be_duplicated`).
"""

from kpl_rs._native import __version__
from kpl_rs.aggregation import (
    MAGIC,
    DeaggregatedRecord,
    Tag,
    aggregate,
    deaggregate,
    deaggregate_records,
    is_aggregated,
)
from kpl_rs.config import Config
from kpl_rs.metrics import MetricKey, MetricsLevel, MetricsManager
from kpl_rs.outcome import Outcome
from kpl_rs.producer import Producer
from kpl_rs.result import Attempt, RecordResult
from kpl_rs.sinks import (
    CloudWatchSink,
    EventfulMetricsSink,
    InMemorySink,
    MetricEvent,
    MetricSnapshot,
    MetricsSink,
    NullSink,
)
from kpl_rs.sync import SyncOutcome, SyncOutcomeCancelled, SyncProducer

__all__ = [
    "MAGIC",
    "Attempt",
    "CloudWatchSink",
    "Config",
    "DeaggregatedRecord",
    "EventfulMetricsSink",
    "InMemorySink",
    "MetricEvent",
    "MetricKey",
    "MetricSnapshot",
    "MetricsLevel",
    "MetricsManager",
    "MetricsSink",
    "NullSink",
    "Outcome",
    "Producer",
    "RecordResult",
    "SyncOutcome",
    "SyncOutcomeCancelled",
    "SyncProducer",
    "Tag",
    "__version__",
    "aggregate",
    "deaggregate",
    "deaggregate_records",
    "is_aggregated",
]
