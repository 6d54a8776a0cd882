"""De-aggregation speed: aws-kinesis-agg's Python de-aggregator against kpl_rs.deaggregate.

Builds 1,000 records as a Lambda function gets them in a Kinesis event
(``{"kinesis": {"data": <base64>, "partitionKey": ..., "sequenceNumber": ...}, ...}``),
each an aggregate of about 50 KB of 100 B user records with distinct partition keys,
made by aws-kinesis-agg's own aggregator. Then it times, on the same records,
``aws_kinesis_agg.deaggregator.deaggregate_records(records)`` and
``kpl_rs.deaggregate(record)`` for each record, alternating, ``--repeat`` times
each (5 by default); checks that both give the same user records (partition key,
data, sub-sequence number) in the same order; and prints the median seconds of each
and the ratio (target: kpl_rs at least 10 times faster) as one JSON line and one
line for people. Only the de-aggregation is timed (aws-kinesis-agg's answers keep
the data in base64, as it gives them; kpl_rs' are bytes). For scale it also times
Python's ``base64.b64decode`` of the same records' data alone: what a
de-aggregator that decodes the base64 in Python spends before it starts.

When ``kpl_rs`` is not importable it times aws-kinesis-agg alone. It exits 1 if the
answers differ (or, with ``--require-target``, if the ratio misses its target).

Needs ``pip install aws-kinesis-agg ./crates/kpl-python``; run it as
``python crates/kpl-python/bench/deagg_speed.py``.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import statistics
import sys
import time

from aws_kinesis_agg.aggregator import RecordAggregator
from aws_kinesis_agg.deaggregator import deaggregate_records

#: The least aws-kinesis-agg time / kpl_rs time wanted (issue 23).
TARGET = 10.0

STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/bench"


def lambda_records(count: int, aggregate_size: int, user_size: int) -> list[dict]:
    """``count`` Lambda-event records, each an aggregate of about ``aggregate_size``
    bytes of ``user_size``-byte user records, each user record its own key."""
    aggregator = RecordAggregator(max_size=aggregate_size)
    pad = b"u" * max(user_size - 10, 0)
    events: list[dict] = []
    i = 0

    def event(agg) -> dict:
        partition_key, _explicit, data = agg.get_contents()
        n = len(events)
        sequence = str(49_590_000_000_000_000_000_000_000_000_000_000_000_000_000 + n)
        return {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": partition_key,
                "sequenceNumber": sequence,
                "data": base64.b64encode(data).decode("ascii"),
                "approximateArrivalTimestamp": 1_700_000_000.0 + n / 1000,
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": f"shardId-000000000000:{sequence}",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": "arn:aws:iam::123456789012:role/bench",
            "awsRegion": "us-east-1",
            "eventSourceARN": STREAM_ARN,
        }

    while len(events) < count:
        full = aggregator.add_user_record(f"pk-{i}", (b"%010d" % i + pad)[:user_size])
        i += 1
        if full is not None:
            events.append(event(full))
    return events


def timed(function, records):
    gc.collect()
    started = time.perf_counter()
    result = function(records)
    return time.perf_counter() - started, result


def with_aws(records):
    return deaggregate_records(records)


def with_b64(records):
    return [base64.b64decode(record["kinesis"]["data"]) for record in records]


def with_kpl_rs(records):
    import kpl_rs

    return [user for record in records for user in kpl_rs.deaggregate(record)]


def aws_view(users) -> list[tuple]:
    return [
        (u["kinesis"]["partitionKey"], base64.b64decode(u["kinesis"]["data"]),
         u["kinesis"]["subSequenceNumber"])
        for u in users
    ]


def kpl_rs_view(users) -> list[tuple]:
    return [(u.partition_key, u.data, u.sub_sequence_number) for u in users]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=1_000, help="Lambda-event records")
    p.add_argument("--aggregate-size", type=int, default=51_200, help="bytes per aggregate")
    p.add_argument("--user-size", type=int, default=100, help="bytes per user record")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--require-target", action="store_true", help="exit 1 if the ratio misses")
    args = p.parse_args()

    try:
        import kpl_rs

        have_kpl_rs = hasattr(kpl_rs, "deaggregate")
    except ImportError:
        have_kpl_rs = False
    if not have_kpl_rs:
        print("kpl_rs.deaggregate is not importable: timing aws-kinesis-agg alone",
              file=sys.stderr)

    records = lambda_records(args.records, args.aggregate_size, args.user_size)
    sizes = [len(base64.b64decode(r["kinesis"]["data"])) for r in records]

    aws_times, kpl_times, b64_times = [], [], []
    aws_users = kpl_users = None
    for _ in range(args.repeat):
        seconds, aws_users = timed(with_aws, records)
        aws_times.append(seconds)
        b64_times.append(timed(with_b64, records)[0])
        if have_kpl_rs:
            seconds, kpl_users = timed(with_kpl_rs, records)
            kpl_times.append(seconds)

    expected = aws_view(aws_users)
    report: dict[str, object] = {
        "records": len(records),
        "user_records": len(expected),
        "mean_aggregate_bytes": round(statistics.mean(sizes)),
        "repeat": args.repeat,
        "aws_kinesis_agg_s": round(statistics.median(aws_times), 4),
        "aws_kinesis_agg_user_records_per_s": round(len(expected) / statistics.median(aws_times)),
        "python_base64_decode_s": round(statistics.median(b64_times), 4),
    }
    same = True
    if have_kpl_rs:
        same = kpl_rs_view(kpl_users) == expected
        ratio = statistics.median(aws_times) / statistics.median(kpl_times)
        report.update({
            "kpl_rs_s": round(statistics.median(kpl_times), 4),
            "kpl_rs_user_records_per_s": round(len(expected) / statistics.median(kpl_times)),
            "same_user_records": same,
            "ratio": round(ratio, 1),
            "target": TARGET,
            "target_met": ratio >= TARGET,
        })
    print(json.dumps(report), flush=True)
    line = (f"{len(records)} records, {len(expected)} user records: aws-kinesis-agg "
            f"{report['aws_kinesis_agg_s']} s")
    if have_kpl_rs:
        line += (f", kpl_rs {report['kpl_rs_s']} s: {report['ratio']}x "
                 f"(target {TARGET:.0f}x){'' if same else '; ANSWERS DIFFER'}")
    print(line + f" (median of {args.repeat})", flush=True)
    if not same:
        return 1
    return 1 if have_kpl_rs and args.require_target and not report["target_met"] else 0


if __name__ == "__main__":
    sys.exit(main())
