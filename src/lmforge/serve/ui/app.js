// The console's start: ask the server what it needs (a key or not), ask the user for a key
// once per tab, then show one view at a time (the address's #hash names it).

import { ApiError, clear, el, get, getKey, setKey } from "/ui/api.js";
import * as finance from "/ui/finance.js";
import * as views from "/ui/views.js";

const VIEWS = ["models", "monitor", "playground", "assistant", "finance"];
const RENDER = { ...views, finance: finance.finance };
const $ = (id) => document.getElementById(id);
let session = null;

async function start() {
  let info;
  try {
    info = await get("/v1/console/session");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      setKey(null); // a revoked or mistyped key: ask again
      return start();
    }
    $("status").textContent = `The server did not answer: ${error.message}`;
    return;
  }
  if (info.auth && !info.key) {
    showGate(info);
    return;
  }
  session = info;
  $("gate").hidden = true;
  $("nav").hidden = false;
  // the Finance view only where the server runs the finance monitor (--finance MODEL)
  document.querySelector('#nav button[data-view="finance"]').hidden = !info.finance;
  const who = clear($("who"));
  if (info.key) {
    who.append(el("span", { id: "key-name" }, `${info.key.name} (${info.scopes.join(", ")})`), " ",
      el("button", { type: "button", id: "forget-key", onclick: () => { setKey(null); location.reload(); } }, "Forget key"));
  } else {
    who.append(el("span", { class: "warning" }, "auth off"));
  }
  show();
}

function showGate(info) {
  $("gate").hidden = false;
  $("nav").hidden = true;
  $("gate-nokey").hidden = info.keys_exist;
  $("create-key").textContent = info.create_key;
  $("key-input").focus();
}

async function show() {
  if (!session) return;
  const asked = location.hash.slice(1);
  const name = VIEWS.includes(asked) && (asked !== "finance" || session.finance) ? asked : "models";
  views.stopTimers();
  finance.stopTimers();
  for (const view of VIEWS) $(`view-${view}`).hidden = view !== name;
  for (const button of document.querySelectorAll("#nav button")) {
    button.classList.toggle("active", button.dataset.view === name);
  }
  $("status").textContent = "";
  await RENDER[name]($(`view-${name}`), session);
}

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    if (!key) return;
    setKey(key);
    try {
      await get("/v1/console/session");
    } catch (error) {
      setKey(null);
      $("key-error").textContent = error.message;
      return;
    }
    $("key-input").value = "";
    $("key-error").textContent = "";
    start();
  });
  for (const button of document.querySelectorAll("#nav button")) {
    button.addEventListener("click", () => {
      if (location.hash === `#${button.dataset.view}`) show();
      else location.hash = button.dataset.view;
    });
  }
  window.addEventListener("hashchange", show);
  start();
});
