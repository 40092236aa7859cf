// The transport-independent client: KeelClient and Session. The entry
// points (index.ts for Node, browser.ts for browsers) choose the transport.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createClient,
  type CallOptions,
  type Client,
  type Transport,
} from "@connectrpc/connect";
import { ApprovalPolicy, SandboxMode, SandboxPolicySchema } from "./gen/keel/v1/common_pb.js";
import {
  CreateSessionRequestSchema,
  ReviewDecisionKind,
  SessionService,
  SessionStatus,
  TurnContextSchema,
  type Event,
  type ListSessionsRequestSchema,
  type Session as SessionInfo,
} from "./gen/keel/v1/session_pb.js";
import {
  resumingEvents,
  retrying,
  type EventsOptions,
  type StreamItem,
} from "./events.js";
import { findTool, runTool, type Tool, type ToolOutput } from "./tools.js";

export type { SessionInfo };

/** Codex's spellings of the approval policies. */
export type ApprovalPolicyName = "untrusted" | "on-failure" | "on-request" | "never";
/** Codex's spellings of the sandbox modes. */
export type SandboxName = "read-only" | "workspace-write" | "danger-full-access";

const APPROVAL: Record<ApprovalPolicyName, ApprovalPolicy> = {
  untrusted: ApprovalPolicy.UNTRUSTED,
  "on-failure": ApprovalPolicy.ON_FAILURE,
  "on-request": ApprovalPolicy.ON_REQUEST,
  never: ApprovalPolicy.NEVER,
};
const SANDBOX: Record<SandboxName, SandboxMode> = {
  "read-only": SandboxMode.READ_ONLY,
  "workspace-write": SandboxMode.WORKSPACE_WRITE,
  "danger-full-access": SandboxMode.DANGER_FULL_ACCESS,
};

/** What `new Keel(...)` takes, in Node and in browsers. */
export interface KeelOptions {
  /** session-api's address, e.g. `http://127.0.0.1:50051`. */
  baseUrl?: string;
  /** A transport of your own instead (then baseUrl is not used). */
  transport?: Transport;
  /** Sent as `authorization: Bearer <token>`. */
  token?: string | undefined;
}

/** `opts.transport`, else one made by `make` for `opts.baseUrl`. */
export function transportFor(opts: KeelOptions, make: (baseUrl: string) => Transport): Transport {
  if (opts.transport) return opts.transport;
  if (!opts.baseUrl) {
    throw new TypeError("Keel: pass baseUrl (e.g. http://127.0.0.1:50051) or transport");
  }
  return make(opts.baseUrl);
}

export interface KeelClientOptions {
  transport: Transport;
  /** Sent as `authorization: Bearer <token>`; omit for a server with --insecure-no-auth. */
  token?: string | undefined;
}

export interface CreateSessionOptions {
  /** The agent's working directory: an absolute path on the tool-runners' volume. */
  cwd?: string;
  approvalPolicy?: ApprovalPolicy | ApprovalPolicyName;
  sandbox?: SandboxMode | SandboxName;
  /** Model slug; empty: the model-proxy's default. */
  model?: string;
  /** Client-chosen session id; empty: a generated UUID. */
  sessionId?: string;
  name?: string;
  developerInstructions?: string;
  /** Tools implemented by this client (see tool()). */
  tools?: Tool[];
  /** Any other CreateSessionRequest field; the options above win over it. */
  request?: MessageInitShape<typeof CreateSessionRequestSchema>;
  signal?: AbortSignal;
}

export interface SendTurnOptions {
  /** Client-chosen turn id, for idempotent retries. */
  turnId?: string;
  /** Settings for this turn only. */
  context?: MessageInitShape<typeof TurnContextSchema>;
  /** Images sent with the message. */
  images?: { mimeType: string; data: Uint8Array }[];
  /** A JSON Schema the turn's final answer must follow (as text). */
  finalOutputJsonSchema?: string;
  signal?: AbortSignal;
}

