// The environment form: one environment's settings (as GET
// /api/admin/environments gives them) into form fields, and the fields back
// into the body of a PUT. The session secret is write-only: the server says
// only whether one is set; a blank field keeps it, a new value replaces it,
// "remove" sends null.
//
// Every input carries data-field with the settings path it edits
// (`api_keys[1].ips`), so an error the server names by path
// (`api_keys[1].ips[0]`) is shown next to that input.

import { $, clear, h } from "./dom.js";

/** `"2027-01-31T00:00:00Z"` (or Unix seconds) → the value of a UTC datetime-local input. */
export function toLocalInput(expiresAt) {
  if (expiresAt === undefined || expiresAt === null) return "";
  const date = typeof expiresAt === "number" ? new Date(expiresAt * 1000) : new Date(expiresAt);
  if (Number.isNaN(date.getTime())) return "";
  return date.toISOString().slice(0, 16);
}

/** A datetime-local value read as UTC → RFC 3339 (`undefined` when empty). */
export function fromLocalInput(value) {
  if (!value) return undefined;
  return `${value.length === 16 ? `${value}:00` : value}Z`;
}

/** `"all"` or a list → the textarea's lines. */
export function listToText(rule) {
  return rule === "all" || rule === undefined ? "" : rule.join("\n");
}

/** Textarea lines → a list (blank lines dropped). */
export function textToList(text) {
  return text.split("\n").map((line) => line.trim()).filter((line) => line.length > 0);
}

/** A random API key (`pk_` + 24 url-safe characters). */
export function randomKey() {
  const bytes = new Uint8Array(18);
  crypto.getRandomValues(bytes);
  const text = btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_");
  return `pk_${text}`;
}

/**
 * The most specific input for a server error path: `api_keys[1].ips[0]`
 * goes to the input of `api_keys[1].ips`, `rate_limits[0].limit` to its own.
 */
export function inputFor(form, path) {
  let candidate = path;
  for (;;) {
    const input = form.querySelector(`[data-field="${CSS.escape(candidate)}"]`);
    if (input) return input;
    const cut = Math.max(candidate.lastIndexOf("."), candidate.lastIndexOf("["));
    if (cut <= 0) return null;
    candidate = candidate.slice(0, cut);
  }
}

/** Shows `message` under `input` and marks it invalid. */
export function showFieldError(input, message) {
  input.setAttribute("aria-invalid", "true");
  const holder = input.closest(".field") ?? input.closest(".row") ?? input.parentElement;
  const slot = holder.querySelector(".field-error");
  if (slot) slot.textContent = message;
}

/** Clears every field error of `form`. */
export function clearFieldErrors(form) {
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  for (const slot of form.querySelectorAll(".field-error")) slot.textContent = "";
}

function field(label, input, extraClass = "") {
  return h("div", { class: `field ${extraClass}` }, h("label", { text: label }), input, h("span", { class: "field-error" }));
}

function rowButtons(onUp, onDown, onRemove, what) {
  return h("div", { class: "row-actions" },
    onUp && h("button", { type: "button", class: "icon", title: `Move ${what} up`, "aria-label": `Move ${what} up`, onclick: onUp, text: "↑" }),
    onDown && h("button", { type: "button", class: "icon", title: `Move ${what} down`, "aria-label": `Move ${what} down`, onclick: onDown, text: "↓" }),
    h("button", { type: "button", class: "icon danger", title: `Remove ${what}`, "aria-label": `Remove ${what}`, onclick: onRemove, text: "✕" }));
}

/**
 * The editor of one environment. `onChange` is called on every edit (the
 * page shows "unsaved changes").
 */
