"""Session.events() against an in-process fake SessionService on loopback:
reconnects, de-duplication, gaps, giving up, and answering dynamic tools."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from keel.v1 import session_pb2, session_pb2_grpc
from keel_client import (
    Event,
    EventGap,
    Keel,
    NotFound,
    ReconnectInfo,
    StreamGaveUp,
    Unavailable,
    _resume,
    event_type,
    tool,
)

S = session_pb2
Ctx = Any  # grpc.aio.ServicerContext


def ev(offset: int, **msg: object) -> S.Event:
    return S.Event(offset=offset, **msg)  # type: ignore[arg-type]


def log_of(n: int) -> list[S.Event]:
    """A session log of n events ending with turn_complete, shutdown_complete."""
    events = [ev(i, agent_message=S.AgentMessage(message=f"m{i}")) for i in range(1, n - 1)]
    return [*events, ev(n - 1, turn_complete=S.TurnComplete()), ev(n, shutdown_complete=S.ShutdownComplete())]


class Fake(session_pb2_grpc.SessionServiceServicer):
    def __init__(self, stream: Callable[[S.StreamEventsRequest, Ctx], AsyncIterator[S.StreamEventsResponse]]) -> None:
        self.stream = stream
        self.requests: list[S.StreamEventsRequest] = []
        self.responds: list[S.RespondRequest] = []
        self.metadata: list[dict[str, str]] = []
        # What GetSession answers (NOT_FOUND while None), and how often it was asked.
        self.info: S.Session | None = None
        self.get_calls = 0
        self.got_session = asyncio.Event()
        # Respond fails with this code while set.
        self.respond_error: grpc.StatusCode | None = None

    async def StreamEvents(self, request, context):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        self.metadata.append({k: v for k, v in context.invocation_metadata()})
        async for r in self.stream(request, context):
            yield r

    async def Respond(self, request, context):  # type: ignore[no-untyped-def]
        if self.respond_error is not None:
            await context.abort(self.respond_error, "respond failed")
        self.responds.append(request)
        return S.RespondResponse()

    async def GetSession(self, request, context):  # type: ignore[no-untyped-def]
        self.get_calls += 1
        self.got_session.set()
        if self.info is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such session")
        return S.GetSessionResponse(session=self.info)


def pending(*request_ids: str) -> list[S.PendingRequest]:
    return [S.PendingRequest(request_id=r, kind=S.PENDING_REQUEST_KIND_DYNAMIC_TOOL) for r in request_ids]


async def serve(fake: Fake, port: int = 0) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    session_pb2_grpc.add_SessionServiceServicer_to_server(fake, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, port


async def collect(keel: Keel, **kw: object) -> list[Event | EventGap]:
    out: list[Event | EventGap] = []
    async for item in keel.session("s1").events(**kw):  # type: ignore[arg-type]
        assert not isinstance(item, S.LiveDelta)
        out.append(item)
    return out


def test_reconnects_after_errors_without_repeating_events() -> None:
    log = log_of(8)

    async def stream(req: S.StreamEventsRequest, ctx: Ctx) -> AsyncIterator[S.StreamEventsResponse]:
        attempt = len(fake.requests)
        if attempt == 1:  # two events, then the connection "breaks"
            for e in log[:2]:
                yield S.StreamEventsResponse(event=e)
            await ctx.abort(grpc.StatusCode.UNAVAILABLE, "Socket closed")
        elif attempt == 2:  # replays one it already sent, then a gap
            yield S.StreamEventsResponse(event=log[1])
            yield S.StreamEventsResponse(event=log[2])
            yield S.StreamEventsResponse(gap=S.EventGap(after_offset=3, first_retained_offset=5))
            yield S.StreamEventsResponse(event=log[4])
            await ctx.abort(grpc.StatusCode.INTERNAL, "Received RST_STREAM")
        else:
            for e in log[req.after_offset :]:
                yield S.StreamEventsResponse(event=e)

    fake = Fake(stream)

    async def run() -> None:
        server, port = await serve(fake)
        try:
            async with Keel(f"http://127.0.0.1:{port}", "tok") as keel:
                items = await collect(keel)
        finally:
            await server.stop(None)
        offsets = [i.offset for i in items if isinstance(i, Event)]
        assert offsets == [1, 2, 3, 5, 6, 7, 8]
        assert [type(i) for i in items].count(EventGap) == 1
        assert [r.after_offset for r in fake.requests] == [0, 2, 5]
        assert all(r.follow for r in fake.requests)
        assert fake.metadata[0]["authorization"] == "Bearer tok"
        assert event_type(items[-1]) == "shutdown_complete"

    asyncio.run(run())


def test_resumes_across_a_server_restart_on_the_same_port() -> None:
    log = log_of(6)
    async def run() -> None:
        sent_three = asyncio.Event()

        async def first(req: S.StreamEventsRequest, ctx: Ctx) -> AsyncIterator[S.StreamEventsResponse]:
            for e in log[:3]:
                yield S.StreamEventsResponse(event=e)
            sent_three.set()
            await asyncio.sleep(3600)

        async def second(req: S.StreamEventsRequest, ctx: Ctx) -> AsyncIterator[S.StreamEventsResponse]:
            for e in log[req.after_offset :]:
                yield S.StreamEventsResponse(event=e)

        fake1, fake2 = Fake(first), Fake(second)
        server, port = await serve(fake1)
        async with Keel(f"127.0.0.1:{port}", "tok") as keel:
            task = asyncio.create_task(collect(keel, give_up_after=20))
            await asyncio.wait_for(sent_three.wait(), 10)
            await server.stop(None)
            await asyncio.sleep(0.5)  # down for a while: reconnects fail
            server, _ = await serve(fake2, port)
            try:
                items = await asyncio.wait_for(task, 20)
            finally:
                await server.stop(None)
        assert [i.offset for i in items] == [1, 2, 3, 4, 5, 6]
        assert [r.after_offset for r in fake2.requests] == [3]

    asyncio.run(run())


def test_gives_up_after_its_budget_and_says_where_it_was() -> None:
    async def run() -> None:
        async def stream(req: S.StreamEventsRequest, ctx: Ctx) -> AsyncIterator[S.StreamEventsResponse]:
            yield S.StreamEventsResponse(event=ev(1, turn_started=S.TurnStarted()))
            await ctx.abort(grpc.StatusCode.UNAVAILABLE, "going away")

        server, port = await serve(Fake(stream))
        async with Keel(f"http://127.0.0.1:{port}", "tok") as keel:
            seen: list[int] = []
            with pytest.raises(StreamGaveUp) as info:
                async for item in keel.session("s1").events(give_up_after=0.5):
                    seen.append(item.offset)
                    await server.stop(None)
        assert seen == [1]
        assert info.value.last_offset == 1
        assert info.value.code == grpc.StatusCode.UNAVAILABLE

    asyncio.run(run())


def test_a_stream_that_was_up_gets_a_fresh_budget_when_it_breaks() -> None:
    """Break, reconnect to an idle stream, stay idle past the budget, break
    again: the second outage has a budget of its own, so it resumes."""
    log = log_of(4)

    async def stream(req: S.StreamEventsRequest, ctx: Ctx) -> AsyncIterator[S.StreamEventsResponse]:
        attempt = len(fake.requests)
        if attempt == 1:
            yield S.StreamEventsResponse(event=log[0])
            await ctx.abort(grpc.StatusCode.UNAVAILABLE, "Socket closed")
        elif attempt == 2:  # connected (headers sent), but the session is quiet
            await ctx.send_initial_metadata(())
            await asyncio.sleep(_resume.STREAM_UP + 0.5)
            await ctx.abort(grpc.StatusCode.UNAVAILABLE, "Socket closed")
        else:
            for e in log[req.after_offset :]:
                yield S.StreamEventsResponse(event=e)

    fake = Fake(stream)
    reconnects: list[ReconnectInfo] = []

    async def run() -> None:
        server, port = await serve(fake)
        try:
            async with Keel(f"http://127.0.0.1:{port}", "tok") as keel:
                events = keel.session("s1").events(give_up_after=1.0, on_reconnect=reconnects.append)
                offsets = [e.offset async for e in events]  # type: ignore[union-attr]
        finally:
            await server.stop(None)
        assert offsets == [1, 2, 3, 4]
        assert [r.after_offset for r in fake.requests] == [0, 1, 1]
        assert [(r.attempt, r.after_offset) for r in reconnects] == [(1, 1), (1, 1)]
        assert all(r.error.code == grpc.StatusCode.UNAVAILABLE for r in reconnects)

    asyncio.run(run())


def test_fresh_budgets_without_a_message_are_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that keeps failing a while after its headers, never sending
    anything, does not keep the iterator reconnecting forever."""
    monkeypatch.setattr(_resume, "STREAM_UP", 0.05)
    monkeypatch.setattr(_resume, "MAX_IDLE_RESETS", 3)

    async def stream(req: S.StreamEventsRequest, ctx: Ctx) -> AsyncIterator[S.StreamEventsResponse]:
        await ctx.send_initial_metadata(())
        await asyncio.sleep(0.1)
        await ctx.abort(grpc.StatusCode.UNAVAILABLE, "going away")
        yield S.StreamEventsResponse()  # pragma: no cover

    fake = Fake(stream)

    async def run() -> None:
        server, port = await serve(fake)
        try:
            async with Keel(f"http://127.0.0.1:{port}", "tok") as keel:
                with pytest.raises(StreamGaveUp):
                    await asyncio.wait_for(collect(keel, give_up_after=0.3), 10)
        finally:
            await server.stop(None)
        # Three fresh budgets, then one more outage of 0.3 s (streams of 0.1 s).
        assert 5 <= len(fake.requests) <= 8

    asyncio.run(run())


