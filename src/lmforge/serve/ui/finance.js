// The Finance view (shown when the server runs `lmforge serve --finance MODEL`): the daily
// negative share with the surge rule's baseline band and threshold, daily volume bars, the
// surge alerts marked on the chart and listed; an alert or a day opens the headlines behind it.
// Its own module (views.js holds the other four); every text is a text node (el(), svg()).

import { ApiError, append, clear, el, fmt, get } from "/ui/api.js";
import { svg } from "/ui/charts.js";

const enc = encodeURIComponent;
let timers = [];

export function stopTimers() {
  timers.forEach(clearInterval);
  timers = [];
}

function failure(error) {
  return el("p", { class: "error", role: "alert" }, error instanceof ApiError ? error.message : String(error));
}

export async function finance(root) {
  const board = el("div", { class: "fin-board" });
  const alertBox = el("div", { class: "alerts", id: "fin-alerts" });
  const detail = el("div", { class: "fin-detail", id: "fin-detail", "aria-live": "polite" });
  const dayPick = el("select", { id: "fin-day" }, el("option", { value: "" }, "—"));
  dayPick.addEventListener("change", () => { if (dayPick.value) showDay(dayPick.value, detail); });
  clear(root).append(el("h2", {}, "Finance"),
    el("div", { class: "toolbar" }, el("span", { id: "fin-model", class: "muted" }), el("label", {}, "Headlines of ", dayPick),
      el("span", { class: "muted" }, "refreshed every 10 s")),
    board, alertBox, detail);
  const refresh = () => draw(board, alertBox, detail, dayPick);
  await refresh();
  timers.push(setInterval(refresh, 10000));
}

async function draw(board, alertBox, detail, dayPick) {
  let data;
  try {
    data = await get("/v1/finance/timeline?entities=0");
  } catch (error) {
    clear(board).append(failure(error));
    return;
  }
  document.getElementById("fin-model").textContent = `model ${data.model} · ${data.days.length} days · ${data.alerts.length} surge alerts`;
  const days = data.days;
  const chosen = dayPick.value;
  append(clear(dayPick), [el("option", { value: "" }, "—"),
    ...[...days].reverse().map((d) => el("option", { value: d.key, selected: d.key === chosen }, `${d.key} (${d.volume})`))]);
  if (!days.length) {
    clear(board).append(el("p", { class: "muted" }, "No headline stored yet: send some with POST /v1/finance/headlines."));
  } else {
    clear(board).append(el("figure", { class: "chart-box fin-chart" }, chart(days, data.alerts, detail), legend()));
  }
  clear(alertBox).append(el("h3", {}, "Surge alerts"));
  if (!data.alerts.length) {
    alertBox.append(el("p", { class: "muted" }, "No surge alert has fired."));
    return;
  }
  alertBox.append(el("ul", { class: "alert-list" }, [...data.alerts].reverse().map((a) =>
    el("li", { class: `alert-${a.state}`, dataset: { alert: a.id } },
      el("button", { type: "button", class: "link", onclick: () => showAlert(a, detail) }, `#${a.id}`), " ",
      el("strong", {}, a.state), ` negative share ${fmt(a.value, 2)} (threshold ${fmt(a.threshold, 2)}) · ${span(a)} · fired ${a.fired_at}`))));
}

function span(alert) {
  const d = alert.details || {};
  return d.window_start ? `${d.window_start.slice(0, 10)} – ${lastDay(alert)}` : alert.fired_at.slice(0, 10);
}

// The last day an alert's window covers: its end is exclusive (the next day's midnight).
function lastDay(alert) {
  const end = alert.details && alert.details.window_end;
  if (!end) return alert.fired_at.slice(0, 10);
  return new Date(Date.parse(end) - 1).toISOString().slice(0, 10);
}

