"""Config: aiokpl's fields and defaults, frozen, replace, .properties."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

import kpl_rs
from kpl_rs import _native
from kpl_rs.config import NOT_APPLIED, _settings

# aiokpl 0.2.0's Config, field by field (its source is the contract).
AIOKPL_FIELDS = [
    ("region", inspect.Parameter.empty),
    ("aggregation_enabled", True),
    ("aggregation_max_count", 4_294_967_295),
    ("aggregation_max_size", 51_200),
    ("record_max_buffered_time_ms", 100.0),
    ("record_ttl_ms", 30_000.0),
    ("collection_max_count", 500),
    ("collection_max_size", 5 * 1024 * 1024),
    ("rate_limit_records_per_sec_per_shard", 1_000.0),
    ("rate_limit_bytes_per_sec_per_shard", 1_048_576.0),
    ("drain_interval_ms", 25.0),
    ("fail_if_throttled", False),
    ("retry_deadline_ms", 50.0),
    ("max_outstanding_records", 100_000),
    ("endpoint_url", None),
    ("verify_ssl", True),
    ("aws_access_key_id", None),
    ("aws_secret_access_key", None),
    ("aws_session_token", None),
    ("metrics_level", kpl_rs.MetricsLevel.NONE),
    ("metrics_sink", None),
    ("metrics_upload_interval_ms", 60_000.0),
]


def test_aiokpls_fields_in_order_with_their_defaults():
    params = list(inspect.signature(kpl_rs.Config).parameters.values())
    got = [(p.name, p.default) for p in params[: len(AIOKPL_FIELDS)]]
    assert got == AIOKPL_FIELDS
    assert set(NOT_APPLIED) <= {name for name, _ in AIOKPL_FIELDS}


def test_frozen_and_replace():
    c = kpl_rs.Config(region="us-east-1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.region = "x"  # type: ignore[misc]
    d = dataclasses.replace(c, record_ttl_ms=1_500.0)
    assert d.record_ttl_ms == 1_500.0 and c.record_ttl_ms == 30_000.0
    assert _settings(d)["RecordTtl"] == "1500"


def test_every_key_written_is_a_kpl_rs_setting():
    keys = {row[0] for row in _native.settings()}
    c = kpl_rs.Config(
        region="r", endpoint_url="http://h:1", rate_limit_records_per_sec_per_shard=500.0,
        metrics_level=kpl_rs.MetricsLevel.DETAILED,
    )
    written = _settings(c)
    assert set(written) <= keys, set(written) - keys
    # Half a shard's records: the KPL's RateLimit 50.
    assert written["RateLimit"] == "50"
    assert "RateLimit" not in _settings(kpl_rs.Config(region="r"))


def test_from_kpl_properties():
    text = "Region = eu-west-1\nRateLimit = 90\nRecordTtl = 5000\nRequestTimeout = 2000\nFoo = 1\n"
    c = kpl_rs.Config.from_kpl_properties(text)
    assert c.region == "eu-west-1"
    assert c.record_ttl_ms == 5000.0
    assert _settings(c)["RateLimit"] == "90"
    assert c.kpl_properties == text
    with pytest.raises(ValueError, match="MaxConnections"):
        kpl_rs.Config.from_kpl_properties("Region = r\nMaxConnections = 1000\n")
    with pytest.raises(ValueError):
        kpl_rs.Config.from_kpl_properties("RateLimit = 90\n")
    assert kpl_rs.Config.from_kpl_properties("", region="r").region == "r"


def test_ordered_reaches_the_settings_both_ways():
    assert _settings(kpl_rs.Config(region="r", ordered=True))["Ordered"] == "true"
    assert _settings(kpl_rs.Config(region="r"))["Ordered"] == "false"
    c = kpl_rs.Config.from_kpl_properties("Region = r\nOrdered = true\n")
    assert c.ordered is True
    assert kpl_rs.Config.from_kpl_properties("Region = r\n").ordered is False


def test_verify_before_resend_reaches_the_settings_both_ways():
    c = kpl_rs.Config(region="r", verify_before_resend=True)
    assert _settings(c)["VerifyBeforeResend"] == "true"
    assert _settings(kpl_rs.Config(region="r"))["VerifyBeforeResend"] == "false"
    text = "Region = r\nVerifyBeforeResend = true\n"
    assert kpl_rs.Config.from_kpl_properties(text).verify_before_resend is True
    assert kpl_rs.Config.from_kpl_properties("Region = r\n").verify_before_resend is False


def test_a_bad_value_is_refused_when_the_producer_is_made():
    c = kpl_rs.Config(region="r", collection_max_count=501)

    async def main():
        async with kpl_rs.Producer(c):
            pass

    import asyncio

    with pytest.raises(ValueError, match="CollectionMaxCount"):
        asyncio.run(main())


def test_results_made_of_the_native_tuples_equal_the_dataclasses():
    from kpl_rs.result import Attempt, RecordResult, _from_native

    first = (1.0, 2.0, False, "shardId-0", None, "ProvisionedThroughputExceededException", "slow down", False)
    second = (3.0, 4.5, True, "shardId-0", "49", None, None, False)
    made = _from_native(True, "shardId-0", "49", (first, second))
    assert made == RecordResult(True, "shardId-0", "49", (Attempt(*first), Attempt(*second)))
    assert hash(made.attempts[0]) == hash(Attempt(*first))
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.success = False  # type: ignore[misc]
    assert not made.may_be_duplicated
    timed_out = (1.0, 7.0, False, None, None, "Timeout", "no answer", True)
    assert _from_native(True, "s", "1", (timed_out, second)).may_be_duplicated
    assert _from_native(False, None, None, (timed_out,)).may_have_been_stored
