"""Conformance peer: the Python aws-kinesis-agg package.

generate: writes random cases (JSON lines), each a list of user records and the
          aggregate the Python aggregator makes of them.
read:     de-aggregates kpl-codec's encodings of those cases with the Python
          de-aggregator and checks every user record came back.

Run by `cargo xtask conformance`; not meant to be called by hand.
"""

import argparse
import base64
import json
import random
import sys

from aws_kinesis_agg.aggregator import AggRecord
from aws_kinesis_agg.deaggregator import deaggregate_records

MAX_HASH_KEY = 2**128 - 1
# Keep every case below the Python aggregator's 1 MiB record limit.
CASE_BUDGET = 900 * 1024

ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyz0123456789-_:.",
    "ключзначениепривет",
    "鍵値東京日本語",
    "🔑🚀😀🎉",
    "ÿéàüßñ",
]


def random_key(rng):
    length = rng.choice([1, 1, 2, 5, 10, 20, 36, 64, 128, 256])
    alphabet = rng.choice(ALPHABETS + ["".join(ALPHABETS)])
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, length)))


def random_size(rng):
    bucket = rng.random()
    if bucket < 0.1:
        return 0
    if bucket < 0.5:
        return rng.randint(1, 100)
    if bucket < 0.8:
        return rng.randint(100, 2000)
    if bucket < 0.98:
        return rng.randint(2000, 20000)
    return rng.randint(20000, 100 * 1024)


def random_hash_key(rng):
    roll = rng.random()
    if roll < 0.25:
        return "0"
    if roll < 0.5:
        return str(MAX_HASH_KEY)
    return str(rng.randint(0, MAX_HASH_KEY))


def generate(args):
    rng = random.Random(args.seed)
    with open(args.out, "w", encoding="utf-8") as out:
        for case in range(args.cases):
            key_pool = [random_key(rng) for _ in range(rng.randint(1, 6))]
            ehk_pool = [random_hash_key(rng) for _ in range(rng.randint(1, 3))]
            with_ehk = rng.random() < 0.5
            agg = AggRecord()
            records = []
            budget = CASE_BUDGET
            for _ in range(rng.randint(1, 30)):
                pk = rng.choice(key_pool) if rng.random() < 0.6 else random_key(rng)
                ehk = rng.choice(ehk_pool) if with_ehk and rng.random() < 0.6 else None
                size = min(random_size(rng), budget)
                data = rng.randbytes(size)
                if not agg.add_user_record(pk, data, ehk):
                    break
                budget -= size + len(pk.encode("utf-8")) + 64
                records.append(
                    {
                        "partition_key": pk,
                        "explicit_hash_key": ehk,
                        "data": base64.b64encode(data).decode("ascii"),
                    }
                )
            _, _, aggregate = agg.get_contents()
            out.write(
                json.dumps(
                    {
                        "case": case,
                        "records": records,
                        "aggregate": base64.b64encode(aggregate).decode("ascii"),
                    }
                )
                + "\n"
            )


def read(args):
    checked = 0
    with open(args.cases, encoding="utf-8") as cases, open(args.ours, encoding="utf-8") as ours:
        for case_line, ours_line in zip(cases, ours):
            case = json.loads(case_line)
            encoded = json.loads(ours_line)
            assert case["case"] == encoded["case"], "case files out of step"
            record = {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "sequenceNumber": "1",
                    "approximateArrivalTimestamp": 0,
                    "partitionKey": "a",
                    "data": encoded["aggregate"],
                }
            }
            users = deaggregate_records([record])
            expected = case["records"]
            if len(users) != len(expected):
                sys.exit(f"case {case['case']}: Python read {len(users)} user records, expected {len(expected)}")
            for i, (got, want) in enumerate(zip(users, expected)):
                k = got["kinesis"]
                if k["partitionKey"] != want["partition_key"]:
                    sys.exit(f"case {case['case']} record {i}: partition key differs")
                if k["data"].decode("ascii") != want["data"]:
                    sys.exit(f"case {case['case']} record {i}: data differs")
                if k["subSequenceNumber"] != i:
                    sys.exit(f"case {case['case']} record {i}: sub-sequence number {k['subSequenceNumber']}")
                # aws-kinesis-agg 1.2.3 reports the table's first explicit hash key for a
                # record without an index (it does not check presence): compare only
                # where the record has one.
                if want["explicit_hash_key"] is not None and k["explicitHashKey"] != want["explicit_hash_key"]:
                    sys.exit(f"case {case['case']} record {i}: explicit hash key differs")
            checked += 1
    print(f"python de-aggregator read {checked} kpl-codec aggregates back")


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--seed", type=int, required=True)
    g.add_argument("--cases", type=int, required=True)
    g.add_argument("--out", required=True)
    r = sub.add_parser("read")
    r.add_argument("--cases", required=True)
    r.add_argument("--ours", required=True)
    args = parser.parse_args()
    generate(args) if args.command == "generate" else read(args)


if __name__ == "__main__":
    main()
