// ringcast console: sign-in, live traffic, environment settings, channels
// and members. Plain modules, no framework, no network beyond this origin.
//
// The token lives in sessionStorage (this tab only) and goes out as a
// bearer header on every API call; a 401 signs the page out.

import { drawChart } from "./chart.js";
import { $, bytes, clear, count, h, rate } from "./dom.js";
import { EnvEditor, clearFieldErrors, inputFor, showFieldError } from "./settings.js";

const TOKEN_KEY = "ringcast.console.token";
/** The traffic is asked for this often. */
const POLL_MS = 1_000;
/** The page keeps (and charts) this much history. */
const HISTORY_MS = 5 * 60_000;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  session: null,
  tab: "traffic",
  /** [{t, connections, in, out, disconnects: {reason: total}}], oldest first. */
  history: [],
  stats: null,
  pollTimer: null,
  environments: [],
  selectedEnv: null,
  dirty: false,
  channelsNext: null,
  membersOf: null,
};

// ---------------------------------------------------------------------------
// The API

class SignedOut extends Error {}

/** Calls the console API; resolves with {status, body}. A 401 signs out. */
async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
  });
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = { error: text };
  }
  if (response.status === 401 && state.session) {
    signOut("Your token is no longer accepted; sign in again.");
    throw new SignedOut();
  }
  return { status: response.status, body: json };
}

// ---------------------------------------------------------------------------
// Sign-in

