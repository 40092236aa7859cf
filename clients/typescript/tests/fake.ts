// An in-memory fake SessionService for the offline tests: a KeelClient
// whose transport routes to scripted handlers (no network).
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createRouterTransport, type HandlerContext } from "@connectrpc/connect";
import {
  EventSchema,
  PendingRequestKind,
  PendingRequestSchema,
  SessionSchema,
  SessionService,
  type Event,
  type PendingRequest,
  type RespondRequest,
  type StreamEventsRequest,
  type StreamEventsResponseSchema,
} from "../src/gen/keel/v1/session_pb.js";
import { KeelClient } from "../src/client.js";

export type Response = MessageInitShape<typeof StreamEventsResponseSchema>;

/** The i-th (from 1) StreamEvents call's responses. */
export type StreamScript = (req: StreamEventsRequest, ctx: HandlerContext, n: number) => AsyncIterable<Response>;

export function fakeKeel(stream: StreamScript) {
  const state = {
    /** What GetSession answers. */
    info: create(SessionSchema, { sessionId: "s1" }),
    getCalls: 0,
    responds: [] as RespondRequest[],
    /** Respond fails with this code while set. */
    respondError: undefined as Code | undefined,
    /** The afterOffset of each StreamEvents call. */
    asked: [] as bigint[],
  };
  const transport = createRouterTransport(({ service }) => {
    service(SessionService, {
      async *streamEvents(req, ctx) {
        state.asked.push(req.afterOffset);
        yield* stream(req, ctx, state.asked.length);
      },
      getSession() {
        state.getCalls++;
        return { session: state.info };
      },
      respond(req) {
        if (state.respondError !== undefined) throw new ConnectError("respond failed", state.respondError);
        state.responds.push(req);
        return {};
      },
    });
  });
  return { state, keel: new KeelClient({ transport, token: "tok" }) };
}

export function ev(offset: number, msg: MessageInitShape<typeof EventSchema>["msg"]): Event {
  return create(EventSchema, { offset: BigInt(offset), msg });
}

export const shutdown = (offset: number) => ev(offset, { case: "shutdownComplete", value: {} });

export function toolCall(offset: number, callId: string, tool = "lookup", args = `{"q":"${callId}"}`): Event {
  return ev(offset, {
    case: "dynamicToolCallRequest",
    value: { callId, namespace: "crm", tool, arguments: args },
  });
}

export function pending(...ids: string[]): PendingRequest[] {
  return ids.map((requestId) => create(PendingRequestSchema, { requestId, kind: PendingRequestKind.DYNAMIC_TOOL }));
}

/** Waits until the call is cancelled (an idle, following stream). */
export function idle(ctx: HandlerContext): Promise<void> {
  return new Promise((resolve) => {
    if (ctx.signal.aborted) return resolve();
    ctx.signal.addEventListener("abort", () => resolve(), { once: true });
  });
}
