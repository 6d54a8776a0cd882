"""Record-level types shared with aiokpl (:class:`Tag`), and the aggregated-record
format for consumers: :func:`deaggregate` and :func:`aggregate`, on kpl-rs' codec.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kpl_rs import _native

#: The four bytes every KPL aggregated record starts with.
MAGIC = b"\xf3\x89\x9a\xc2"


@dataclass(slots=True, frozen=True)
class Tag:
    """A user-defined ``(key, value?)`` tag (accepted by ``put_record`` as aiokpl's;
    kpl-rs does not write tags into aggregates)."""

    key: str
    value: str | None = None


#: One user record read out of a Kinesis record: ``partition_key``,
#: ``explicit_hash_key``, ``data``, and ``sub_sequence_number`` (its index in the
#: aggregate; ``None`` for a record that was no aggregate). Made in Rust.
DeaggregatedRecord = _native.DeaggregatedRecord


def is_aggregated(data: bytes) -> bool:
    """Whether ``data`` starts with the aggregation magic bytes."""
    return data[:4] == MAGIC


def deaggregate(
    record: bytes | Mapping[str, Any] | list[Mapping[str, Any]] | tuple[Mapping[str, Any], ...],
    partition_key: str = "",
    explicit_hash_key: str | None = None,
) -> list[DeaggregatedRecord]:
    """The user records of one Kinesis record.

    ``record`` is the record's data (``bytes``, as GetRecords gives it), or a
    record of a Lambda Kinesis event (``{"kinesis": {"data": <base64>,
    "partitionKey": ..., "explicitHashKey": ...}}``, or its ``"kinesis"`` part),
    whose keys then apply. A record that is no aggregate is one user record with
    the Kinesis record's keys. A record that starts with the magic bytes but does
    not decode raises ``ValueError``. A list (or tuple) of event records, such as
    ``event["Records"]``, is read as :func:`deaggregate_records` reads it: all
    their user records in one list, about twice as fast as one by one.
    """
    if isinstance(record, Mapping):
        return _made_untracked(_native.deaggregate_event_record, record)
    if isinstance(record, (list, tuple)):
        return deaggregate_records(record)
    data = record if type(record) is bytes else bytes(record)
    return _made_untracked(_native.deaggregate, data, partition_key, explicit_hash_key)


def deaggregate_records(records: Iterable[Mapping[str, Any]]) -> list[DeaggregatedRecord]:
    """The user records of many records of a Lambda Kinesis event (its
    ``event["Records"]``, as aws-kinesis-agg's ``deaggregate_records`` takes them),
    in order, in one list: each record's as :func:`deaggregate` gives them, the
    aggregates' checksums computed four at a time. A record that does not decode
    raises ``ValueError`` naming its index in ``records``.
    """
    return _made_untracked(_native.deaggregate_event_records, records)


def _made_untracked(
    make: Callable[..., list[DeaggregatedRecord]], *args: Any
) -> list[DeaggregatedRecord]:
    """``make(*args)`` with Python's cyclic garbage collector paused.

    A de-aggregation makes hundreds of thousands of small objects at once; each few
    hundred of them would start a collection that walks every object made so far
    (the same 1,000 event records take 0.45 s with it, 0.2 s without). None of them
    can be in a reference cycle while they are made. The collector runs again
    afterwards, as it was (a collection another thread would start meanwhile waits
    for the next allocation after).
    """
    if not gc.isenabled():
        return make(*args)
    gc.disable()
    try:
        return make(*args)
    finally:
        gc.enable()


def aggregate(
    records: Iterable[tuple[str, bytes] | tuple[str, bytes, str | None]],
) -> tuple[str, str | None, bytes]:
    """One aggregated record of ``records`` (``(partition_key, data)`` or
    ``(partition_key, data, explicit_hash_key)``): ``(partition_key,
    explicit_hash_key, data)`` to put as a Kinesis record. Keep the total within the
    stream's record size."""
    items = [(r[0], bytes(r[1]), r[2] if len(r) > 2 else None) for r in records]
    return _native.aggregate(items)


__all__ = [
    "MAGIC",
    "DeaggregatedRecord",
    "Tag",
    "aggregate",
    "deaggregate",
    "deaggregate_records",
    "is_aggregated",
]
