// selfheal /ui: live healings from the healing event stream, the recent requests
// and the analytics, drawn as SVG. Every text from the server goes in through
// textContent, never as markup.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const MAX_LIVE = 20; // live cards kept; older ones are in the history

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function svgEl(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function clock(t) {
  const d = new Date(t);
  return isNaN(d) ? "" : d.toLocaleTimeString();
}

// Times to heal are recorded in whole seconds (rounded): 0 is under a second.
function secs(v) {
  if (v === 0) return "<1s";
  return Number.isInteger(v) ? v + "s" : v.toFixed(1) + "s";
}

// ---- live healings ----

const live = new Map(); // "ns/name" -> card

function liveCard(ev) {
  const key = ev.namespace + "/" + ev.request;
  let card = live.get(key);
  if (card) return card;
  card = el("article", { class: "card live-healing", "data-request": key });
  const h = el("h3");
  h.append(el("span", { class: "target" }, ev.namespace + "/" + ev.service));
  h.append(" ", el("small", { class: "request" }, ev.request));
  card.append(h, el("span", { class: "held" }), el("ol", { class: "steps" }), el("p", { class: "outcome" }));
  const box = document.getElementById("live");
  box.prepend(card);
  live.set(key, card);
  while (live.size > MAX_LIVE) {
    const [oldest, c] = live.entries().next().value;
    c.remove();
    live.delete(oldest);
  }
  document.getElementById("live-empty").hidden = true;
  return card;
}

function addStep(card, ev) {
  const steps = card.querySelector(".steps");
  // Event ids are ns/name/step: a step shown already (a reconnect's replay) is skipped.
  if (ev.id && steps.querySelector('[data-id="' + CSS.escape(ev.id) + '"]')) return;
  const li = el("li", { "data-id": ev.id || "", "data-phase": ev.phase || "" });
  li.append(el("time", {}, clock(ev.time)), el("span", { class: "step" }, ev.message || ev.phase || ev.type));
  steps.append(li);
}

function onHealing(type, ev) {
  const card = liveCard(ev);
  if (type === "healing_complete" || type === "healing_failed") {
    // The end is the outcome line, not one more step.
    const out = card.querySelector(".outcome");
    out.dataset.id = ev.id || "";
    out.className = "outcome " + (type === "healing_complete" ? "ok" : "failed");
    out.textContent = (type === "healing_complete" ? "Healed" : "Not healed: " + (ev.phase || "failed")) +
      (ev.issue ? " — issue " + ev.issue : "") + (ev.reason && ev.reason !== ev.phase ? " (" + ev.reason + ")" : "") +
      (ev.message ? ". " + ev.message : "");
    card.querySelector(".held").textContent = "";
    // The controller records the outcome just after the request ends: look again.
    for (const ms of [2000, 6000]) setTimeout(refresh, ms);
  } else {
    addStep(card, ev);
  }
  refreshSoon();
}

function connect() {
  const status = document.getElementById("status");
  const es = new EventSource("/ui/api/events");
  es.onopen = () => { status.textContent = "live"; status.className = "status live"; };
  es.onerror = () => { status.textContent = "reconnecting…"; status.className = "status"; };
  for (const type of ["healing_start", "healing_progress", "healing_complete", "healing_failed"]) {
    es.addEventListener(type, (m) => onHealing(type, JSON.parse(m.data)));
  }
  es.addEventListener("processing_delay", (m) => {
    const ev = JSON.parse(m.data);
    document.getElementById("delays").textContent =
      clock(ev.time) + " Claude is busy: retry " + ev.attempt + " in " + ev.waitMs + " ms";
  });
  es.addEventListener("events_missed", () => refreshSoon());
}

// ---- data endpoints ----

let timer = null;
function refreshSoon() {
  // Several events in a burst cause one reload.
  if (timer) return;
  timer = setTimeout(() => { timer = null; refresh(); }, 300);
}

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (r.status === 401) { window.location.assign("/ui/login"); throw new Error("logged out"); }
  if (!r.ok) throw new Error(url + ": " + r.status);
  return r.json();
}

async function refresh() {
  try {
    const [history, analytics] = await Promise.all([getJSON("/ui/api/history"), getJSON("/ui/api/analytics")]);
    renderHistory(history);
    renderAnalytics(analytics);
  } catch (e) {
    document.getElementById("status").textContent = String(e.message || e);
  }
}

// ---- history ----

function list(title, items, line) {
  const d = el("details");
  d.append(el("summary", {}, title + " (" + items.length + ")"));
  const ul = el("ul");
  for (const it of items) ul.append(el("li", {}, line(it)));
  d.append(ul);
  return d;
}

