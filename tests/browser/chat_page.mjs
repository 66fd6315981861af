// Drives the node's chat page in headless Chromium: two pages, each served by
// (and connected to) its own node, log in, chat one-to-one and in a room, and
// see each other's presence.
//
//   node tests/browser/chat_page.mjs URL_A URL_B [TOKEN_A TOKEN_B]
//
// Exits 0 when every step was observed on the pages, 1 (with the step and what
// the page showed) otherwise. Chromium: $CHROMIUM or /usr/bin/chromium.
import { chromium } from "playwright-core";

const [urlA, urlB, tokenA = "", tokenB = ""] = process.argv.slice(2);
if (!urlA || !urlB) {
  console.error("usage: chat_page.mjs URL_A URL_B [TOKEN_A TOKEN_B]");
  process.exit(2);
}
const STEP_TIMEOUT = 10_000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // Root in a sandbox, and a machine with no network beyond loopback.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

let step = "start";
async function check(name, fn) {
  step = name;
  await fn();
  console.log(`ok: ${name}`);
}

const pageErrors = [];
async function open(url) {
  const page = await (await browser.newContext()).newPage();
  page.setDefaultTimeout(STEP_TIMEOUT);
  page.on("pageerror", (e) => pageErrors.push(`${url}: ${e.message}`));
  await page.goto(url);
  return page;
}

async function logIn(page, name, token) {
  await page.fill("#name", name);
  await page.fill("#token", token);
  await page.click("#login-button");
  await page.locator("#me", { hasText: name }).waitFor();
}

async function say(page, to, text) {
  await page.selectOption("#target", to.startsWith("#") ? to.slice(1) : "");
  if (!to.startsWith("#")) await page.fill("#to", to);
  await page.fill("#text", text);
  await page.click("#send-button");
}

const seen = (page, text) => page.locator("#log li", { hasText: text }).first().waitFor();

try {
  const alice = await open(urlA);
  const bob = await open(urlB);
  await check("both pages log in", async () => {
    await logIn(alice, "alice", tokenA);
    await logIn(bob, "bob", tokenB);
  });
  await check("a one-to-one message crosses nodes", async () => {
    await say(alice, "bob", "hello bob, from another node");
    await seen(bob, "hello bob, from another node");
    await say(bob, "alice", "hi alice");
    await seen(alice, "hi alice");
  });
  await check("both join a room and see each other in it", async () => {
    for (const page of [alice, bob]) {
      await page.fill("#room", "lobby");
      await page.click("#join-button");
      await page.locator("#rooms li", { hasText: "#lobby" }).waitFor();
    }
    await alice.locator("#members li", { hasText: "bob" }).waitFor();
    await bob.locator("#members li", { hasText: "alice" }).waitFor();
  });
  await check("a room message reaches every member, the sender included", async () => {
    await say(alice, "#lobby", "hi room");
    await seen(bob, "hi room");
    await seen(alice, "hi room");
  });
  await check("presence: who is online anywhere", async () => {
    await bob.fill("#presence-names", "alice,nobody");
    await bob.click("#presence-button");
    await bob.locator("#presence-answer", { hasText: "alice: online, nobody: offline" }).waitFor();
  });
  await check("a member who leaves is gone from the other page's list", async () => {
    await bob.close();
    await alice.locator("#log li", { hasText: "bob left #lobby" }).waitFor();
    await alice.locator("#members li", { hasText: "bob" }).waitFor({ state: "detached" });
  });
  if (pageErrors.length) throw new Error(`script errors on the pages: ${pageErrors.join("; ")}`);
  console.log("chat page: every step passed");
  await browser.close();
} catch (e) {
  console.error(`chat page: step "${step}" failed: ${e.message.split("\n")[0]}`);
  await browser.close();
  process.exit(1);
}
