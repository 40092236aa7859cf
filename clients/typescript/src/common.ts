// What both entry points export.
export {
  KeelClient,
  Session,
  type KeelClientOptions,
  type CreateSessionOptions,
  type SendTurnOptions,
  type ApprovalPolicyName,
  type SandboxName,
  type SessionInfo,
} from "./client.js";
export {
  eventType,
  type EventType,
  type EventItem,
  type GapItem,
  type DeltaItem,
  type StreamItem,
  type EventsOptions,
  type ReconnectInfo,
} from "./events.js";
export { tool, type Tool, type ToolSpec, type ToolFn } from "./tools.js";
export { Code, ConnectError, codeName, errorInfo, isRetryable } from "./errors.js";
export {
  ApprovalPolicy,
  SandboxMode,
  type ErrorInfo,
} from "./gen/keel/v1/common_pb.js";
export {
  ReviewDecisionKind,
  SessionStatus,
  PendingRequestKind,
  ExecCommandStatus,
  TurnAbortReason,
  LiveDeltaKind,
  SessionService,
  type Event,
  type LiveDelta,
} from "./gen/keel/v1/session_pb.js";
/** Every generated keel.v1 session message, enum and schema. */
export * as pb from "./gen/keel/v1/session_pb.js";
