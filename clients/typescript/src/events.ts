// The resuming event stream behind Session.events().
import { Code, ConnectError } from "@connectrpc/connect";
import type {
  Event,
  LiveDelta,
  StreamEventsResponse,
} from "./gen/keel/v1/session_pb.js";
import { errorInfo, isRetryable } from "./errors.js";

type Snake<S extends string> = S extends `${infer H}${infer T}`
  ? `${H extends Lowercase<H> ? H : `_${Lowercase<H>}`}${Snake<T>}`
  : S;

/** An event's kind as the Codex protocol spells it: `exec_command_begin`. */
export type EventType = Snake<NonNullable<Event["msg"]["case"]>>;

/** The snake_case name of an event's kind (`"unknown"` for one this client does not know). */
export function eventType(event: Event): EventType | "unknown" {
  const c = event.msg.case;
  return c === undefined
    ? "unknown"
    : (c.replace(/[A-Z]/g, (l) => `_${l.toLowerCase()}`) as EventType);
}

/** A durable event of the session's log. */
export interface EventItem {
  kind: "event";
  /** Position in the log: dense, from 1. */
  offset: number;
  type: EventType | "unknown";
  turnId: string;
  /** The event's payload: switch on `msg.case` (`"execApprovalRequest"`, ...). */
  msg: Event["msg"];
  event: Event;
}

/** Events in (afterOffset, firstRetainedOffset) are no longer retained. */
export interface GapItem {
  kind: "gap";
  afterOffset: number;
  firstRetainedOffset: number;
}

/** Text the model is writing now (only with `liveDeltas`; not durable). */
export interface DeltaItem {
  kind: "delta";
  delta: LiveDelta;
}

export type StreamItem = EventItem | GapItem | DeltaItem;

export interface ReconnectInfo {
  /** 1 for the first retry after a failure. */
  attempt: number;
  /** The offset the next stream resumes after. */
  afterOffset: number;
  error: ConnectError;
  /** How long it waits before trying. */
  delayMs: number;
}

export interface EventsOptions {
  /** Deliver events after this offset; 0 (the default) replays from the start. */
  afterOffset?: number | bigint;
  /** Keep streaming new events (default true); false ends after the retained ones. */
  follow?: boolean;
  /** Also yield live deltas (default false). */
  liveDeltas?: boolean;
  /** Stops the iteration: it throws the signal's reason. */
  signal?: AbortSignal;
  /**
   * How long the stream may stay disconnected before the iterator gives up
   * with a ConnectError (code Unavailable). Default 60 000 ms.
   */
  reconnectTimeoutMs?: number;
  /** Called before each reconnection attempt. */
  onReconnect?: (info: ReconnectInfo) => void;
  /**
   * Answer dynamic tool calls with the session's tool functions (default
   * true).
   */
  answerTools?: boolean;
}

export interface RetryPolicy {
  signal?: AbortSignal | undefined;
  timeoutMs: number;
  onRetry?: ((error: ConnectError, attempt: number, delayMs: number) => void) | undefined;
}

/**
 * Whether a failed call should be tried again. Besides isRetryable(): a
 * cancellation that is not the caller's (the caller's signal was checked
 * first) is the server or the connection going away, e.g. an HTTP/2
 * RST_STREAM(CANCEL) from a stopping session-api.
 */
function worthRetrying(err: ConnectError): boolean {
  return isRetryable(err) || (err.code === Code.Canceled && errorInfo(err) === undefined);
}

/** Backoff: 100 ms doubling to 2 s, with jitter. */
function backoffMs(attempt: number): number {
  const base = Math.min(2000, 100 * 2 ** Math.min(attempt - 1, 5));
  return Math.round(base * (0.75 + Math.random() * 0.5));
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortReason(signal));
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortReason(signal!));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new ConnectError("aborted", Code.Canceled);
}

/** How the event stream decides that a connection worked (see resumingEvents). */
export interface StreamLimits {
  /** How long a stream must have been up (after its headers) for its failure to start a new outage. */
  streamUpMs: number;
  /** How many new outages that rule may start in a row without a message in between. */
  maxIdleResets: number;
}

export const STREAM_LIMITS: StreamLimits = { streamUpMs: 2000, maxIdleResets: 10 };

/** Tracks consecutive failures and how long they have lasted. */
class Outage {
  private since: number | undefined;
  private idleResets = 0;
  attempts = 0;
  constructor(private readonly timeoutMs: number) {}
  /** A message got through: the connection works. */
  ok(): void {
    this.since = undefined;
    this.attempts = 0;
    this.idleResets = 0;
  }
  /**
   * A stream that had its headers ended after `upMs`: if it was up long
   * enough, the next failure starts a new outage, a limited number of
   * times in a row without a message (so a server failing a while after
   * its headers cannot keep the stream retrying forever).
   */
  streamWasUp(upMs: number, limits: StreamLimits): void {
    if (upMs < limits.streamUpMs || this.idleResets >= limits.maxIdleResets) return;
    this.idleResets++;
    this.since = undefined;
    this.attempts = 0;
  }
  /** The delay before the next attempt, or undefined when it is time to give up. */
  next(): number | undefined {
    const now = Date.now();
    this.since ??= now;
    this.attempts++;
    const delay = backoffMs(this.attempts);
    if (now + delay - this.since > this.timeoutMs) return undefined;
    return delay;
  }
  get elapsedMs(): number {
    return this.since === undefined ? 0 : Date.now() - this.since;
  }
}

