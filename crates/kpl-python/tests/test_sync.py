"""SyncProducer: threads, misuse, timeouts."""

from __future__ import annotations

import threading

import pytest

import kpl_rs


def test_eight_threads_every_record_stored_exactly_once(config, kinesis):
    stream = kinesis.create_stream(2)
    per_thread = 300
    sent = [f"t{t}-{i}".encode() for t in range(8) for i in range(per_thread)]
    results: list[kpl_rs.RecordResult] = []
    lock = threading.Lock()
    with kpl_rs.SyncProducer(config) as producer:

        def work(t: int) -> None:
            outcomes = [
                producer.put_record(stream=stream, partition_key=f"t{t}-{i}", data=f"t{t}-{i}".encode())
                for i in range(per_thread)
            ]
            got = [o.wait(timeout=60) for o in outcomes]
            with lock:
                results.extend(got)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        producer.flush(timeout=30)
        assert producer.outstanding_records == 0
    assert len(results) == len(sent) and all(r.success for r in results)
    kinesis.assert_exactly_once(stream, sent)


def test_wait_times_out_and_cancel_resolves_the_handle():
    config = kpl_rs.Config(
        region="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="a",
        aws_secret_access_key="b",
        record_ttl_ms=2_000.0,
    )
    with kpl_rs.SyncProducer(config) as producer:
        outcome = producer.put_record(stream="s", partition_key="k", data=b"x")
        with pytest.raises(TimeoutError):
            outcome.wait(timeout=0.05)
        assert not outcome.done()
        with pytest.raises(TimeoutError):
            producer.flush(timeout=0.05)
        assert producer.outstanding_records == 1
        assert outcome.cancel()
        assert not outcome.cancel()
        assert outcome.done()
        with pytest.raises(kpl_rs.SyncOutcomeCancelled):
            outcome.wait()
        other = producer.put_record(stream="s", partition_key="k", data=b"y")
        result = other.wait(timeout=30)
        assert not result.success and result.attempts[-1].error_code == "Expired"


def test_misuse_raises(config):
    producer = kpl_rs.SyncProducer(config)
    with pytest.raises(RuntimeError):
        producer.put_record(stream="s", partition_key="k", data=b"x")
    with pytest.raises(RuntimeError):
        producer.flush()
    assert producer.outstanding_records == 0
    with producer:
        with pytest.raises(ValueError):
            producer.put_record(stream="s", partition_key="", data=b"x")
    with pytest.raises(RuntimeError):
        producer.put_record(stream="s", partition_key="k", data=b"x")
    with pytest.raises(ValueError):
        kpl_rs.SyncProducer(config, backend="curio")