// One SVG: the shares above (daily share, the rule's window share, its baseline band up to the
// threshold, alerts as red marks), the daily volume below; a click on a day opens its headlines.
function chart(days, alerts, detail) {
  const W = 720, H = 280, L = 40, R = 10, T = 22, MID = 200, B = 18;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", id: "fin-chart" });
  root.append(svg("title", {}, "negative share per day, with the surge rule's baseline and threshold, and volume"));
  const n = days.length;
  const step = (W - L - R) / n;
  const x = (i) => L + step * (i + 0.5);
  const y = (v) => T + (MID - T) * (1 - v);
  root.append(svg("text", { x: 4, y: 14, class: "chart-title" }, "negative share per day"));
  for (const v of [0, 0.5, 1]) {
    root.append(svg("line", { x1: L, y1: y(v), x2: W - R, y2: y(v), class: v === 0 ? "axis" : "grid" }));
    root.append(svg("text", { x: L - 4, y: y(v) + 3, class: "tick", "text-anchor": "end" }, `${v * 100} %`));
  }
  // the band from the baseline's share up to the threshold, where the rule has a verdict
  const judged = days.map((d, i) => [d, i]).filter(([d]) => d.baseline_mean != null && d.threshold != null);
  if (judged.length) {
    const upper = judged.map(([d, i]) => `${x(i).toFixed(1)},${y(Math.min(1, d.threshold)).toFixed(1)}`);
    const lower = judged.map(([d, i]) => `${x(i).toFixed(1)},${y(d.baseline_mean).toFixed(1)}`).reverse();
    root.append(svg("polygon", { points: [...upper, ...lower].join(" "), class: "fin-band" }));
    root.append(svg("polyline", { points: upper.join(" "), class: "threshold fin-threshold" }));
    root.append(svg("polyline", { points: [...lower].reverse().join(" "), class: "fin-baseline" }));
  }
  root.append(svg("polyline", { points: days.map((d, i) => `${x(i).toFixed(1)},${y(d.negative_share).toFixed(1)}`).join(" "), class: "fin-daily", id: "fin-daily" }));
  const windowed = days.map((d, i) => [d, i]).filter(([d]) => d.window_share != null);
  if (windowed.length) {
    root.append(svg("polyline", { points: windowed.map(([d, i]) => `${x(i).toFixed(1)},${y(d.window_share).toFixed(1)}`).join(" "), class: "fin-window" }));
  }
  // volume bars under the shares
  const top = Math.max(1, ...days.map((d) => d.volume));
  const vy = (v) => H - B - (H - B - MID - 12) * (v / top);
  root.append(svg("text", { x: L - 4, y: vy(top) + 3, class: "tick", "text-anchor": "end" }, String(top)));
  root.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
  days.forEach((d, i) => {
    root.append(svg("rect", { x: (x(i) - step * 0.4).toFixed(1), y: vy(d.volume).toFixed(1), width: Math.max(0.5, step * 0.8).toFixed(1),
      height: (H - B - vy(d.volume)).toFixed(1), class: "fin-volume" }));
  });
  root.append(svg("text", { x: L, y: H - 4, class: "tick" }, days[0].key));
  root.append(svg("text", { x: W - R, y: H - 4, class: "tick", "text-anchor": "end" }, days[n - 1].key));
  // alerts: a red mark on the last day of the alert's window
  const index = new Map(days.map((d, i) => [d.key, i]));
  for (const alert of alerts) {
    const last = lastDay(alert);
    let i = index.get(last);
    if (i === undefined) i = days.reduce((found, d, k) => (d.key <= last ? k : found), -1);
    if (i < 0) continue;
    const mark = svg("g", { class: "fin-alert", "data-alert": alert.id });
    mark.append(svg("line", { x1: x(i), y1: T, x2: x(i), y2: H - B, class: "fin-alert-line" }),
      svg("circle", { cx: x(i), cy: y(alert.value ?? days[i].negative_share), r: 5 }),
      svg("title", {}, `alert #${alert.id}: ${span(alert)}`));
    mark.addEventListener("click", () => showAlert(alert, detail));
    root.append(mark);
  }
  // one transparent column per day to click (under the alert marks' own clicks)
  days.forEach((d, i) => {
    const hit = svg("rect", { x: (x(i) - step / 2).toFixed(1), y: T, width: step.toFixed(1), height: H - B - T, class: "fin-hit", "data-day": d.key });
    hit.append(svg("title", {}, `${d.key}: ${d.volume} headlines, ${fmt(d.negative_share * 100, 1)} % negative`));
    hit.addEventListener("click", () => showDay(d.key, detail));
    root.insertBefore(hit, root.querySelector(".fin-alert"));
  });
  return root;
}

function legend() {
  const item = (cls, name) => el("span", { class: "legend" }, el("i", { class: cls }), name);
  return el("figcaption", {}, item("sw-daily", "daily share"), item("sw-window", "3-day window share"),
    item("sw-band", "baseline … threshold"), item("sw-volume", "volume"), item("sw-alert", "surge alert"));
}

function headlineTable(rows, pLabel, pOf) {
  return el("div", { class: "scroll" }, el("table", { class: "fin-headlines" },
    el("thead", {}, el("tr", {}, ["time", "headline", "label", pLabel, "entities"].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((h) => el("tr", {},
      el("td", {}, String(h.time).slice(0, 16).replace("T", " ").replace(" 00:00", "")), el("td", { class: "fin-text" }, h.text),
      el("td", {}, el("span", { class: `label label-${h.label}` }, h.label)), el("td", {}, fmt(pOf(h), 2)),
      el("td", {}, (h.entities || []).map((e) => e.name).join(", ")))))));
}

function showAlert(alert, detail) {
  const d = alert.details || {};
  const rows = d.top_headlines || [];
  clear(detail).append(el("h3", {}, `Alert #${alert.id} (${alert.state})`),
    el("p", {}, `${span(alert)}: negative share ${fmt(alert.value, 2)} over ${d.volume ?? "?"} headlines, against a baseline of ${fmt(d.baseline_mean, 2)} (threshold ${fmt(alert.threshold, 2)}, z ${fmt(d.z, 1)})`),
    rows.length ? headlineTable(rows, "P(negative)", (h) => h.negative) : el("p", { class: "muted" }, "No headline recorded with this alert."));
}

async function showDay(day, detail) {
  clear(detail).append(el("p", { class: "muted" }, `Loading ${day}…`));
  const next = new Date(Date.parse(`${day}T00:00:00Z`) + 86400000).toISOString().slice(0, 10);
  let found;
  try {
    found = await get(`/v1/finance/headlines?since=${enc(day)}&until=${enc(next)}&order=most_negative&limit=100`);
  } catch (error) {
    clear(detail).append(failure(error));
    return;
  }
  clear(detail).append(el("h3", {}, `Headlines of ${day}`), el("p", { class: "muted" }, `${found.data.length} shown, most negative first`),
    headlineTable(found.data, "P(negative)", (h) => h.scores.negative));
}
