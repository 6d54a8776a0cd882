"""The async Producer against kinesis-mock, on asyncio and on trio."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

import kpl_rs


async def put_and_check(config: kpl_rs.Config, kinesis, n: int) -> None:
    stream = kinesis.create_stream(2)
    sent = [f"record {i}".encode() for i in range(n)]
    before = time.monotonic()
    async with kpl_rs.Producer(config) as producer:
        outcomes = [
            await producer.put_record(stream=stream, partition_key=f"key-{i}", data=d)
            for i, d in enumerate(sent)
        ]
        results = [await o.wait() for o in outcomes]
    after = time.monotonic()
    assert all(r.success for r in results), [r for r in results if not r.success][:3]
    for r in results:
        assert r.shard_id and r.sequence_number
        assert not r.may_be_duplicated and not r.may_have_been_stored
        last = r.attempts[-1]
        assert last.success and last.sequence_number == r.sequence_number
        # Times on time.monotonic()'s clock.
        assert before <= last.started_at <= last.ended_at <= after
    kinesis.assert_exactly_once(stream, sent)


def test_asyncio_every_record_stored_exactly_once(config, kinesis):
    asyncio.run(put_and_check(config, kinesis, 3000))


def test_trio_every_record_stored_exactly_once(config, kinesis):
    trio = pytest.importorskip("trio")
    trio.run(put_and_check, config, kinesis, 1000)


def test_put_records_in_batches(config, kinesis):
    stream = kinesis.create_stream(2)
    sent = [f"batch {i}".encode() for i in range(2000)]

    async def main():
        async with kpl_rs.Producer(config) as producer:
            outcomes = []
            for start in range(0, len(sent), 500):
                # Any iterable of tuples; data bytes or anything bytes() takes.
                outcomes += await producer.put_records(
                    stream,
                    (
                        (f"k{start + i}", d if i % 2 else bytearray(d))
                        for i, d in enumerate(sent[start : start + 500])
                    ),
                )
            return [await o.wait() for o in outcomes]

    results = asyncio.run(main())
    assert len(results) == len(sent) and all(r.success for r in results)
    kinesis.assert_exactly_once(stream, sent)


def test_the_records_of_one_aggregate_share_one_frozen_result(config, kinesis):
    stream = kinesis.create_stream(2)
    sent = [f"shared {i}".encode() for i in range(1000)]

    async def main():
        async with kpl_rs.Producer(config) as producer:
            outcomes = await producer.put_records(stream, [(f"k{i}", d) for i, d in enumerate(sent)])
            return [await o.wait() for o in outcomes]

    results = asyncio.run(main())
    assert all(r.success for r in results)
    objects = {id(r): r for r in results}
    aggregates = {(r.shard_id, r.sequence_number) for r in results}
    # Made once per aggregate (or per part of one delivered apart), not per record;
    # and never one for records stored apart.
    assert len(aggregates) >= 2
    assert len(aggregates) <= len(objects) < len(results) / 10
    assert all(r == objects[id(r)] for r in results)
    kinesis.assert_exactly_once(stream, sent)


def test_waits_at_max_outstanding_records(config, kinesis):
    stream = kinesis.create_stream(1)
    sent = [f"held {i}".encode() for i in range(300)]
    config = dataclasses.replace(config, max_outstanding_records=10)

    async def main():
        async with kpl_rs.Producer(config) as producer:
            outcomes = []
            most = 0
            for i, d in enumerate(sent):
                outcomes.append(await producer.put_record(stream=stream, partition_key=f"k{i}", data=d))
                most = max(most, producer.outstanding_records)
            return most, [await o.wait() for o in outcomes]

    most, results = asyncio.run(main())
    assert 1 <= most <= 10
    assert all(r.success for r in results)
    kinesis.assert_exactly_once(stream, sent)


def test_leaving_the_block_flushes(config, kinesis):
    stream = kinesis.create_stream(1)
    config = dataclasses.replace(config, record_max_buffered_time_ms=60_000.0)

    async def main():
        async with kpl_rs.Producer(config) as producer:
            outcome = await producer.put_record(stream=stream, partition_key="k", data=b"x")
        assert outcome.is_set()
        assert producer.outstanding_records == 0
        return await outcome.wait()

    assert asyncio.run(main()).success
    kinesis.assert_exactly_once(stream, [b"x"])


def test_misuse_raises(unreachable):
    config = unreachable()

    async def main():
        producer = kpl_rs.Producer(config)
        with pytest.raises(RuntimeError):
            await producer.put_record(stream="s", partition_key="k", data=b"")
        async with producer:
            with pytest.raises(ValueError):
                await producer.put_record(stream="s", partition_key="", data=b"x")
            with pytest.raises(ValueError):
                await producer.put_record(stream="s", partition_key="k" * 257, data=b"x")
            with pytest.raises(ValueError):
                await producer.put_record(
                    stream="s", partition_key="k", data=b"x", explicit_hash_key="-1"
                )
            with pytest.raises(ValueError):
                await producer.put_record(stream="s", partition_key="k", data=bytes(1024 * 1024 + 1))
            with pytest.raises(ValueError, match="record 1"):
                await producer.put_records("s", [("a", b"x"), ("b", b"y", "2" * 50)])
            with pytest.raises(ValueError, match="record 2: .*partition key is empty"):
                await producer.put_records("s", [("a", b"x"), ("b", b"y"), ("", b"z")])
            with pytest.raises(TypeError, match="record 1: a record is"):
                await producer.put_records("s", [("a", b"x"), "b"])
            with pytest.raises(TypeError, match="record 0:"):
                await producer.put_records("s", [("a", 7.5)])
            assert producer.outstanding_records == 0
        with pytest.raises(RuntimeError):
            await producer.put_record(stream="s", partition_key="k", data=b"x")

    asyncio.run(main())


def test_failures_are_outcomes_with_their_attempts(unreachable):
    # Nothing listens on port 9: every attempt fails; the record fails when its time
    # to live runs out, as data.
    config = unreachable(record_ttl_ms=500.0, record_max_buffered_time_ms=10.0)

    async def main():
        async with kpl_rs.Producer(config) as producer:
            outcome = await producer.put_record(stream="s", partition_key="k", data=b"x")
            return await outcome.wait()

    result = asyncio.run(main())
    assert not result.success
    assert result.sequence_number is None
    assert result.attempts and not any(a.success for a in result.attempts)
    assert all(a.error_code for a in result.attempts)
    assert result.attempts[-1].error_code == "Expired"


def test_logs_reach_python_logging(caplog, unreachable):
    config = unreachable(record_ttl_ms=300.0)
    caplog.set_level("DEBUG", logger="kpl_rs")

    async def main():
        async with kpl_rs.Producer(config) as producer:
            await (await producer.put_record(stream="s", partition_key="k", data=b"x")).wait()

    asyncio.run(main())
    # The logging thread hands them over shortly after.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(
        r.name.startswith("kpl_rs.") for r in caplog.records
    ):
        time.sleep(0.05)
    assert any(r.name.startswith("kpl_rs.kpl_") for r in caplog.records)
