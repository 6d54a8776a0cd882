"""deaggregate and aggregate for consumers."""

from __future__ import annotations

import base64

import pytest

import kpl_rs


def test_round_trip_and_lambda_records():
    records = [(f"user-{i % 3}", f"event {i}".encode()) for i in range(50)]
    key, ehk, data = kpl_rs.aggregate(records)
    assert kpl_rs.is_aggregated(data) and data.startswith(kpl_rs.MAGIC)
    users = kpl_rs.deaggregate(data, key, ehk)
    assert [(u.partition_key, u.data) for u in users] == records
    assert [u.sub_sequence_number for u in users] == list(range(50))
    event_record = {
        "kinesis": {"partitionKey": key, "data": base64.b64encode(data).decode()},
        "eventSource": "aws:kinesis",
    }
    assert kpl_rs.deaggregate(event_record) == users


def test_explicit_hash_keys_are_kept():
    key, ehk, data = kpl_rs.aggregate([("a", b"1", "123"), ("b", b"2")])
    users = kpl_rs.deaggregate(data, key, ehk)
    assert [(u.partition_key, u.explicit_hash_key) for u in users] == [("a", "123"), ("b", None)]


def test_a_plain_record_is_itself():
    [u] = kpl_rs.deaggregate(b"plain", "pk", "42")
    assert (u.partition_key, u.explicit_hash_key, u.data, u.sub_sequence_number) == (
        "pk", "42", b"plain", None,
    )
    [empty] = kpl_rs.deaggregate(b"", "k")
    assert (empty.partition_key, empty.explicit_hash_key, empty.data) == ("k", None, b"")


def test_a_broken_aggregate_is_refused():
    with pytest.raises(ValueError):
        kpl_rs.deaggregate(kpl_rs.MAGIC + b"\x01\x02\x03" + bytes(16), "pk")


def test_records_read_lazily_are_the_same_objects_and_compare_by_value():
    key, ehk, data = kpl_rs.aggregate([("a", b"1", "123"), ("b", b"2")])
    first, second = kpl_rs.deaggregate(data, key, ehk)
    assert first.data is first.data and first.partition_key is first.partition_key
    assert first == kpl_rs.deaggregate(data, key, ehk)[0] and first != second
    assert "partition_key=\"a\"" in repr(first) and "b'1'" in repr(first)
    body = {"partitionKey": key, "data": base64.b64encode(data).decode()}
    assert kpl_rs.deaggregate(body) == [first, second]
    with pytest.raises(ValueError):
        kpl_rs.deaggregate({"partitionKey": "k", "data": "not base64!"})


def test_same_answers_as_aws_kinesis_agg_but_its_explicit_hash_keys():
    # aws-kinesis-agg reads a user record without an explicit hash key, in an
    # aggregate that has others with one, as having the table's first (protobuf's
    # default index 0); kpl_rs gives it none, as the record was written.
    agg = pytest.importorskip("aws_kinesis_agg.deaggregator")
    key, ehk, data = kpl_rs.aggregate([("a", b"1", "123"), ("b", b"2"), ("c", b"3", "7")])
    event = {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": key,
            "sequenceNumber": "1",
            "data": base64.b64encode(data).decode(),
            "approximateArrivalTimestamp": 1_700_000_000.0,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": "shardId-000000000000:1",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/test",
        "awsRegion": "us-east-1",
        "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/test",
    }
    theirs = [r["kinesis"] for r in agg.deaggregate_records([event])]
    ours = kpl_rs.deaggregate(event)
    assert [(r["partitionKey"], base64.b64decode(r["data"]), r["subSequenceNumber"]) for r in theirs] == [
        (u.partition_key, u.data, u.sub_sequence_number) for u in ours
    ]
    assert [u.explicit_hash_key for u in ours] == ["123", None, "7"]
    assert [r["explicitHashKey"] for r in theirs] == ["123", "123", "7"]


def _event_record(key: str, data: bytes) -> dict:
    return {"kinesis": {"partitionKey": key, "data": base64.b64encode(data).decode()}}


def test_many_event_records_at_once_are_each_read_as_alone():
    # Aggregates of several sizes (the checksums go four at a time) and a plain one.
    events = []
    for n in range(9):
        key, _, data = kpl_rs.aggregate([(f"k{n}-{i}", bytes([n]) * (i + 1)) for i in range(n + 2)])
        events.append(_event_record(key, data))
    events.insert(3, _event_record("plain-key", b"plain"))
    one_by_one = [u for e in events for u in kpl_rs.deaggregate(e)]
    assert kpl_rs.deaggregate_records(events) == one_by_one
    assert kpl_rs.deaggregate(events) == one_by_one
    assert kpl_rs.deaggregate(tuple(events)) == one_by_one
    assert len(one_by_one) == sum(n + 2 for n in range(9)) + 1
    assert kpl_rs.deaggregate_records([]) == []


def test_a_broken_aggregate_in_a_batch_is_named():
    key, _, data = kpl_rs.aggregate([("a", b"1"), ("b", b"2")])
    broken = data[:-1] + bytes([data[-1] ^ 1])
    events = [_event_record(key, data), _event_record(key, broken)]
    with pytest.raises(ValueError, match="record 1 of the batch"):
        kpl_rs.deaggregate_records(events)


def test_the_collector_runs_again_after_a_deaggregation():
    import gc

    key, _, data = kpl_rs.aggregate([("a", b"1"), ("b", b"2")])
    assert gc.isenabled()
    kpl_rs.deaggregate_records([_event_record(key, data)])
    kpl_rs.deaggregate(data, key)
    assert gc.isenabled()
    gc.disable()
    try:
        kpl_rs.deaggregate(data, key)
        assert not gc.isenabled(), "a collector the caller paused stays paused"
    finally:
        gc.enable()
