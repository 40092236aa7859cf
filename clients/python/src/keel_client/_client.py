"""The client: :class:`Keel` (a connection) and :class:`Session`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias, TypeVar
from urllib.parse import urlsplit

import grpc

from keel.v1 import common_pb2, session_pb2, session_pb2_grpc

from ._errors import FailedPrecondition, KeelError, StreamGaveUp, Unavailable, from_rpc_error
from ._resume import Backoff, Cursor, ReconnectInfo, should_reconnect
from ._tools import Tool, ToolFn, tool

log = logging.getLogger("keel_client")

Event: TypeAlias = session_pb2.Event
EventGap: TypeAlias = session_pb2.EventGap
LiveDelta: TypeAlias = session_pb2.LiveDelta

T = TypeVar("T")

_APPROVAL = {
    "untrusted": common_pb2.APPROVAL_POLICY_UNTRUSTED,
    "on-failure": common_pb2.APPROVAL_POLICY_ON_FAILURE,
    "on-request": common_pb2.APPROVAL_POLICY_ON_REQUEST,
    "never": common_pb2.APPROVAL_POLICY_NEVER,
}
_SANDBOX = {
    "read-only": common_pb2.SANDBOX_MODE_READ_ONLY,
    "workspace-write": common_pb2.SANDBOX_MODE_WORKSPACE_WRITE,
    "danger-full-access": common_pb2.SANDBOX_MODE_DANGER_FULL_ACCESS,
}

# Reconnect quickly after the server comes back (gRPC's default backoff
# grows to two minutes); notice dead connections on quiet streams.
_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


def event_type(event: session_pb2.Event) -> str:
    """The kind of an event: its ``msg`` oneof field name, e.g.
    ``"exec_approval_request"`` or ``"turn_complete"``."""
    return event.WhichOneof("msg") or ""


def _approval(value: str | int) -> int:
    if isinstance(value, int):
        return value
    key = value.lower().replace("_", "-")
    if key not in _APPROVAL:
        raise ValueError(f"approval policy {value!r}: one of {', '.join(_APPROVAL)}")
    return _APPROVAL[key]


def _sandbox(value: str | common_pb2.SandboxPolicy) -> common_pb2.SandboxPolicy:
    if isinstance(value, common_pb2.SandboxPolicy):
        return value
    key = value.lower().replace("_", "-")
    if key not in _SANDBOX:
        raise ValueError(f"sandbox {value!r}: one of {', '.join(_SANDBOX)}")
    return common_pb2.SandboxPolicy(mode=_SANDBOX[key])


def _target(addr: str, tls: bool | None) -> tuple[str, bool]:
    """``http://h:p`` → (h:p, plain); ``https://h[:p]`` → (h:p, TLS);
    ``h:p`` → plain unless ``tls``."""
    if "://" in addr:
        url = urlsplit(addr)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"address {addr!r}: expected http://host:port, https://host[:port] or host:port")
        secure = url.scheme == "https" if tls is None else tls
        host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
        return f"{host}:{url.port or (443 if secure else 80)}", secure
    return addr, bool(tls)


class Keel:
    """A connection to Keel's SessionService.

    ``addr`` is ``http://host:port`` (plaintext), ``https://host[:port]``
    (TLS) or ``host:port`` (plaintext unless ``tls=True``). ``token`` is sent
    as ``authorization: Bearer <token>`` on every call (``None`` for a server
    run with ``--insecure-no-auth``). Unary calls time out after ``timeout``
    seconds. Use as ``async with Keel(...) as keel:``, or call
    :meth:`close`.

    ``stub`` is the generated ``SessionServiceStub`` and ``metadata`` the
    auth metadata, for RPCs this class does not wrap.
    """

    def __init__(
        self,
        addr: str,
        token: str | None = None,
        *,
        tls: bool | None = None,
        root_certificates: bytes | None = None,
        timeout: float | None = 30.0,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        target, secure = _target(addr, tls)
        options = [*_CHANNEL_OPTIONS, *channel_options]
        if secure:
            creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.aio.secure_channel(target, creds, options=options)
        else:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        self.stub: Any = session_pb2_grpc.SessionServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self.timeout = timeout

    async def __aenter__(self) -> Keel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the connection; streams still open end with an error."""
        await self._channel.close(None)

    async def call(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        """Makes a unary call with this connection's metadata and timeout,
        translating errors into :class:`KeelError`."""
        try:
            return await method(request, metadata=self.metadata, timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e) from e

    async def create_session(
        self,
        *,
        cwd: str = "",
        approval_policy: str | int | None = None,
        sandbox: str | common_pb2.SandboxPolicy | None = None,
        model: str = "",
        developer_instructions: str = "",
        tools: Iterable[Tool | ToolFn] = (),
        dynamic_tools: Iterable[session_pb2.DynamicTool] = (),
        session_id: str = "",
        name: str = "",
        context: session_pb2.TurnContext | None = None,
        **extra: Any,
    ) -> Session:
        """Creates a session and returns it.

        ``approval_policy``: ``"untrusted"``, ``"on-failure"``,
        ``"on-request"`` (server default), ``"never"``, or a
        ``keel.v1.ApprovalPolicy`` value. ``sandbox``: ``"read-only"``,
        ``"workspace-write"`` (default), ``"danger-full-access"`` or a
        ``SandboxPolicy``. ``tools`` are Python callables (see
        :func:`keel_client.tool`) that :meth:`Session.events` answers for
        you; ``dynamic_tools`` are raw tool declarations you answer yourself
        with :meth:`Session.respond_tool`. Other ``CreateSessionRequest``
        fields may be passed by name (``extra``).
        """
        wrapped = [t if isinstance(t, Tool) else tool(t) for t in tools]
        ctx = session_pb2.TurnContext()
        if context is not None:
            ctx.CopyFrom(context)
        if approval_policy is not None:
            ctx.approval_policy = _approval(approval_policy)  # type: ignore[assignment]
        if sandbox is not None:
            ctx.sandbox.CopyFrom(_sandbox(sandbox))
        request = session_pb2.CreateSessionRequest(
            session_id=session_id,
            model=model,
            cwd=cwd,
            developer_instructions=developer_instructions,
            context=ctx,
            dynamic_tools=[*(t.to_proto() for t in wrapped), *dynamic_tools],
            name=name,
            **extra,
        )
        response: session_pb2.CreateSessionResponse = await self.call(self.stub.CreateSession, request)
        return Session(self, response.session.session_id, tools=wrapped, info=response.session)

    def session(self, session_id: str, *, tools: Iterable[Tool | ToolFn] = ()) -> Session:
        """A handle on an existing session (no call is made). Pass the
        ``tools`` it was created with for :meth:`Session.events` to answer
        them."""
        return Session(self, session_id, tools=[t if isinstance(t, Tool) else tool(t) for t in tools])

    async def get_session(self, session_id: str) -> session_pb2.Session:
        """The session's current state (``keel.v1.Session``)."""
        response: session_pb2.GetSessionResponse = await self.call(
            self.stub.GetSession, session_pb2.GetSessionRequest(session_id=session_id)
        )
        return response.session

    async def list_sessions(
        self, *, filter: session_pb2.SessionFilter | None = None, page_size: int = 0
    ) -> AsyncIterator[session_pb2.Session]:
        """Every session visible to this credential, newest first, page by page."""
        token = ""
        while True:
            request = session_pb2.ListSessionsRequest(page_size=page_size, page_token=token, filter=filter)
            response: session_pb2.ListSessionsResponse = await self.call(self.stub.ListSessions, request)
            for s in response.sessions:
                yield s
            token = response.next_page_token
            if not token:
                return


class Session:
    """One durable conversation with the agent. Made by
    :meth:`Keel.create_session` or :meth:`Keel.session`.

    ``info`` is the ``keel.v1.Session`` CreateSession returned (``None`` for
    :meth:`Keel.session`); :meth:`get` fetches the current state.
    """

    def __init__(
        self,
        keel: Keel,
        session_id: str,
        *,
        tools: Sequence[Tool] = (),
        info: session_pb2.Session | None = None,
    ) -> None:
        self.keel = keel
        self.id = session_id
        self.info = info
        self.tools: dict[tuple[str, str], Tool] = {t.key: t for t in tools}
        # Dynamic tool calls answered (Respond succeeded, or the server said
        # they are no longer pending): never run or answered again.
        self._answered: set[str] = set()
        # The tool's result per call not yet answered, so that answering it
        # again (after Respond gave up) does not run the function again.
        self._results: dict[str, asyncio.Task[tuple[str, bool]]] = {}

    def __repr__(self) -> str:
        return f"Session({self.id!r})"

    async def send_turn(self, text: str, *, turn_id: str = "", **extra: Any) -> str:
        """Queues a user turn and returns its turn id (the turn runs after
        the ones before it; watch it with :meth:`events`). A client-chosen
        ``turn_id`` makes retries idempotent."""
        request = session_pb2.SendUserTurnRequest(session_id=self.id, text=text, turn_id=turn_id, **extra)
        response: session_pb2.SendUserTurnResponse = await self.keel.call(self.keel.stub.SendUserTurn, request)
        return response.turn_id

    async def get(self) -> session_pb2.Session:
        """The session's current state."""
        return await self.keel.get_session(self.id)

    async def interrupt(self) -> None:
        """Aborts the running turn, if any."""
        await self.keel.call(self.keel.stub.Interrupt, session_pb2.InterruptRequest(session_id=self.id))

    async def close(self) -> None:
        """Ends the session (its last event is ``shutdown_complete``)."""
        await self.keel.call(self.keel.stub.CloseSession, session_pb2.CloseSessionRequest(session_id=self.id))

    async def respond(self, request: session_pb2.RespondRequest) -> None:
        """Sends an answer as is (``session_id`` is filled in)."""
        request.session_id = self.id
        await self.keel.call(self.keel.stub.Respond, request)

    async def approve(self, request_id: str, *, for_session: bool = False) -> None:
        """Approves an ``exec_approval_request`` / ``apply_patch_approval_request``
        (``request_id`` is its ``call_id``); ``for_session`` also approves the
        same command for the rest of the session."""
        kind = (
            session_pb2.REVIEW_DECISION_KIND_APPROVED_FOR_SESSION
            if for_session
            else session_pb2.REVIEW_DECISION_KIND_APPROVED
        )
        await self.respond(session_pb2.RespondRequest(request_id=request_id, decision=session_pb2.ReviewDecision(kind=kind)))

    async def deny(self, request_id: str, *, abort: bool = False) -> None:
        """Denies an approval request: the model is told and goes on, or,
        with ``abort``, the turn ends."""
        kind = session_pb2.REVIEW_DECISION_KIND_ABORT if abort else session_pb2.REVIEW_DECISION_KIND_DENIED
        await self.respond(session_pb2.RespondRequest(request_id=request_id, decision=session_pb2.ReviewDecision(kind=kind)))

    async def answer(self, request_id: str, answers: Mapping[str, str | Sequence[str]]) -> None:
        """Answers a ``request_user_input``: question id → answer(s)."""
        proto = session_pb2.UserInputAnswer()
        for question, value in answers.items():
            proto.answers[question].answers.extend([value] if isinstance(value, str) else list(value))
        await self.respond(session_pb2.RespondRequest(request_id=request_id, user_input=proto))

    async def respond_tool(self, request_id: str, output: str, *, success: bool = True) -> None:
        """Answers a ``dynamic_tool_call_request`` with text output."""
        result = session_pb2.DynamicToolResult(
            content=[session_pb2.DynamicToolContent(text=output)], success=success
        )
        await self.respond(session_pb2.RespondRequest(request_id=request_id, dynamic_tool=result))

    async def _retrying(self, fn: Callable[[], Awaitable[T]], give_up_after: float) -> T:
        """``fn()``, again with backoff after errors a retry may fix
        (UNAVAILABLE, ...), for up to ``give_up_after`` seconds; then the
        last error is raised."""
        backoff = Backoff(give_up_after)
        loop = asyncio.get_running_loop()
        while True:
            try:
                return await fn()
            except KeelError as e:
                if not should_reconnect(e):
                    raise
                delay = backoff.next_delay(loop.time())
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    async def _run_tool(
        self, request: session_pb2.DynamicToolCallRequest, maybe_answered: bool, give_up_after: float
    ) -> None:
        """Answers a dynamic tool call with its Python tool. ``maybe_answered``:
        the request was already in the log when the stream started (a
        replay), so it runs only if GetSession still lists it as pending.

        The call counts as answered once Respond succeeded or the server
        said it is not pending any more; until then another iteration
        answers it again, with the result the function gave the first time
        (the function runs at most once per call and Session object)."""
        call_id = request.call_id
        found = self.tools.get((request.namespace, request.tool))
        if found is None or call_id in self._answered:
            return
        if maybe_answered and call_id not in self._results:
            info = await self._retrying(self.get, give_up_after)
            if not any(p.request_id == call_id for p in info.pending_requests):
                log.info("dynamic tool call %s not pending any more; not run again", call_id)
                self._answered.add(call_id)
                return
        loop = asyncio.get_running_loop()
        task = self._results.get(call_id)
        if task is None or task.cancelled() or (not task.done() and task.get_loop() is not loop):
            task = loop.create_task(found.call(request.arguments))
            self._results[call_id] = task
        # Shielded: a cancelled iteration leaves the result for the next one.
        output, success = await asyncio.shield(task)
        if call_id in self._answered:  # answered meanwhile by another iteration
            return

        async def respond() -> None:
            try:
                await self.respond_tool(call_id, output, success=success)
            except FailedPrecondition as e:
                # Already answered (e.g. by an earlier run), or its turn ended.
                log.info("dynamic tool call %s not answered: %s", call_id, e)

        await self._retrying(respond, give_up_after)
        self._answered.add(call_id)
        self._results.pop(call_id, None)

    async def events(
        self,
        after_offset: int = 0,
        *,
        follow: bool = True,
        live_deltas: bool = False,
        answer_tools: bool = True,
        give_up_after: float = 60.0,
        on_reconnect: Callable[[ReconnectInfo], object] | None = None,
    ) -> AsyncIterator[Event | EventGap | LiveDelta]:
        """The session's events after ``after_offset``, in order: each
        ``keel.v1.Event`` once, an ``EventGap`` where events are no longer
        retained, and (with ``live_deltas``) ``LiveDelta`` text as the model
        writes it.

        With ``follow`` the iterator waits for new events and ends after
        ``shutdown_complete`` (or, when the stream ends cleanly, once
        GetSession shows the session CLOSED or FAILED with every event
        delivered); without, it ends after the retained ones.
        When the stream breaks (session-api restarts, the network drops), it
        reconnects with backoff from the last delivered offset, so no event
        is missed or repeated; ``on_reconnect`` (if given) is called with a
        :class:`ReconnectInfo` before each attempt. After ``give_up_after``
        seconds without getting through it raises :class:`StreamGaveUp`; the
        budget starts afresh when a message arrives, or when a stream that
        got its headers had stayed up ``STREAM_UP`` (2) seconds (at most
        ``MAX_IDLE_RESETS`` (10) times in a row without a message). Errors
        that reconnecting cannot fix (NOT_FOUND, UNAUTHENTICATED, ...) raise
        at once.

        With ``answer_tools``, a ``dynamic_tool_call_request`` for one of
        the session's Python ``tools`` is answered (the callable runs, its
        result is sent with Respond) before the event is yielded. At the
        first event the stream calls GetSession once for the session's
        newest offset: a request at or before it (a replay, e.g. from offset
        0 in a new process) runs only if GetSession still lists it as
        pending; later ones always run. A call counts as answered once
        Respond succeeded (or the server said it is no longer pending); the
        function runs at most once per call and Session object.
        """
        answering = answer_tools and bool(self.tools)
        # The session's newest offset when the first event arrived: tool
        # requests up to it may have been answered long ago.
        horizon: int | None = None
        cursor = Cursor(after_offset)
        backoff = Backoff(give_up_after)
        loop = asyncio.get_running_loop()
        while True:
            failure: KeelError | None = None
            request = session_pb2.StreamEventsRequest(
                session_id=self.id, after_offset=cursor.last_offset, follow=follow, live_deltas=live_deltas
            )
            call = self.keel.stub.StreamEvents(request, metadata=self.keel.metadata)
            # When the stream got its headers (None: not yet, or it failed
            # without any, e.g. the server is down).
            up_since: float | None = None
            try:
                await call.initial_metadata()
                if not call.done():
                    up_since = loop.time()
                async for response in call:
                    backoff.progress()
                    kind = response.WhichOneof("kind")
                    if kind == "event":
                        event = response.event
                        if not cursor.accept(event.offset):
                            continue
                        if answering:
                            if horizon is None:
                                info = await self._retrying(self.get, give_up_after)
                                horizon = info.last_event_offset
                            if event.HasField("dynamic_tool_call_request"):
                                await self._run_tool(
                                    event.dynamic_tool_call_request, event.offset <= horizon, give_up_after
                                )
                        yield event
                        if event.HasField("shutdown_complete"):
                            return
                    elif kind == "gap":
                        cursor.gap(response.gap.first_retained_offset)
                        yield response.gap
                    elif kind == "delta":
                        yield response.delta
            except grpc.aio.AioRpcError as e:
                failure = from_rpc_error(e)
                if not should_reconnect(failure):
                    raise failure from e
                log.info("event stream of %s broke after offset %d: %s", self.id, cursor.last_offset, failure)
            finally:
                call.cancel()
            if failure is None:
                if not follow or await self._ended(cursor.last_offset):
                    return
                failure = Unavailable(grpc.StatusCode.UNAVAILABLE, "the event stream ended early")
            if up_since is not None:
                backoff.stream_was_up(loop.time() - up_since)
            delay = backoff.next_delay(loop.time())
            if delay is None:
                raise StreamGaveUp(cursor.last_offset, failure, backoff.failing_for(loop.time()))
            if on_reconnect is not None:
                on_reconnect(ReconnectInfo(backoff.attempts, cursor.last_offset, failure, delay))
            await asyncio.sleep(delay)

    async def _ended(self, last_offset: int) -> bool:
        """After a following stream ended without an error: whether the
        session is over and every event was delivered (else reconnect)."""
        try:
            info = await self.get()
        except KeelError:
            return False
        over = info.status in (session_pb2.SESSION_STATUS_CLOSED, session_pb2.SESSION_STATUS_FAILED)
        return over and last_offset >= info.last_event_offset
