"""Async Python client for Keel's SessionService.

    async with Keel("http://127.0.0.1:7443", token) as keel:
        session = await keel.create_session(cwd="/work", approval_policy="never")
        await session.send_turn("Fix the tests")
        async for event in session.events():
            ...

See :class:`Keel`, :class:`Session`, :func:`tool` and the ``KeelError``
hierarchy. The generated messages and stubs are in ``keel.v1``.
"""

from keel.v1 import common_pb2, session_pb2

from ._client import Event, EventGap, Keel, LiveDelta, Session, event_type
from ._errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    KeelError,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    StreamGaveUp,
    Unauthenticated,
    Unavailable,
)
from ._resume import ReconnectInfo
from ._tools import Tool, tool

__all__ = [
    "AlreadyExists",
    "DeadlineExceeded",
    "Event",
    "EventGap",
    "FailedPrecondition",
    "InvalidArgument",
    "Keel",
    "KeelError",
    "LiveDelta",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ReconnectInfo",
    "ResourceExhausted",
    "Session",
    "StreamGaveUp",
    "Tool",
    "Unauthenticated",
    "Unavailable",
    "common_pb2",
    "event_type",
    "session_pb2",
    "tool",
]