/** Keel's SessionService, over a transport of the caller's choice. */
export class KeelClient {
  /** The generated SessionService client, for every RPC this layer does not wrap. */
  readonly rpc: Client<typeof SessionService>;
  private readonly headers: Record<string, string>;

  constructor(opts: KeelClientOptions) {
    this.rpc = createClient(SessionService, opts.transport);
    this.headers = opts.token ? { authorization: `Bearer ${opts.token}` } : {};
  }

  /** Call options carrying the credentials (for calls through `rpc`). */
  callOptions(extra: CallOptions = {}): CallOptions {
    const headers = new Headers(extra.headers);
    for (const [k, v] of Object.entries(this.headers)) if (!headers.has(k)) headers.set(k, v);
    return { ...extra, headers };
  }

  /** Starts a session. Nothing runs until its first sendTurn(). */
  async createSession(opts: CreateSessionOptions = {}): Promise<Session> {
    const tools = opts.tools ?? [];
    const req = create(CreateSessionRequestSchema, opts.request ?? {});
    if (opts.cwd !== undefined) req.cwd = opts.cwd;
    if (opts.model !== undefined) req.model = opts.model;
    if (opts.sessionId !== undefined) req.sessionId = opts.sessionId;
    if (opts.name !== undefined) req.name = opts.name;
    if (opts.developerInstructions !== undefined) {
      req.developerInstructions = opts.developerInstructions;
    }
    if (opts.approvalPolicy !== undefined) {
      req.context ??= create(TurnContextSchema);
      req.context.approvalPolicy = approval(opts.approvalPolicy);
    }
    if (opts.sandbox !== undefined) {
      req.context ??= create(TurnContextSchema);
      req.context.sandbox ??= create(SandboxPolicySchema);
      req.context.sandbox.mode = sandbox(opts.sandbox);
    }
    req.dynamicTools = [...req.dynamicTools, ...tools.map((t) => t.spec)];
    const res = await this.rpc.createSession(req, this.callOptions({ signal: opts.signal }));
    if (!res.session) throw new ConnectError("CreateSession answered no session", Code.Internal);
    return new Session(this, res.session.sessionId, tools, res.session);
  }

  /** A handle on an existing session (no call is made). */
  session(sessionId: string, opts: { tools?: Tool[] } = {}): Session {
    return new Session(this, sessionId, opts.tools ?? []);
  }

  /** A session's current state. */
  async getSession(sessionId: string, signal?: AbortSignal): Promise<SessionInfo> {
    const res = await this.rpc.getSession({ sessionId }, this.callOptions({ signal }));
    if (!res.session) throw new ConnectError("GetSession answered no session", Code.Internal);
    return res.session;
  }

  /** One page of sessions, newest first. */
  async listSessions(
    req: MessageInitShape<typeof ListSessionsRequestSchema> = {},
    signal?: AbortSignal,
  ): Promise<{ sessions: SessionInfo[]; nextPageToken: string }> {
    const res = await this.rpc.listSessions(req, this.callOptions({ signal }));
    return { sessions: res.sessions, nextPageToken: res.nextPageToken };
  }
}

function approval(p: ApprovalPolicy | ApprovalPolicyName): ApprovalPolicy {
  if (typeof p === "number") return p;
  const v = APPROVAL[p];
  if (v === undefined) throw new ConnectError(`unknown approval policy ${JSON.stringify(p)}`, Code.InvalidArgument);
  return v;
}
function sandbox(m: SandboxMode | SandboxName): SandboxMode {
  if (typeof m === "number") return m;
  const v = SANDBOX[m];
  if (v === undefined) throw new ConnectError(`unknown sandbox mode ${JSON.stringify(m)}`, Code.InvalidArgument);
  return v;
}

