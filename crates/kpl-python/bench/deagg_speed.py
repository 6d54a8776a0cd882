"""De-aggregation speed: aws-kinesis-agg's Python de-aggregator against kpl_rs.deaggregate.

Builds 1,000 records as a Lambda function gets them in a Kinesis event
(``{"kinesis": {"data": <base64>, "partitionKey": ..., "sequenceNumber": ...}, ...}``),
each an aggregate of about 50 KB of 100 B user records with distinct partition keys,
made by aws-kinesis-agg's own aggregator. Then it times, on the same records,
``aws_kinesis_agg.deaggregator.deaggregate_records(records)`` and
``kpl_rs.deaggregate(records)`` (the whole list at once; also, as
``kpl_rs_each``, ``kpl_rs.deaggregate(record)`` for each record; only the latter
where kpl_rs takes no list), alternating, ``--repeat`` times
each (5 by default): the call alone, and the call followed by reading each user
record's partition key, data and sub-sequence number as a consumer does
(aws-kinesis-agg's data out of the base64 it gives it in; kpl_rs' fields may be
made when first read). It checks that both read the same user records in the same
order, and prints the median seconds of each and the ratios (target: kpl_rs at
least 10 times faster) as one JSON line and one line for people. For scale it
also times Python's ``base64.b64decode`` of the records' data alone: what a
de-aggregator that decodes the base64 in Python spends before it starts.

When ``kpl_rs`` is not importable it times aws-kinesis-agg alone. It exits 1 if the
answers differ (or, with ``--require-target``, if a ratio misses the target).

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


def aws_call(records):
    return deaggregate_records(records)


def aws_read(records):
    """The call, then each user record's key, data (out of its base64) and index read,
    as a consumer reads them."""
    users = deaggregate_records(records)
    size = 0
    for user in users:
        u = user["kinesis"]
        size += len(u["partitionKey"]) + len(base64.b64decode(u["data"]))
        u["subSequenceNumber"]
    return users


def aws_view(users) -> list[tuple]:
    users = (u["kinesis"] for u in users)
    return [(u["partitionKey"], base64.b64decode(u["data"]), u["subSequenceNumber"])
            for u in users]


def kpl_rs_each(records):
    import kpl_rs

    return [user for record in records for user in kpl_rs.deaggregate(record)]


def kpl_rs_list(records):
    import kpl_rs

    return kpl_rs.deaggregate(records)


def kpl_rs_reading(call):
    def read(records):
        """The call, then each user record's key, data and index read."""
        users = call(records)
        size = 0
        for u in users:
            size += len(u.partition_key) + len(u.data)
            u.sub_sequence_number
        return users

    return read


def kpl_rs_view(users) -> list[tuple]:
    return [(u.partition_key, u.data, u.sub_sequence_number) for u in users]


def takes_a_list(records) -> bool:
    """Whether this kpl_rs' deaggregate takes a list of event records at once."""
    import kpl_rs

    try:
        return hasattr(kpl_rs.deaggregate(records[:1])[0], "partition_key")
    except (TypeError, KeyError, AttributeError):
        return False


def base64_alone(records):
    return [base64.b64decode(record["kinesis"]["data"]) for record in records]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=1_000, help="Lambda-event records")
    p.add_argument("--aggregate-size", type=int, default=51_200, help="bytes per aggregate")
    p.add_argument("--user-size", type=int, default=100, help="bytes per user record")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--require-target", action="store_true", help="exit 1 if a ratio misses")
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

    variants = {"aws_kinesis_agg": aws_call, "aws_kinesis_agg_read": aws_read,
                "python_base64_decode": base64_alone}
    if have_kpl_rs:
        call = kpl_rs_list if takes_a_list(records) else kpl_rs_each
        variants |= {"kpl_rs": call, "kpl_rs_read": kpl_rs_reading(call)}
        if call is kpl_rs_list:
            variants["kpl_rs_each"] = kpl_rs_each
    times: dict[str, list[float]] = {name: [] for name in variants}
    answers: dict[str, object] = {}
    for _ in range(args.repeat):
        for name, function in variants.items():
            seconds, answers[name] = timed(function, records)
            times[name].append(seconds)
    median = {name: statistics.median(t) for name, t in times.items()}

    expected = aws_view(answers["aws_kinesis_agg_read"])
    report: dict[str, object] = {
        "records": len(records),
        "user_records": len(expected),
        "mean_aggregate_bytes": round(statistics.mean(sizes)),
        "repeat": args.repeat,
        "median_s": {name: round(m, 4) for name, m in median.items()},
        "user_records_per_s": {name: round(len(expected) / m) for name, m in median.items()
                               if name != "python_base64_decode"},
    }
    same = True
    missed = False
    if have_kpl_rs:
        same = kpl_rs_view(answers["kpl_rs_read"]) == expected
        ratio = median["aws_kinesis_agg"] / median["kpl_rs"]
        ratio_read = median["aws_kinesis_agg_read"] / median["kpl_rs_read"]
        missed = min(ratio, ratio_read) < TARGET
        report.update({
            "same_user_records": same,
            "ratio": round(ratio, 1),
            "ratio_read": round(ratio_read, 1),
            "kpl_rs_call": "deaggregate(records)" if "kpl_rs_each" in median
            else "deaggregate(record) each",
            "target": TARGET,
            "target_met": not missed,
        })
    print(json.dumps(report), flush=True)
    line = (f"{len(records)} records, {len(expected)} user records, median of {args.repeat}: "
            f"aws-kinesis-agg {median['aws_kinesis_agg']:.4f} s "
            f"({median['aws_kinesis_agg_read']:.4f} s with reading each record)")
    if have_kpl_rs:
        line += (f"; kpl_rs {median['kpl_rs']:.4f} s ({median['kpl_rs_read']:.4f} s): "
                 f"{report['ratio']}x ({report['ratio_read']}x with reading; "
                 f"target {TARGET:.0f}x){'' if same else '; ANSWERS DIFFER'}")
    print(line, flush=True)
    if not same:
        return 1
    return 1 if args.require_target and missed else 0


if __name__ == "__main__":
    sys.exit(main())
