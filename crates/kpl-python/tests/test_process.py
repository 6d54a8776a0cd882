"""Whole programs: an aiokpl program with its imports changed, a forked child, and
Ctrl-C in a blocking wait."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import kpl_rs

HERE = Path(__file__).parent


def test_an_aiokpl_program_with_its_imports_changed(endpoint, kinesis):
    stream = kinesis.create_stream(2)
    n = 1000
    done = subprocess.run(
        [sys.executable, str(HERE / "aiokpl_program.py"), endpoint, stream, str(n)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"stored {n} of {n}"
    kinesis.assert_exactly_once(stream, [f"aiokpl {i}".encode() for i in range(n)])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_forked_child_gets_a_clear_error(config):
    with kpl_rs.SyncProducer(config) as producer:
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 3
            try:
                producer.put_record(stream="s", partition_key="k", data=b"x")
            except RuntimeError as e:
                code = 0 if "another process" in str(e) else 4
            except BaseException:
                code = 5
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_forked_child_of_an_async_producer_gets_a_clear_error(config):
    async def main():
        async with kpl_rs.Producer(config) as producer:
            pid = os.fork()
            if pid == 0:
                code = 3
                try:
                    await producer.put_record(stream="s", partition_key="k", data=b"x")
                except RuntimeError as e:
                    code = 0 if "another process" in str(e) else 4
                except BaseException:
                    code = 5
                os._exit(code)
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)

    assert asyncio.run(main()) == 0


def _sigint_as_a_terminal_gives_it() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_interrupts_a_blocking_wait_and_leaves_no_thread():
    script = textwrap.dedent(
        """
        import kpl_rs, sys
        config = kpl_rs.Config(region="us-east-1", endpoint_url="http://127.0.0.1:9",
                               aws_access_key_id="a", aws_secret_access_key="b",
                               record_ttl_ms=600_000.0)
        producer = kpl_rs.SyncProducer(config).__enter__()
        outcome = producer.put_record(stream="s", partition_key="k", data=b"x")
        print("waiting", flush=True)
        try:
            outcome.wait()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(7)
        """
    )
    # Ctrl-C as a terminal gives it: a gate started in the background (`cmd &` in a
    # script, nohup) hands its children SIGINT ignored, and Python keeps it ignored.
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_as_a_terminal_gives_it,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "waiting"
    time.sleep(0.3)
    started = time.monotonic()
    child.send_signal(signal.SIGINT)
    code = child.wait(timeout=20)
    assert child.stdout.read().strip() == "interrupted"
    assert code == 7
    # The process ended although its producer was never closed.
    assert time.monotonic() - started < 10


def test_a_program_that_ends_just_after_opening_a_producer_ends_cleanly():
    # The producer's threads attach to the interpreter before the producer is
    # returned: a thread that first attached later could find the interpreter gone
    # as the program ended, and panic on its way out (3 runs of 30 did, before).
    script = textwrap.dedent(
        """
        import kpl_rs, sys
        config = kpl_rs.Config(region="us-east-1", endpoint_url="http://127.0.0.1:9",
                               aws_access_key_id="a", aws_secret_access_key="b")
        producer = kpl_rs.SyncProducer(config).__enter__()
        sys.exit(3)
        """
    )
    for _ in range(6):
        children = [
            subprocess.Popen(
                [sys.executable, "-c", script],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(5)
        ]
        for child in children:
            out, err = child.communicate(timeout=30)
            assert (child.returncode, out, err) == (3, "", "")


def test_a_producer_left_open_is_closed_when_the_program_ends():
    # A program that leaves a producer open: at exit, before the interpreter
    # finalizes, kpl_rs closes it (its threads would otherwise come back into a
    # finalizing interpreter and be parked there for good); the record not sent
    # fails as shut down, and a warning says so. (Before, the record had no outcome
    # and nothing was said.) The exit hook registered before kpl_rs' runs after it,
    # and can still leave the producer's block (as a logging handler's close would).
    script = textwrap.dedent(
        """
        import atexit

        def after():
            result = outcome.wait(5)
            print("outcome", result.success, result.attempts[-1].error_code, flush=True)
            producer.__exit__(None, None, None)
            print("left", flush=True)

        atexit.register(after)
        import kpl_rs
        config = kpl_rs.Config(region="us-east-1", endpoint_url="http://127.0.0.1:9",
                               aws_access_key_id="a", aws_secret_access_key="b",
                               record_max_buffered_time_ms=60_000.0)
        producer = kpl_rs.SyncProducer(config).__enter__()
        outcome = producer.put_record(stream="s", partition_key="k", data=b"x")
        """
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["outcome", "False", "Shutdown", "left"], done.stderr
    assert "left open with 1 record without an outcome" in done.stderr
    assert time.monotonic() - started < 20
