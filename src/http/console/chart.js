// A line chart over a fixed time window, drawn as plain SVG: a few grid
// lines with round values, time ticks every minute, one polyline per
// series. Gaps (a sample with no value) break the line.

import { clear, svg } from "./dom.js";

const PAD = { left: 46, right: 10, top: 8, bottom: 20 };

/** The smallest "round" number (1, 2, 5 × 10^k) at least `x`. */
export function niceCeil(x) {
  if (!(x > 0)) return 0.25;
  const power = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 5, 10]) {
    if (m * power >= x) return m * power;
  }
  return 10 * power;
}

/** Short axis label: 1.2k, 3M. */
export function shortNumber(n) {
  if (n >= 1e6) return `${+(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${+(n / 1e3).toFixed(1)}k`;
  return `${+n.toFixed(2)}`;
}

/**
 * Draws `series` ([{values: [[timeMs, value|null], ...], className}]) into
 * `element` (an <svg>) for the window [now - windowMs, now]; `integers`:
 * the values are counts (grid lines on whole numbers).
 */
export function drawChart(element, series, { now, windowMs, integers = false }) {
  const width = element.clientWidth || 600;
  const height = element.clientHeight || 190;
  element.setAttribute("viewBox", `0 0 ${width} ${height}`);
  clear(element);
  const plotW = width - PAD.left - PAD.right;
  const plotH = height - PAD.top - PAD.bottom;
  const start = now - windowMs;
  let max = 0;
  for (const s of series) {
    for (const [t, v] of s.values) if (t >= start && v !== null && v > max) max = v;
  }
  // Four grid steps of a round size (whole numbers for counts).
  const step = Math.max(niceCeil((max * 1.1) / 4), integers ? 1 : 0);
  const top = step * 4;
  const x = (t) => PAD.left + ((t - start) / windowMs) * plotW;
  const y = (v) => PAD.top + plotH - (v / top) * plotH;

  for (let i = 0; i <= 4; i++) {
    const value = step * i;
    const yy = y(value);
    element.append(svg("line", { class: i === 0 ? "axis" : "grid-line", x1: PAD.left, x2: width - PAD.right, y1: yy, y2: yy }));
    element.append(svg("text", { class: "tick", x: PAD.left - 6, y: yy + 3, "text-anchor": "end", text: shortNumber(value) }));
  }
  for (let minutes = Math.floor(windowMs / 60_000); minutes >= 0; minutes--) {
    const xx = x(now - minutes * 60_000);
    const label = minutes === 0 ? "now" : `-${minutes}m`;
    element.append(svg("text", { class: "tick", x: xx, y: height - 5, "text-anchor": minutes === 0 ? "end" : "middle", text: label }));
  }
  for (const s of series) {
    let run = [];
    const flush = () => {
      if (run.length > 1) element.append(svg("polyline", { class: `series ${s.className}`, points: run.join(" ") }));
      else if (run.length === 1) {
        const [cx, cy] = run[0].split(",");
        element.append(svg("circle", { class: `series ${s.className}`, cx, cy, r: 1.5 }));
      }
      run = [];
    };
    for (const [t, v] of s.values) {
      if (t < start) continue;
      if (v === null) {
        flush();
        continue;
      }
      run.push(`${x(t).toFixed(1)},${y(v).toFixed(1)}`);
    }
    flush();
  }
}
