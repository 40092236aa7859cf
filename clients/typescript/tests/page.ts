// The browser test's page: the client over gRPC-Web creates a session,
// sends a turn and shows each event as a list item, then the final answer
// in #final. Bundled by esbuild into page.bundle.js.
//
// Its settings (session-api's address, the token, the workspace) come from
// the test harness: tests/browser.ts sets `window.keelTestConfig` with an
// init script, before this script runs. They never travel in the page's
// URL, and a real page must not put a token there either: URLs end up in
// the browser's history, in server and proxy logs and in Referer headers.
// A real app gets a short-lived token from its own backend (e.g. a
// same-origin fetch authenticated by the user's session cookie) and keeps
// it in memory.
import { Keel, type EventItem } from "@keel/client/browser";

interface PageConfig {
  addr: string;
  token: string;
  workspace: string;
}

declare global {
  // Set by the test harness before the page's script runs.
  var keelTestConfig: PageConfig | undefined;
}

const list = document.querySelector<HTMLOListElement>("#events")!;
const finalEl = document.querySelector<HTMLElement>("#final")!;
const errorEl = document.querySelector<HTMLElement>("#error")!;

function config(): PageConfig {
  const c = globalThis.keelTestConfig;
  if (!c?.addr || !c.token || !c.workspace) {
    throw new Error("the page needs window.keelTestConfig = { addr, token, workspace }");
  }
  return c;
}

function describe(item: EventItem): string {
  const { msg } = item;
  switch (msg.case) {
    case "userMessage":
    case "agentMessage":
      return msg.value.message;
    case "execCommandBegin":
      return msg.value.command.join(" ");
    case "execCommandEnd":
      return `${msg.value.command.join(" ")} (exit ${msg.value.exitCode}): ${msg.value.aggregatedOutput.trim()}`;
    case "turnComplete":
      return msg.value.lastAgentMessage;
    case "error":
      return msg.value.message;
    default:
      return "";
  }
}

async function main(): Promise<void> {
  const { addr, token, workspace } = config();
  const keel = new Keel({ baseUrl: addr, token });
  const session = await keel.createSession({ cwd: workspace, approvalPolicy: "never" });
  document.title = `keel ${session.id}`;
  await session.sendTurn("Echo something from the browser, then say what you saw.");
  for await (const item of session.events({ signal: AbortSignal.timeout(90_000) })) {
    if (item.kind === "gap") throw new Error(`events up to ${item.firstRetainedOffset} were lost`);
    if (item.kind !== "event") continue;
    const li = document.createElement("li");
    li.dataset.type = item.type;
    li.dataset.offset = String(item.offset);
    const text = describe(item);
    li.textContent = `#${item.offset} ${item.type}${text ? `: ${text}` : ""}`;
    list.append(li);
    if (item.msg.case === "turnComplete") {
      finalEl.textContent = item.msg.value.lastAgentMessage;
      document.body.dataset.state = "done";
      return;
    }
    if (item.msg.case === "turnAborted" || item.msg.case === "error") {
      throw new Error(`the turn ended with ${li.textContent}`);
    }
  }
  throw new Error("the event stream ended before the turn did");
}

main().catch((e: unknown) => {
  errorEl.textContent = e instanceof Error ? e.message : String(e);
  document.body.dataset.state = "failed";
  console.error("keel page failed:", e);
});
