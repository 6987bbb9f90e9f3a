#!/usr/bin/env node
// Serves the ringcast chat demo from loopback: the page (public/), the
// ringcast-client sources (clients/js/src/) and socket.io-client's browser
// ESM bundle (from clients/js/node_modules), wired together with an import
// map, so the browser needs no CDN and nothing is built.
//
//   node clients/demo/serve.mjs [--port 8080] [--host 127.0.0.1]
//                               [--server http://127.0.0.1:4000] [--env default]
//
// `--server` is the ringcast server the page connects to (the page's
// `?server=` query parameter overrides it). Prints one line
// `demo listening on http://HOST:PORT/ server=URL` once it accepts requests
// (`--port 0` picks a free port).
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { isIP } from "node:net";
import { dirname, extname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const demoDir = dirname(fileURLToPath(import.meta.url));
const publicDir = resolve(demoDir, "public");
const libDir = resolve(demoDir, "../js/src");
const socketIoDist = resolve(demoDir, "../js/node_modules/socket.io-client/dist");

const CONTENT_TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".svg": "image/svg+xml",
};

/** The fixed set of files served; nothing else on disk is reachable. */
const ROUTES = {
  "/": resolve(publicDir, "index.html"),
  "/index.html": resolve(publicDir, "index.html"),
  "/app.js": resolve(publicDir, "app.js"),
  "/members.js": resolve(publicDir, "members.js"),
  "/style.css": resolve(publicDir, "style.css"),
  "/favicon.svg": resolve(publicDir, "favicon.svg"),
  "/lib/index.js": resolve(libDir, "index.js"),
  "/lib/errors.js": resolve(libDir, "errors.js"),
  "/vendor/socket.io.esm.min.js": resolve(socketIoDist, "socket.io.esm.min.js"),
  "/vendor/socket.io.esm.min.js.map": resolve(socketIoDist, "socket.io.esm.min.js.map"),
};

function main() {
  const { values } = parseArgs({
    options: {
      port: { type: "string", default: "8080" },
      host: { type: "string", default: "127.0.0.1" },
      server: { type: "string", default: "http://127.0.0.1:4000" },
      env: { type: "string", default: "default" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log("usage: node serve.mjs [--port 8080] [--host 127.0.0.1] " +
      "[--server http://127.0.0.1:4000] [--env default]");
    return;
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`--port: not a port: ${values.port}`);
  if (!isLoopback(values.host)) fail(`--host must be a loopback address (127.0.0.0/8 or ::1), got ${values.host}`);
  try {
    new URL(values.server);
  } catch {
    fail(`--server: not a URL: ${values.server}`);
  }
  const config = JSON.stringify({ server: values.server, envId: values.env });

  const server = createServer(async (req, res) => {
    const path = new URL(req.url ?? "/", "http://localhost").pathname;
    if (req.method !== "GET" && req.method !== "HEAD") {
      return reply(res, 405, "text/plain; charset=utf-8", "only GET\n");
    }
    if (path === "/config.json") {
      return reply(res, 200, CONTENT_TYPES[".json"], config);
    }
    const file = ROUTES[path];
    if (!file) return reply(res, 404, "text/plain; charset=utf-8", "not found\n");
    try {
      const body = await readFile(file);
      reply(res, 200, CONTENT_TYPES[extname(file)] ?? "application/octet-stream", body, req.method === "HEAD");
    } catch (err) {
      const hint = file.startsWith(socketIoDist) ? " (run `npm ci` in clients/js)" : "";
      reply(res, 500, "text/plain; charset=utf-8", `cannot read ${path}: ${err.code ?? err.message}${hint}\n`);
    }
  });
  server.listen(port, values.host, () => {
    const address = server.address();
    const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
    console.log(`demo listening on http://${host}:${address.port}/ server=${values.server}`);
  });
  for (const signal of ["SIGINT", "SIGTERM"]) {
    process.on(signal, () => {
      server.close(() => process.exit(0));
      server.closeAllConnections();
    });
  }
}

function reply(res, status, type, body, headOnly = false) {
  res.writeHead(status, {
    "content-type": type,
    // The page is a development tool: always fresh, never cached.
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
  });
  res.end(headOnly ? undefined : body);
}

function isLoopback(host) {
  if (host === "localhost") return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  return host === "::1";
}

function fail(message) {
  console.error(`serve.mjs: ${message}`);
  process.exit(2);
}

main();
