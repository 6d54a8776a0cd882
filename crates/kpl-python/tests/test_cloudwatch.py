"""CloudWatchSink: kpl-rs uploads the metrics from Rust, to a CloudWatch stand-in
(awsQuery PutMetricData, as aws-sdk-cloudwatch speaks it)."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import kpl_rs

ANSWER = (
    b'<PutMetricDataResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/">'
    b"<ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></PutMetricDataResponse>"
)


class StandIn(BaseHTTPRequestHandler):
    requests: list[dict[str, list[str]]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        StandIn.requests.append(urllib.parse.parse_qs(body.decode()))
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    def log_message(self, *args: object) -> None:
        pass


def test_metrics_are_uploaded_by_kpl_rs(config, kinesis):
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stream = kinesis.create_stream(1)
    sink = kpl_rs.CloudWatchSink(
        region="us-east-1",
        namespace="kpl-rs-test",
        endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
        aws_access_key_id="a",
        aws_secret_access_key="b",
    )
    config = dataclasses.replace(
        config, metrics_level=kpl_rs.MetricsLevel.DETAILED, metrics_sink=sink
    )

    async def main():
        async with kpl_rs.Producer(config) as producer:
            outcomes = [
                await producer.put_record(stream=stream, partition_key=f"k{i}", data=b"x")
                for i in range(50)
            ]
            for o in outcomes:
                assert (await o.wait()).success

    try:
        asyncio.run(main())
    finally:
        server.shutdown()
    # The upload at close.
    assert StandIn.requests
    assert {r["Namespace"][0] for r in StandIn.requests} == {"kpl-rs-test"}
    names = {
        v[0] for r in StandIn.requests for k, v in r.items() if k.endswith(".MetricName")
    }
    assert "UserRecordsPut" in names, names
