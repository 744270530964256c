// The console's four views. Each is render(root, session) and builds its DOM with el() (text
// nodes only). What the key's scopes do not allow is disabled here; the server refuses it anyway.
// One file of ~450 lines on purpose: four views of ~100 lines each share the helpers below;
// the fifth, Finance, is its own module (finance.js).

import { ApiError, append, clear, del, el, fmt, get, post, stream } from "/ui/api.js";
import { COLOURS, lineChart, scatter, stackedBars } from "/ui/charts.js";

const can = (session, scope) => session.scopes.includes(scope) || session.scopes.includes("admin");
const enc = encodeURIComponent;

function failure(error) {
  return el("p", { class: "error", role: "alert" }, error instanceof ApiError ? error.message : String(error));
}

// GET /v1/models, or null with the failure shown in root.
async function modelList(root) {
  try {
    return await get("/v1/models");
  } catch (error) {
    root.append(failure(error));
    return null;
  }
}

function metricsText(metrics) {
  const entries = Object.entries(metrics || {}).filter(([, v]) => typeof v === "number");
  return entries.map(([k, v]) => `${k} ${fmt(v)}`).join(" · ") || "—";
}

// --- Models ---------------------------------------------------------------------------------

export async function models(root, session) {
  clear(root).append(el("h2", {}, "Models"));
  const list = await modelList(root);
  if (!list) return;
  const registered = list.data.filter((m) => m.kind === "registered");
  const decoders = list.data.filter((m) => m.kind === "decoder");
  if (!registered.length) root.append(el("p", {}, "No registered model yet: train one with `lmforge run RECIPE`."));
  for (const model of registered) root.append(modelCard(model, session, () => models(root, session)));
  if (decoders.length) {
    root.append(el("h3", {}, "Decoders served for chat"));
    root.append(el("ul", {}, decoders.map((d) => el("li", {}, `${d.id} (${d.weights}, context ${d.context})`))));
  }
}

