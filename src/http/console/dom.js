// Building the page without HTML strings: every element is made with
// createElement and every text goes in as textContent, so nothing a client
// sent (channel names, profiles) can become markup. The page's CSP requires
// Trusted Types, which would refuse any HTML-string sink anyway.

const SVG_NS = "http://www.w3.org/2000/svg";

/** The element matching `selector` (it must exist). */
export function $(selector, root = document) {
  const element = root.querySelector(selector);
  if (!element) throw new Error(`no element ${selector}`);
  return element;
}

/**
 * An element: `h("td", {class: "num", text: "3"})`, children after the
 * attributes. `on*` attributes become listeners, `dataset` sets data-*,
 * `text` the text content; anything else is an attribute (false/null: left
 * out, true: present).
 */
export function h(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element, like {@link h}. */
export function svg(tag, attrs = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

function build(element, attrs, children) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "text") element.textContent = String(value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** Removes every child of `element`. */
export function clear(element) {
  element.replaceChildren();
  return element;
}

/** `n` with thousands separators; "–" for null. */
export function count(n) {
  return n === null || n === undefined ? "–" : Math.round(n).toLocaleString("en-US");
}

/** A rate: one decimal below 10, none above; "–" for null. */
export function rate(n) {
  if (n === null || n === undefined) return "–";
  return n < 10 ? n.toFixed(1) : Math.round(n).toLocaleString("en-US");
}

/** Bytes as B / KiB / MiB. */
export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