def test_a_stream_that_ends_cleanly_ends_when_the_session_is_over() -> None:
    """A following stream of a FAILED session ends without
    shutdown_complete: once GetSession shows every event delivered, the
    iterator ends instead of reconnecting."""

    async def stream(req: S.StreamEventsRequest, ctx: Ctx) -> AsyncIterator[S.StreamEventsResponse]:
        for e in log_of(4)[req.after_offset : 3]:
            yield S.StreamEventsResponse(event=e)

    fake = Fake(stream)
    fake.info = S.Session(session_id="s1", status=S.SESSION_STATUS_FAILED, last_event_offset=3)

    async def run() -> None:
        server, port = await serve(fake)
        try:
            async with Keel(f"http://127.0.0.1:{port}", "tok") as keel:
                items = await asyncio.wait_for(collect(keel, give_up_after=5), 10)
        finally:
            await server.stop(None)
        assert [i.offset for i in items] == [1, 2, 3]
        assert len(fake.requests) == 1

    asyncio.run(run())


def test_errors_reconnecting_cannot_fix_raise_at_once() -> None:
    async def run() -> None:
        async def stream(req: S.StreamEventsRequest, ctx: Ctx) -> AsyncIterator[S.StreamEventsResponse]:
            await ctx.abort(grpc.StatusCode.NOT_FOUND, "session s1 not found")
            yield S.StreamEventsResponse()  # pragma: no cover

        fake = Fake(stream)
        server, port = await serve(fake)
        try:
            async with Keel(f"http://127.0.0.1:{port}", "tok") as keel:
                with pytest.raises(NotFound, match="s1 not found"):
                    await collect(keel)
        finally:
            await server.stop(None)
        assert len(fake.requests) == 1

    asyncio.run(run())


