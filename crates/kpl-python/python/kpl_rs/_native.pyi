"""Type stubs of the native module (kpl-rs' Rust side); see the Rust docs of each."""

from collections.abc import Callable, Iterable, Mapping
from typing import Any, final

__version__: str
__all__ = [
    "DeaggregatedRecord",
    "NativeProducer",
    "__version__",
    "aggregate",
    "deaggregate",
    "deaggregate_event_record",
    "deaggregate_event_records",
    "metric_names",
    "parse_kpl_properties",
    "set_log_level",
    "settings",
]

@final
class NativeProducer:
    def __new__(
        cls,
        settings: dict[str, str],
        deliver: Callable[..., object],
        make_result: Callable[[bool, str | None, str | None, tuple[tuple[Any, ...], ...]], Any],
        properties: str | None = None,
        credentials: tuple[str, str] | None = None,
        cloudwatch: dict[str, Any] | None = None,
    ) -> NativeProducer: ...
    def put(
        self,
        stream: str,
        partition_key: str,
        data: bytes,
        explicit_hash_key: str | None = None,
    ) -> int | None: ...
    def check_record(
        self, partition_key: str, data_len: int, explicit_hash_key: str | None = None
    ) -> None: ...
    def put_many(
        self,
        stream: str,
        records: list[tuple[str, bytes]] | list[tuple[str, bytes, str | None]] | list[Any],
    ) -> list[int]: ...
    def wait_for_room(self, stream: str, size: int, callback: Callable[[], object]) -> None: ...
    def flush(self, callback: Callable[[], object]) -> None: ...
    def close(self, timeout: float) -> int: ...
    @property
    def outstanding_records(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def metrics(
        self, name: str | None = None, window: float = 60.0
    ) -> list[tuple[str, list[tuple[str, str]], int, float, float, float]]: ...

def settings() -> list[tuple[str, str, str, str]]: ...
def metric_names() -> list[str]: ...
def parse_kpl_properties(text: str) -> tuple[dict[str, Any], list[tuple[str, str]]]: ...
def set_log_level(level: int) -> None: ...
@final
class DeaggregatedRecord:
    @property
    def partition_key(self) -> str: ...
    @property
    def explicit_hash_key(self) -> str | None: ...
    @property
    def data(self) -> bytes: ...
    @property
    def sub_sequence_number(self) -> int | None: ...
    def __eq__(self, value: object, /) -> bool: ...

def deaggregate(
    data: bytes, partition_key: str = "", explicit_hash_key: str | None = None
) -> list[DeaggregatedRecord]: ...
def deaggregate_event_record(record: Mapping[str, Any]) -> list[DeaggregatedRecord]: ...
def deaggregate_event_records(records: Iterable[Mapping[str, Any]]) -> list[DeaggregatedRecord]: ...
def aggregate(records: list[tuple[str, bytes, str | None]]) -> tuple[str, str | None, bytes]: ...
