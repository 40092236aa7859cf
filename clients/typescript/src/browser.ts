// Browser entry point: gRPC-Web over fetch (session-api must allow the
// page's origin: --cors-allowed-origin).
import type { Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
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

/** Keel's SessionService from a browser, over gRPC-Web. */
export class Keel extends KeelClient {
  constructor(opts: KeelOptions) {
    super({ transport: opts.transport ?? webTransport(opts.baseUrl), token: opts.token });
  }
}

function webTransport(baseUrl: string | undefined): Transport {
  if (!baseUrl) throw new TypeError("Keel: pass baseUrl (e.g. http://127.0.0.1:50051) or transport");
  return createGrpcWebTransport({ baseUrl });
}
