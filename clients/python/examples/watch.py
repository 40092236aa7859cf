"""Watch a turn's events as JSON lines; survives session-api restarts.

Prints one line per durable event, {"offset": N, "type": "<kind>"}, to stdout
and exits after turn_complete; each reconnect is reported on stderr
("reconnecting after offset N ..."). Env: KEEL_ADDR, KEEL_TOKEN, KEEL_WORKSPACE.
"""

import asyncio
import json
import os
import sys

from keel_client import Event, Keel, ReconnectInfo, event_type


def reconnecting(info: ReconnectInfo) -> None:
    print(
        f"reconnecting after offset {info.after_offset} (attempt {info.attempt}, "
        f"in {info.delay:.1f} s): {info.error}",
        file=sys.stderr,
        flush=True,
    )


async def main() -> int:
    async with Keel(os.environ["KEEL_ADDR"], os.environ["KEEL_TOKEN"]) as keel:
        session = await keel.create_session(cwd=os.environ["KEEL_WORKSPACE"], approval_policy="never")
        await session.send_turn("Run the four steps")
        # events() reconnects from the last offset when the stream breaks.
        async for item in session.events(give_up_after=60, on_reconnect=reconnecting):
            if not isinstance(item, Event):
                print(f"gap: {item}", file=sys.stderr, flush=True)
                continue
            print(json.dumps({"offset": item.offset, "type": event_type(item)}), flush=True)
            if item.HasField("turn_complete"):
                return 0
            if item.HasField("turn_aborted") or item.HasField("error"):
                print(f"turn failed: {item}", file=sys.stderr)
                return 1
    return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
