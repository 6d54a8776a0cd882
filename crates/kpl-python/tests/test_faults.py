"""Outcomes after faults: a proxy in front of kinesis-mock answers the first
PutRecords requests with 500 InternalFailure (the records are retried, stored
once each, and their attempts say what happened), or never answers them (a close
then fails the records at once, saying they may have been stored); and a result
the producer cannot make fails its record only."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import kpl_rs
import kpl_rs._build

FAILURE = b'{"__type":"InternalFailure","message":"injected by the test proxy"}'


def proxy(
    upstream: str, failures: int, silence: threading.Event | None = None
) -> ThreadingHTTPServer:
    """A proxy to ``upstream`` that answers the first ``failures`` PutRecords with
    a 500; with ``silence``, one that answers no PutRecords at all (each waits for
    the event, then the connection closes unanswered)."""
    left = [failures]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            target = self.headers.get("X-Amz-Target", "")
            if silence is not None and target.endswith(".PutRecords"):
                silence.wait(30)
                self.close_connection = True
                return
            with lock:
                fail = target.endswith(".PutRecords") and left[0] > 0
                if fail:
                    left[0] -= 1
            if fail:
                status, answer, kind = 500, FAILURE, "application/x-amz-json-1.1"
            else:
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                request = urllib.request.Request(upstream, data=body, headers=headers)
                try:
                    with urllib.request.urlopen(request, timeout=30) as r:
                        status, answer = r.status, r.read()
                        kind = r.headers.get("Content-Type", "application/x-amz-json-1.1")
                except urllib.error.HTTPError as e:
                    status, answer = e.code, e.read()
                    kind = e.headers.get("Content-Type", "application/x-amz-json-1.1")
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_records_retried_after_500s_are_stored_once(config, kinesis, endpoint):
    stream = kinesis.create_stream(1)
    server = proxy(endpoint, failures=3)
    config = dataclasses.replace(
        config, endpoint_url=f"http://127.0.0.1:{server.server_address[1]}"
    )
    sent = [f"fault {i}".encode() for i in range(300)]

    async def main():
        async with kpl_rs.Producer(config) as producer:
            outcomes = [
                await producer.put_record(stream=stream, partition_key=f"k{i}", data=d)
                for i, d in enumerate(sent)
            ]
            return [await o.wait() for o in outcomes]

    try:
        results = asyncio.run(main())
    finally:
        server.shutdown()
    assert all(r.success for r in results)
    retried = [r for r in results if len(r.attempts) > 1]
    assert retried, "no record met an injected failure"
    for r in retried:
        failed = r.attempts[:-1]
        assert all(not a.success and a.error_code for a in failed)
        assert all(a.ended_at <= b.started_at for a, b in zip(r.attempts, r.attempts[1:]))
        # A 500 is an answer: the request was not left without one.
        assert not r.may_be_duplicated
    kinesis.assert_exactly_once(stream, sent)


def test_a_cancelled_exit_fails_unanswered_records_at_once(config, kinesis, endpoint):
    # Every PutRecords goes unanswered (RequestTimeout 500 ms) and records may live
    # 20 s. The task is cancelled while it flushes, then again while leaving the
    # block flushes: the producer closes, waits for the request in flight to time
    # out, then fails its records as shut down, saying they may have been stored.
    # (They were once retried until their time to live, the event loop blocked in
    # the close all along.)
    stream = kinesis.create_stream(1)
    silence = threading.Event()
    server = proxy(endpoint, failures=0, silence=silence)
    config = dataclasses.replace(
        config,
        endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
        record_ttl_ms=20_000.0,
        kpl_properties="RequestTimeout = 500",
    )
    outcomes = []

    async def main():
        async with kpl_rs.Producer(config) as producer:
            for i in range(20):
                outcomes.append(
                    await producer.put_record(stream=stream, partition_key=f"k{i}", data=b"x")
                )
            # The map is known and the records are sent.
            await producer.flush()

    async def cancelled_twice():
        task = asyncio.ensure_future(main())
        await asyncio.sleep(0.3)
        started = time.monotonic()
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done(), "leaving the block waits for the flush"
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        elapsed = time.monotonic() - started
        return elapsed, [await asyncio.wait_for(o.wait(), 5) for o in outcomes]

    try:
        elapsed, got = asyncio.run(cancelled_twice())
    finally:
        silence.set()
        server.shutdown()
    assert elapsed < 10, f"the close took {elapsed:.1f} s"
    assert len(got) == 20
    for r in got:
        assert not r.success
        assert r.attempts[-1].error_code == "Shutdown"
        assert r.may_have_been_stored


def _failing_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes the first result the producer makes raise (as a MemoryError would)."""
    made = kpl_rs._build._from_native
    calls = [0]

    def make_result(*args: object) -> kpl_rs.RecordResult:
        calls[0] += 1
        if calls[0] == 1:
            raise MemoryError("made up by the test")
        return made(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(kpl_rs._build, "_from_native", make_result)


def _one_raised_the_rest_expired(results: list[object]) -> None:
    raised = [r for r in results if isinstance(r, MemoryError)]
    assert len(raised) == 1, results
    rest = [r for r in results if not isinstance(r, MemoryError)]
    assert len(rest) == len(results) - 1
    assert all(
        isinstance(r, kpl_rs.RecordResult) and r.attempts[-1].error_code == "Expired" for r in rest
    ), rest


def test_a_result_that_cannot_be_made_fails_its_record_only_sync(monkeypatch, unreachable):
    # The result of one record cannot be made: that record's outcome raises why,
    # and the others of its batch have theirs. (Before, the whole batch was lost:
    # no record of it ever had an outcome.)
    _failing_once(monkeypatch)
    with kpl_rs.SyncProducer(unreachable(record_ttl_ms=300.0)) as producer:
        outcomes = [
            producer.put_record(stream="s", partition_key=f"k{i}", data=b"x") for i in range(5)
        ]
        results: list[object] = []
        for o in outcomes:
            try:
                results.append(o.wait(timeout=10))
            except MemoryError as e:
                results.append(e)
    _one_raised_the_rest_expired(results)


def test_a_result_that_cannot_be_made_fails_its_record_only_async(monkeypatch, unreachable):
    _failing_once(monkeypatch)

    async def main() -> list[object]:
        async with kpl_rs.Producer(unreachable(record_ttl_ms=300.0)) as producer:
            outcomes = [
                await producer.put_record(stream="s", partition_key=f"k{i}", data=b"x")
                for i in range(5)
            ]
            results: list[object] = []
            for o in outcomes:
                try:
                    results.append(await asyncio.wait_for(o.wait(), 10))
                except MemoryError as e:
                    results.append(e)
            return results

    _one_raised_the_rest_expired(asyncio.run(main()))
