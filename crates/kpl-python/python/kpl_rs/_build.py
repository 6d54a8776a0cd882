"""The native producer of a :class:`~kpl_rs.config.Config` (shared by
:class:`~kpl_rs.producer.Producer` and :class:`~kpl_rs.sync.SyncProducer`)."""

from __future__ import annotations

import atexit
import logging
import os
import weakref
from collections.abc import Callable
from typing import Any

from kpl_rs import _native
from kpl_rs.config import Config, _settings
from kpl_rs.metrics import MetricsLevel
from kpl_rs.result import _from_native
from kpl_rs.sinks import CloudWatchSink


class Forks:
    """How many forks this process is from the one that imported ``kpl_rs``
    (counted by ``os.register_at_fork``). A producer keeps the count it was made
    with and compares it on each put: no system call, as ``os.getpid()`` would be.
    A fork Python does not see (a C library's) is caught by the native side, which
    compares process ids on each call into it."""

    count = 0


def _forked() -> None:
    Forks.count += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)

#: The native producers of this process, while they live.
_natives: weakref.WeakSet[Any] = weakref.WeakSet()


@atexit.register
def _close_left_open() -> None:
    """Closes, when the program ends, every producer it left open, before the
    interpreter finalizes: a producer's threads call into Python, and one that came
    back into a finalizing interpreter would be parked there for good, the outcomes
    it carried lost. The records not sent yet fail as shut down, those in a request
    keep their true outcome, and a warning says how many had none."""
    for native in list(_natives):
        if native.closed:
            continue
        try:
            # Both raise in a forked child (where a lock of the parent's may be held
            # for good): its threads are not in this process.
            left = native.outstanding_records
            native.close(0.0)
        except RuntimeError:
            continue
        if left:
            logging.getLogger("kpl_rs").warning(
                "a kpl_rs producer was left open with %d record%s without an outcome "
                "when the program ended: closed, those not sent yet failed as shut "
                "down (leave the producer's `with` block to flush it)",
                left,
                "" if left == 1 else "s",
            )


def native_producer(config: Config, deliver: Callable[..., None]) -> Any:
    """A started native producer; ``deliver(batch, failed=False)`` gets outcomes from
    its thread, each ``(id, RecordResult)``, or, with ``failed``, ``(id, exception)``
    for records whose result could not be made."""
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
    native = _native.NativeProducer(
        _settings(config),
        deliver,
        _from_native,
        properties=config.kpl_properties,
        credentials=None if key_id is None or secret is None else (key_id, secret),
        cloudwatch=cloudwatch,
    )
    _natives.add(native)
    return native


def record_size(partition_key: str, data: bytes) -> int:
    """What a record counts against the outstanding caps."""
    return len(data) + len(partition_key.encode())
