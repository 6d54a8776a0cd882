"""Metrics: snapshot, an InMemorySink, a sink of the user's called on the loop."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import kpl_rs
from kpl_rs import metrics as m


def test_in_memory_sink_and_snapshot(config, kinesis):
    stream = kinesis.create_stream(2)
    sink = kpl_rs.InMemorySink()
    config = dataclasses.replace(
        config, metrics_level=kpl_rs.MetricsLevel.DETAILED, metrics_sink=sink
    )
    n = 200

    async def main():
        async with kpl_rs.Producer(config) as producer:
            outcomes = [
                await producer.put_record(stream=stream, partition_key=f"k{i}", data=b"v" * 10)
                for i in range(n)
            ]
            for o in outcomes:
                await o.wait()
            snapshot = producer.metrics.snapshot()
            await producer.metrics.flush()
            return snapshot

    snapshot = asyncio.run(main())
    put = snapshot[kpl_rs.MetricKey(m.NAME_USER_RECORDS_PUT, stream=stream)]
    assert put[1] == n
    assert snapshot[kpl_rs.MetricKey(m.NAME_USER_RECORDS_RECEIVED, stream=stream)][1] == n
    shards = [k for k in snapshot if k.name == m.NAME_USER_RECORDS_PUT and k.shard_id]
    assert sum(snapshot[k][1] for k in shards) == n
    assert any(k.name == m.NAME_REQUEST_TIME for k in snapshot)
    # flush() exported once, and leaving the block once more.
    assert len(sink.exports) >= 2
    streams = [s for s in sink.by_name(m.NAME_USER_RECORDS_PUT) if s.dimensions == (("stream", stream),)]
    assert streams and streams[0].sum == n and streams[0].count >= 1
    assert streams[0].window_start <= streams[0].window_end


def test_a_sink_of_the_users_is_called_on_the_loop(config, kinesis):
    stream = kinesis.create_stream(1)

    class Sink:
        def __init__(self) -> None:
            self.threads: set[int] = set()
            self.batches = 0
            self.events: list[kpl_rs.MetricEvent] = []
            self.entered = self.exited = False

        async def __aenter__(self):
            self.entered = True
            return self

        async def __aexit__(self, *exc):
            self.exited = True

        async def export(self, snapshots):
            self.threads.add(threading.get_ident())
            self.batches += 1

        def record(self, event):
            self.events.append(event)

    sink = Sink()
    config = dataclasses.replace(
        config,
        metrics_level=kpl_rs.MetricsLevel.SUMMARY,
        metrics_sink=sink,
        metrics_upload_interval_ms=50.0,
    )

    async def main():
        async with kpl_rs.Producer(config) as producer:
            await (await producer.put_record(stream=stream, partition_key="k", data=b"x")).wait()
            await asyncio.sleep(0.3)
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert sink.entered and sink.exited
    assert sink.batches >= 2  # the interval's, and the exit's
    assert sink.threads == {loop_thread}
    assert any(e.name == m.NAME_USER_RECORDS_PUT for e in sink.events)


def test_no_metrics_by_default(config):
    async def main():
        async with kpl_rs.Producer(config) as producer:
            assert producer.metrics.level is kpl_rs.MetricsLevel.NONE
            assert producer.metrics.snapshot() == {}
            await producer.metrics.flush()

    asyncio.run(main())


def test_every_aiokpl_name_is_here_with_the_kpls_value():
    from kpl_rs import _native

    aiokpl_names = [
        "NAME_USER_RECORDS_RECEIVED", "NAME_USER_RECORDS_PUT", "NAME_USER_RECORDS_DATA_PUT",
        "NAME_USER_RECORDS_PENDING", "NAME_KINESIS_RECORDS_PUT", "NAME_KINESIS_RECORDS_DATA_PUT",
        "NAME_ALL_ERRORS", "NAME_ERRORS_BY_CODE", "NAME_RETRIES_PER_RECORD",
        "NAME_BUFFERED_TIME", "NAME_REQUEST_TIME", "NAME_EXPIRED_RECORDS",
    ]
    recorded = set(_native.metric_names())
    constants = [n for n in dir(m) if n.startswith("NAME_")]
    assert set(aiokpl_names) <= set(constants)
    for name in constants:
        assert getattr(m, name) in recorded, name
