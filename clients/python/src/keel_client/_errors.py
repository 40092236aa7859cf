"""Typed errors: every failed call raises a :class:`KeelError` subclass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from keel.v1 import common_pb2

ERROR_INFO_TYPE_URL = "type.googleapis.com/keel.v1.ErrorInfo"
_STATUS_DETAILS_KEY = "grpc-status-details-bin"


class KeelError(Exception):
    """A call to Keel failed.

    ``code`` is the gRPC status code, ``message`` the server's message, and
    ``error_class`` / ``retryable`` come from the ``keel.v1.ErrorInfo`` the
    server attaches to its errors (``None`` / ``False`` when it sent none,
    e.g. for transport failures and UNAUTHENTICATED).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        error_class: str | None = None,
        retryable: bool = False,
    ) -> None:
        self.code = code
        self.message = message
        self.error_class = error_class
        self.retryable = retryable
        name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        suffix = f" [{error_class}]" if error_class else ""
        super().__init__(f"{name}: {message}{suffix}")


class Unauthenticated(KeelError):
    """No valid ``authorization: Bearer <token>``."""


class PermissionDenied(KeelError):
    """The credential may not do this."""


class NotFound(KeelError):
    """Unknown session (or one of another tenant)."""


class AlreadyExists(KeelError):
    """The session id is taken."""


class InvalidArgument(KeelError):
    """A malformed request; the message names the field."""


class FailedPrecondition(KeelError):
    """The session is closed, or the request is no longer pending."""


class OutOfRange(KeelError):
    """An event offset that has not happened yet."""


class ResourceExhausted(KeelError):
    """A limit was hit (queue full, tenant limit); often retryable later."""


class Unavailable(KeelError):
    """Keel or Temporal cannot be reached right now; safe to retry."""


class DeadlineExceeded(KeelError):
    """The call took too long."""


class StreamGaveUp(KeelError):
    """:meth:`Session.events` could not reconnect within its time budget.

    ``last_offset`` is the last event offset delivered; resume later with
    ``session.events(after_offset=err.last_offset)``.
    """

    def __init__(self, last_offset: int, cause: KeelError | None, waited: float) -> None:
        self.last_offset = last_offset
        self.cause = cause
        self.waited = waited
        why = str(cause) if cause is not None else "the stream kept ending"
        super().__init__(
            cause.code if cause is not None else grpc.StatusCode.UNAVAILABLE,
            f"gave up reconnecting the event stream after {waited:.0f}s "
            f"(last offset {last_offset}): {why}",
            error_class=cause.error_class if cause is not None else None,
            retryable=True,
        )


_BY_CODE: dict[grpc.StatusCode, type[KeelError]] = {
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


@dataclass(frozen=True)
class _Info:
    error_class: str | None
    retryable: bool


def _fields(data: bytes) -> list[tuple[int, int, bytes | int]]:
    """Top-level protobuf fields of ``data`` as (number, wire type, value)."""
    out: list[tuple[int, int, bytes | int]] = []
    i = 0

    def varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            b = data[i]
            i += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            out.append((number, wire, varint()))
        elif wire == 2:
            n = varint()
            out.append((number, wire, data[i : i + n]))
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def error_info(status_details: bytes) -> common_pb2.ErrorInfo | None:
    """The ``keel.v1.ErrorInfo`` in a serialized ``google.rpc.Status``, if any."""
    try:
        for number, wire, value in _fields(status_details):
            if number != 3 or wire != 2 or not isinstance(value, bytes):
                continue  # google.rpc.Status.details = 3 (repeated Any)
            any_fields = {n: v for n, w, v in _fields(value) if w == 2}
            if any_fields.get(1) == ERROR_INFO_TYPE_URL.encode():
                info = common_pb2.ErrorInfo()
                info.ParseFromString(bytes(any_fields.get(2, b"")))
                return info
    except Exception:  # malformed details: ignore them
        return None
    return None


def _info_of(err: grpc.aio.AioRpcError) -> _Info:
    trailers: Any = err.trailing_metadata() or ()
    for key, value in trailers:
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            info = error_info(value)
            if info is not None:
                return _Info(getattr(info, "class"), info.retryable)
    return _Info(None, False)


def from_rpc_error(err: grpc.aio.AioRpcError) -> KeelError:
    """Translates a gRPC error into the matching :class:`KeelError`."""
    info = _info_of(err)
    cls = _BY_CODE.get(err.code(), KeelError)
    return cls(err.code(), err.details() or "", error_class=info.error_class, retryable=info.retryable)