/** One session: send turns, watch its events, answer its requests. */
export class Session {
  /**
   * The tool calls this handle answered (Respond succeeded) or the server
   * said are no longer pending: never run or answered again.
   */
  private readonly handled = new Set<string>();
  /**
   * The tool's result per call not yet answered, so that answering it again
   * (after Respond gave up) does not run the function again.
   */
  private readonly results = new Map<string, Promise<ToolOutput>>();

  constructor(
    readonly keel: KeelClient,
    readonly id: string,
    readonly tools: readonly Tool[] = [],
    /** The state CreateSession returned, when this handle came from it. */
    readonly created?: SessionInfo,
  ) {}

  private opts(signal?: AbortSignal): CallOptions {
    return this.keel.callOptions({ signal });
  }

  /** Queues a user turn; returns its turn id. */
  async sendTurn(text: string, opts: SendTurnOptions = {}): Promise<string> {
    const { signal, ...rest } = opts;
    const res = await this.keel.rpc.sendUserTurn({ ...rest, sessionId: this.id, text }, this.opts(signal));
    return res.turnId;
  }

  /** Adds a message to the running turn. */
  async steer(text: string, expectedTurnId = "", signal?: AbortSignal): Promise<string> {
    const res = await this.keel.rpc.steerTurn({ sessionId: this.id, text, expectedTurnId }, this.opts(signal));
    return res.turnId;
  }

  /**
   * The session's events, in offset order, each exactly once: an async
   * iterator that reconnects (with backoff, resuming after the last offset
   * it delivered) when the stream breaks, and throws a ConnectError when
   * the server stays unreachable for `reconnectTimeoutMs` or answers an
   * error that retrying cannot fix. Gaps come as `{kind: "gap"}` items.
   * Dynamic tool calls for this session's tools are answered before their
   * event is yielded.
   */
  events(opts: EventsOptions = {}): AsyncGenerator<StreamItem, void, undefined> {
    const answerTools = (opts.answerTools ?? true) && this.tools.length > 0;
    // Requests at or before the session's newest offset when the first
    // event arrived may have been answered already (a replay, e.g. from
    // afterOffset 0 in a new process): they are answered only if
    // GetSession still lists them as pending.
    let horizon: bigint | undefined;
    const retry = { signal: opts.signal, timeoutMs: opts.reconnectTimeoutMs ?? 60_000 };
    return resumingEvents(
      {
        sessionId: this.id,
        open: (afterOffset, follow, liveDeltas, signal, onConnected) =>
          this.keel.rpc.streamEvents(
            { sessionId: this.id, afterOffset, follow, liveDeltas },
            this.keel.callOptions({ signal, onHeader: onConnected }),
          ),
        onEvent: answerTools
          ? async (ev: Event) => {
              horizon ??= await retrying("GetSession", retry, async () => (await this.info(opts.signal)).lastEventOffset);
              await this.answerToolCall(ev, ev.offset <= horizon, retry);
            }
          : undefined,
        ended: async (lastOffset, signal) => {
          try {
            const info = await this.info(signal);
            const over = info.status === SessionStatus.CLOSED || info.status === SessionStatus.FAILED;
            return over && lastOffset >= info.lastEventOffset;
          } catch (e) {
            if (signal?.aborted) throw e;
            return false; // not known: reconnect
          }
        },
      },
      opts,
    );
  }

