"""Fixtures: kinesis-mock's endpoint (from `cargo xtask python`, or
`cargo xtask kinesis-mock -- pytest ...`) and a tiny awsJson Kinesis client to
make streams and read them back as a KCL consumer does."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import urllib.request
import uuid
from collections import Counter
from typing import Any

import pytest

import kpl_rs

ENDPOINT_VAR = "KPL_KINESIS_MOCK_ENDPOINT"
#: Set by `cargo xtask python`: a missing peer fails the tests instead of skipping.
REQUIRE_VAR = "KPL_PYTHON_REQUIRE_PEER"


class Kinesis:
    """The few Kinesis calls the tests need, over awsJson 1.1 (the peer takes any
    signature)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def call(self, target: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.endpoint,
            data=json.dumps(body).encode(),
            headers={
                "Content-Type": "application/x-amz-json-1.1",
                "X-Amz-Target": f"Kinesis_20131202.{target}",
                "X-Amz-Date": "20260101T000000Z",
                "Authorization": "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/"
                "kinesis/aws4_request, SignedHeaders=host, Signature=00",
            },
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            text = answer.read()
        return json.loads(text) if text else {}

    def create_stream(self, shards: int) -> str:
        """A new stream of ``shards`` shards, active."""
        name = f"py-{uuid.uuid4().hex[:12]}"
        self.call("CreateStream", {"StreamName": name, "ShardCount": shards})
        for _ in range(600):
            d = self.call("DescribeStreamSummary", {"StreamName": name})
            if d["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
                return name
            import time

            time.sleep(0.05)
        raise AssertionError(f"{name} did not become active")

    def read_back(self, stream: str) -> list[bytes]:
        """Every user record's data, as a KCL consumer reads the stream: each shard
        from its start, each record de-aggregated, user records outside their
        shard's hash key range dropped."""
        out: list[bytes] = []
        for shard in self.call("ListShards", {"StreamName": stream})["Shards"]:
            start = int(shard["HashKeyRange"]["StartingHashKey"])
            end = int(shard["HashKeyRange"]["EndingHashKey"])
            it = self.call(
                "GetShardIterator",
                {
                    "StreamName": stream,
                    "ShardId": shard["ShardId"],
                    "ShardIteratorType": "TRIM_HORIZON",
                },
            ).get("ShardIterator")
            while it:
                page = self.call("GetRecords", {"ShardIterator": it, "Limit": 10000})
                for r in page["Records"]:
                    users = kpl_rs.deaggregate(
                        base64.b64decode(r["Data"]), r["PartitionKey"], r.get("ExplicitHashKey")
                    )
                    for u in users:
                        if start <= hash_key(u.partition_key, u.explicit_hash_key) <= end:
                            out.append(u.data)
                it = page.get("NextShardIterator") if page["Records"] else None
        return out

    def assert_exactly_once(self, stream: str, sent: list[bytes]) -> None:
        """Every record of ``sent`` is in ``stream`` once, and nothing else is."""
        stored = Counter(self.read_back(stream))
        assert stored == Counter(sent), (
            f"{len(sent)} sent, {sum(stored.values())} read back; "
            f"missing {len(Counter(sent) - stored)}, extra {len(stored - Counter(sent))}"
        )


def hash_key(partition_key: str, explicit_hash_key: str | None) -> int:
    """The hash key Kinesis routes a record by."""
    if explicit_hash_key is not None:
        return int(explicit_hash_key)
    return int.from_bytes(hashlib.md5(partition_key.encode()).digest(), "big")


@pytest.fixture(scope="session")
def endpoint() -> str:
    value = os.environ.get(ENDPOINT_VAR)
    if not value:
        if os.environ.get(REQUIRE_VAR):
            raise AssertionError(f"{ENDPOINT_VAR} is not set")
        pytest.skip(f"{ENDPOINT_VAR} is not set: run `cargo xtask python`")
    return value


@pytest.fixture(scope="session")
def kinesis(endpoint: str) -> Kinesis:
    return Kinesis(endpoint)


@pytest.fixture()
def config(endpoint: str) -> kpl_rs.Config:
    """A config for the peer: test credentials, short buffering."""
    return kpl_rs.Config(
        region="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        record_max_buffered_time_ms=20.0,
    )


@pytest.fixture()
def unreachable() -> Any:
    """Makes a config for an endpoint nothing listens on (port 9: every request
    fails to connect, so records fail as their time to live runs out), with test
    credentials and the given fields: ``unreachable(record_ttl_ms=300.0)``."""

    def make(**fields: Any) -> kpl_rs.Config:
        return kpl_rs.Config(
            region="us-east-1",
            endpoint_url="http://127.0.0.1:9",
            aws_access_key_id="a",
            aws_secret_access_key="b",
            **fields,
        )

    return make
