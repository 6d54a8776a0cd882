"""Terminal outcome types: a record's :class:`RecordResult` with every :class:`Attempt`.

Same names, fields and field order as aiokpl's; times are ``time.monotonic()``
seconds, as aiokpl's. kpl-rs adds what aiokpl cannot know: whether an attempt
that got no answer may have stored the record all the same
(:attr:`Attempt.may_have_been_stored`), and from it
:attr:`RecordResult.may_be_duplicated` and :attr:`RecordResult.may_have_been_stored`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any


@dataclass(slots=True, frozen=True)
class Attempt:
    """One try at storing a record: success or failure."""

    started_at: float
    ended_at: float
    success: bool
    shard_id: str | None = None
    sequence_number: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    #: kpl-rs: this failed attempt's request was sent and no answer came (a
    #: timeout, a broken connection), so it may have stored the record all the same.
    may_have_been_stored: bool = False


@dataclass(slots=True, frozen=True)
class RecordResult:
    """A record's terminal outcome, with every attempt in order."""

    success: bool
    shard_id: str | None
    sequence_number: str | None
    attempts: tuple[Attempt, ...]

    @property
    def may_be_duplicated(self) -> bool:
        """Stored, and an earlier attempt may have stored it too (it may be in the
        stream twice). Always ``False`` for a failed record."""
        return self.success and any(a.may_have_been_stored for a in self.attempts)

    @property
    def may_have_been_stored(self) -> bool:
        """Failed, but an attempt may have stored it all the same. Always ``False``
        for a stored record."""
        return not self.success and any(a.may_have_been_stored for a in self.attempts)


def _fast_constructor(cls: type) -> Callable[..., Any]:
    """A function making a ``cls`` of its fields' values in order, as ``cls(...)``
    does, without the frozen dataclass's ``__init__`` (which sets each field through
    ``object.__setattr__``): each slot is set through its descriptor."""
    names = [f.name for f in fields(cls)]
    env: dict[str, Any] = {"new": object.__new__, "cls": cls}
    env.update({f"set_{n}": getattr(cls, n).__set__ for n in names})
    args = ", ".join(names)
    body = "".join(f"    set_{n}(o, {n})\n" for n in names)
    exec(f"def make({args}):\n    o = new(cls)\n{body}    return o\n", env)  # noqa: S102
    return env["make"]  # type: ignore[no-any-return]


_attempt = _fast_constructor(Attempt)
_record_result = _fast_constructor(RecordResult)


def _from_native(
    success: bool,
    shard_id: str | None,
    sequence_number: str | None,
    attempts: tuple[tuple[Any, ...], ...],
) -> RecordResult:
    """A :class:`RecordResult` of the native side's outcome (called by its outcome
    thread, once for the records whose outcomes are the same, as those of one
    aggregate: they share it, as a frozen value can be shared)."""
    if len(attempts) == 1:
        made: tuple[Attempt, ...] = (_attempt(*attempts[0]),)
    else:
        made = tuple([_attempt(*a) for a in attempts])
    return _record_result(success, shard_id, sequence_number, made)  # type: ignore[no-any-return]


__all__ = ["Attempt", "RecordResult"]
