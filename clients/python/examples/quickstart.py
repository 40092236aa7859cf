"""Quickstart: one turn with a command approval and a Python tool.

Env: KEEL_ADDR (http://host:port), KEEL_TOKEN, KEEL_WORKSPACE (the session's cwd).
"""

import asyncio
import os
import shlex
import sys

import keel_client
from keel_client import Keel, event_type


def lookup(q: str) -> str:
    return "ACME Corp, 42 seats" if q.lower() == "acme" else f"no account named {q}"


LOOKUP = keel_client.tool(
    lookup,
    namespace="crm",
    name="lookup",
    description="Look up a customer account by name.",
    schema={"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
)


async def main() -> int:
    async with Keel(os.environ["KEEL_ADDR"], os.environ["KEEL_TOKEN"]) as keel:
        session = await keel.create_session(
            cwd=os.environ["KEEL_WORKSPACE"], approval_policy="untrusted", tools=[LOOKUP]
        )
        await session.send_turn("Greet, then look up ACME")
        async with asyncio.timeout(60):
            async for event in session.events():  # runs lookup() for crm__lookup calls
                if not isinstance(event, keel_client.Event):
                    continue  # an EventGap: older events are no longer kept
                kind = event_type(event)
                print(f"[{event.offset}] {kind}", flush=True)
                if kind == "exec_approval_request":
                    print(f"approved: {shlex.join(event.exec_approval_request.command)}")
                    await session.approve(event.exec_approval_request.call_id)
                elif kind == "agent_message":
                    print(f"agent: {event.agent_message.message}")
                elif kind == "turn_complete":
                    print(f"final: {event.turn_complete.last_agent_message}")
                    return 0
                elif kind in ("turn_aborted", "error"):
                    print(f"turn failed: {event}", file=sys.stderr)
                    return 1
    print("the event stream ended before the turn did", file=sys.stderr)
    return 1


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except TimeoutError:
        sys.exit("timed out waiting for the turn to finish")
