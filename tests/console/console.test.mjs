// The web console end to end in a real browser: Debian's Chromium driven by
// playwright-core (never a downloaded browser), the page served by a real
// ringcast node of a two-node cluster on a real redis-server, and the real
// socket.io-client as the app's clients. Every wait is for something on the
// page or a client event, with a bound. Screenshots go to
// tests/console/artifacts/screenshots/ (ignored by git).
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";

import { chromium } from "playwright-core";
import { io } from "socket.io-client";

import { artifactsDir, startNode, startRedis, waitForNodes } from "./servers.mjs";

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
/** Bound of every wait on the page (the traffic is sampled once a second). */
const WAIT_MS = 15_000;
/** Bound of every wait for a socket.io-client event. */
const CLIENT_WAIT_MS = 10_000;

/** Resolves with the first of `events` that `socket` emits: [name, ...args]. */
function next(socket, events) {
  return new Promise((resolveEvent, rejectEvent) => {
    const timer = setTimeout(() => rejectEvent(new Error(`none of ${events} within ${CLIENT_WAIT_MS} ms`)), CLIENT_WAIT_MS);
    for (const name of events) {
      socket.once(name, (...args) => {
        clearTimeout(timer);
        resolveEvent([name, ...args]);
      });
    }
  });
}

describe("web console in headless Chromium", { timeout: 180_000 }, () => {
  const masterToken = randomBytes(18).toString("base64url");
  const adminToken = randomBytes(18).toString("base64url");
  const clients = [];
  const pageErrors = [];
  let redis;
  let nodeA;
  let nodeB;
  let context;
  let userDataDir;
  let page;

  /** A socket.io-client on `node` (no reconnection: each test says what it expects). */
  function client(node, auth = {}) {
    const socket = io(node.origin, { path: node.path, transports: ["websocket"], auth, reconnection: false });
    clients.push(socket);
    return socket;
  }

  async function connected(node, auth) {
    const socket = client(node, auth);
    const [name, error] = await next(socket, ["connect", "connect_error"]);
    assert.equal(name, "connect", `refused: ${error?.message}`);
    return socket;
  }

  async function shot(name) {
    await page.screenshot({ path: resolve(screenshotsDir, `${name}.png`), fullPage: true });
  }

  async function statText(id) {
    return (await page.textContent(id)).trim();
  }

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: run scripts/setup.sh (apt-get install chromium)`);
    mkdirSync(screenshotsDir, { recursive: true });
    redis = await startRedis();
    const args = (name) => ["--redis", redis.url, "--node-id", name,
      `--master-token=${masterToken}`, `--admin-token=${adminToken}`];
    nodeA = await startNode("node-a", args("node-a"));
    nodeB = await startNode("node-b", args("node-b"));
    await waitForNodes([nodeA, nodeB], 2);
    userDataDir = mkdtempSync(join(tmpdir(), "ringcast-console-chromium-"));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1280, height: 900 },
      timeout: 30_000,
    });
    page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    page.on("pageerror", (err) => pageErrors.push(err.message));
    page.on("console", (msg) => {
      // The browser logs each refused request: the wrong token's 401 and
      // the bad IP rule's 400 are provoked here.
      if (msg.type() === "error" && !/status of 40[01]/.test(msg.text())) pageErrors.push(`console: ${msg.text()}`);
    });
    await page.goto(`${nodeA.origin}/admin/`);
  });

  after(async () => {
    for (const socket of clients) socket.close();
    await context?.close();
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
    await nodeA?.stop();
    await nodeB?.stop();
    await redis?.stop();
  });

  test("a wrong token is refused and nothing is kept", async () => {
    await page.fill("#token", "not-the-token");
    await page.press("#token", "Enter");
    await page.waitForFunction(() => document.querySelector("#signin-error").textContent.includes("not accepted"));
    assert.equal(await page.isVisible("#app"), false);
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    await shot("1-wrong-token");
  });

  test("signing in with the admin token shows this node of the cluster", async () => {
    await page.fill("#token", adminToken);
    await page.click("#signin-button");
    await page.waitForSelector("#app:not([hidden])");
    assert.match(await page.textContent("#node-info"), /^admin · node node-a \(cluster\) · 2 shards/);
    assert.equal(await page.evaluate(() => sessionStorage.getItem("ringcast.console.token")), adminToken);
    assert.ok(!page.url().includes(adminToken), "the token is never in a URL");
    // Both nodes report (node b starts sampling once it sees a console watching).
    await page.waitForFunction(() => document.querySelectorAll("#node-table tbody tr").length === 2);
    assert.deepEqual(await page.$$eval("#node-table tbody tr td:first-child", (tds) => tds.map((td) => td.textContent)),
      ["node-a (this node)", "node-b"]);
  });

  test("the connection count moves when clients connect, on either node", async () => {
    await page.waitForFunction(() => document.querySelector("#stat-connections").textContent === "0");
    const a1 = await connected(nodeA);
    await connected(nodeB);
    await connected(nodeB);
    await page.waitForFunction(() => document.querySelector("#stat-connections").textContent === "3");
    const perNode = await page.$$eval("#node-table tbody tr td:nth-child(3)", (tds) => tds.map((td) => td.textContent));
    assert.deepEqual(perNode, ["1", "2"]);
    const defaultRow = await page.$$eval("#env-table tbody tr", (rows) =>
      rows.map((r) => [...r.children].map((td) => td.textContent)));
    assert.deepEqual(defaultRow, [["default", "3", "0"]]);
    a1.close();
    await page.waitForFunction(() => document.querySelector("#stat-connections").textContent === "2");
    // Some traffic for the chart and the rates.
    const talker = await connected(nodeA);
    const listener = await connected(nodeB);
    for (const socket of [talker, listener]) {
      socket.emit("join", { channel: "chatter", echo: true });
      await next(socket, ["channel:join"]);
    }
    // Messages keep coming until the page shows a rate: a rate covers the
    // second before a sample, and the page may skip a sample.
    let i = 0;
    const ticker = setInterval(() => talker.emit("message", { channel: "chatter", eventName: "tick", message: i++ }), 50);
    try {
      await page.waitForFunction(() => Number(document.querySelector("#stat-in").textContent) > 0
        && Number(document.querySelector("#stat-out").textContent) > 0);
      await shot("2-traffic");
    } finally {
      clearInterval(ticker);
    }
  });

  test("API key required: a client without a key is refused, one with the new key connects", async () => {
    await page.keyboard.press("2");
    await page.waitForSelector("#tab-environments:not([hidden])");
    await page.click('#env-list button[data-env="default"]');
    await page.check("#env-api-key-required");
    await page.click("#env-save");
    await page.waitForFunction(() => document.querySelector("#env-status").textContent.startsWith("Saved"));
    // Applied on both nodes: a keyless client is refused on either.
    for (const node of [nodeA, nodeB]) {
      const [name, error] = await next(client(node), ["connect", "connect_error"]);
      assert.equal(name, "connect_error");
      assert.match(error.message, /Missing API key/i);
      assert.equal(error.data.code, "missing_api_key");
    }

    // A key with a bad IP rule: the error is shown next to that field.
    await page.click("#add-key");
    await page.fill('#key-rows .key-row input[data-role="key"]', "pk_console_test");
    await page.uncheck('#key-rows .key-row input[data-role="all-ips"]');
    await page.fill('#key-rows .key-row textarea[data-role="ips"]', "127.0.0.1\nnot-an-ip");
    await page.click("#env-save");
    const ipError = page.locator('#key-rows .key-row textarea[data-role="ips"] + .field-error');
    await ipError.waitFor();
    assert.equal(await ipError.textContent(), "`not-an-ip` is not an IP address or CIDR range");
    assert.equal(await page.getAttribute('#key-rows textarea[data-role="ips"]', "aria-invalid"), "true");
    await shot("3-settings-field-error");

    await page.fill('#key-rows .key-row textarea[data-role="ips"]', "127.0.0.1");
    await page.click("#env-save");
    await page.waitForFunction(() => document.querySelector("#env-status").textContent.startsWith("Saved"));
    assert.equal(await ipError.textContent(), "");
    for (const node of [nodeA, nodeB]) await connected(node, { apiKey: "pk_console_test" });
    const [name, error] = await next(client(nodeB, { apiKey: "pk_other" }), ["connect", "connect_error"]);
    assert.deepEqual([name, error.data.code], ["connect_error", "invalid_api_key"]);
    await shot("4-settings-saved");
  });

  test("the channel browser finds a joined client's profile; a test message and a disconnect reach it", async () => {
    const zed = await connected(nodeB, { apiKey: "pk_console_test" });
    zed.emit("update", { data: { name: "Zed", role: "tester" } });
    zed.emit("join", { channel: "lobby", echo: true });
    await next(zed, ["channel:join"]);

    await page.keyboard.press("3");
    await page.waitForSelector("#tab-channels:not([hidden])");
    await page.fill("#channel-filter", "lob");
    await page.press("#channel-filter", "Enter");
    const row = page.locator('#channel-table tbody tr[data-channel="lobby"]');
    await row.waitFor();
    assert.deepEqual(await row.locator("td").allTextContents(), ["lobby", "1"]);
    await row.click();
    const member = page.locator(`#member-table tbody tr[data-id="${zed.id}"]`);
    await member.waitFor();
    const profile = JSON.parse(await member.locator("pre.profile").textContent());
    assert.deepEqual(profile, { name: "Zed", role: "tester" });
    await shot("5-channel-members");

    // A test message from node a's console reaches the client on node b.
    assert.equal(await page.inputValue("#publish-channel"), "lobby");
    await page.fill("#publish-message", '{"text": "hi Zed"}');
    const received = next(zed, ["console:test"]);
    await page.click("#publish-button");
    const [, payload] = await received;
    assert.deepEqual(payload, { channel: "lobby", message: { text: "hi Zed" } });

    // Disconnect asks once more, then the client hears "io server disconnect".
    const gone = next(zed, ["disconnect"]);
    const button = member.locator("button.danger");
    await button.click();
    assert.equal(await button.textContent(), "Confirm");
    await button.click();
    const [, reason] = await gone;
    assert.equal(reason, "io server disconnect");
    await page.waitForFunction(() => /^(Disconnected|Sent to its node)$/.test(
      document.querySelector("#member-table tbody button.danger").textContent));
    // Node b removes the member from Redis once its client is gone.
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      await page.click("#members-refresh");
      await page.waitForFunction(() => /^\d+ members?/.test(document.querySelector("#members-status").textContent));
      if ((await page.textContent("#members-status")) === "0 members") break;
      assert.ok(Date.now() < deadline, "the member list never emptied");
      await page.waitForTimeout(100);
    }
  });

  test("the traffic view after all that, and no script errors", async () => {
    await page.keyboard.press("1");
    await page.waitForSelector("#tab-traffic:not([hidden])");
    await page.waitForFunction(() => document.querySelector('#disconnect-table tr[data-reason="server_disconnect"]') !== null);
    assert.match(await statText("#stat-nodes"), /^2$/);
    await shot("6-traffic-after");
    await page.click("#signout");
    await page.waitForSelector("#signin:not([hidden])");
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    assert.deepEqual(pageErrors, [], "no script errors");
  });
});
