// Makes docs/console.png, the README's picture of the console: two nodes on
// a real Redis, two and a half minutes of changing traffic (clients arriving
// and leaving on both nodes, two environments, chat in a few channels),
// then a screenshot of the traffic view. Not a test; run it by hand after
// `cargo build --release -p ringcast`:
//
//   cd tests/console && node docshot.mjs [--seconds 150]
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";
import { io } from "socket.io-client";

import { startNode, startRedis, waitForNodes } from "./servers.mjs";

const seconds = Number(process.argv[process.argv.indexOf("--seconds") + 1]) || 150;
const target = resolve(dirname(fileURLToPath(import.meta.url)), "../../docs/console.png");
const token = randomBytes(18).toString("base64url");
const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

const redis = await startRedis();
const args = (name) => ["--redis", redis.url, "--node-id", name, `--master-token=${token}`];
const nodes = [await startNode("docshot-a", args("realtime-1")), await startNode("docshot-b", args("realtime-2"))];
await waitForNodes(nodes, 2);
const shop = await fetch(`${nodes[0].origin}/api/environments/shop`, {
  method: "PUT",
  headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
  body: JSON.stringify({ echo_messages: false }),
});
if (shop.status !== 200) throw new Error(`PUT shop: ${shop.status}`);

const dir = mkdtempSync(join(tmpdir(), "ringcast-docshot-"));
const context = await chromium.launchPersistentContext(dir, {
  executablePath: process.env.CHROMIUM_BIN ?? "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu"],
  viewport: { width: 1280, height: 860 },
});
const page = await context.newPage();
await page.goto(`${nodes[0].origin}/admin/`);
await page.fill("#token", token);
await page.click("#signin-button");
await page.waitForSelector("#app:not([hidden])");

const clients = [];
const channels = ["lobby", "support", "orders", "game-17"];
function connect(i) {
  const node = nodes[i % 2];
  const envId = i % 5 === 0 ? "shop" : "default";
  const socket = io(node.origin, { path: node.path, transports: ["websocket"], auth: { envId } });
  socket.on("connect", () => {
    socket.emit("update", { data: { name: `user-${i}` } });
    socket.emit("join", { channel: channels[i % channels.length] });
  });
  clients.push(socket);
}
const started = Date.now();
let n = 0;
while (Date.now() - started < seconds * 1000) {
  const t = (Date.now() - started) / 1000;
  // Arrivals for the first two thirds, then some leave.
  if (t < seconds * 0.66 && Math.random() < 0.6) connect(n++);
  if (t > seconds * 0.66 && clients.length > 10 && Math.random() < 0.3) clients.shift().close();
  const talkers = Math.min(clients.length, 4 + Math.floor(6 * Math.sin((t / seconds) * Math.PI)));
  for (let k = 0; k < talkers; k++) {
    const socket = clients[(n + k) % clients.length];
    if (socket.connected) socket.emit("message", { channel: channels[k % channels.length], eventName: "chat", message: { t } });
  }
  await sleep(200);
}
// While the traffic still flows.
await page.screenshot({ path: target });
console.log(`wrote ${target}`);
for (const socket of clients) socket.close();
await context.close();
rmSync(dir, { recursive: true, force: true });
for (const node of nodes) await node.stop();
await redis.stop();
