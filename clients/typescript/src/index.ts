// Node entry point: gRPC over HTTP/2 (h2c for http:// addresses).
import type { Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { KeelClient } from "./client.js";

export * from "./common.js";

export interface KeelOptions {
  /** session-api's address, e.g. `http://127.0.0.1:50051`. */
  baseUrl?: string;
  /** A transport of your own instead (then baseUrl is not used). */
  transport?: Transport;
  /** Sent as `authorization: Bearer <token>`. */
  token?: string | undefined;
}

/** Keel's SessionService from Node, over gRPC. */
export class Keel extends KeelClient {
  constructor(opts: KeelOptions) {
    super({ transport: opts.transport ?? nodeTransport(opts.baseUrl), token: opts.token });
  }
}

function nodeTransport(baseUrl: string | undefined): Transport {
  if (!baseUrl) throw new TypeError("Keel: pass baseUrl (e.g. http://127.0.0.1:50051) or transport");
  // Pings find a dead connection under a quiet event stream.
  return createGrpcTransport({ baseUrl, pingIntervalMs: 15_000, pingTimeoutMs: 10_000 });
}
