// Node entry point: gRPC over HTTP/2 (h2c for http:// addresses).
import { createGrpcTransport } from "@connectrpc/connect-node";
import { KeelClient, transportFor, type KeelOptions } from "./client.js";

export * from "./common.js";
export type { KeelOptions };

/** Keel's SessionService from Node, over gRPC. */
export class Keel extends KeelClient {
  constructor(opts: KeelOptions) {
    super({
      transport: transportFor(opts, (baseUrl) =>
        // Pings find a dead connection under a quiet event stream.
        createGrpcTransport({ baseUrl, pingIntervalMs: 15_000, pingTimeoutMs: 10_000 }),
      ),
      token: opts.token,
    });
  }
}
