// Dynamic tools answered by Session.events() against an in-memory fake
// SessionService: answers (and failures) go back with Respond, a replayed
// request runs only while still pending, a live one runs, and a call whose
// answer could not be sent is answered by the next iteration without
// running the tool again. Run: npm test.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Event } from "../src/gen/keel/v1/session_pb.js";
import { tool } from "../src/tools.js";
import type { StreamItem } from "../src/events.js";
import { ev, fakeKeel, pending, shutdown, toolCall, type Response } from "./fake.js";

const sent = (e: Event): Response => ({ kind: { case: "event", value: e } });

/** A crm__lookup tool that records its calls. */
function lookupTool() {
  const calls: string[] = [];
  const t = tool<{ q: string }>(
    { namespace: "crm", name: "lookup", description: "Finds a customer.", inputSchema: { type: "object" } },
    async ({ q }) => {
      calls.push(q);
      if (q === "bad") throw new Error("no account named bad");
      return `found ${q}`;
    },
  );
  return { calls, t };
}

async function drain(it: AsyncIterable<StreamItem>): Promise<number[]> {
  const offsets: number[] = [];
  for await (const item of it) if (item.kind === "event") offsets.push(item.offset);
  return offsets;
}

const answers = (responds: { requestId: string; answer: { case: string | undefined; value?: unknown } }[]) =>
  responds.map((r) => {
    assert.equal(r.answer.case, "dynamicTool");
    const v = r.answer.value as { success: boolean; content: { kind: { value?: unknown } }[] };
    return { id: r.requestId, success: v.success, text: v.content.map((c) => c.kind.value).join("") };
  });

test("tool calls are answered with the function's result, or its error", async () => {
  const log = [
    toolCall(1, "acme"),
    toolCall(2, "bad"),
    toolCall(3, "other", "not_ours"),
    shutdown(4),
  ];
  const { state, keel } = fakeKeel(async function* (req) {
    for (const e of log.slice(Number(req.afterOffset))) yield sent(e);
  });
  // The whole log is there when the stream starts, every request still pending.
  state.info.lastEventOffset = 4n;
  state.info.pendingRequests = pending("acme", "bad", "other");
  const { calls, t } = lookupTool();
  const session = keel.session("s1", { tools: [t] });

  assert.deepEqual(await drain(session.events()), [1, 2, 3, 4]);
  assert.deepEqual(calls, ["acme", "bad"]);
  assert.deepEqual(answers(state.responds), [
    { id: "acme", success: true, text: "found acme" },
    { id: "bad", success: false, text: "no account named bad" },
  ]);
  assert.ok(state.responds.every((r) => r.sessionId === "s1"));
});

test("a replayed request runs only while pending; a live one runs; each once", async () => {
  // A new process replays the log from 0: d1 was answered long ago (not
  // pending), d2 still is; d4 arrives live, after the replay.
  const replay = [toolCall(1, "d1"), toolCall(2, "d2"), ev(3, { case: "agentMessage", value: { message: "looking" } })];
  const live = [toolCall(4, "d4"), shutdown(5)];
  const { state, keel } = fakeKeel(async function* (req) {
    for (const e of replay.slice(Number(req.afterOffset))) yield sent(e);
    // Live events come after the client has looked at the session.
    while (state.getCalls === 0) await new Promise((r) => setTimeout(r, 5));
    if (state.info.lastEventOffset < 5n) {
      state.info.lastEventOffset = 5n;
      state.info.pendingRequests.push(...pending("d4"));
    }
    for (const e of live.slice(Math.max(0, Number(req.afterOffset) - 3))) yield sent(e);
  });
  // The fake's Respond leaves the pending list alone (as if the answer was lost).
  state.info.lastEventOffset = 3n;
  state.info.pendingRequests = pending("d2");
  const { calls, t } = lookupTool();
  const session = keel.session("s1", { tools: [t] });

  assert.deepEqual(await drain(session.events()), [1, 2, 3, 4, 5]);
  assert.deepEqual(calls, ["d2", "d4"]); // d1 was answered before: not run again
  assert.deepEqual(state.responds.map((r) => r.requestId), ["d2", "d4"]);
  // Once for the newest offset, once each for d1 and d2 (replayed); none for d4.
  assert.equal(state.getCalls, 3);

  // The same Session answers each request once, though d2 and d4 are still listed as pending.
  assert.deepEqual(await drain(session.events()), [1, 2, 3, 4, 5]);
  assert.deepEqual(calls, ["d2", "d4"]);
  assert.equal(state.responds.length, 2);

  // A new Session replaying the log runs the still-pending ones, but not d1.
  const fresh = keel.session("s1", { tools: [t] });
  await drain(fresh.events());
  assert.deepEqual(calls, ["d2", "d4", "d2", "d4"]);

  // answerTools: false runs nothing and asks nothing.
  const before = state.getCalls;
  await drain(keel.session("s1", { tools: [t] }).events({ answerTools: false }));
  assert.deepEqual(calls, ["d2", "d4", "d2", "d4"]);
  assert.equal(state.getCalls, before);
});

test("a call whose answer could not be sent is answered by the next iteration, without running again", async () => {
  const log = [toolCall(1, "acme"), shutdown(2)];
  const { state, keel } = fakeKeel(async function* (req) {
    for (const e of log.slice(Number(req.afterOffset))) yield sent(e);
  });
  state.respondError = Code.Unavailable; // d1 arrives live; Respond keeps failing
  const { calls, t } = lookupTool();
  const session = keel.session("s1", { tools: [t] });

  await assert.rejects(
    drain(session.events({ reconnectTimeoutMs: 300 })),
    (e: unknown) => e instanceof ConnectError && e.code === Code.Unavailable && /Respond: gave up/.test(e.message),
  );
  assert.deepEqual(calls, ["acme"]);
  assert.equal(state.responds.length, 0);

  // Respond works again; the log is replayed and the call is still pending.
  state.respondError = undefined;
  state.info.lastEventOffset = 2n;
  state.info.pendingRequests = pending("acme");
  assert.deepEqual(await drain(session.events()), [1, 2]);
  assert.deepEqual(calls, ["acme"]); // not run again
  assert.deepEqual(answers(state.responds), [{ id: "acme", success: true, text: "found acme" }]);

  // Answered now: another iteration leaves it alone.
  await drain(session.events());
  assert.equal(state.responds.length, 1);
  assert.deepEqual(calls, ["acme"]);
});
