// Browser entry point: gRPC-Web over fetch (session-api must allow the
// page's origin: --cors-allowed-origin).
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { KeelClient, transportFor, type KeelOptions } from "./client.js";

export * from "./common.js";
export type { KeelOptions };

/** Keel's SessionService from a browser, over gRPC-Web. */
export class Keel extends KeelClient {
  constructor(opts: KeelOptions) {
    super({
      transport: transportFor(opts, (baseUrl) => createGrpcWebTransport({ baseUrl })),
      token: opts.token,
    });
  }
}
