// Small charts drawn as inline SVG (no chart library: three shapes are all the console needs).
// Labels are SVG text nodes (textContent), never markup.

const NS = "http://www.w3.org/2000/svg";
export const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

export function svg(tag, attrs, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function frame(title, width, height) {
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img" });
  root.append(svg("title", {}, title));
  return root;
}

function niceMax(values) {
  const max = Math.max(0, ...values.filter((v) => Number.isFinite(v)));
  return max > 0 ? max * 1.1 : 1;
}

// Lines over time: series = [{name, values: [number|null]}]; a threshold line when given.
export function lineChart(title, series, { threshold = null, max = null, unit = "" } = {}) {
  const W = 360, H = 150, L = 42, R = 8, T = 20, B = 18;
  const root = frame(title, W, H);
  const all = series.flatMap((s) => s.values).filter((v) => v !== null);
  const top = max ?? niceMax(threshold === null ? all : [...all, threshold]);
  const n = Math.max(1, ...series.map((s) => s.values.length));
  const x = (i) => L + (n === 1 ? 0 : (i * (W - L - R)) / (n - 1));
  const y = (v) => T + (H - T - B) * (1 - v / top);
  root.append(svg("text", { x: 4, y: 13, class: "chart-title" }, title));
  root.append(svg("line", { x1: L, y1: y(0), x2: W - R, y2: y(0), class: "axis" }));
  root.append(svg("text", { x: L - 4, y: y(top) + 4, class: "tick", "text-anchor": "end" }, `${+top.toPrecision(3)}${unit}`));
  root.append(svg("text", { x: L - 4, y: y(0), class: "tick", "text-anchor": "end" }, `0${unit}`));
  if (threshold !== null) {
    root.append(svg("line", { x1: L, y1: y(threshold), x2: W - R, y2: y(threshold), class: "threshold" }));
  }
  series.forEach((s, k) => {
    const points = s.values.map((v, i) => (v === null ? null : `${x(i).toFixed(1)},${y(v).toFixed(1)}`));
    const runs = [[]];
    for (const p of points) {
      if (p === null) runs.push([]);
      else runs[runs.length - 1].push(p);
    }
    for (const run of runs) {
      if (run.length === 1) {
        const [cx, cy] = run[0].split(",");
        root.append(svg("circle", { cx, cy, r: 2.5, fill: COLOURS[k % COLOURS.length] }));
      } else if (run.length > 1) {
        root.append(svg("polyline", { points: run.join(" "), fill: "none", stroke: COLOURS[k % COLOURS.length], "stroke-width": 2 }));
      }
    }
  });
  return withLegend(root, series.map((s) => s.name));
}

// Shares over time: one stacked bar per window; shares = [{label: share}] (empty windows blank).
export function stackedBars(title, shares, labels) {
  const W = 360, H = 150, L = 42, R = 8, T = 20, B = 18;
  const root = frame(title, W, H);
  root.append(svg("text", { x: 4, y: 13, class: "chart-title" }, title));
  const n = Math.max(1, shares.length);
  const step = (W - L - R) / n;
  shares.forEach((window, i) => {
    let base = 0;
    labels.forEach((label, k) => {
      const share = window[label] ?? 0;
      if (share <= 0) return;
      const h = share * (H - T - B);
      const rect = svg("rect", {
        x: (L + i * step).toFixed(1), y: (H - B - base - h).toFixed(1),
        width: Math.max(1, step - 1).toFixed(1), height: h.toFixed(1), fill: COLOURS[k % COLOURS.length],
      });
      rect.append(svg("title", {}, `${label}: ${(share * 100).toFixed(1)} %`));
      root.append(rect);
      base += h;
    });
  });
  root.append(svg("text", { x: L - 4, y: T + 4, class: "tick", "text-anchor": "end" }, "100 %"));
  root.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
  return withLegend(root, labels);
}

// The compression trade-off: each variant's latency (x) against its accuracy metric (y).
export function scatter(title, points, xName, yName) {
  const W = 360, H = 190, L = 46, R = 10, T = 20, B = 30;
  const root = frame(title, W, H);
  root.append(svg("text", { x: 4, y: 13, class: "chart-title" }, title));
  const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = (v) => L + (x1 === x0 ? (W - L - R) / 2 : ((v - x0) * (W - L - R)) / (x1 - x0));
  const sy = (v) => T + (y1 === y0 ? (H - T - B) / 2 : (H - T - B) * (1 - (v - y0) / (y1 - y0)));
  root.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
  root.append(svg("text", { x: W - R, y: H - 4, class: "tick", "text-anchor": "end" }, xName));
  root.append(svg("text", { x: L, y: H - 4, class: "tick" }, `${+x0.toPrecision(3)}–${+x1.toPrecision(3)}`));
  root.append(svg("text", { x: L - 4, y: T + 4, class: "tick", "text-anchor": "end" }, `${+y1.toPrecision(3)}`));
  root.append(svg("text", { x: L - 4, y: H - B, class: "tick", "text-anchor": "end" }, `${+y0.toPrecision(3)}`));
  root.append(svg("text", { x: 4, y: T + 18, class: "tick" }, yName));
  for (const p of points) {
    const dot = svg("circle", { cx: sx(p.x).toFixed(1), cy: sy(p.y).toFixed(1), r: p.chosen ? 6 : 4, class: p.chosen ? "chosen" : "variant" });
    dot.append(svg("title", {}, `${p.name}: ${xName} ${p.x}, ${yName} ${p.y}`));
    root.append(dot);
    root.append(svg("text", { x: (sx(p.x) + 7).toFixed(1), y: (sy(p.y) + 4).toFixed(1), class: "tick" }, p.name));
  }
  return root;
}

function withLegend(chart, names) {
  const box = document.createElement("figure");
  box.className = "chart-box";
  box.append(chart);
  const legend = document.createElement("figcaption");
  names.forEach((name, k) => {
    const item = document.createElement("span");
    item.className = "legend";
    const swatch = document.createElement("i");
    swatch.style.background = COLOURS[k % COLOURS.length];
    item.append(swatch, document.createTextNode(name));
    legend.append(item);
  });
  box.append(legend);
  return box;
}
