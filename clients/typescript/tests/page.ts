// The browser test's page: the client over gRPC-Web creates a session,
// sends a turn and shows each event as a list item, then the final answer
// in #final. Bundled by esbuild into page.bundle.js; the page's query
// string names session-api (addr), the token and the workspace.
import { Keel, type EventItem } from "@keel/client/browser";

const params = new URLSearchParams(location.search);
const list = document.querySelector<HTMLOListElement>("#events")!;
const finalEl = document.querySelector<HTMLElement>("#final")!;
const errorEl = document.querySelector<HTMLElement>("#error")!;

function param(name: string): string {
  const v = params.get(name);
  if (!v) throw new Error(`the page needs ?${name}=`);
  return v;
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
  const keel = new Keel({ baseUrl: param("addr"), token: param("token") });
  const session = await keel.createSession({ cwd: param("workspace"), approvalPolicy: "never" });
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
