// Drives examples/chat/index.html in headless Chromium (Debian's /usr/bin/chromium through
// playwright-core): two pages of one browser chat through wsgate, one backend is drained, both
// pages reconnect to the other backend and chat again. Started by test_chat_browser.py with one
// JSON argument: {pageUrl, adminUrl, pool, backends: {name: address}, screenshotDir}.
// Prints one JSON line with what it saw; exits 1 on any failure.
import { chromium } from "playwright-core";

const args = JSON.parse(process.argv[2]);
const WAIT_MS = 30000;

async function pageFor(context, user) {
  const page = await context.newPage();
  page.on("console", (m) => console.error(`[${user}] ${m.type()}: ${m.text()}`));
  await page.goto(`${args.pageUrl}&user=${user}`);
  await page.waitForFunction(() => window.chat && window.chat.backends.length > 0, null,
                             { timeout: WAIT_MS });
  return page;
}

const backendOf = (page) => page.evaluate(() => window.chat.backends.at(-1));

// |from| says |text|; wait until |to| has received it, and return which backend relayed it.
async function say(from, to, user, text) {
  await from.fill("#text", text);
  await from.click("#send");
  const handle = await to.waitForFunction(
      ([u, t]) => window.chat.messages.find((m) => m.user === u && m.text === t),
      [user, text], { timeout: WAIT_MS });
  return (await handle.jsonValue()).backend;
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  // --no-sandbox: the test may run as root, where Chromium's sandbox cannot start.
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  timeout: 60000,
});
try {
  // One context = one browser profile: both pages share the wsgate_backend cookie.
  const context = await browser.newContext();
  const alice = await pageFor(context, "alice");
  const bob = await pageFor(context, "bob");
  const first = { alice: await backendOf(alice), bob: await backendOf(bob) };
  const cookies = (await context.cookies()).map((c) => c.name);
  const before = [await say(alice, bob, "alice", "hello bob"),
                  await say(bob, alice, "bob", "hi alice")];

  const drained = first.alice;
  const response = await fetch(
      `${args.adminUrl}/admin/backends/${args.pool}/${args.backends[drained]}/drain`,
      { method: "POST" });
  if (!response.ok) throw new Error(`drain answered ${response.status}`);

  const moved = (page) => page.waitForFunction(
      (d) => window.chat.backends.length > 1 && window.chat.backends.at(-1) !== d, drained,
      { timeout: WAIT_MS });
  await Promise.all([moved(alice), moved(bob)]);
  const second = { alice: await backendOf(alice), bob: await backendOf(bob) };
  const after = [await say(alice, bob, "alice", "still here?"),
                 await say(bob, alice, "bob", "yes, on the other backend")];

  const screenshots = [`${args.screenshotDir}/chat-alice.png`, `${args.screenshotDir}/chat-bob.png`];
  await alice.screenshot({ path: screenshots[0], fullPage: true });
  await bob.screenshot({ path: screenshots[1], fullPage: true });
  const closeNotes = await alice.$$eval("#log li.system", (items) => items.map((i) => i.textContent));
  console.log(JSON.stringify({ first, second, drained, cookies, before, after, screenshots,
                               closeNotes }));
} finally {
  await browser.close();
}