  /**
   * Answers a dynamic tool call with its function. A call counts as
   * answered once Respond succeeded or the server said it is not pending
   * any more; until then another iteration answers it again, with the
   * result the function gave the first time (it runs at most once per call
   * and Session object).
   */
  private async answerToolCall(
    ev: Event,
    maybeAnswered: boolean,
    retry: { signal?: AbortSignal | undefined; timeoutMs: number },
  ): Promise<void> {
    if (ev.msg.case !== "dynamicToolCallRequest") return;
    const req = ev.msg.value;
    const t = findTool(this.tools, req);
    if (!t || this.handled.has(req.callId)) return;
    if (maybeAnswered && !this.results.has(req.callId)) {
      const info = await retrying("GetSession", retry, () => this.info(retry.signal));
      if (!info.pendingRequests.some((p) => p.requestId === req.callId)) {
        this.handled.add(req.callId);
        return;
      }
    }
    let result = this.results.get(req.callId);
    if (!result) {
      result = runTool(t, req); // never rejects
      this.results.set(req.callId, result);
    }
    const out = await result;
    if (this.handled.has(req.callId)) return; // answered meanwhile by another iteration
    await retrying("Respond", retry, async () => {
      try {
        await this.keel.rpc.respond(
          {
            sessionId: this.id,
            requestId: req.callId,
            answer: {
              case: "dynamicTool",
              value: { success: out.success, content: [{ kind: { case: "text", value: out.text } }] },
            },
          },
          this.opts(retry.signal),
        );
      } catch (e) {
        // Not pending any more: answered (by an earlier attempt of ours
        // whose answer was lost, or by someone else) or ended with its turn.
        if (e instanceof ConnectError && e.code === Code.FailedPrecondition) return;
        throw e;
      }
    });
    this.handled.add(req.callId);
    this.results.delete(req.callId);
  }

  /** Runs the command or patch of an approval request, this once (or for the session). */
  async approve(requestId: string, opts: { forSession?: boolean; signal?: AbortSignal } = {}): Promise<void> {
    const kind = opts.forSession
      ? ReviewDecisionKind.APPROVED_FOR_SESSION
      : ReviewDecisionKind.APPROVED;
    await this.decide(requestId, kind, opts.signal);
  }

  /** Refuses an approval request; the model is told, and the turn goes on (abort: the turn ends). */
  async deny(requestId: string, opts: { abort?: boolean; signal?: AbortSignal } = {}): Promise<void> {
    const kind = opts.abort ? ReviewDecisionKind.ABORT : ReviewDecisionKind.DENIED;
    await this.decide(requestId, kind, opts.signal);
  }

  private async decide(requestId: string, kind: ReviewDecisionKind, signal?: AbortSignal): Promise<void> {
    await this.keel.rpc.respond(
      { sessionId: this.id, requestId, answer: { case: "decision", value: { kind } } },
      this.opts(signal),
    );
  }

  /** Answers a `request_user_input`: answers per question id. */
  async answer(
    requestId: string,
    answers: Record<string, string | string[]>,
    signal?: AbortSignal,
  ): Promise<void> {
    const byQuestion = Object.fromEntries(
      Object.entries(answers).map(([id, a]) => [id, { answers: Array.isArray(a) ? a : [a] }]),
    );
    await this.keel.rpc.respond(
      { sessionId: this.id, requestId, answer: { case: "userInput", value: { answers: byQuestion } } },
      this.opts(signal),
    );
  }

  /** Answers a `dynamic_tool_call_request` by hand (for tools without a function here). */
  async respondTool(requestId: string, text: string, success = true, signal?: AbortSignal): Promise<void> {
    await this.keel.rpc.respond(
      {
        sessionId: this.id,
        requestId,
        answer: { case: "dynamicTool", value: { success, content: [{ kind: { case: "text", value: text } }] } },
      },
      this.opts(signal),
    );
  }

  /** Aborts the running turn, if any. */
  async interrupt(signal?: AbortSignal): Promise<void> {
    await this.keel.rpc.interrupt({ sessionId: this.id }, this.opts(signal));
  }

  /** Ends the session (`shutdown_complete` is its last event). */
  async close(signal?: AbortSignal): Promise<void> {
    await this.keel.rpc.closeSession({ sessionId: this.id }, this.opts(signal));
  }

  /** The session's current state. */
  info(signal?: AbortSignal): Promise<SessionInfo> {
    return this.keel.getSession(this.id, signal);
  }
}
