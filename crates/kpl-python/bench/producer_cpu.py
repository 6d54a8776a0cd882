"""The CPU one producer process spends putting 50,000 records of 100 B.

One program written against aiokpl 0.2's public API; only the module it imports
changes (``--impl aiokpl`` or ``--impl kpl_rs``, or the variable ``KPL_BENCH_IMPL``).
It opens a ``Producer`` with ``record_ttl_ms=120000, max_outstanding_records=20000``,
awaits ``put_record`` for every record (distinct partition keys, without waiting
for each outcome), flushes, then awaits every outcome and checks that each
succeeded. ``--mode put_records`` (kpl_rs only: aiokpl has no such method) puts
the same records through ``put_records(stream, records)`` in batches of 500.
``--impl floor`` runs the same program on a stand-in producer that does nothing
(every outcome already succeeded): the CPU of Python itself, the interpreter,
records and awaits, below which no implementation can go.

It prints one JSON line: the process's own CPU (``getrusage(RUSAGE_SELF)``, user
plus system, of all its threads, covering the whole run from interpreter start,
the import included; and that of the main thread alone), the records put and
those that failed. It exits 1 if any record failed.

Run it against kinesalite (a stream ``bench``; the endpoint in
``KPL_KINESALITE_ENDPOINT``; any credentials, e.g. ``AWS_ACCESS_KEY_ID=test``
``AWS_SECRET_ACCESS_KEY=test``), from the workspace root::

    cargo xtask kinesalite --shards 4 -- \\
        python crates/kpl-python/bench/producer_cpu.py --impl kpl_rs

``compare.py`` beside it runs it for each implementation and compares.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import resource
import sys
import time

IMPLEMENTATIONS = ("aiokpl", "kpl_rs", "floor")
MODES = ("put_record", "put_records")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--impl", choices=IMPLEMENTATIONS, default=os.environ.get("KPL_BENCH_IMPL"))
    p.add_argument("--mode", choices=MODES, default="put_record")
    p.add_argument("--records", type=int, default=50_000)
    p.add_argument("--size", type=int, default=100, help="bytes of data per record")
    p.add_argument("--batch", type=int, default=500, help="records per put_records call")
    p.add_argument("--stream", default="bench")
    p.add_argument("--endpoint", default=os.environ.get("KPL_KINESALITE_ENDPOINT"))
    args = p.parse_args()
    if args.impl is None:
        p.error("--impl (or KPL_BENCH_IMPL) is required: aiokpl, kpl_rs or floor")
    if args.endpoint is None and args.impl != "floor":
        p.error("--endpoint (or KPL_KINESALITE_ENDPOINT) is required")
    if args.mode == "put_records" and args.impl == "aiokpl":
        p.error("put_records is kpl_rs' only (aiokpl has none)")
    return args


class Floor:
    """The stand-in of ``--impl floor``: aiokpl's names, doing nothing."""

    class Result:
        success = True

    class Outcome:
        async def wait(self) -> Floor.Result:
            return Floor.Result()

    class Config:
        def __init__(self, **_settings: object) -> None:
            pass

    class Producer:
        def __init__(self, _config: object) -> None:
            pass

        async def __aenter__(self) -> Floor.Producer:
            return self

        async def __aexit__(self, *_exc: object) -> None:
            pass

        async def put_record(self, **_record: object) -> Floor.Outcome:
            return Floor.Outcome()

        async def put_records(self, _stream: str, records: list) -> list[Floor.Outcome]:
            return [Floor.Outcome() for _ in records]

        async def flush(self) -> None:
            pass


def records(count: int, size: int) -> list[tuple[str, bytes]]:
    """``count`` records of ``size`` bytes, each with its own partition key."""
    pad = b"x" * max(size - 10, 0)
    return [(f"key-{i}", (b"%010d" % i + pad)[:size]) for i in range(count)]


async def main(args: argparse.Namespace) -> dict[str, object]:
    # The only line that differs between the programs.
    kpl = Floor if args.impl == "floor" else importlib.import_module(args.impl)

    config = kpl.Config(
        region=os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1")),
        record_ttl_ms=120_000,
        max_outstanding_records=20_000,
        endpoint_url=args.endpoint,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
    )
    batch = records(args.records, args.size)
    started = time.monotonic()
    outcomes = []
    async with kpl.Producer(config) as producer:
        if args.mode == "put_record":
            for key, data in batch:
                outcomes.append(
                    await producer.put_record(stream=args.stream, partition_key=key, data=data)
                )
        else:
            for i in range(0, len(batch), args.batch):
                outcomes.extend(
                    await producer.put_records(args.stream, batch[i : i + args.batch])
                )
        await producer.flush()
        results = [await outcome.wait() for outcome in outcomes]
    wall = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "impl": args.impl,
        "mode": args.mode,
        "records": len(results),
        "failed": sum(1 for r in results if not r.success),
        "cpu_s": round(cpu, 4),
        "user_s": round(usage.ru_utime, 4),
        "sys_s": round(usage.ru_stime, 4),
        # The thread that runs Python: the rest of cpu_s is other threads' (Rust's).
        "main_thread_cpu_s": round(time.thread_time(), 4),
        "wall_s": round(wall, 4),
        "records_per_cpu_s": round(len(results) / cpu),
        "max_rss_kib": usage.ru_maxrss,
    }


if __name__ == "__main__":
    arguments = parse_args()
    report = asyncio.run(main(arguments))
    print(json.dumps(report), flush=True)
    sys.exit(1 if report["failed"] or report["records"] != arguments.records else 0)