export class EnvEditor {
  constructor(form, onChange) {
    this.form = form;
    this.onChange = onChange;
    this.env = null;
    this.keys = [];
    this.limits = [];
    form.addEventListener("input", () => this.onChange());
    $("#add-key", form).addEventListener("click", () => {
      this.readRows();
      this.keys.push({ key: randomKey(), allow_realtime: true, origins: "all", ips: "all" });
      this.renderKeys();
      this.onChange();
      const inputs = this.form.querySelectorAll('#key-rows input[data-role="key"]');
      inputs[inputs.length - 1]?.focus();
    });
    $("#add-limit", form).addEventListener("click", () => {
      this.readRows();
      this.limits.push({ limit: 20, window_s: 1, message: "Too many requests, please try again later" });
      this.renderLimits();
      this.onChange();
    });
  }

  /** Shows `env` (a redacted environment) in the form. */
  load(env) {
    this.env = env;
    this.keys = structuredClone(env.api_keys ?? []);
    this.limits = structuredClone(env.rate_limits ?? []);
    const f = this.form;
    $("#env-title", f).textContent = env.id;
    $("#env-enabled", f).checked = env.enabled !== false;
    $("#env-suspended", f).checked = !!env.suspended;
    $("#env-echo", f).checked = !!env.echo_messages;
    $("#env-api-key-required", f).checked = !!env.api_key_required;
    $("#env-session-required", f).checked = !!env.session_required;
    const secret = $("#env-session-secret", f);
    secret.value = "";
    secret.placeholder = env.session_secret_set ? "set: leave blank to keep it" : "not set";
    $("#env-clear-secret", f).checked = false;
    $("#env-clear-secret", f).disabled = !env.session_secret_set;
    clearFieldErrors(f);
    this.renderKeys();
    this.renderLimits();
  }

  renderKeys() {
    const holder = clear($("#key-rows", this.form));
    if (this.keys.length === 0) holder.append(h("p", { class: "hint", text: "No API keys." }));
    this.keys.forEach((key, i) => {
      const path = `api_keys[${i}]`;
      const allOrigins = key.origins === "all" || key.origins === undefined;
      const allIps = key.ips === "all" || key.ips === undefined;
      const origins = h("textarea", { "data-field": `${path}.origins`, "data-role": "origins", rows: 2, placeholder: "https://app.example.com\n*.example.com", disabled: allOrigins });
      origins.value = listToText(key.origins);
      const ips = h("textarea", { "data-field": `${path}.ips`, "data-role": "ips", rows: 2, placeholder: "203.0.113.0/24\n2001:db8::/32", disabled: allIps });
      ips.value = listToText(key.ips);
      const keyInput = h("input", { "data-field": `${path}.key`, "data-role": "key", spellcheck: "false", "aria-label": `API key ${i + 1}` });
      keyInput.value = key.key;
      const expires = h("input", { type: "datetime-local", "data-field": `${path}.expires_at`, "data-role": "expires", "aria-label": `Expiry of API key ${i + 1} (UTC)` });
      expires.value = toLocalInput(key.expires_at);
      const toggle = (area) => (event) => { area.disabled = event.target.checked; };
      holder.append(h("div", { class: "row key-row", dataset: { index: i } },
        h("div", { class: "row-line" },
          field("Key", keyInput),
          h("label", { class: "check" }, h("input", { type: "checkbox", "data-field": `${path}.allow_realtime`, "data-role": "allow", checked: key.allow_realtime !== false }), "allow realtime"),
          field("Expires (UTC, empty: never)", expires, "narrow-wide"),
          rowButtons(null, null, () => { this.readRows(); this.keys.splice(i, 1); this.renderKeys(); this.onChange(); }, `API key ${i + 1}`)),
        h("div", { class: "row-line top" },
          h("div", { class: "field" },
            h("label", { class: "check small" }, h("input", { type: "checkbox", "data-role": "all-origins", checked: allOrigins, onchange: toggle(origins) }), "any origin"),
            origins, h("span", { class: "field-error" })),
          h("div", { class: "field" },
            h("label", { class: "check small" }, h("input", { type: "checkbox", "data-role": "all-ips", checked: allIps, onchange: toggle(ips) }), "any IP"),
            ips, h("span", { class: "field-error" })))));
    });
  }

