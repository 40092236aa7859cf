"""Offline tests of the pure parts: resume bookkeeping, tools, errors."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from keel.v1 import common_pb2
from keel_client import FailedPrecondition, KeelError, NotFound, Unavailable, tool
from keel_client._client import _target
from keel_client._errors import ERROR_INFO_TYPE_URL, error_info, from_rpc_error
from keel_client._resume import Backoff, Cursor, should_reconnect


def test_cursor_drops_replayed_events_and_follows_gaps() -> None:
    c = Cursor(3)
    assert not c.accept(3)
    assert c.accept(4)
    assert not c.accept(2)
    c.gap(10)
    assert c.last_offset == 9
    assert c.accept(10)


def test_backoff_grows_caps_and_gives_up() -> None:
    b = Backoff(give_up_after=5.0, initial=0.1, maximum=1.0)
    delays = [b.next_delay(now=0.0) for _ in range(8)]
    assert all(d is not None and 0.05 <= d <= 1.0 for d in delays)
    assert max(d for d in delays if d is not None) > 0.5
    assert b.next_delay(now=4.9) is not None
    assert b.next_delay(now=5.0) is None
    b.progress()
    assert b.next_delay(now=100.0) is not None  # the budget starts again


def test_backoff_never_sleeps_past_the_budget() -> None:
    b = Backoff(give_up_after=1.0, initial=10.0, maximum=10.0)
    d = b.next_delay(now=0.0)
    assert d is not None and d <= 1.0


def test_which_failures_reconnect() -> None:
    S = grpc.StatusCode
    assert should_reconnect(KeelError(S.UNAVAILABLE, "Socket closed"))
    assert should_reconnect(KeelError(S.INTERNAL, "RST_STREAM"))
    assert should_reconnect(KeelError(S.DEADLINE_EXCEEDED, "x", error_class="temporal_timeout", retryable=True))
    assert not should_reconnect(KeelError(S.INTERNAL, "x", error_class="corrupt_event"))
    assert not should_reconnect(KeelError(S.NOT_FOUND, "no session"))
    assert not should_reconnect(KeelError(S.UNAUTHENTICATED, "who"))


def test_addresses() -> None:
    assert _target("http://127.0.0.1:7443", None) == ("127.0.0.1:7443", False)
    assert _target("https://keel.example.com", None) == ("keel.example.com:443", True)
    assert _target("https://[::1]:9", None) == ("[::1]:9", True)
    assert _target("localhost:50051", None) == ("localhost:50051", False)
    assert _target("localhost:50051", True) == ("localhost:50051", True)
    with pytest.raises(ValueError):
        _target("ftp://x", None)


def _status_details(info: common_pb2.ErrorInfo) -> bytes:
    """A google.rpc.Status{code=9, message="m", details=[Any(info)]}, by hand."""

    def ld(number: int, payload: bytes) -> bytes:
        assert len(payload) < 128
        return bytes([number << 3 | 2, len(payload)]) + payload

    any_ = ld(1, ERROR_INFO_TYPE_URL.encode()) + ld(2, info.SerializeToString())
    return bytes([1 << 3, 9]) + ld(2, b"m") + ld(3, any_)


def _rpc_error(code: grpc.StatusCode, details: str, trailers: tuple[tuple[str, str | bytes], ...] = ()) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), details, None)


def test_errors_carry_code_message_and_error_info() -> None:
    info = common_pb2.ErrorInfo(retryable=False)
    setattr(info, "class", "session_closed")
    assert getattr(error_info(_status_details(info)), "class") == "session_closed"
    assert error_info(b"\xff\xff") is None

    err = from_rpc_error(
        _rpc_error(
            grpc.StatusCode.FAILED_PRECONDITION,
            "session is closed",
            (("grpc-status-details-bin", _status_details(info)),),
        )
    )
    assert isinstance(err, FailedPrecondition)
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.message == "session is closed"
    assert err.error_class == "session_closed" and not err.retryable

    plain = from_rpc_error(_rpc_error(grpc.StatusCode.UNAVAILABLE, "Socket closed"))
    assert isinstance(plain, Unavailable) and plain.error_class is None
    assert isinstance(from_rpc_error(_rpc_error(grpc.StatusCode.NOT_FOUND, "x")), NotFound)
    assert type(from_rpc_error(_rpc_error(grpc.StatusCode.ABORTED, "x"))) is KeelError


def test_tool_schema_from_signature() -> None:
    def search(query: str, limit: int = 10, exact: bool | None = None) -> str:
        """Search things."""
        return ""

    t = tool(search, namespace="crm")
    assert (t.namespace, t.name, t.description) == ("crm", "search", "Search things.")
    assert t.schema == {
        "type": "object",
        "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}, "exact": {"type": "boolean"}},
        "required": ["query"],
    }
    proto = t.to_proto()
    assert json.loads(proto.input_schema_json) == t.schema
    with pytest.raises(ValueError):
        tool(search, name="bad name")


def test_tool_calls() -> None:
    @tool(namespace="crm", name="lookup")
    def lookup(q: str) -> str:
        if q == "boom":
            raise RuntimeError("no such account")
        return f"found {q}"

    @tool
    async def count(items: list) -> dict:  # type: ignore[type-arg]
        return {"n": len(items)}

    async def run() -> None:
        assert await lookup.call('{"q": "acme"}') == ("found acme", True)
        assert await lookup.call('{"q": "boom"}') == ("no such account", False)
        assert (await lookup.call("{nope"))[1] is False
        assert (await lookup.call("[1]"))[1] is False
        assert (await lookup.call('{"x": 1}'))[1] is False  # unexpected keyword
        assert await count.call('{"items": [1, 2]}') == ('{"n": 2}', True)

    asyncio.run(run())
