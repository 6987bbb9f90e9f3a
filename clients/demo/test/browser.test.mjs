// The chat page end to end in a real browser: Debian's Chromium driven by
// playwright-core (never a downloaded browser), two pages chatting through
// a real ringcast server, member lists compared with each other and with the
// server's own list (HTTP API), a profile update, a server restart on the
// same port (reconnect indicator, then the chat resumes) and a leave; and a
// page without WebSocket that still chats, over HTTP long-polling.
// Screenshots go to clients/artifacts/screenshots/.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

import { createServerClient } from "../../js/src/server.js";
import { artifactsDir, startServer } from "../../js/test/helpers/server.mjs";

const demoDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const screenshotsDir = resolve(artifactsDir, "screenshots");
const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
/** Bound of every single wait on the page. */
const WAIT_MS = 10_000;
const DEMO_START_TIMEOUT_MS = 10_000;

/** Starts serve.mjs on a free loopback port; resolves with its origin and a stop(). */
async function startDemo(ringcastOrigin) {
  const child = spawn(process.execPath,
    [resolve(demoDir, "serve.mjs"), "--port", "0", "--server", ringcastOrigin],
    { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const origin = await new Promise((resolveStart, rejectStart) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      rejectStart(new Error(`serve.mjs printed no listening line in ${DEMO_START_TIMEOUT_MS} ms: ${output}`));
    }, DEMO_START_TIMEOUT_MS);
    const onData = (chunk) => {
      output += chunk;
      const m = /demo listening on (http:\/\/127\.0\.0\.1:\d+)\//.exec(output);
      if (m) {
        clearTimeout(timer);
        resolveStart(m[1]);
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("exit", (code) => {
      clearTimeout(timer);
      rejectStart(new Error(`serve.mjs exited with ${code}: ${output}`));
    });
  });
  return {
    origin,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.on("exit", r));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

describe("chat page in headless Chromium", { timeout: 120_000 }, () => {
  let server;
  let demo;
  let context;
  let userDataDir;
  let backend;
  const pageErrors = [];

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: run scripts/setup.sh (apt-get install chromium)`);
    mkdirSync(screenshotsDir, { recursive: true });
    server = await startServer();
    backend = createServerClient(server.origin, { masterToken: server.masterToken });
    demo = await startDemo(server.origin);
    userDataDir = mkdtempSync(join(tmpdir(), "ringcast-chromium-"));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1100, height: 700 },
      timeout: 30_000,
    });
  });

  after(async () => {
    await context?.close();
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
    await demo?.stop();
    await server?.stop();
  });

  async function openPage(label, { disableWebSocket = false } = {}) {
    const page = await context.newPage();
    if (disableWebSocket) {
      await page.addInitScript(() => {
        delete window.WebSocket;
      });
    }
    page.setDefaultTimeout(WAIT_MS);
    page.on("pageerror", (err) => pageErrors.push(`${label}: ${err.message}`));
    page.on("console", (msg) => {
      // Chromium logs each failed WebSocket attempt while the server is
      // down, and each failed long-polling request of the fallback; those
      // are expected. Anything else is a bug in the page.
      const expected = /^WebSocket connection to .* failed|^Failed to load resource: net::ERR_CONNECTION_REFUSED$/;
      if (msg.type() === "error" && !expected.test(msg.text())) {
        pageErrors.push(`${label} console: ${msg.text()}`);
      }
    });
    await page.goto(`${demo.origin}/`);
    return page;
  }

  async function joinAs(page, name, channel) {
    await page.fill("#name", name);
    await page.fill("#channel", channel);
    await page.click("#join");
    await page.waitForSelector('#status[data-state="connected"]');
  }

  /** `[{id, name}]` of a page's member list, sorted by id. */
  async function memberList(page) {
    const items = await page.$$eval("#members li", (lis) =>
      lis.map((li) => ({ id: li.dataset.id, name: li.querySelector(".member-name").textContent })));
    return items.sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  async function waitForMembers(page, names) {
    const wanted = [...names].sort();
    await page.waitForFunction((w) => {
      const got = [...document.querySelectorAll("#members li .member-name")].map((e) => e.textContent).sort();
      return JSON.stringify(got) === JSON.stringify(w);
    }, wanted, { timeout: WAIT_MS });
    return memberList(page);
  }

  async function say(page, text) {
    await page.fill("#message", text);
    await page.click("#send");
  }

  async function waitForLine(page, text) {
    await page.waitForFunction((t) =>
      [...document.querySelectorAll("#log .msg .text")].some((e) => e.textContent === t), text,
    { timeout: WAIT_MS });
  }

  async function chatLines(page) {
    return page.$$eval("#log .msg", (lis) => lis.map((li) =>
      `${li.querySelector(".author").textContent}: ${li.querySelector(".text").textContent}`));
  }

  async function shot(page, name) {
    await page.screenshot({ path: resolve(screenshotsDir, `${name}.png`), fullPage: true });
  }

  test("two pages chat, share one member list, survive a server restart, and leave", async () => {
    const ann = await openPage("ann");
    const bob = await openPage("bob");
    assert.equal(await ann.textContent("#server-url"), server.origin, "the page got its server from serve.mjs");

    // --- join: both member lists show both, with the server's ids -------------
    await joinAs(ann, "Ann", "lobby");
    await joinAs(bob, "Bob", "lobby");
    const annSees = await waitForMembers(ann, ["Ann", "Bob"]);
    const bobSees = await waitForMembers(bob, ["Ann", "Bob"]);
    assert.deepEqual(annSees, bobSees, "both pages list the same members");
    const fromServer = (await backend.getMembers("lobby")).sort((a, b) => (a.id < b.id ? -1 : 1));
    assert.deepEqual(annSees, fromServer.map((m) => ({ id: m.id, name: m.data.name })),
      "the pages' lists are the server's member list");
    const annId = await ann.textContent("#socket-id");
    assert.match(annId, /^[A-Za-z0-9_-]{20}$/);
    assert.equal(await ann.getAttribute("#members li.me", "data-id"), annId);

    // --- chat both ways ---------------------------------------------------------------
    await say(ann, "Hello from Ann");
    await waitForLine(bob, "Hello from Ann");
    await say(bob, "Hi Ann, Bob here");
    await waitForLine(ann, "Hi Ann, Bob here");
    await waitForLine(bob, "Hi Ann, Bob here");
    assert.deepEqual(await chatLines(ann), ["Ann: Hello from Ann", "Bob: Hi Ann, Bob here"]);
    assert.deepEqual(await chatLines(bob), await chatLines(ann));
    // Text is text: markup in a message is not interpreted.
    await say(bob, "<b>not bold</b>");
    await waitForLine(ann, "<b>not bold</b>");
    assert.equal(await ann.locator("#log b").count(), 0);

    // --- a profile update reaches the other page's member list live ----------------
    await bob.fill("#new-name", "Bobby");
    await bob.click("#rename");
    await waitForMembers(ann, ["Ann", "Bobby"]);
    await waitForMembers(bob, ["Ann", "Bobby"]);
    await shot(ann, "1-ann-chatting");
    await shot(bob, "1-bob-chatting");

    // --- server restart: indicator shows reconnect attempts, then chat resumes ----
    await server.stop();
    for (const page of [ann, bob]) {
      await page.waitForSelector('#status[data-state="reconnecting"]');
      await page.waitForFunction(() => Number(document.querySelector("#status").dataset.attempt) >= 1,
        null, { timeout: WAIT_MS });
      assert.match(await page.textContent("#status-text"), /^reconnecting… attempt \d+$/);
    }
    await shot(ann, "2-ann-reconnecting");
    await server.start();
    for (const page of [ann, bob]) await page.waitForSelector('#status[data-state="connected"]');
    const annAfter = await waitForMembers(ann, ["Ann", "Bobby"]);
    const bobAfter = await waitForMembers(bob, ["Ann", "Bobby"]);
    assert.deepEqual(annAfter, bobAfter);
    assert.ok(!annAfter.some((m) => m.id === annId), "new socket ids after the restart");
    const fromServerAfter = (await backend.getMembers("lobby")).map((m) => m.id).sort();
    assert.deepEqual(annAfter.map((m) => m.id), fromServerAfter);
    await say(ann, "Back after the restart");
    await waitForLine(bob, "Back after the restart");
    await say(bob, "Welcome back");
    await waitForLine(ann, "Welcome back");
    await shot(ann, "3-ann-after-restart");
    await shot(bob, "3-bob-after-restart");

    // --- leave: the other page's list shrinks ----------------------------------------
    await bob.click("#leave");
    await waitForMembers(ann, ["Ann"]);
    assert.equal(await bob.isVisible("#join-form"), true);
    await shot(ann, "4-ann-alone");

    assert.deepEqual(pageErrors, [], "no script errors on either page");
  });

  test("a page without WebSocket chats over HTTP long-polling with a page that has it", async () => {
    const pollingBefore = await pollingRequests();
    // A browser (or a proxy) without WebSocket: the page's scripts never see it.
    const noWs = await openPage("carol", { disableWebSocket: true });
    const withWs = await openPage("dave");
    assert.equal(await noWs.evaluate(() => typeof window.WebSocket), "undefined");
    await joinAs(noWs, "Carol", "no-ws");
    await joinAs(withWs, "Dave", "no-ws");
    await waitForMembers(noWs, ["Carol", "Dave"]);
    await waitForMembers(withWs, ["Carol", "Dave"]);
    await say(noWs, "Carol over polling");
    await waitForLine(withWs, "Carol over polling");
    await say(withWs, "Dave over WebSocket");
    await waitForLine(noWs, "Dave over WebSocket");
    assert.deepEqual(await chatLines(noWs), ["Carol: Carol over polling", "Dave: Dave over WebSocket"]);
    assert.ok(await pollingRequests() > pollingBefore, "the server served long-polling requests");
    await shot(noWs, "5-carol-over-polling");
    await noWs.click("#leave");
    await waitForMembers(withWs, ["Dave"]);
    assert.deepEqual(pageErrors, [], "no script errors on either page");
    await noWs.close();
    await withWs.close();
  });

  /** The server's count of long-polling requests, from /metrics. */
  async function pollingRequests() {
    const text = await (await fetch(`${server.origin}/metrics`)).text();
    return text.split("\n")
      .filter((line) => line.startsWith("ringcast_polling_requests_total"))
      .reduce((sum, line) => sum + Number(line.split(" ").pop()), 0);
  }
});
