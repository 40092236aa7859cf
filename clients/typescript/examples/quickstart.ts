// Quickstart: a session with a tool of our own, a command to approve, and
// the agent's final answer. Run: KEEL_ADDR=http://127.0.0.1:50051
// KEEL_TOKEN=... KEEL_WORKSPACE=/abs/dir node dist/examples/quickstart.js
import { Keel, tool } from "@keel/client";

const env = (name: string) => process.env[name] ?? fail(`${name} is not set`);
function fail(why: string): never {
  console.error(why);
  process.exit(1);
}

const keel = new Keel({ baseUrl: env("KEEL_ADDR"), token: env("KEEL_TOKEN") });

// A dynamic tool: the model calls `crm__lookup`, this function answers.
const lookup = tool<{ q: string }>(
  {
    namespace: "crm",
    name: "lookup",
    description: "Looks a customer up in the CRM.",
    inputSchema: { type: "object", properties: { q: { type: "string" } }, required: ["q"] },
  },
  async ({ q }) => (q === "acme" ? "ACME Corp, 42 seats" : `no customer matches ${q}`),
);

const session = await keel.createSession({
  cwd: env("KEEL_WORKSPACE"),
  approvalPolicy: "untrusted", // commands ask before they run
  tools: [lookup],
});
await session.sendTurn("Write greeting.txt, then look up acme in the CRM.");

// Events come in order, each once, across reconnects; tool calls are
// answered by `lookup` as they come.
for await (const item of session.events({ signal: AbortSignal.timeout(60_000) })) {
  if (item.kind !== "event") continue;
  console.log(`#${item.offset} ${item.type}`);
  const { msg } = item;
  if (msg.case === "execApprovalRequest") {
    console.log(`approved: ${msg.value.command.join(" ")}`);
    await session.approve(msg.value.callId);
  } else if (msg.case === "turnComplete") {
    console.log(`final: ${msg.value.lastAgentMessage}`);
    process.exit(0);
  } else if (msg.case === "turnAborted") {
    fail(`the turn was aborted (reason ${msg.value.reason})`);
  } else if (msg.case === "error") {
    fail(`the turn failed: ${msg.value.message}`);
  }
}
fail("the event stream ended before the turn did");
