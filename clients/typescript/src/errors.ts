// Errors: every failed call rejects with a ConnectError whose `code` is the
// gRPC status (Code.NotFound, Code.FailedPrecondition, ...). Keel adds a
// keel.v1.ErrorInfo to its statuses; errorInfo() reads it.
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema, type ErrorInfo } from "./gen/keel/v1/common_pb.js";

export { Code, ConnectError };

/** The keel.v1.ErrorInfo a Keel error status carries, if any. */
export function errorInfo(err: unknown): ErrorInfo | undefined {
  if (!(err instanceof ConnectError)) return undefined;
  return err.findDetails(ErrorInfoSchema)[0];
}

/** The status code's name (`"NotFound"`), or undefined for a non-RPC error. */
export function codeName(err: unknown): string | undefined {
  return err instanceof ConnectError ? Code[err.code] : undefined;
}

/**
 * Whether trying the call again later may succeed: what the server says in
 * its ErrorInfo, else true for the codes a broken connection or a
 * restarting server produce (Unavailable, and Unknown / Internal / Aborted
 * without server details: a reset stream, a failed fetch).
 */
export function isRetryable(err: unknown): boolean {
  const ce = err instanceof ConnectError ? err : ConnectError.from(err);
  const info = errorInfo(ce);
  if (info !== undefined) return info.retryable;
  switch (ce.code) {
    case Code.Unavailable:
    case Code.Unknown:
    case Code.Internal:
    case Code.Aborted:
      return true;
    default:
      return false;
  }
}