def test_dynamic_tool_calls_are_answered_by_the_callable() -> None:
    calls: list[str] = []

    def lookup(q: str) -> str:
        calls.append(q)
        if q == "bad":
            raise LookupError("no account named bad")
        return "ACME Corp, 42 seats"

    request = S.DynamicToolCallRequest(call_id="d1", namespace="crm", tool="lookup", arguments='{"q":"acme"}')
    failing = S.DynamicToolCallRequest(call_id="d2", namespace="crm", tool="lookup", arguments='{"q":"bad"}')
    other = S.DynamicToolCallRequest(call_id="d3", namespace="x", tool="y", arguments="{}")
    log = [
        ev(1, dynamic_tool_call_request=request),
        ev(2, dynamic_tool_call_request=failing),
        ev(3, dynamic_tool_call_request=other),
        ev(4, shutdown_complete=S.ShutdownComplete()),
    ]

    async def stream(req: S.StreamEventsRequest, ctx: Ctx) -> AsyncIterator[S.StreamEventsResponse]:
        for e in log[req.after_offset :]:
            yield S.StreamEventsResponse(event=e)

    fake = Fake(stream)
    # The whole log is there when the stream starts, every request still pending.
    fake.info = S.Session(session_id="s1", last_event_offset=4, pending_requests=pending("d1", "d2", "d3"))

    async def run() -> None:
        server, port = await serve(fake)
        try:
            async with Keel(f"http://127.0.0.1:{port}", "tok") as keel:
                session = keel.session("s1", tools=[tool(lookup, namespace="crm")])
                kinds = [event_type(e) async for e in session.events()]
        finally:
            await server.stop(None)
        assert kinds == ["dynamic_tool_call_request"] * 3 + ["shutdown_complete"]
        assert calls == ["acme", "bad"]
        answers = {r.request_id: r.dynamic_tool for r in fake.responds}
        assert set(answers) == {"d1", "d2"}  # d3 is not one of ours
        assert [c.text for c in answers["d1"].content] == ["ACME Corp, 42 seats"]
        assert answers["d1"].success
        assert [c.text for c in answers["d2"].content] == ["no account named bad"]
        assert not answers["d2"].success
        assert all(r.session_id == "s1" for r in fake.responds)

    asyncio.run(run())


