// Prints each durable event of one turn as a JSON line
// {"offset": N, "type": "exec_command_begin"} on stdout; the stream resumes
// by itself if session-api restarts meanwhile, and each reconnect is
// reported on stderr ("reconnecting after offset N ..."). Env: KEEL_ADDR,
// KEEL_TOKEN, KEEL_WORKSPACE.
import { Keel } from "@keel/client";

function env(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

const keel = new Keel({ baseUrl: env("KEEL_ADDR"), token: env("KEEL_TOKEN") });
const session = await keel.createSession({ cwd: env("KEEL_WORKSPACE"), approvalPolicy: "never" });
await session.sendTurn("Run the four steps.");

const events = session.events({
  signal: AbortSignal.timeout(100_000),
  onReconnect: ({ attempt, afterOffset, error }) =>
    console.error(`reconnecting after offset ${afterOffset} (attempt ${attempt}): ${error.message}`),
});
for await (const item of events) {
  if (item.kind === "gap") {
    console.error(`events ${item.afterOffset + 1}..${item.firstRetainedOffset - 1} are no longer retained`);
  }
  if (item.kind !== "event") continue;
  console.log(JSON.stringify({ offset: item.offset, type: item.type }));
  if (item.type === "turn_complete") process.exit(0);
  if (item.msg.case === "turnAborted" || item.msg.case === "error") {
    console.error(`the turn failed: ${item.type}`);
    process.exit(1);
  }
}
console.error("the event stream ended before the turn did");
process.exit(1);
