// Headless-Chromium test of the browser client: serves a page (on
// KEEL_PAGE_PORT, another origin than session-api, so CORS is exercised)
// that streams a turn over gRPC-Web, drives it with playwright-core and
// checks the DOM. The page gets its settings and the token from a global
// set by an init script, not from its URL. Env: KEEL_ADDR, KEEL_TOKEN, KEEL_WORKSPACE, KEEL_CHROMIUM,
// KEEL_PAGE_PORT, KEEL_SCREENSHOT. Exits non-zero with the reason on any
// failure, including page errors and failed requests.
import { readFileSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const TIMEOUT_MS = 90_000;

function env(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

const addr = env("KEEL_ADDR");
const token = env("KEEL_TOKEN");
const workspace = env("KEEL_WORKSPACE");
const chromiumPath = env("KEEL_CHROMIUM");
const pagePort = Number(env("KEEL_PAGE_PORT"));
const screenshot = env("KEEL_SCREENSHOT");

const bundle = readFileSync(join(dirname(fileURLToPath(import.meta.url)), "page.bundle.js"));
const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<title>keel</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 2em; }
  #events li { font-family: monospace; white-space: pre-wrap; }
  #final { font-weight: bold; }
  #error { color: #b00; }
</style>
</head>
<body>
<h1>Keel in the browser</h1>
<ol id="events"></ol>
<p>Final answer: <span id="final"></span></p>
<p id="error"></p>
<script type="module" src="/page.js"></script>
</body>
</html>
`;

const server = createServer((req, res) => {
  const path = new URL(req.url ?? "/", "http://page").pathname;
  if (path === "/") {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(html);
  } else if (path === "/page.js") {
    res.writeHead(200, { "content-type": "text/javascript; charset=utf-8" }).end(bundle);
  } else {
    res.writeHead(404).end();
  }
});
await new Promise<void>((resolve, reject) => {
  server.once("error", reject);
  server.listen(pagePort, "127.0.0.1", resolve);
});

const userDataDir = mkdtempSync(join(tmpdir(), "keel-chromium-"));
const problems: string[] = [];
let context: Awaited<ReturnType<typeof chromium.launchPersistentContext>> | undefined;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: chromiumPath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1000, height: 700 },
    timeout: TIMEOUT_MS,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console error: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => {
    const why = r.failure()?.errorText ?? "failed";
    // The page stops following the event stream once the turn is done.
    if (why === "net::ERR_ABORTED" && r.url().endsWith("/keel.v1.SessionService/StreamEvents")) return;
    problems.push(`request failed: ${r.method()} ${r.url()}: ${why}`);
  });
  page.on("response", (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.request().method()} ${r.url()}`);
  });

  // The page's settings, the token among them, go in a global that an init
  // script sets before the page's own script runs: never in the URL, where
  // a token would end up in history, logs and Referer headers.
  await page.addInitScript(
    (config: { addr: string; token: string; workspace: string }) => {
      (globalThis as { keelTestConfig?: unknown }).keelTestConfig = config;
    },
    { addr, token, workspace },
  );
  await page.goto(`http://127.0.0.1:${pagePort}/`, { timeout: TIMEOUT_MS });
  await page.waitForSelector("body[data-state]", { timeout: TIMEOUT_MS });
  await page.screenshot({ path: screenshot, fullPage: true });

  const state = await page.getAttribute("body", "data-state");
  const error = (await page.textContent("#error"))?.trim();
  if (state !== "done") throw new Error(`the page failed: ${error || "(no message)"}`);
  const final = (await page.textContent("#final"))?.trim() ?? "";
  if (!final) throw new Error("the page shows no final answer");
  const ended = await page.locator('#events li[data-type="exec_command_end"]').allTextContents();
  if (!ended.some((t) => t.includes("from the browser"))) {
    throw new Error(`no exec_command_end item shows "from the browser": ${JSON.stringify(ended)}`);
  }
  const items = await page.locator("#events li").count();
  if (problems.length > 0) throw new Error(problems.join("\n"));
  console.log(`events shown: ${items}`);
  console.log(`page: ${final}`);
} catch (e) {
  console.error(`browser test failed: ${e instanceof Error ? e.message : String(e)}`);
  for (const p of problems) console.error(p);
  process.exitCode = 1;
} finally {
  await context?.close().catch(() => {});
  server.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