async function trySignIn(token) {
  state.token = token;
  const { status, body } = await api("GET", "/api/admin/session");
  if (status !== 200) {
    state.token = null;
    const why = status === 401 ? "That token is not accepted." : body?.error ?? `The server answered ${status}.`;
    return why;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  state.session = body;
  return null;
}

function showSignIn(message = "") {
  $("#app").hidden = true;
  $("#signin").hidden = false;
  $("#signin-error").textContent = message;
  $("#token").value = "";
  $("#token").focus();
}

function signOut(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.session = null;
  clearTimeout(state.pollTimer);
  state.pollTimer = null;
  state.history = [];
  showSignIn(message);
}

async function enterApp() {
  $("#signin").hidden = true;
  $("#app").hidden = false;
  const s = state.session;
  $("#node-info").textContent = `${s.role} · node ${s.node}${s.cluster ? " (cluster)" : ""} · ${s.shards} shards · v${s.version}`;
  selectTab(location.hash.slice(1) || state.tab, false);
  poll();
  await loadEnvironments();
}

// ---------------------------------------------------------------------------
// Tabs and keys

const TABS = ["traffic", "environments", "channels"];

function selectTab(tab, focus = true) {
  if (!TABS.includes(tab)) tab = "traffic";
  state.tab = tab;
  for (const name of TABS) {
    $(`#tab-${name}`).hidden = name !== tab;
    const button = $(`#tab-button-${name}`);
    button.setAttribute("aria-selected", String(name === tab));
    button.tabIndex = name === tab ? 0 : -1;
  }
  if (location.hash !== `#${tab}`) history.replaceState(null, "", `#${tab}`);
  if (tab === "traffic") drawCharts();
  if (tab === "channels" && focus) $("#channel-filter").focus();
  if (tab === "environments") renderEnvList();
}

function onKey(event) {
  if (!state.session || event.ctrlKey || event.metaKey || event.altKey) return;
  const typing = event.target.closest("input, textarea, select");
  if (event.key === "Escape" && typing) {
    event.target.blur();
    return;
  }
  if (typing) return;
  const index = ["1", "2", "3"].indexOf(event.key);
  if (index >= 0) {
    event.preventDefault();
    selectTab(TABS[index]);
    $(`#tab-button-${TABS[index]}`).focus();
  } else if (event.key === "/" && state.tab === "channels") {
    event.preventDefault();
    $("#channel-filter").focus();
  } else if (event.key === "r" && state.tab === "channels") {
    event.preventDefault();
    listChannels();
  } else if ((event.key === "ArrowRight" || event.key === "ArrowLeft") && event.target.getAttribute("role") === "tab") {
    const next = TABS[(TABS.indexOf(state.tab) + (event.key === "ArrowRight" ? 1 : TABS.length - 1)) % TABS.length];
    selectTab(next);
    $(`#tab-button-${next}`).focus();
  }
}

// ---------------------------------------------------------------------------
// Traffic

async function poll() {
  clearTimeout(state.pollTimer);
  if (!state.session) return;
  try {
    const { status, body } = await api("GET", "/api/stats");
    if (status === 200) {
      record(body);
      $("#live").dataset.state = "ok";
      $("#live").title = `Updated ${new Date().toLocaleTimeString()}`;
    } else {
      $("#live").dataset.state = "error";
      $("#live").title = body?.error ?? `HTTP ${status}`;
    }
  } catch (error) {
    if (error instanceof SignedOut) return;
    $("#live").dataset.state = "error";
    $("#live").title = `No answer: ${error.message}`;
  }
  if (state.session) state.pollTimer = setTimeout(poll, POLL_MS);
}

function record(stats) {
  state.stats = stats;
  const now = Date.now();
  state.history.push({
    t: now,
    connections: stats.connections,
    in: stats.messages_in_per_s,
    out: stats.deliveries_out_per_s,
    disconnects: stats.disconnects,
  });
  while (state.history.length > 0 && state.history[0].t < now - HISTORY_MS) state.history.shift();
  renderTraffic();
}

function drawCharts() {
  if (state.tab !== "traffic") return;
  const now = Date.now();
  const points = (key) => state.history.map((p) => [p.t, p[key] ?? null]);
  drawChart($("#chart-connections"), [{ values: points("connections"), className: "s0" }], { now, windowMs: HISTORY_MS, integers: true });
  drawChart($("#chart-rates"), [
    { values: points("in"), className: "s0" },
    { values: points("out"), className: "s1" },
  ], { now, windowMs: HISTORY_MS });
}

function cell(text, className) {
  return h("td", { class: className, text });
}

function renderTraffic() {
  const s = state.stats;
  $("#stat-connections").textContent = count(s.connections);
  $("#stat-connections-note").textContent = `${count(s.masters)} master · ${count(s.sockets)} sockets`;
  $("#stat-in").textContent = rate(s.messages_in_per_s);
  $("#stat-out").textContent = rate(s.deliveries_out_per_s);
  const reporting = s.nodes.filter((n) => !n.stale).length;
  $("#stat-nodes").textContent = count(s.cluster.enabled ? reporting : 1);
  $("#stat-cluster").textContent = s.cluster.enabled
    ? `cluster ${s.cluster.up ? "up" : "down"} · ${s.cluster.nodes} alive`
    : "running alone";
  const warnings = [];
  if (s.cluster.enabled && !s.cluster.up) warnings.push("Redis is out of reach: this node's numbers only.");
  else if (s.cluster.enabled && reporting < s.cluster.nodes) warnings.push(`Waiting for ${s.cluster.nodes - reporting} node(s) to report.`);
  if (s.nodes.some((n) => n.missing_shards > 0)) warnings.push("A shard did not answer in time: some numbers are missing.");
  $("#traffic-warning").hidden = warnings.length === 0;
  $("#traffic-warning").textContent = warnings.join(" ");

  const envs = clear($("#env-table tbody"));
  for (const [id, e] of Object.entries(s.environments)) {
    envs.append(h("tr", {}, cell(id), cell(count(e.connections), "num"), cell(count(e.channels), "num")));
  }
  const nodes = clear($("#node-table tbody"));
  const shards = clear($("#shard-table tbody"));
  for (const n of s.nodes) {
    const stateText = n.stale ? `stale ${Math.round(n.age_ms / 1000)} s` : "reporting";
    nodes.append(h("tr", { class: [n.this_node ? "current" : "", n.stale ? "stale" : ""].join(" ").trim() || null },
      h("td", {}, n.node, n.this_node ? h("span", { class: "hint", text: " (this node)" }) : null),
      h("td", {}, h("span", { class: `badge ${n.stale ? "down" : "up"}`, text: stateText })),
      cell(count(n.connections), "num"), cell(rate(n.messages_in_per_s), "num"),
      cell(rate(n.deliveries_out_per_s), "num"), cell(count(n.shards.length), "num")));
    for (const r of n.shards) {
      shards.append(h("tr", { class: n.stale ? "stale" : null },
        cell(n.node), cell(r.shard, "num"), cell(count(r.connections), "num"), cell(count(r.sockets), "num"),
        cell(count(r.channels), "num"), cell(rate(r.messages_in_per_s), "num"),
        cell(rate(r.deliveries_out_per_s), "num"), cell(bytes(r.queued_bytes), "num")));
    }
  }
  // Reasons that never happened are left out.
  const oldest = state.history[0]?.disconnects ?? {};
  const reasons = clear($("#disconnect-table tbody"));
  for (const [reason, total] of Object.entries(s.disconnects)) {
    if (total === 0) continue;
    const recent = total - (oldest[reason] ?? total);
    reasons.append(h("tr", { dataset: { reason } },
      cell(reason.replaceAll("_", " ")), cell(count(recent), "num"), cell(count(total), "num")));
  }
  if (reasons.children.length === 0) reasons.append(h("tr", {}, h("td", { colspan: 3, class: "hint", text: "No connection has ended yet." })));
  drawCharts();
}

// ---------------------------------------------------------------------------
// Environments

let editor = null;

async function loadEnvironments(selectId) {
  const { status, body } = await api("GET", "/api/admin/environments");
  if (status !== 200) return;
  state.environments = body.environments;
  const select = clear($("#channel-env"));
  for (const env of state.environments) select.append(h("option", { value: env.id, text: env.id }));
  const keep = selectId ?? state.selectedEnv?.id ?? state.environments[0]?.id;
  const chosen = state.environments.find((e) => e.id === keep) ?? state.environments[0];
  if (chosen && !state.dirty) openEnv(chosen);
  renderEnvList();
}

function renderEnvList() {
  const list = clear($("#env-list"));
  for (const env of state.environments) {
    const tags = [];
    if (env.enabled === false) tags.push("off");
    if (env.suspended) tags.push("suspended");
    if (env.api_key_required) tags.push("key");
    if (env.session_required) tags.push("session");
    const current = state.selectedEnv?.id === env.id;
    list.append(h("li", {}, h("button", {
      type: "button",
      "aria-current": current ? "true" : null,
      dataset: { env: env.id },
      onclick: () => {
        if (state.dirty && state.selectedEnv?.id !== env.id) {
          $("#env-status").textContent = "Unsaved changes: save or revert them first.";
          $("#env-status").className = "status bad";
          return;
        }
        openEnv(env);
      },
    }, h("span", { text: env.id }), h("span", { class: `tag ${tags.includes("off") || tags.includes("suspended") ? "off" : ""}`, text: tags.join(" · ") }))));
  }
}

function setDirty(dirty) {
  state.dirty = dirty;
  $("#env-dirty").hidden = !dirty;
}

function openEnv(env) {
  state.selectedEnv = env;
  $("#env-form").hidden = false;
  editor.load(env);
  setDirty(false);
  $("#env-status").textContent = "";
  $("#env-status").className = "status";
  renderEnvList();
}

async function saveEnv(event) {
  event.preventDefault();
  const status = $("#env-status");
  const body = editor.read();
  if (!body) {
    status.textContent = "Fix the marked fields first.";
    status.className = "status bad";
    return;
  }
  $("#env-save").disabled = true;
  status.textContent = "Saving…";
  status.className = "status";
  try {
    const id = body.id;
    const answer = await api("PUT", `/api/admin/environments/${encodeURIComponent(id)}`, body);
    if (answer.status === 200) {
      const at = new Date().toLocaleTimeString();
      const index = state.environments.findIndex((e) => e.id === id);
      if (index >= 0) state.environments[index] = answer.body;
      else state.environments.push(answer.body);
      state.environments.sort((a, b) => (a.id < b.id ? -1 : 1));
      openEnv(answer.body);
      await loadEnvironments(id);
      status.textContent = `Saved at ${at}: applied live on every shard${state.session.cluster ? " and node" : ""}.`;
      status.className = "status ok";
    } else if (answer.body?.code === "settings_unconfirmed") {
      // Stored, and applied where confirmed; some shard or node was late.
      await loadEnvironments(id);
      status.textContent = `Saved, but not confirmed everywhere in time: ${answer.body.error}`;
      status.className = "status bad";
    } else {
      const input = answer.body?.field ? inputFor($("#env-form"), answer.body.field) : null;
      if (input) {
        showFieldError(input, answer.body.error.replace(/^environment `[^`]*`: /, ""));
        input.focus();
      }
      status.textContent = `Not saved: ${answer.body?.error ?? `the server answered ${answer.status}`}`;
      status.className = "status bad";
    }
  } catch (error) {
    if (!(error instanceof SignedOut)) {
      status.textContent = `Not saved: ${error.message}`;
      status.className = "status bad";
    }
  } finally {
    $("#env-save").disabled = false;
  }
}

function newEnv(event) {
  event.preventDefault();
  const input = $("#new-env-id");
  const id = input.value.trim();
  const error = $("#new-env-error");
  if (!id || id.includes("/")) {
    error.textContent = "An id is required, without '/'.";
    return;
  }
  if (state.dirty) {
    error.textContent = "Save or revert the open environment first.";
    return;
  }
  if (state.environments.some((e) => e.id === id)) {
    error.textContent = `'${id}' exists already.`;
    return;
  }
  error.textContent = "";
  input.value = "";
  const env = { id, enabled: true, suspended: false, echo_messages: false, api_key_required: false, api_keys: [], session_required: false, session_secret_set: false, rate_limits: [] };
  openEnv(env);
  setDirty(true);
  $("#env-status").textContent = "New environment: not stored until saved.";
}

// ---------------------------------------------------------------------------
// Channels and members

async function listChannels(event, more = false) {
  event?.preventDefault();
  const envId = $("#channel-env").value;
  const status = $("#channel-status");
  if (!envId) return;
  const request = { envId, filter: $("#channel-filter").value || undefined };
  if (more) request.cursor = state.channelsNext;
  status.textContent = "Loading…";
  try {
    const { status: code, body } = await api("POST", "/api/admin/channels", request);
    if (code !== 200) {
      status.textContent = body?.error ?? `HTTP ${code}`;
      return;
    }
    const table = $("#channel-table tbody");
    if (!more) clear(table);
    for (const c of body.channels) {
      const open = () => showMembers(envId, c.name);
      table.append(h("tr", { dataset: { channel: c.name }, onclick: open },
        h("td", {}, h("button", { type: "button", class: "link", text: c.name, onclick: (e) => { e.stopPropagation(); open(); } })),
        cell(count(c.members), "num")));
    }
    state.channelsNext = body.next;
    $("#channels-more").hidden = !body.next;
    const shown = table.children.length;
    const notes = [];
    if (body.cluster_unreachable) notes.push("Redis is out of reach: this node's channels only");
    else if (!body.complete && !body.next) notes.push(`the busiest ${body.limit} are shown`);
    status.textContent = `${shown} channel${shown === 1 ? "" : "s"}${notes.length ? ` (${notes.join("; ")})` : ""}`;
  } catch (error) {
    if (!(error instanceof SignedOut)) status.textContent = `No answer: ${error.message}`;
  }
}

async function showMembers(envId, channel) {
  state.membersOf = { envId, channel };
  $("#members-channel").textContent = channel;
  $("#members-refresh").disabled = false;
  $("#publish-channel").value = channel;
  for (const row of $("#channel-table tbody").children) row.classList.toggle("current", row.dataset.channel === channel);
  const status = $("#members-status");
  status.textContent = "Loading…";
  const { status: code, body } = await api("POST", "/api/admin/members", { envId, channel });
  const table = clear($("#member-table tbody"));
  if (code !== 200) {
    status.textContent = body?.error ?? `HTTP ${code}`;
    return;
  }
  for (const m of body.members) {
    const profile = m.data === null ? "no profile" : JSON.stringify(m.data, null, 2);
    table.append(h("tr", { dataset: { id: m.id } },
      h("td", { class: "id", text: m.id }),
      cell(shardOf(m.id), "num"),
      h("td", {}, h("pre", { class: "profile", text: profile.length > 2000 ? `${profile.slice(0, 2000)}…` : profile })),
      h("td", {}, disconnectButton(m.id))));
  }
  const n = body.members.length;
  status.textContent = `${n} member${n === 1 ? "" : "s"}${body.complete ? "" : " (incomplete: a shard or the cluster did not answer)"}`;
}

/** The shard a socket id names (its first byte; see shards/src/conn_id.rs). */
function shardOf(id) {
  try {
    return atob(id.slice(0, 4).replaceAll("-", "+").replaceAll("_", "/")).charCodeAt(0);
  } catch {
    return "?";
  }
}

/** A button that asks once more before it disconnects `id`. */
function disconnectButton(id) {
  let armed = null;
  const button = h("button", { type: "button", class: "danger", text: "Disconnect", "aria-label": `Disconnect ${id}` });
  button.addEventListener("click", async () => {
    if (!armed) {
      button.classList.add("armed");
      button.textContent = "Confirm";
      armed = setTimeout(() => {
        armed = null;
        button.classList.remove("armed");
        button.textContent = "Disconnect";
      }, 4_000);
      return;
    }
    clearTimeout(armed);
    button.disabled = true;
    const { status, body } = await api("POST", "/api/admin/disconnect", { id });
    const row = button.closest("tr");
    if (status === 200 || status === 202) {
      button.textContent = status === 200 ? "Disconnected" : "Sent to its node";
      row?.classList.add("stale");
    } else {
      button.textContent = body?.error ?? `HTTP ${status}`;
    }
  });
  return button;
}

async function publish(event) {
  event.preventDefault();
  const status = $("#publish-status");
  const form = $("#publish-form");
  clearFieldErrors(form);
  let message;
  try {
    message = JSON.parse($("#publish-message").value);
  } catch (error) {
    const area = $("#publish-message");
    area.setAttribute("aria-invalid", "true");
    $("#publish-message-error").textContent = `Not JSON: ${error.message}`;
    return;
  }
  const envId = $("#channel-env").value;
  const body = { envId, channel: $("#publish-channel").value, eventName: $("#publish-event").value, message };
  const answer = await api("POST", "/api/admin/publish", body);
  if (answer.status === 200) {
    status.textContent = `Published to ${body.channel} at ${new Date().toLocaleTimeString()}.`;
    status.className = "status ok";
  } else {
    status.textContent = answer.body?.error ?? `HTTP ${answer.status}`;
    status.className = "status bad";
  }
}

// ---------------------------------------------------------------------------
// Start

function start() {
  editor = new EnvEditor($("#env-form"), () => setDirty(true));
  $("#signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("#signin-button");
    button.disabled = true;
    try {
      const why = await trySignIn($("#token").value.trim());
      if (why) showSignIn(why);
      else await enterApp();
    } catch (error) {
      showSignIn(`No answer from the server: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  });
  $("#signout").addEventListener("click", () => signOut());
  for (const name of TABS) $(`#tab-button-${name}`).addEventListener("click", () => selectTab(name));
  document.addEventListener("keydown", onKey);
  window.addEventListener("resize", drawCharts);
  $("#env-form").addEventListener("submit", saveEnv);
  $("#env-revert").addEventListener("click", () => state.selectedEnv && openEnv(state.selectedEnv));
  $("#new-env-form").addEventListener("submit", newEnv);
  $("#channel-search").addEventListener("submit", (event) => listChannels(event));
  $("#channel-env").addEventListener("change", () => listChannels());
  $("#channels-more").addEventListener("click", () => listChannels(null, true));
  $("#members-refresh").addEventListener("click", () => state.membersOf && showMembers(state.membersOf.envId, state.membersOf.channel));
  $("#publish-form").addEventListener("submit", publish);
  if (state.token) {
    trySignIn(state.token)
      .then((why) => (why ? signOut() : enterApp()))
      .catch((error) => showSignIn(`No answer from the server: ${error.message}`));
  } else {
    showSignIn();
  }
}

start();