function modelCard(model, session, reload) {
  const detail = el("div", { class: "detail" });
  const rows = model.versions.map((v) =>
    el("tr", { dataset: { ref: v.ref } },
      el("td", {}, el("button", { type: "button", class: "link", onclick: () => showVersion(model.name, v, detail, session, reload) }, `v${v.version}`)),
      el("td", {}, el("span", { class: `stage stage-${v.stage}` }, v.stage)),
      el("td", {}, v.task),
      el("td", {}, metricsText(v.test_metrics)),
      el("td", {}, v.parent ?? "—"),
      el("td", {}, v.loaded ? "loaded" : ""),
    ),
  );
  return el("article", { class: "card model", dataset: { model: model.name } },
    el("h3", {}, model.name, model.serving ? el("span", { class: "muted" }, ` serving ${model.serving}`) : null),
    el("div", { class: "scroll" }, el("table", {},
      el("thead", {}, el("tr", {}, ["version", "stage", "task", "test metrics", "parent", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows))),
    el("div", { class: "lineage" }, el("h4", {}, "Lineage"), lineage(model.versions)),
    detail,
  );
}

// The versions as a tree: each under the version it was made from (compressed, retrained).
function lineage(versions) {
  const refs = new Set(versions.map((v) => v.ref));
  const children = new Map();
  for (const v of versions) {
    const parent = v.parent && refs.has(v.parent) ? v.parent : "";
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(v);
  }
  const branch = (parent) => {
    const kids = children.get(parent) || [];
    if (!kids.length) return null;
    return el("ul", { class: "tree" }, kids.map((v) =>
      el("li", {}, el("span", { class: `stage stage-${v.stage}` }, v.ref), v.parent && !refs.has(v.parent) ? ` ← ${v.parent}` : "", branch(v.ref))));
  };
  return branch("");
}

async function showVersion(name, version, box, session, reload) {
  clear(box).append(el("p", { class: "muted" }, `Loading ${version.ref}…`));
  let info;
  try {
    info = await get(`/v1/console/models/${enc(name)}/versions/${version.version}`);
  } catch (error) {
    clear(box).append(failure(error));
    return;
  }
  clear(box).append(el("h4", {}, info.ref, " ", el("span", { class: `stage stage-${info.stage}` }, info.stage)));
  box.append(el("p", { class: "muted" }, `task ${info.task} · base ${info.base_model} · labels ${info.labels.join(", ") || "—"} · created ${info.created_at}`));
  const names = [...new Set([...Object.keys(info.test_metrics || {}), ...Object.keys(info.baseline_metrics || {})])];
  const baselines = Object.entries(info.baseline_metrics || {}).filter(([, v]) => v && typeof v === "object");
  const metricNames = Object.keys(info.test_metrics || {}).filter((k) => typeof info.test_metrics[k] === "number");
  if (metricNames.length) {
    box.append(el("div", { class: "scroll" }, el("table", { class: "metrics" },
      el("thead", {}, el("tr", {}, el("th", {}, "metric"), el("th", {}, "this version"), baselines.map(([b]) => el("th", {}, b)))),
      el("tbody", {}, metricNames.map((m) => el("tr", {}, el("td", {}, m), el("td", {}, fmt(info.test_metrics[m])),
        baselines.map(([, values]) => el("td", {}, fmt(values[m])))))))));
  } else if (!names.length) {
    box.append(el("p", { class: "muted" }, "No test metrics recorded."));
  }
  const variants = (info.tradeoff || []).filter((v) => v.error === null && v.p50_ms !== null);
  if (variants.length) {
    const metric = variants.every((v) => v.macro_f1 !== null) ? "macro_f1" : "accuracy";
    box.append(scatter("Compression trade-off", variants.map((v) => ({ name: v.name ?? `${v.structure}/${v.format}`, x: v.p50_ms, y: v[metric], chosen: v.within_budget })), "p50 ms", metric));
  }
  box.append(actions(info, session, reload));
  if (info.card) box.append(el("details", { open: true }, el("summary", {}, "Model card"), el("pre", { class: "card-text" }, info.card)));
}

function actions(info, session, reload) {
  const admin = can(session, "admin");
  const bar = el("div", { class: "actions" });
  const note = el("span", { class: "muted" });
  const path = `/v1/models/${enc(info.name)}/versions/${info.version}`;
  const act = (verb, label, enabled, run) => el("button", {
    type: "button", class: verb, disabled: !admin || !enabled, "data-action": verb,
    title: admin ? null : "needs a key with the admin scope",
    onclick: () => confirmAction(bar, `${label} ${info.ref}?`, async () => {
      await run();
      await reload();
    }),
  }, label);
  // the server refuses deleting the production version or a parent (409), shown in the bar
  append(bar, [
    act("promote", "Promote", info.stage !== "production", () => post(`${path}/promote`, {})),
    act("archive", "Archive", info.stage === "candidate", () => post(`${path}/archive`, {})),
    act("delete", "Delete (folder and row)", info.stage !== "production", () => del(path)),
    admin ? null : note,
  ]);
  if (!admin) note.textContent = "promote, archive and delete need a key with the admin scope";
  return bar;
}

function confirmAction(bar, question, run) {
  const box = el("span", { class: "confirm", role: "alertdialog" }, question, " ");
  const status = el("span", { class: "error" });
  const yes = el("button", { type: "button", class: "danger", "data-confirm": "yes", onclick: async () => {
    yes.disabled = true;
    try {
      await run();
    } catch (error) {
      status.textContent = error.message;
      yes.disabled = false;
    }
  } }, "Yes");
  const no = el("button", { type: "button", onclick: () => box.remove() }, "Cancel");
  bar.querySelector(".confirm")?.remove();
  bar.append(append(box, [yes, " ", no, " ", status]));
}

// --- Monitor --------------------------------------------------------------------------------

let timers = [];
export function stopTimers() {
  timers.forEach(clearInterval);
  timers = [];
}

export async function monitor(root, session) {
  clear(root).append(el("h2", {}, "Monitor"));
  const list = await modelList(root);
  if (!list) return;
  const names = [...new Set([...Object.keys(session.served), ...list.data.filter((m) => m.kind === "registered").map((m) => m.name)])];
  if (!names.length) {
    root.append(el("p", {}, "No model to monitor yet."));
    return;
  }
  const pick = el("select", { id: "monitor-model" }, names.map((n) => el("option", { value: n }, n)));
  const period = el("select", { id: "monitor-period" },
    [["900:30", "last 15 min"], ["3600:60", "last hour"], ["86400:1800", "last 24 h"]].map(([v, t]) => el("option", { value: v, selected: v === "3600:60" }, t)));
  const board = el("div", { class: "board" });
  const drift = el("div", { class: "drift" });
  const alerts = el("div", { class: "alerts" });
  const refresh = () => drawFigures(pick.value, period.value, board, alerts);
  // Drift only once asked for: its first check for a version runs the model over the version's
  // validation split (cached afterwards), which a page left open must not start on its own.
  let driftOn = false;
  const checkDrift = () => {
    if (!driftOn) timers.push(setInterval(() => drawDrift(pick.value, drift), 60000));
    driftOn = true;
    drawDrift(pick.value, drift);
  };
  pick.addEventListener("change", () => { refresh(); if (driftOn) drawDrift(pick.value, drift); });
  period.addEventListener("change", refresh);
  clear(drift).append(el("p", { class: "muted" }, "Drift compares the last 15 minutes with the version's validation split; the first check runs the model over that split, later ones (every minute) read the cache."));
  root.append(el("div", { class: "toolbar" }, el("label", {}, "Model ", pick), el("label", {}, "Period ", period),
    el("span", { class: "muted" }, "refreshed every 5 s")), board, alerts,
    el("h3", {}, "Drift"), el("button", { type: "button", id: "check-drift", onclick: checkDrift }, "Check drift"), drift);
  await refresh();
  timers.push(setInterval(refresh, 5000));
}

async function drawFigures(name, period, board, alertBox) {
  const [seconds, window] = period.split(":");
  let data, fired;
  try {
    [data, fired] = await Promise.all([
      get(`/v1/console/monitor/${enc(name)}?period=${seconds}&window=${window}`),
      get(`/v1/alerts?model=${enc(name)}&limit=20`),
    ]);
  } catch (error) {
    clear(board).append(failure(error));
    return;
  }
  const w = data.windows;
  const last = [...w].reverse().find((x) => x.volume > 0) || w[w.length - 1] || {};
  const total = w.reduce((s, x) => s + x.volume, 0);
  const feedback = w.reduce((s, x) => s + x.feedback_count, 0);
  const labels = [...new Set(w.flatMap((x) => Object.keys(x.label_shares)))].sort();
  const threshold = (metric) => data.rules.find((r) => r.metric === metric && r.threshold !== null)?.threshold ?? null;
  // a volume rule counts predictions over its own window: as a rate, it compares with requests/s
  const volumeRule = data.rules.find((r) => r.metric === "volume" && r.threshold !== null);
  const tile = (name, value, hint) => el("div", { class: "tile", dataset: { figure: name } }, el("span", { class: "muted" }, name), el("strong", {}, value), hint ? el("small", {}, hint) : null);
  const acc = last.live_accuracy_interval ? `95 % ${fmt(last.live_accuracy_interval[0], 2)}–${fmt(last.live_accuracy_interval[1], 2)}` : `${feedback} feedback rows`;
  clear(board).append(
    el("div", { class: "tiles" },
      tile("requests/s", fmt(last.requests_per_s, 2), `${total} in the period`),
      tile("latency p50", last.latency_p50_ms == null ? "—" : `${fmt(last.latency_p50_ms, 1)} ms`),
      tile("latency p99", last.latency_p99_ms == null ? "—" : `${fmt(last.latency_p99_ms, 1)} ms`),
      tile("mean confidence", fmt(last.mean_confidence, 3), last.low_confidence_share == null ? null : `${fmt(last.low_confidence_share * 100, 1)} % below ${last.low_confidence_threshold}`),
      tile("live accuracy", fmt(last.live_accuracy, 3), acc)),
    el("div", { class: "charts" },
      lineChart("requests/s", [{ name: "requests/s", values: w.map((x) => x.requests_per_s) }], { threshold: volumeRule ? volumeRule.threshold / volumeRule.window_s : null }),
      lineChart("latency (ms)", [{ name: "p50", values: w.map((x) => x.latency_p50_ms) }, { name: "p99", values: w.map((x) => x.latency_p99_ms) }], { threshold: threshold("latency_p99_ms") }),
      stackedBars("label shares", w.map((x) => x.label_shares), labels),
      lineChart("confidence, live accuracy", [{ name: "mean confidence", values: w.map((x) => x.mean_confidence) }, { name: "live accuracy", values: w.map((x) => x.live_accuracy) }], { max: 1, threshold: threshold("mean_confidence") ?? threshold("live_accuracy") })),
  );
  if (data.rules.length) {
    board.append(el("details", {}, el("summary", {}, `${data.rules.length} alert rules`), el("ul", {}, data.rules.map((r) =>
      el("li", {}, `${r.name}: ${r.metric} ${r.comparison} ${r.threshold ?? "(baseline)"} over ${r.window_s} s`)))));
  }
  clear(alertBox).append(el("h3", {}, "Alerts"));
  if (!fired.data.length) alertBox.append(el("p", { class: "muted" }, "No alert has fired for this model."));
  else alertBox.append(el("ul", { class: "alert-list" }, fired.data.map((a) =>
    el("li", { class: `alert-${a.state}` }, el("strong", {}, a.state), ` ${a.rule}: ${a.metric} = ${fmt(a.value)} (${a.comparison} ${fmt(a.threshold)}) at ${a.fired_at}`))));
}

async function drawDrift(name, box) {
  clear(box).append(el("p", { class: "muted" }, "Computing drift over the last 15 minutes…"));
  let data;
  try {
    data = await get(`/v1/console/monitor/${enc(name)}/drift?window=900`);
  } catch (error) {
    clear(box).append(failure(error));
    return;
  }
  clear(box);
  if (!data.drift) {
    box.append(el("p", { class: "muted" }, `No drift figures: ${data.drift_skipped ?? "no traffic in the window"}.`));
    return;
  }
  const d = data.drift;
  box.append(el("p", {}, d.drifted ? "Drift detected" : "No drift", ` — ${d.current_rows} predictions against ${d.reference_rows} reference rows (v${data.drift_version}), α ${d.alpha}`));
  box.append(el("div", { class: "scroll" }, el("table", {},
    el("thead", {}, el("tr", {}, ["detector", "test", "statistic", "threshold", "p-value", "α", "drifted"].map((h) => el("th", {}, h)))),
    el("tbody", {}, d.detectors.map((x) => el("tr", { class: x.drifted ? "drifted" : "" },
      el("td", {}, x.name), el("td", {}, x.test), el("td", {}, fmt(x.statistic)), el("td", {}, fmt(x.threshold)),
      el("td", {}, fmt(x.p_value, 4)), el("td", {}, fmt(x.alpha, 4)), el("td", {}, x.drifted ? "yes" : "no")))))));
}

// --- Playground -----------------------------------------------------------------------------

export async function playground(root, session) {
  clear(root).append(el("h2", {}, "Playground"));
  const list = await modelList(root);
  if (!list) return;
  const classifiers = list.data.filter((m) => m.kind === "registered" && m.versions.some((v) => v.task === "classification"));
  if (!classifiers.length) {
    root.append(el("p", {}, "No classifier is registered."));
    return;
  }
  const pick = el("select", { id: "play-model" }, classifiers.map((m) => el("option", { value: m.name }, m.name)));
  const method = el("select", { id: "play-method" }, [["ig", "integrated gradients"], ["occlusion", "occlusion"], ["attention", "attention"]].map(([v, t]) => el("option", { value: v }, t)));
  const text = el("textarea", { id: "play-text", rows: 4, placeholder: "Type or paste a text…" });
  const out = el("div", { id: "play-result" });
  const go = el("button", { type: "submit", id: "play-go", disabled: !can(session, "predict") }, "Predict");
  const form = el("form", { class: "play", onsubmit: async (event) => {
    event.preventDefault();
    if (!text.value.trim()) return;
    go.disabled = true;
    try {
      await predict(pick.value, text.value, method.value, out, session);
    } finally {
      go.disabled = false;
    }
  } }, text, el("div", { class: "toolbar" }, el("label", {}, "Model ", pick), session.explain ? el("label", {}, "Explain with ", method) : null, go));
  root.append(form, out);
}

async function predict(model, text, method, out, session) {
  clear(out).append(el("p", { class: "muted" }, "Predicting…"));
  let answer;
  try {
    answer = await post("/v1/predict", { model, inputs: [text] });
  } catch (error) {
    clear(out).append(failure(error));
    return;
  }
  const p = answer.predictions[0];
  const labels = Object.keys(p.scores);
  clear(out).append(
    el("p", { class: "prediction" }, "Label ", el("strong", { id: "play-label" }, p.label), ` · score ${fmt(p.score)} · ${answer.model} (${answer.backend})`),
    el("div", { class: "bars" }, labels.map((label, k) => el("div", { class: "bar" },
      el("span", {}, label), barOf(p.scores[label], COLOURS[k % COLOURS.length]), el("span", {}, fmt(p.scores[label]))))),
  );
  const heat = el("div", { class: "heat", id: "play-heat" });
  if (session.explain) out.append(el("h3", {}, "Why"), heat);
  out.append(feedbackBox(p, labels, session));
  if (session.explain) explain(model, text, method, heat);
}

function barOf(share, colour) {
  const track = el("span", { class: "track" });
  const fill = el("i", {});
  fill.style.width = `${Math.round(share * 100)}%`;
  fill.style.background = colour;
  track.append(fill);
  return track;
}

async function explain(model, text, method, box) {
  box.append(el("p", { class: "muted" }, "Explaining…"));
  let e;
  try {
    e = await post("/v1/explain", { model, input: text, method });
  } catch (error) {
    clear(box).append(failure(error));
    return;
  }
  const top = Math.max(1e-9, ...e.words.map((w) => Math.abs(w.score)));
  const line = el("p", { class: "heat-text", lang: "und" });
  let at = 0;
  for (const w of e.words) {
    if (w.start > at) line.append(document.createTextNode(e.text.slice(at, w.start)));
    const span = el("span", { class: "word", title: `${w.score.toFixed(4)}` }, e.text.slice(w.start, w.end));
    const strength = Math.abs(w.score) / top;
    span.style.background = w.score >= 0 ? `rgba(22, 163, 74, ${strength * 0.6})` : `rgba(220, 38, 38, ${strength * 0.6})`;
    line.append(span);
    at = w.end;
  }
  if (at < e.text.length) line.append(document.createTextNode(e.text.slice(at)));
  clear(box).append(line, el("p", { class: "muted" },
    `towards “${e.target}” (green) or away from it (red) · ${e.method}${e.steps ? `, ${e.steps} steps` : ""} on ${e.explained_with}`,
    e.completeness_error != null ? ` · completeness error ${fmt(e.completeness_error, 4)}` : "", e.truncated ? " · text truncated" : ""));
}

function feedbackBox(prediction, labels, session) {
  const allowed = can(session, "feedback");
  const status = el("span", { class: "feedback-status", role: "status" });
  const send = async (body) => {
    try {
      const row = await post("/v1/feedback", { prediction_id: prediction.prediction_id, ...body });
      status.textContent = `Feedback stored (#${row.id}: ${row.correct ? "correct" : `should be ${row.label}`}).`;
      status.className = "feedback-status ok";
    } catch (error) {
      status.textContent = error.message;
      status.className = "feedback-status error";
    }
  };
  const picker = el("span", { class: "picker", hidden: true }, "The right label: ",
    labels.filter((l) => l !== prediction.label).map((l) => el("button", { type: "button", "data-label": l, onclick: () => send({ label: l }) }, l)));
  return el("div", { class: "feedback" }, "Was this right? ",
    el("button", { type: "button", id: "fb-correct", disabled: !allowed, onclick: () => send({ correct: true }) }, "Correct"), " ",
    el("button", { type: "button", id: "fb-wrong", disabled: !allowed, onclick: () => { picker.hidden = false; } }, "Wrong"), " ",
    picker, " ", status, allowed ? null : el("span", { class: "muted" }, "feedback needs a key with the feedback scope"));
}

// --- Assistant ------------------------------------------------------------------------------

export async function assistant(root, session) {
  clear(root).append(el("h2", {}, "Assistant"));
  const modes = [];
  if (session.assistant) modes.push(["faq", "FAQ assistant"]);
  for (const d of session.decoders) modes.push([`chat:${d}`, `chat with ${d}`]);
  if (!modes.length) {
    root.append(el("p", {}, "This server has no assistant and no decoder: start it with an 'assistant:' section (or --assistant NAME) or --decoder NAME."));
    return;
  }
  const mode = el("select", { id: "chat-mode" }, modes.map(([v, t]) => el("option", { value: v }, t)));
  const log = el("div", { class: "chat", id: "chat-log", "aria-live": "polite" });
  const input = el("input", { id: "chat-input", type: "text", autocomplete: "off", placeholder: "Ask a question…" });
  const send = el("button", { type: "submit", disabled: !can(session, "predict") }, "Send");
  const history = [];
  root.append(el("div", { class: "toolbar" }, el("label", {}, "Answer with ", mode)), log,
    el("form", { class: "chat-form", onsubmit: async (event) => {
      event.preventDefault();
      const question = input.value.trim();
      if (!question) return;
      input.value = "";
      send.disabled = true;
      log.append(el("div", { class: "msg user" }, question));
      const reply = el("div", { class: "msg bot" });
      log.append(reply);
      try {
        if (mode.value === "faq") await askFaq(question, reply);
        else await chat(mode.value.slice(5), history, question, reply);
      } catch (error) {
        reply.append(failure(error));
      } finally {
        send.disabled = false;
        log.scrollTop = log.scrollHeight;
      }
    } }, input, send));
}

function citation(text) {
  // a citation that is a web address becomes a link; anything else (a section name) stays text
  if (/^https?:\/\//i.test(text)) return el("a", { href: text, target: "_blank", rel: "noopener noreferrer" }, text);
  return el("span", {}, text);
}

async function askFaq(question, reply) {
  const written = el("p", { class: "written" });
  await stream("/v1/assistant/ask", { question }, (event) => {
    if (event.type === "answer") {
      if (!event.answered) {
        reply.classList.add("refused");
        reply.append(el("p", {}, el("strong", {}, "Refused: "), event.answer),
          el("p", { class: "muted" }, `nothing in the FAQ is close enough (best ${fmt(event.score)}, threshold ${fmt(event.threshold)})`));
        return;
      }
      reply.append(el("p", {}, event.answer), el("p", { class: "cite" }, "Source: ", citation(event.citation), ` (score ${fmt(event.score)})`));
      if (event.sources.length > 1) reply.append(el("details", {}, el("summary", {}, "Other sources"),
        el("ul", {}, event.sources.slice(1).map((s) => el("li", {}, citation(s.citation), ` — ${s.question} (${fmt(s.score)})`)))));
      reply.append(written);
    } else if (event.type === "delta") {
      written.textContent += event.text;
    }
  });
}

async function chat(model, history, question, reply) {
  history.push({ role: "user", content: question });
  const text = el("p", {});
  reply.append(el("p", { class: "muted" }, model), text);
  await stream("/v1/chat/completions", { model, messages: history }, (chunk) => {
    const delta = chunk.choices?.[0]?.delta?.content;
    if (delta) text.textContent += delta;
  });
  history.push({ role: "assistant", content: text.textContent });
}
