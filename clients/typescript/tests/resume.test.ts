// The resuming event stream against a scripted fake server: no duplicates
// across reconnects, gaps reported once, a bounded give-up, and errors
// retrying cannot fix passed through. Run: npm test.
import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  EventSchema,
  StreamEventsResponseSchema,
  type StreamEventsResponse,
} from "../src/gen/keel/v1/session_pb.js";
import { resumingEvents, type StreamItem } from "../src/events.js";

const event = (offset: number, kind: "turnStarted" | "turnComplete" | "shutdownComplete" = "turnStarted") =>
  create(StreamEventsResponseSchema, {
    kind: {
      case: "event",
      value: create(EventSchema, {
        offset: BigInt(offset),
        msg:
          kind === "turnComplete"
            ? { case: "turnComplete", value: { lastAgentMessage: "done" } }
            : kind === "shutdownComplete"
              ? { case: "shutdownComplete", value: {} }
              : { case: "turnStarted", value: {} },
      }),
    },
  });
const gap = (after: number, first: number) =>
  create(StreamEventsResponseSchema, {
    kind: { case: "gap", value: { afterOffset: BigInt(after), firstRetainedOffset: BigInt(first) } },
  });

/** A server whose i-th stream is script[i] (given the offset asked for); a thrown error breaks it. */
function fakeServer(script: ((after: bigint) => (StreamEventsResponse | Error)[])[]) {
  const asked: bigint[] = [];
  return {
    asked,
    src: {
      sessionId: "s",
      async *open(after: bigint, _f: boolean, _d: boolean, _s: AbortSignal, connected: () => void) {
        asked.push(after);
        const step = script[asked.length - 1];
        if (!step) throw new ConnectError("no more streams", Code.Unavailable);
        connected();
        for (const r of step(after)) {
          if (r instanceof Error) throw r;
          yield r;
        }
      },
    },
  };
}

async function collect(it: AsyncIterable<StreamItem>, until = (_: StreamItem) => false) {
  const out: string[] = [];
  for await (const item of it) {
    out.push(item.kind === "event" ? `${item.offset}:${item.type}` : item.kind === "gap" ? `gap:${item.afterOffset}-${item.firstRetainedOffset}` : "delta");
    if (until(item)) break;
  }
  return out;
}

test("resumes after the last delivered offset, without duplicates", async () => {
  const broken = new ConnectError("http/2 stream closed with error code CANCEL (0x8)", Code.Canceled);
  const { asked, src } = fakeServer([
    () => [event(1), event(2), broken],
    // A server that replays from too far back: nothing comes twice.
    () => [event(2), event(3), new ConnectError("connect ECONNREFUSED", Code.Unavailable)],
    () => [event(4), event(5, "turnComplete")],
  ]);
  const seen = await collect(resumingEvents(src, { follow: true }), (i) => i.kind === "event" && i.type === "turn_complete");
  assert.deepEqual(seen, ["1:turn_started", "2:turn_started", "3:turn_started", "4:turn_started", "5:turn_complete"]);
  assert.deepEqual(asked, [0n, 2n, 3n]);
});

test("a following stream that ends early is resumed; one that ends after shutdown_complete is not", async () => {
  const { asked, src } = fakeServer([() => [event(1)], () => [event(2, "shutdownComplete")]]);
  assert.deepEqual(await collect(resumingEvents(src)), ["1:turn_started", "2:shutdown_complete"]);
  assert.deepEqual(asked, [0n, 1n]);
});

test("a gap is reported once, also across a reconnect", async () => {
  const { src } = fakeServer([
    () => [gap(0, 5), new ConnectError("reset", Code.Unavailable)],
    (after) => (after === 4n ? [event(5), event(6, "shutdownComplete")] : [gap(0, 5), event(5)]),
  ]);
  assert.deepEqual(await collect(resumingEvents(src)), ["gap:0-5", "5:turn_started", "6:shutdown_complete"]);
});

test("errors that retrying cannot fix are thrown as they are", async () => {
  const { src } = fakeServer([() => [new ConnectError("unknown session", Code.NotFound)]]);
  await assert.rejects(collect(resumingEvents(src)), (e: unknown) => e instanceof ConnectError && e.code === Code.NotFound);
});

test("gives up with Unavailable after the reconnect timeout", async () => {
  const { src } = fakeServer([]);
  const started = Date.now();
  await assert.rejects(
    collect(resumingEvents(src, { reconnectTimeoutMs: 500 })),
    (e: unknown) => e instanceof ConnectError && e.code === Code.Unavailable && /gave up after/.test(e.message),
  );
  assert.ok(Date.now() - started < 3000);
});

test("the caller's signal stops the iteration", async () => {
  const { src } = fakeServer([]);
  const ac = new AbortController();
  setTimeout(() => ac.abort(new Error("stop")), 200);
  await assert.rejects(collect(resumingEvents(src, { signal: ac.signal })), /stop/);
});
