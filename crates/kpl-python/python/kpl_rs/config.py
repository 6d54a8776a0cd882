"""Frozen :class:`Config` dataclass: aiokpl's fields, names and defaults.

Each field is applied to kpl-rs' settings (the KPL's keys) by the table
``_KPL_KEYS`` below; the fields that change nothing in kpl-rs are accepted and
listed in ``NOT_APPLIED`` with the reason. Two fields are kpl-rs' own:
``kpl_properties`` (the text of a KPL ``.properties`` file, applied first) and
``kpl_settings`` (more KPL keys, applied last), so that every setting of kpl-rs
(``RequestTimeout``, ``ProxyHost``, ``CaCertFile`` ...) can be given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from kpl_rs import _native
from kpl_rs.metrics import MetricsLevel
from kpl_rs.sinks import CloudWatchSink, MetricsSink

#: A shard's write limits, which aiokpl's rate fields are given against.
SHARD_RECORDS_PER_SEC = 1_000.0
SHARD_BYTES_PER_SEC = 1_048_576.0

#: aiokpl's fields that change nothing in kpl-rs, and why.
NOT_APPLIED = {
    "drain_interval_ms": "kpl-rs' limiter admits by each shard's rolling second, with no drain tick",
    "retry_deadline_ms": "kpl-rs retries a record as soon as its shard has room, within its record_ttl_ms",
}


@dataclass(slots=True, frozen=True)
class Config:
    """Every producer setting, immutable (``dataclasses.replace`` makes a changed
    copy). Same fields and defaults as aiokpl's ``Config``, plus ``kpl_properties``
    and ``kpl_settings``.

    How each field applies: ``aggregation_*``, ``record_max_buffered_time_ms``,
    ``record_ttl_ms``, ``collection_*``, ``fail_if_throttled`` and
    ``max_outstanding_records`` are the KPL settings of the same name (times
    rounded to whole milliseconds); ``rate_limit_records_per_sec_per_shard`` and
    ``rate_limit_bytes_per_sec_per_shard`` give the KPL's ``RateLimit`` (the
    smaller of the two as a share of a shard's 1,000 records and 1 MiB per second;
    with both at aiokpl's defaults, kpl-rs' and the KPL's default of 150 % applies,
    as the limiter then backs off on throttling); ``endpoint_url`` (``http://`` or
    ``https://``) and ``verify_ssl`` (``False`` trusts any certificate) apply to
    Kinesis; the ``aws_*`` credentials, when given, replace the AWS chain's
    (``aws_session_token`` is not applied yet: a warning says so);
    ``metrics_*`` drive ``producer.metrics``; ``ordered`` and
    ``verify_before_resend`` are kpl-rs' ``Ordered`` and ``VerifyBeforeResend``.
    ``drain_interval_ms`` and
    ``retry_deadline_ms`` change nothing (``NOT_APPLIED`` says why).
    """

    region: str

    aggregation_enabled: bool = True
    aggregation_max_count: int = 4_294_967_295
    aggregation_max_size: int = 51_200

    record_max_buffered_time_ms: float = 100.0
    record_ttl_ms: float = 30_000.0

    collection_max_count: int = 500
    collection_max_size: int = 5 * 1024 * 1024

    rate_limit_records_per_sec_per_shard: float = 1_000.0
    rate_limit_bytes_per_sec_per_shard: float = 1_048_576.0
    drain_interval_ms: float = 25.0

    fail_if_throttled: bool = False
    retry_deadline_ms: float = 50.0

    max_outstanding_records: int = 100_000

    endpoint_url: str | None = None
    verify_ssl: bool = True
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None

    metrics_level: MetricsLevel = MetricsLevel.NONE
    metrics_sink: MetricsSink | None = None
    metrics_upload_interval_ms: float = 60_000.0

    # kpl-rs' own.
    #: Records put in order with the same partition key are stored (and read by a
    #: KCL consumer) in that order (kpl-rs' ``Ordered``; docs/delivery.md).
    ordered: bool = False
    #: Records of a request that may have been stored are looked for in their shard
    #: before they are sent again (kpl-rs' ``VerifyBeforeResend``; docs/delivery.md).
    verify_before_resend: bool = False
    kpl_properties: str | None = None
    kpl_settings: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_kpl_properties(cls, text: str, *, region: str | None = None) -> Config:
        """A config of a Java KPL ``.properties`` text: the keys aiokpl's fields have
        set those fields, and the whole text is kept in ``kpl_properties`` for the
        others. ``region`` is used when the text has no ``Region``. A bad value
        raises ``ValueError`` naming its key and line; keys that change nothing are
        logged as warnings (logger ``kpl_rs``)."""
        values, _ignored = _native.parse_kpl_properties(text)
        region = values["Region"] or region
        if not region:
            raise ValueError("no Region in the text, and no region given")
        rate = values["RateLimit"] / 100.0
        return cls(
            region=region,
            aggregation_enabled=values["AggregationEnabled"],
            aggregation_max_count=values["AggregationMaxCount"],
            aggregation_max_size=values["AggregationMaxSize"],
            record_max_buffered_time_ms=float(values["RecordMaxBufferedTime"]),
            record_ttl_ms=float(values["RecordTtl"]),
            collection_max_count=values["CollectionMaxCount"],
            collection_max_size=values["CollectionMaxSize"],
            rate_limit_records_per_sec_per_shard=SHARD_RECORDS_PER_SEC * rate,
            rate_limit_bytes_per_sec_per_shard=SHARD_BYTES_PER_SEC * rate,
            fail_if_throttled=values["FailIfThrottled"],
            endpoint_url=values["KinesisEndpoint"],
            verify_ssl=values["VerifyCertificate"],
            metrics_level=MetricsLevel(values["MetricsLevel"]),
            metrics_upload_interval_ms=float(values["MetricsUploadDelay"]),
            ordered=values["Ordered"],
            verify_before_resend=values["VerifyBeforeResend"],
            kpl_properties=text,
        )


def _ms(value: float) -> str:
    return str(round(value))


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _rate_limit(config: Config) -> str | None:
    records = config.rate_limit_records_per_sec_per_shard
    size = config.rate_limit_bytes_per_sec_per_shard
    if records == SHARD_RECORDS_PER_SEC and size == SHARD_BYTES_PER_SEC:
        return None
    share = min(records / SHARD_RECORDS_PER_SEC, size / SHARD_BYTES_PER_SEC)
    return str(max(1, round(share * 100)))


#: The KPL key each field is applied as, and how its value is written.
_KPL_KEYS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "region": ("Region", str),
    "aggregation_enabled": ("AggregationEnabled", _bool),
    "aggregation_max_count": ("AggregationMaxCount", str),
    "aggregation_max_size": ("AggregationMaxSize", str),
    "record_max_buffered_time_ms": ("RecordMaxBufferedTime", _ms),
    "record_ttl_ms": ("RecordTtl", _ms),
    "collection_max_count": ("CollectionMaxCount", str),
    "collection_max_size": ("CollectionMaxSize", str),
    "fail_if_throttled": ("FailIfThrottled", _bool),
    "max_outstanding_records": ("max_outstanding_records", str),
    "endpoint_url": ("KinesisEndpoint", str),
    "verify_ssl": ("VerifyCertificate", _bool),
    "metrics_upload_interval_ms": ("MetricsUploadDelay", _ms),
    "ordered": ("Ordered", _bool),
    "verify_before_resend": ("VerifyBeforeResend", _bool),
}

# Applied otherwise: by _settings (rates, metrics level), by the producer
# (credentials, sink), or not at all (NOT_APPLIED).
_OTHERS = {
    "rate_limit_records_per_sec_per_shard",
    "rate_limit_bytes_per_sec_per_shard",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "metrics_level",
    "metrics_sink",
    "kpl_properties",
    "kpl_settings",
    *NOT_APPLIED,
}

_GRANULARITY = {
    MetricsLevel.NONE: "shard",
    MetricsLevel.SUMMARY: "stream",
    MetricsLevel.DETAILED: "shard",
}


def _settings(config: Config) -> dict[str, str]:
    """The KPL settings of ``config``, by key, as ``.properties`` values."""
    out: dict[str, str] = {}
    for name, (key, write) in _KPL_KEYS.items():
        value = getattr(config, name)
        if value is not None:
            out[key] = write(value)
    rate = _rate_limit(config)
    if rate is not None:
        out["RateLimit"] = rate
    out["MetricsLevel"] = config.metrics_level.value
    out["MetricsGranularity"] = _GRANULARITY[config.metrics_level]
    sink = config.metrics_sink
    if isinstance(sink, CloudWatchSink):
        out["MetricsNamespace"] = sink.namespace
    for key, value in config.kpl_settings:
        out[key] = value
    return out


def _check_table() -> None:
    # Every field has one home: a KPL key, or one of the others.
    names = {f.name for f in fields(Config)}
    assert names == set(_KPL_KEYS) | _OTHERS, names ^ (set(_KPL_KEYS) | _OTHERS)


_check_table()

__all__ = ["NOT_APPLIED", "Config"]
