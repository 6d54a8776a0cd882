"""The native producer of a :class:`~kpl_rs.config.Config` (shared by
:class:`~kpl_rs.producer.Producer` and :class:`~kpl_rs.sync.SyncProducer`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from kpl_rs import _native
from kpl_rs.config import Config, _settings
from kpl_rs.metrics import MetricsLevel
from kpl_rs.sinks import CloudWatchSink


def native_producer(config: Config, deliver: Callable[[list[Any]], None]) -> Any:
    """A started native producer; ``deliver(batch)`` gets outcomes from its thread."""
    _native.set_log_level(logging.getLogger("kpl_rs").getEffectiveLevel())
    if config.aws_session_token is not None:
        logging.getLogger("kpl_rs").warning(
            "aws_session_token is not applied: give temporary credentials through the "
            "AWS chain (AWS_SESSION_TOKEN, a profile or a role)"
        )
    key_id, secret = config.aws_access_key_id, config.aws_secret_access_key
    if (key_id is None) != (secret is None):
        raise ValueError("aws_access_key_id and aws_secret_access_key go together")
    sink = config.metrics_sink
    cloudwatch = None
    if (
        isinstance(sink, CloudWatchSink)
        and sink._client_factory is None
        and config.metrics_level is not MetricsLevel.NONE
    ):
        cloudwatch = {
            "region": sink.region,
            "endpoint_url": sink.endpoint_url,
            "verify_ssl": sink.verify_ssl,
            "access_key_id": sink.aws_access_key_id,
            "secret_access_key": sink.aws_secret_access_key,
        }
    return _native.NativeProducer(
        _settings(config),
        deliver,
        time.monotonic(),
        properties=config.kpl_properties,
        credentials=None if key_id is None or secret is None else (key_id, secret),
        cloudwatch=cloudwatch,
    )


def record_size(partition_key: str, data: bytes) -> int:
    """What a record counts against the outstanding caps."""
    return len(data) + len(partition_key.encode())