function giveUp(what: string, outage: Outage, last: ConnectError): ConnectError {
  return new ConnectError(
    `${what}: gave up after ${outage.attempts} attempts in ${Math.round(outage.elapsedMs / 1000)} s: ${last.message}`,
    Code.Unavailable,
    undefined,
    undefined,
    last,
  );
}

/** Calls `fn` until it succeeds, retrying retryable errors with backoff for a bounded time. */
export async function retrying<T>(
  what: string,
  policy: RetryPolicy,
  fn: (attempt: number) => Promise<T>,
): Promise<T> {
  const outage = new Outage(policy.timeoutMs);
  for (;;) {
    try {
      return await fn(outage.attempts);
    } catch (e) {
      if (policy.signal?.aborted) throw abortReason(policy.signal);
      const err = ConnectError.from(e);
      if (!worthRetrying(err)) throw err;
      const delay = outage.next();
      if (delay === undefined) throw giveUp(what, outage, err);
      policy.onRetry?.(err, outage.attempts, delay);
      await sleep(delay, policy.signal);
    }
  }
}

/** What the resuming stream needs from its session. */
export interface StreamSource {
  sessionId: string;
  open(
    afterOffset: bigint,
    follow: boolean,
    liveDeltas: boolean,
    signal: AbortSignal,
    onConnected: () => void,
  ): AsyncIterable<StreamEventsResponse>;
  /** Runs for each new durable event before it is yielded (dynamic tools). */
  onEvent?(event: Event): Promise<void>;
  /**
   * After a following stream ended without an error and without
   * `shutdown_complete`: whether the session is over (CLOSED or FAILED)
   * and every event up to `lastOffset` was delivered, so the iteration
   * ends (else it reconnects). Without it, the stream always reconnects.
   */
  ended?(lastOffset: bigint, signal?: AbortSignal): Promise<boolean>;
}

/** An error of the caller's own (a dynamic tool's answer failing), not of the stream. */
class NotTheStream {
  constructor(readonly error: unknown) {}
}

/**
 * Streams a session's events, reconnecting after a disconnect with
 * `afterOffset` = the last offset delivered, so every event comes exactly
 * once, in order. The reconnect budget (`reconnectTimeoutMs`) starts afresh
 * when a message arrives, and when a stream that got its headers had been
 * up `limits.streamUpMs` (an idle follow of a quiet session), at most
 * `limits.maxIdleResets` times in a row without a message.
 */
export async function* resumingEvents(
  src: StreamSource,
  opts: EventsOptions = {},
  limits: StreamLimits = STREAM_LIMITS,
): AsyncGenerator<StreamItem, void, undefined> {
  const follow = opts.follow ?? true;
  const liveDeltas = opts.liveDeltas ?? false;
  const outage = new Outage(opts.reconnectTimeoutMs ?? 60_000);
  let last = BigInt(opts.afterOffset ?? 0);

  for (;;) {
    const attempt = new AbortController();
    const onAbort = () => attempt.abort(opts.signal?.reason);
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    let failure: ConnectError;
    let connectedAt: number | undefined;
    const connected = () => {
      connectedAt = Date.now();
    };
    try {
      if (opts.signal?.aborted) throw abortReason(opts.signal);
      let shutdown = false;
      for await (const res of src.open(last, follow, liveDeltas, attempt.signal, connected)) {
        outage.ok();
        const kind = res.kind;
        if (kind.case === "event") {
          const ev = kind.value;
          if (ev.offset <= last) continue; // already delivered before a reconnect
          last = ev.offset;
          try {
            await src.onEvent?.(ev);
          } catch (e) {
            throw new NotTheStream(e);
          }
          yield {
            kind: "event",
            offset: Number(ev.offset),
            type: eventType(ev),
            turnId: ev.turnId,
            msg: ev.msg,
            event: ev,
          };
          if (ev.msg.case === "shutdownComplete") shutdown = true;
        } else if (kind.case === "gap") {
          const gap = kind.value;
          if (gap.firstRetainedOffset - 1n <= last) continue;
          const after = last;
          // Resuming after this gap must not report it again.
          last = gap.firstRetainedOffset - 1n;
          yield {
            kind: "gap",
            afterOffset: Number(after),
            firstRetainedOffset: Number(gap.firstRetainedOffset),
          };
        } else if (kind.case === "delta") {
          yield { kind: "delta", delta: kind.value };
        }
      }
      // A stream without follow ends after the retained events; a
      // following one after the session's last event: shutdown_complete,
      // or the last event of a session that is over without one (FAILED),
      // or none when resuming at its end. Any other end is a server going
      // away: resume.
      if (!follow || shutdown) return;
      if (await src.ended?.(last, opts.signal)) return;
      failure = new ConnectError("the event stream ended early", Code.Unavailable);
    } catch (e) {
      if (e instanceof NotTheStream) throw e.error;
      if (opts.signal?.aborted) throw abortReason(opts.signal);
      failure = ConnectError.from(e);
      if (!worthRetrying(failure)) throw failure;
    } finally {
      opts.signal?.removeEventListener("abort", onAbort);
      attempt.abort();
    }
    // A stream that was up a while (an idle follow) failing is a new outage.
    if (connectedAt !== undefined) outage.streamWasUp(Date.now() - connectedAt, limits);
    const delay = outage.next();
    if (delay === undefined) {
      throw giveUp(`events of session ${src.sessionId}`, outage, failure);
    }
    opts.onReconnect?.({
      attempt: outage.attempts,
      afterOffset: Number(last),
      error: failure,
      delayMs: delay,
    });
    await sleep(delay, opts.signal);
  }
}