  renderLimits() {
    const holder = clear($("#limit-rows", this.form));
    if (this.limits.length === 0) holder.append(h("p", { class: "hint", text: "No rate limiters." }));
    const move = (from, to) => () => {
      this.readRows();
      const [item] = this.limits.splice(from, 1);
      this.limits.splice(to, 0, item);
      this.renderLimits();
      this.onChange();
    };
    this.limits.forEach((limit, i) => {
      const path = `rate_limits[${i}]`;
      const number = (name, value, label) => {
        const input = h("input", { type: "number", min: 1, step: 1, "data-field": `${path}.${name}`, "data-role": name, "aria-label": `${label} of limiter ${i + 1}` });
        input.value = String(value);
        return input;
      };
      const message = h("input", { "data-field": `${path}.message`, "data-role": "message", "aria-label": `Message of limiter ${i + 1}` });
      message.value = limit.message ?? "";
      holder.append(h("div", { class: "row limit-row", dataset: { index: i } },
        h("div", { class: "row-line" },
          field("Events", number("limit", limit.limit, "Events"), "narrow"),
          field("per seconds", number("window_s", limit.window_s, "Window"), "narrow"),
          field("Message clients get", message),
          rowButtons(i > 0 ? move(i, i - 1) : null, i < this.limits.length - 1 ? move(i, i + 1) : null,
            () => { this.readRows(); this.limits.splice(i, 1); this.renderLimits(); this.onChange(); }, `limiter ${i + 1}`))));
    });
  }

  /** Reads the key and limiter rows back into this.keys / this.limits. */
  readRows() {
    this.keys = [...this.form.querySelectorAll(".key-row")].map((row) => {
      const get = (role) => row.querySelector(`[data-role="${role}"]`);
      const key = {
        key: get("key").value.trim(),
        allow_realtime: get("allow").checked,
        origins: get("all-origins").checked ? "all" : textToList(get("origins").value),
        ips: get("all-ips").checked ? "all" : textToList(get("ips").value),
      };
      const expires = fromLocalInput(get("expires").value);
      if (expires) key.expires_at = expires;
      return key;
    });
    this.limits = [...this.form.querySelectorAll(".limit-row")].map((row) => {
      const get = (role) => row.querySelector(`[data-role="${role}"]`);
      return { limit: Number(get("limit").value), window_s: Number(get("window_s").value), message: get("message").value };
    });
  }

  /**
   * The PUT body, or `null` after marking the fields the page can tell are
   * wrong without asking the server.
   */
  read() {
    const f = this.form;
    clearFieldErrors(f);
    this.readRows();
    const body = {
      id: this.env.id,
      enabled: $("#env-enabled", f).checked,
      suspended: $("#env-suspended", f).checked,
      echo_messages: $("#env-echo", f).checked,
      api_key_required: $("#env-api-key-required", f).checked,
      session_required: $("#env-session-required", f).checked,
      api_keys: this.keys,
      rate_limits: this.limits,
    };
    const secret = $("#env-session-secret", f).value;
    if ($("#env-clear-secret", f).checked) body.session_secret = null;
    else if (secret !== "") body.session_secret = secret;
    let ok = true;
    const fail = (path, message) => {
      const input = inputFor(f, path);
      if (input) showFieldError(input, message);
      ok = false;
    };
    this.limits.forEach((limit, i) => {
      if (!Number.isInteger(limit.limit) || limit.limit < 1 || limit.limit > 65535) fail(`rate_limits[${i}].limit`, "a whole number from 1 to 65535");
      if (!Number.isInteger(limit.window_s) || limit.window_s < 1) fail(`rate_limits[${i}].window_s`, "a whole number of seconds, at least 1");
    });
    this.keys.forEach((key, i) => {
      if (key.key === "") fail(`api_keys[${i}].key`, "the key is empty");
    });
    return ok ? body : null;
  }
}
