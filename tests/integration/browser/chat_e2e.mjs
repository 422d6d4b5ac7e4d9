// Drives examples/chat/index.html in headless Chromium (Debian's /usr/bin/chromium through
// playwright-core). Started by test_chat_browser.py with one JSON argument:
// {pageUrl, adminUrl, pool, backends: {name: address}, screenshotDir, intervalMs}.
//
// alice and bob are two pages of one browser (one cookie: the same backend), carol a page of
// another browser (the other backend). They chat; then all three send a message every
// intervalMs while the backend of alice and bob is drained through the admin API, and go on
// until both pages have been moved (and a little longer). Prints one JSON line with what every
// page saw (window.chat: backends, moves, socket opens and closes, every chat message
// received); test_chat_browser.py judges it. Exits 1 on any failure.
import { chromium } from "playwright-core";

const args = JSON.parse(process.argv[2]);
const WAIT_MS = 60000;
// Messages each page sends after both moves were seen, so some go to the new backend.
const AFTER_MOVE = 10;

async function pageFor(context, user) {
  const page = await context.newPage();
  page.on("console", (m) => console.error(`[${user}] ${m.type()}: ${m.text()}`));
  await page.goto(`${args.pageUrl}&user=${user}`);
  await page.waitForFunction(() => window.chat && window.chat.backends.length > 0, null,
                             { timeout: WAIT_MS });
  return page;
}

const backendOf = (page) => page.evaluate(() => window.chat.backends.at(-1));

// Waits until |page| has received every message of |expected| ([[user, text]]).
const receivedAll = (page, expected) => page.waitForFunction(
    (wanted) => wanted.every(([u, t]) => window.chat.messages.some(
        (m) => m.user === u && m.text === t)),
    expected, { timeout: WAIT_MS, polling: 100 });

// |from| types |text| into the form and sends it; every page of |pages| receives it.
async function say(from, user, text, pages) {
  await from.fill("#text", text);
  await from.click("#send");
  await Promise.all(pages.map((page) => receivedAll(page, [[user, text]])));
}

// Starts |page| sending "USER #N" every intervalMs through the page's own say().
const startBurst = (page) => page.evaluate((ms) => {
  window.burst = { sent: 0 };
  window.burst.timer = setInterval(() => {
    if (window.chat.say(`${document.getElementById("user").textContent} #${window.burst.sent}`)) {
      window.burst.sent++;
    }
  }, ms);
}, args.intervalMs);

// Stops the burst; returns how many messages it sent.
const stopBurst = (page) => page.evaluate(() => {
  clearInterval(window.burst.timer);
  return window.burst.sent;
});

const burstSent = (page) => page.evaluate(() => window.burst.sent);

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  // --no-sandbox: the test may run as root, where Chromium's sandbox cannot start.
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  timeout: 60000,
});
try {
  // One context = one browser profile: alice and bob share the wsgate_backend cookie. carol's
  // browser has none, so least_conn sends her to the backend with fewer sessions.
  const context = await browser.newContext();
  const alice = await pageFor(context, "alice");
  const bob = await pageFor(context, "bob");
  const carol = await pageFor(await browser.newContext(), "carol");
  const pages = { alice, bob, carol };
  const all = Object.values(pages);
  const first = {};
  for (const [user, page] of Object.entries(pages)) first[user] = await backendOf(page);
  const cookies = (await context.cookies()).map((c) => c.name);
  await say(alice, "alice", "hello bob", all);
  await say(bob, "bob", "hi alice", all);
  await say(carol, "carol", "hello from the other backend", all);

  // Every page streams while the backend of alice and bob is drained.
  for (const page of all) await startBurst(page);
  await receivedAll(carol, [0, 1, 2, 3, 4].map((i) => ["alice", `alice #${i}`]));
  const drained = first.alice;
  const response = await fetch(
      `${args.adminUrl}/admin/backends/${args.pool}/${args.backends[drained]}/drain`,
      { method: "POST" });
  if (!response.ok) throw new Error(`drain answered ${response.status}`);
  const moved = (page) => page.waitForFunction(
      (d) => window.chat.moves.length > 0 && window.chat.backends.at(-1) !== d, drained,
      { timeout: WAIT_MS, polling: 50 });
  await Promise.all([moved(alice), moved(bob)]);
  const movedAt = {};
  for (const [user, page] of Object.entries(pages)) movedAt[user] = await burstSent(page);
  await Promise.all(Object.entries(pages).map(([user, page]) => page.waitForFunction(
      (n) => window.burst.sent >= n, movedAt[user] + AFTER_MOVE,
      { timeout: WAIT_MS, polling: 50 })));
  const sent = {};
  for (const [user, page] of Object.entries(pages)) sent[user] = await stopBurst(page);
  const burst = Object.entries(sent).flatMap(
      ([user, n]) => Array.from({ length: n }, (_, i) => [user, `${user} #${i}`]));
  await Promise.all(all.map((page) => receivedAll(page, burst)));

  // And typed messages after the move.
  await say(alice, "alice", "still here?", all);
  await say(bob, "bob", "yes, never left", all);
  await say(carol, "carol", "saw it all", all);

  const screenshots = [];
  for (const [user, page] of Object.entries(pages)) {
    const path = `${args.screenshotDir}/chat-${user}.png`;
    await page.screenshot({ path, fullPage: true });
    screenshots.push(path);
  }
  const seen = {};
  for (const [user, page] of Object.entries(pages)) {
    seen[user] = await page.evaluate(() => {
      const { backends, messages, moves, opens, closes, unsent } = window.chat;
      const notes = [...document.querySelectorAll("#log li.system")].map((i) => i.textContent);
      return { backends, messages, moves, opens, closes, unsent, notes };
    });
  }
  console.log(JSON.stringify({ first, drained, cookies, sent, movedAt, screenshots, seen }));
} finally {
  await browser.close();
}