function renderHistory(h) {
  if (h.client) document.getElementById("client").textContent = "as " + h.client;
  document.getElementById("history-count").textContent =
    h.total > h.requests.length ? "newest " + h.requests.length + " of " + h.total : String(h.total);
  const table = el("table");
  const head = el("tr");
  for (const c of ["when", "target", "phase", "issue", "details"]) head.append(el("th", {}, c));
  const thead = el("thead");
  thead.append(head);
  table.append(thead);
  const body = el("tbody");
  for (const r of h.requests) {
    const key = r.namespace + "/" + r.name;
    const tr = el("tr", { "data-request": key });
    tr.append(el("td", {}, new Date(r.created).toLocaleString()));
    tr.append(el("td", { class: "target" }, r.namespace + "/" + r.service));
    tr.append(el("td", { class: "phase " + r.phase }, r.phase));
    tr.append(el("td", {}, r.issue || ""));
    const td = el("td");
    td.append(list("findings", r.findings, (f) => f.result + " " + f.check + ": " + f.message));
    td.append(list("actions", r.actions, (a) => a.type + " " + a.outcome + (a.message ? ": " + a.message : "")));
    td.append(list("steps", r.progress, (p) => clock(p.at) + " " + p.message));
    tr.append(td);
    body.append(tr);
    const card = live.get(key);
    if (card) card.querySelector(".held").textContent = r.held > 0 ? r.held + " call(s) held until it ends" : "";
  }
  table.append(body);
  document.getElementById("history").replaceChildren(table);
}

// ---- analytics charts ----

// hbars draws one horizontal bar per row: label, the bar (value of max), and a text.
function hbars(svg, rows, max, cls) {
  const rowH = 26, labelW = 150, textW = 90, width = 480;
  const barW = width - labelW - textW;
  svg.replaceChildren();
  svg.setAttribute("viewBox", "0 0 " + width + " " + Math.max(rowH, rows.length * rowH));
  if (rows.length === 0) {
    svg.append(svgEl("text", { x: 0, y: 16, class: "empty" }, "no healings yet"));
    return;
  }
  rows.forEach((r, i) => {
    const y = i * rowH;
    const g = svgEl("g", Object.assign({ class: "row" }, r.attrs || {}));
    g.append(svgEl("text", { x: 0, y: y + 17, class: "label" }, r.label));
    g.append(svgEl("rect", { x: labelW, y: y + 5, width: barW, height: 14, rx: 3, class: "track" }));
    const w = max > 0 ? Math.max(0, Math.min(1, r.value / max)) * barW : 0;
    g.append(svgEl("rect", { x: labelW, y: y + 5, width: w.toFixed(1), height: 14, rx: 3, class: "bar " + (cls || "") }));
    g.append(svgEl("text", { x: labelW + barW + 6, y: y + 17, class: "value" }, r.text));
    svg.append(g);
  });
}

function renderAnalytics(a) {
  document.getElementById("fig-healings").textContent = String(a.healings);
  document.getElementById("fig-rate").textContent = a.healings ? Math.round(a.successRate) + "%" : "–";
  document.getElementById("fig-time").textContent = a.healed ? secs(a.avgTimeToHealSeconds) : "–";
  document.getElementById("fig-manual").textContent = String(a.manualWaiting);

  hbars(document.getElementById("chart-success"), a.byIssue.map((i) => ({
    label: i.issue, value: i.successRate,
    text: Math.round(i.successRate) + "% (" + i.healed + "/" + i.healings + ")",
    attrs: { "data-issue": i.issue, "data-healings": i.healings, "data-healed": i.healed },
  })), 100, "ok");

  const bounds = a.timeToHealBucketBounds;
  const labels = bounds.map((b) => "≤ " + (b < 60 ? b + "s" : b / 60 + "m")).concat("> " + bounds[bounds.length - 1] / 60 + "m");
  const counts = a.timeToHealBuckets;
  // Buckets up to the last one used (at least the first three), so short times read well.
  let last = 2;
  counts.forEach((n, i) => { if (n > 0) last = Math.max(last, i); });
  const most = Math.max(0, ...counts);
  hbars(document.getElementById("chart-time"), a.healed ? counts.slice(0, last + 1).map((n, i) => ({
    label: labels[i], value: n, text: String(n), attrs: { "data-bucket": i },
  })) : [], most);

  const top = a.topServices;
  const topMax = Math.max(0, ...top.map((s) => s.healings));
  hbars(document.getElementById("chart-services"), top.map((s) => ({
    label: s.service, value: s.healings, text: s.healings + " (" + s.healed + " healed)",
    attrs: { "data-service": s.namespace + "/" + s.service },
  })), topMax);

  const manual = document.getElementById("manual");
  manual.replaceChildren();
  if (a.manual.length === 0) manual.append(el("li", { class: "muted" }, "none waiting"));
  for (const m of a.manual) {
    manual.append(el("li", {}, m.namespace + "/" + m.service + " (" + m.request + "): " + m.reason + (m.message ? " — " + m.message : "")));
  }
}

connect();
refresh();
// Other replicas' healings and history changes arrive without an event here.
setInterval(() => { if (!document.hidden) refresh(); }, 15000);