def test_replayed_tool_calls_run_only_while_pending_and_live_ones_run() -> None:
    """A new process replays the log from offset 0: d1 was answered long ago
    (not pending), d2 is still pending; d4 arrives live after the replay."""
    calls: list[str] = []

    def lookup(q: str) -> str:
        calls.append(q)
        return f"found {q}"

    def request(call_id: str) -> S.DynamicToolCallRequest:
        return S.DynamicToolCallRequest(
            call_id=call_id, namespace="crm", tool="lookup", arguments=f'{{"q":"{call_id}"}}'
        )

    replay = [
        ev(1, dynamic_tool_call_request=request("d1")),
        ev(2, dynamic_tool_call_request=request("d2")),
        ev(3, agent_message=S.AgentMessage(message="looking")),
    ]
    live = [
        ev(4, dynamic_tool_call_request=request("d4")),
        ev(5, shutdown_complete=S.ShutdownComplete()),
    ]

    async def stream(req: S.StreamEventsRequest, ctx: Ctx) -> AsyncIterator[S.StreamEventsResponse]:
        for e in replay[req.after_offset :]:
            yield S.StreamEventsResponse(event=e)
        # Live events come after the client has looked at the session.
        await fake.got_session.wait()
        assert fake.info is not None
        if fake.info.last_event_offset < 5:
            fake.info.last_event_offset = 5
            fake.info.pending_requests.extend(pending("d4"))
        for e in live[max(0, req.after_offset - 3) :]:
            yield S.StreamEventsResponse(event=e)

    fake = Fake(stream)
    # The fake's Respond leaves the pending list alone (as if the answer was lost).
    fake.info = S.Session(session_id="s1", last_event_offset=3, pending_requests=pending("d2"))

    async def run() -> None:
        server, port = await serve(fake)
        try:
            async with Keel(f"http://127.0.0.1:{port}", "tok") as keel:
                session = keel.session("s1", tools=[tool(lookup, namespace="crm")])
                offsets = [e.offset async for e in session.events()]
                assert offsets == [1, 2, 3, 4, 5]
                assert calls == ["d2", "d4"]  # d1 was answered before: not run again
                assert [r.request_id for r in fake.responds] == ["d2", "d4"]
                # Once for the newest offset, once each for d1 and d2 (replayed); none for d4.
                assert fake.get_calls == 3

                # Each request is answered at most once per Session object,
                # even though d2 and d4 are still listed as pending.
                await asyncio.wait_for(_drain(session.events()), 10)
                assert calls == ["d2", "d4"]
                assert len(fake.responds) == 2

                # answer_tools=False: nothing runs, GetSession is not asked.
                fresh = keel.session("s1", tools=[tool(lookup, namespace="crm")])
                before = fake.get_calls
                await asyncio.wait_for(_drain(fresh.events(answer_tools=False)), 10)
                assert calls == ["d2", "d4"]
                assert fake.get_calls == before
        finally:
            await server.stop(None)

    asyncio.run(run())


async def _drain(items: AsyncIterator[object]) -> None:
    async for _ in items:
        pass


def test_a_tool_call_whose_answer_failed_is_answered_by_the_next_iteration() -> None:
    """Respond keeps failing until events() gives up: the call is not
    counted as answered, so iterating again answers it, with the result the
    function gave the first time (it does not run again)."""
    calls: list[str] = []

    def lookup(q: str) -> str:
        calls.append(q)
        return f"found {q}"

    request = S.DynamicToolCallRequest(call_id="d1", namespace="crm", tool="lookup", arguments='{"q":"acme"}')
    log = [ev(1, dynamic_tool_call_request=request), ev(2, shutdown_complete=S.ShutdownComplete())]

    async def stream(req: S.StreamEventsRequest, ctx: Ctx) -> AsyncIterator[S.StreamEventsResponse]:
        for e in log[req.after_offset :]:
            yield S.StreamEventsResponse(event=e)

    fake = Fake(stream)
    # d1 arrives live (after the newest offset GetSession reports).
    fake.info = S.Session(session_id="s1", last_event_offset=0)
    fake.respond_error = grpc.StatusCode.UNAVAILABLE

    async def run() -> None:
        server, port = await serve(fake)
        try:
            async with Keel(f"http://127.0.0.1:{port}", "tok") as keel:
                session = keel.session("s1", tools=[tool(lookup, namespace="crm")])
                with pytest.raises(Unavailable):
                    await asyncio.wait_for(_drain(session.events(give_up_after=0.3)), 10)
                assert calls == ["acme"]
                assert fake.responds == []

                # Respond works again; the log is replayed, d1 still pending.
                fake.respond_error = None
                assert fake.info is not None
                fake.info.last_event_offset = 2
                fake.info.pending_requests.extend(pending("d1"))
                await asyncio.wait_for(_drain(session.events()), 10)
                assert calls == ["acme"]  # not run again
                assert [(r.request_id, r.dynamic_tool.content[0].text) for r in fake.responds] == [
                    ("d1", "found acme")
                ]

                # Answered now: another iteration leaves it alone.
                await asyncio.wait_for(_drain(session.events()), 10)
                assert len(fake.responds) == 1
                assert calls == ["acme"]
        finally:
            await server.stop(None)

    asyncio.run(run())
