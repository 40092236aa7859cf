// The resuming event stream against a scripted fake server: no duplicates
// across reconnects, gaps reported once, a bounded give-up (with a fresh
// budget after a stream that was up, a limited number of times), a clean
// end of a session that is over, and errors retrying cannot fix passed
// through. Run: npm test.
import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  EventSchema,
  SessionStatus,
  StreamEventsResponseSchema,
  type StreamEventsResponse,
} from "../src/gen/keel/v1/session_pb.js";
import { resumingEvents, sleep, type StreamItem, type StreamSource } from "../src/events.js";
import { fakeKeel } from "./fake.js";

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

/** A source whose i-th stream runs script[i] (the last one for any later stream). */
function scriptedSource(script: ((connected: () => void) => AsyncIterable<StreamEventsResponse>)[]) {
  const asked: bigint[] = [];
  const src: StreamSource = {
    sessionId: "s",
    open(after, _f, _d, _s, connected) {
      asked.push(after);
      return script[Math.min(asked.length, script.length) - 1]!(connected);
    },
  };
  return { asked, src };
}

const unavailable = () => new ConnectError("Socket closed", Code.Unavailable);

test("a stream that was up gets a fresh reconnect budget when it breaks", async () => {
  // Break; reconnect to an idle stream; stay idle past the budget; break again.
  const run = (maxIdleResets: number) => {
    const { asked, src } = scriptedSource([
      async function* (connected) {
        connected();
        yield event(1);
        throw unavailable();
      },
      async function* (connected) {
        connected();
        await sleep(500);
        throw unavailable();
      },
      async function* (connected) {
        connected();
        yield event(2);
        yield event(3, "shutdownComplete");
      },
    ]);
    const reconnects: number[] = [];
    const items = collect(
      resumingEvents(
        src,
        { reconnectTimeoutMs: 300, onReconnect: (r) => reconnects.push(r.attempt) },
        { streamUpMs: 100, maxIdleResets },
      ),
    );
    return { asked, items, reconnects };
  };
  const ok = run(10);
  assert.deepEqual(await ok.items, ["1:turn_started", "2:turn_started", "3:shutdown_complete"]);
  assert.deepEqual(ok.asked, [0n, 1n, 1n]);
  assert.deepEqual(ok.reconnects, [1, 1]);
  // Without the fresh budget, the second break is past the first one's budget.
  await assert.rejects(run(0).items, /gave up after/);
});

test("fresh budgets without a message in between are limited", async () => {
  // A server that fails a while after its headers, every time, sending nothing.
  const { asked, src } = scriptedSource([
    async function* (connected) {
      connected();
      await sleep(150);
      throw unavailable();
    },
  ]);
  await assert.rejects(
    collect(resumingEvents(src, { reconnectTimeoutMs: 300 }, { streamUpMs: 100, maxIdleResets: 3 })),
    (e: unknown) => e instanceof ConnectError && e.code === Code.Unavailable && /gave up after/.test(e.message),
  );
  // Three fresh budgets (after streams 1-3), then an outage that outlasts
  // its 300 ms (streams of 150 ms plus backoff).
  assert.ok(asked.length >= 4 && asked.length <= 7, `${asked.length} streams`);
});

test("a following stream that ends cleanly ends the iteration once the session is over", async () => {
  const responses = (from: bigint, to: number) =>
    Array.from({ length: Math.max(0, to - Number(from)) }, (_, i) => event(Number(from) + i + 1));

  // A FAILED session has no shutdown_complete: its stream ends after its last event.
  {
    const { state, keel } = fakeKeel(async function* (req) {
      yield* responses(req.afterOffset, 3);
    });
    state.info.status = SessionStatus.FAILED;
    state.info.lastEventOffset = 3n;
    const seen = await collect(keel.session("s1").events({ reconnectTimeoutMs: 5000 }));
    assert.deepEqual(seen, ["1:turn_started", "2:turn_started", "3:turn_started"]);
    assert.deepEqual(state.asked, [0n]);
  }
  // Resuming at the end of a closed session: nothing more comes.
  {
    const { state, keel } = fakeKeel(async function* (req) {
      yield* responses(req.afterOffset, 5);
    });
    state.info.status = SessionStatus.CLOSED;
    state.info.lastEventOffset = 5n;
    assert.deepEqual(await collect(keel.session("s1").events({ afterOffset: 5, reconnectTimeoutMs: 5000 })), []);
    assert.deepEqual(state.asked, [5n]);
  }
  // A session that is not over: the early end is a server going away; resume.
  {
    const { state, keel } = fakeKeel(async function* (req, _ctx, n) {
      if (n === 1) {
        yield* responses(req.afterOffset, 1);
        return;
      }
      yield event(2, "shutdownComplete");
    });
    state.info.status = SessionStatus.RUNNING;
    state.info.lastEventOffset = 1n;
    const seen = await collect(keel.session("s1").events({ reconnectTimeoutMs: 5000 }));
    assert.deepEqual(seen, ["1:turn_started", "2:shutdown_complete"]);
    assert.deepEqual(state.asked, [0n, 1n]);
  }
});
