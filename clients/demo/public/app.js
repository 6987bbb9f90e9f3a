// The ringcast chat page: pick a name and a channel, chat, watch the member
// list (with profiles) change live, and see the connection state including
// reconnect attempts. Everything goes through ringcast-client's Agnost API;
// there is no other code talking to the server.
import { createClient } from "ringcast-client";

import { MemberList, displayName } from "/members.js";

const $ = (id) => document.getElementById(id);
const LOG_LINES_MAX = 500;

const config = await loadConfig();
$("server-url").textContent = config.server;

/** @type {import("ringcast-client").RealtimeManager | null} */
let rt = null;
let channel = null;
let myName = null;
let reconnecting = false;
const members = new MemberList();
/** Marks this page's own chat lines (socket ids change on every reconnect). */
const pageId = crypto.randomUUID();

$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("name").value.trim();
  const wanted = $("channel").value.trim();
  if (name && wanted) enter(name, wanted);
});

$("message-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("message").value.trim();
  if (!text || !rt || !channel) return;
  // Echo is on (the library's default), so our own line appears when the
  // server delivers it back: what you see is what the channel got.
  rt.send(channel, "chat", { text, name: myName, sentAt: Date.now(), pageId });
  $("message").value = "";
  $("message").focus();
});

$("profile-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("new-name").value.trim();
  if (!name || !rt) return;
  myName = name;
  rt.updateProfile(profileOf(name), true);
  $("new-name").value = "";
});

$("leave").addEventListener("click", () => {
  if (!rt || !channel) return;
  rt.leave(channel);
  system(`you left #${channel}`);
  channel = null;
  members.clear();
  renderMembers();
  $("room").hidden = true;
  $("join-form").hidden = false;
});

function enter(name, wanted) {
  if (!rt) {
    rt = createClient(config.server, {
      envId: config.envId,
      realtime: { reconnectionDelay: 500, timeout: 5000 },
    }).realtime;
    wire(rt);
    setStatus("connecting", "connecting…");
  }
  myName = name;
  channel = wanted;
  $("log").replaceChildren();
  $("channel-name").textContent = wanted;
  $("join-form").hidden = true;
  $("room").hidden = false;
  rt.updateProfile(profileOf(name));
  rt.join(wanted);
  if (rt.isConnected()) refreshMembers();
  $("message").focus();
}

function wire(realtime) {
  realtime.onConnect(() => {
    const wasReconnecting = reconnecting;
    reconnecting = false;
    setStatus("connected", "connected");
    $("socket-id").textContent = realtime.getSocketId() ?? "";
    system(wasReconnecting ? "reconnected" : "connected");
    if (channel) refreshMembers();
  });
  realtime.onDisconnect((reason) => {
    $("socket-id").textContent = "";
    if (reason === "io client disconnect") {
      setStatus("disconnected", "disconnected");
      return;
    }
    reconnecting = true;
    setStatus("reconnecting", "reconnecting…");
    system(`connection lost (${reason})`);
  });
  realtime.onReconnectAttempt((attempt) => {
    reconnecting = true;
    $("status").dataset.attempt = String(attempt);
    setStatus("reconnecting", `reconnecting… attempt ${attempt}`);
  });
  realtime.onError((error) => {
    // During reconnects every failed attempt reports an error; the attempt
    // counter already says it all.
    if (reconnecting) return;
    const reason = error?.data?.message ?? error?.message ?? String(error);
    setStatus("error", `cannot connect: ${reason}`);
  });

  realtime.onJoin((p) => presence("join", p,
    (name, mine) => (mine ? `you joined as ${name}` : `${name} joined`)));
  realtime.onLeave((p) => presence("leave", p,
    (name, mine) => (mine ? "you left" : `${name} left`)));
  realtime.onUpdate((p) => presence("update", p,
    (name, mine) => (mine ? `you are now ${name}` : `${name} updated their profile`)));
  realtime.on("chat", (p) => {
    if (p.channel === channel) chatLine(p.message);
  });
}

function presence(kind, payload, describe) {
  if (payload.channel !== channel) return;
  const { id, data } = payload.message;
  const before = members.list().find((m) => m.id === id);
  members.event(kind, id, data);
  renderMembers();
  const name = displayName(kind === "leave" && before ? before : { id, data });
  system(describe(name, id === rt.getSocketId()));
}

async function refreshMembers() {
  const asked = channel;
  members.beginSnapshot();
  const { data, errors } = await rt.getMembers(asked);
  members.snapshot(asked === channel ? data : null);
  if (errors) system(`member list unavailable: ${errors.message}`);
  renderMembers();
}

function renderMembers() {
  const myId = rt?.getSocketId();
  const list = members.list();
  $("member-count").textContent = String(list.length);
  $("members").replaceChildren(...list.map((m) => {
    const li = document.createElement("li");
    li.dataset.id = m.id;
    li.title = m.id;
    const dot = document.createElement("span");
    dot.className = "avatar";
    dot.style.background = colorOf(displayName(m));
    dot.textContent = displayName(m).slice(0, 1).toUpperCase();
    const name = document.createElement("span");
    name.className = "member-name";
    name.textContent = displayName(m);
    li.append(dot, name);
    if (m.id === myId) {
      li.classList.add("me");
      const you = document.createElement("span");
      you.className = "you";
      you.textContent = "you";
      li.append(you);
    }
    return li;
  }));
}

function chatLine(message) {
  const text = typeof message?.text === "string" ? message.text.slice(0, 2000) : null;
  if (text === null) return;
  const name = typeof message.name === "string" && message.name ? message.name.slice(0, 40) : "anonymous";
  const li = document.createElement("li");
  li.className = "msg";
  if (message.pageId === pageId) li.classList.add("mine");
  const author = document.createElement("span");
  author.className = "author";
  author.style.color = colorOf(name);
  author.textContent = name;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  const time = document.createElement("time");
  time.textContent = clock(typeof message.sentAt === "number" ? message.sentAt : Date.now());
  li.append(author, body, time);
  append(li);
}

function system(text) {
  const li = document.createElement("li");
  li.className = "system";
  li.textContent = text;
  append(li);
}

function append(li) {
  const log = $("log");
  log.append(li);
  while (log.childElementCount > LOG_LINES_MAX) log.firstElementChild.remove();
  log.scrollTop = log.scrollHeight;
}

function setStatus(state, text) {
  $("status").dataset.state = state;
  document.body.dataset.connection = state;
  $("status-text").textContent = text;
}

function profileOf(name) {
  return { name, color: colorOf(name) };
}

/** A stable color per name. */
function colorOf(name) {
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return `hsl(${hash % 360} 55% 45%)`;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** serve.mjs's /config.json, overridden by ?server= and ?env= in the page URL. */
async function loadConfig() {
  let fromServer = {};
  try {
    const res = await fetch("/config.json", { cache: "no-store" });
    if (res.ok) fromServer = await res.json();
  } catch {
    // Opened without serve.mjs: the defaults and query parameters remain.
  }
  const query = new URLSearchParams(location.search);
  return {
    server: query.get("server") ?? fromServer.server ?? "http://127.0.0.1:4000",
    envId: query.get("env") ?? fromServer.envId ?? "default",
  };
}
