""":class:`CloudWatchSink`: the KPL's metrics uploaded to CloudWatch by kpl-rs.

Takes aiokpl's keyword arguments. Given as ``Config.metrics_sink``, it makes the
producer upload its metrics to CloudWatch from Rust (kpl-rs' CloudWatch upload,
as the KPL does: every ``metrics_upload_interval_ms`` and once more at exit, under
``namespace``, with the KPL's dimension names ``StreamName``, ``ShardId`` and
``ErrorCode``), never from the event loop. ``client_factory`` is accepted for
aiokpl's signature: a sink with one exports through that client instead (aiokpl's
way: ``await client.put_metric_data(Namespace=..., MetricData=[...])``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

from kpl_rs.sinks._types import MetricSnapshot

# PutMetricData's most data per call.
_CLOUDWATCH_BATCH_LIMIT = 1000

_DIMENSION_NAMES = {"stream": "StreamName", "shard": "ShardId", "error_code": "ErrorCode"}


class CloudWatchSink:
    """Uploads the producer's metrics to CloudWatch (see the module's docs)."""

    __slots__ = (
        "_client",
        "_client_ctx",
        "_client_factory",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "endpoint_url",
        "namespace",
        "region",
        "verify_ssl",
    )

    def __init__(
        self,
        *,
        region: str,
        namespace: str = "aiokpl",
        endpoint_url: str | None = None,
        verify_ssl: bool = True,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        client_factory: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
    ) -> None:
        self.region = region
        self.namespace = namespace
        self.endpoint_url = endpoint_url
        self.verify_ssl = verify_ssl
        self.aws_access_key_id = aws_access_key_id
        self.aws_secret_access_key = aws_secret_access_key
        self.aws_session_token = aws_session_token
        self._client_factory = client_factory
        self._client: Any = None
        self._client_ctx: AbstractAsyncContextManager[Any] | None = None

    async def __aenter__(self) -> CloudWatchSink:
        if self._client_factory is not None:
            ctx = self._client_factory()
            self._client_ctx = ctx
            self._client = await ctx.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        ctx, self._client_ctx, self._client = self._client_ctx, None, None
        if ctx is not None:
            await ctx.__aexit__(exc_type, exc, tb)

    async def export(self, snapshots: Sequence[MetricSnapshot]) -> None:
        """Through ``client_factory``'s client, if given; else nothing (kpl-rs
        uploads on its own schedule)."""
        if not snapshots or self._client is None:
            return
        data = [_datum(s) for s in snapshots]
        for i in range(0, len(data), _CLOUDWATCH_BATCH_LIMIT):
            await self._client.put_metric_data(
                Namespace=self.namespace, MetricData=data[i : i + _CLOUDWATCH_BATCH_LIMIT]
            )


def _datum(snapshot: MetricSnapshot) -> dict[str, Any]:
    return {
        "MetricName": snapshot.name,
        "Dimensions": [
            {"Name": _DIMENSION_NAMES.get(k, k), "Value": v} for k, v in snapshot.dimensions
        ],
        "StatisticValues": {
            "SampleCount": float(snapshot.count),
            "Sum": snapshot.sum,
            "Minimum": snapshot.min,
            "Maximum": snapshot.max,
        },
    }


__all__ = ["CloudWatchSink"]
