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


def test_wait_times_out_and_cancel_resolves_the_handle(unreachable):
    config = unreachable(record_ttl_ms=2_000.0)
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


def test_threads_held_back_when_the_producer_closes_go_on(monkeypatch, unreachable):
    # Nothing answers (a closed port): the records wait for the shard map, and the
    # puts of 8 threads are held back at max_outstanding_records. Leaving the block
    # (its flush timing out) closes the producer: every held thread is told (the
    # callback its wait_for_room asked for comes, even if the runtime drops the
    # task at the close: a race this test does not force) and gets "closed"; every
    # record put has its outcome.
    monkeypatch.setattr(kpl_rs.sync, "EXIT_FLUSH_TIMEOUT_S", 0.2)
    config = unreachable(max_outstanding_records=4, record_ttl_ms=600_000.0)
    for _ in range(10):
        outcomes: list[kpl_rs.SyncOutcome[kpl_rs.RecordResult]] = []
        ended: list[BaseException] = []
        producer = kpl_rs.SyncProducer(config).__enter__()

        def work() -> None:
            try:
                while True:
                    outcomes.append(producer.put_record(stream="s", partition_key="k", data=b"x"))
            except BaseException as e:
                ended.append(e)

        threads = [threading.Thread(target=work, daemon=True) for _ in range(8)]
        for th in threads:
            th.start()
        for _ in range(1000):
            if producer.outstanding_records >= 4:
                break
            threading.Event().wait(0.01)
        assert producer.outstanding_records == 4
        producer.__exit__(None, None, None)
        for th in threads:
            th.join(timeout=10)
        assert not any(th.is_alive() for th in threads), "a put held back never went on"
        assert len(ended) == 8
        assert all(isinstance(e, RuntimeError) and "closed" in str(e) for e in ended), ended
        assert len(outcomes) == 4
        for o in outcomes:
            assert o.wait(timeout=5).attempts[-1].error_code == "Shutdown"
