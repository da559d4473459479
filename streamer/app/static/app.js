// streamer live page: polls the read API (no build step, nothing loaded from elsewhere).
// The list re-renders only when the read model's version changed; the open topic refreshes with it.
"use strict";

const params = new URLSearchParams(location.search);
const POLL_MS = Math.max(250, Number(params.get("poll")) || 2000);
const PAGE = 50;
const $ = (id) => document.getElementById(id);
const state = { version: -1, query: "", sort: "growth", topic: null, shown: PAGE, busy: false };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}

function when(ms) {
  if (ms === null || ms === undefined) return "–";
  return new Date(ms).toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

function sparkline(values) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 96 28");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("aria-label", "headlines per hour, last 12 hours: " + values.join(", "));
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? 96 / (values.length - 1) : 96;
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", values.map((v, i) => `${(i * step).toFixed(1)},${(26 - (v / max) * 24).toFixed(1)}`).join(" "));
  svg.append(line);
  return svg;
}

function growthText(t) {
  const cls = t.growth > 0 ? "growth up" : t.growth < 0 ? "growth down" : "growth";
  const sign = t.growth > 0 ? "+" : "";
  return el("span", { class: cls }, `${sign}${t.growth} (${t.last_hour} last hour, ${t.previous_hour} before)`);
}

function topicCard(t) {
  const keywords = t.keywords.length ? t.keywords.slice(0, 6).join(", ") : "new story";
  return el("li", { class: "topic", tabindex: "0", "data-id": t.id, onclick: () => openTopic(t.id),
                    onkeydown: (e) => { if (e.key === "Enter") openTopic(t.id); } },
    el("span", { class: "keywords" }, keywords, t.emerging ? el("span", { class: "badge" }, "emerging") : null),
    sparkline(t.sparkline),
    el("span", { class: "exemplar" }, t.exemplar_title || ""),
    el("span", { class: "meta" },
      el("span", { class: "size" }, `${t.size} headlines`),
      el("span", { class: "sources" }, `${t.sources} sources`),
      growthText(t),
      el("span", {}, `last ${when(t.last_seen_ms)}`),
      el("span", {}, `#${t.id}`)));
}

async function getJSON(url) {
  const resp = await fetch(url, { cache: "no-store" });
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.error || resp.statusText);
  return body;
}

async function refreshList(force) {
  const q = encodeURIComponent(state.query);
  const data = await getJSON(`/api/topics?sort=${state.sort}&limit=100&q=${q}`);
  if (!force && data.version === state.version) return false;
  state.version = data.version;
  $("topics").replaceChildren(...data.topics.map(topicCard));
  $("empty").hidden = data.topics.length > 0;
  $("status").textContent = `${data.total} topics · clock ${when(data.now_ms)} · updated ${new Date().toLocaleTimeString()}`;
  return true;
}

function lineage(t) {
  const link = (id) => el("a", { onclick: () => openTopic(id) }, `#${id}`);
  const parts = [];
  const l = t.lineage;
  if (l.merged_from.length) parts.push("merged from ", ...l.merged_from.flatMap((id, i) => (i ? [", ", link(id)] : [link(id)])), ". ");
  if (l.merged_into !== null) parts.push("merged into ", link(l.merged_into), ". ");
  if (l.split_from !== null) parts.push("split from ", link(l.split_from), ". ");
  if (l.split_into.length) parts.push("split into ", ...l.split_into.flatMap((id, i) => (i ? [", ", link(id)] : [link(id)])), ". ");
  return parts.length ? el("p", { class: "lineage" }, ...parts) : null;
}

function timeline(buckets) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const n = Math.max(1, buckets.length);
  svg.setAttribute("viewBox", `0 0 ${n * 10} 100`);
  svg.setAttribute("preserveAspectRatio", "none");
  const max = Math.max(1, ...buckets.map((b) => b.count));
  buckets.forEach((b, i) => {
    const r = document.createElementNS(ns, "rect");
    const h = (b.count / max) * 96;
    r.setAttribute("x", i * 10 + 1); r.setAttribute("width", 8); r.setAttribute("y", 100 - h); r.setAttribute("height", h);
    const tip = document.createElementNS(ns, "title");
    tip.textContent = `${when(b.start_ms)}: ${b.count}`;
    r.append(tip);
    svg.append(r);
  });
  return svg;
}

async function refreshTopic() {
  const t = await getJSON(`/api/topics/${state.topic}?limit=${state.shown}`);
  $("topic-head").replaceChildren(
    el("h2", {}, t.keywords.length ? t.keywords.join(", ") : (t.exemplar_title || `topic ${t.id}`)),
    el("p", { class: "meta" }, `#${t.id} · ${t.state} · ${t.size} headlines · ${t.sources} sources · first ${when(t.first_seen_ms)} · last ${when(t.last_seen_ms)} · `, growthText(t)),
    lineage(t));
  $("timeline").replaceChildren(timeline(t.timeline));
  $("member-count").textContent = `(${t.members.total}, newest first)`;
  $("members").replaceChildren(...t.members.items.map((m) =>
    el("li", { "data-id": m.id }, m.title, el("span", { class: "when" }, `${m.source || "unknown source"} · ${when(m.time_ms)}`))));
  $("more").hidden = t.members.items.length >= t.members.total;
}

async function openTopic(id) {
  state.topic = id;
  state.shown = PAGE;
  history.replaceState(null, "", `#topic-${id}`);
  $("list-view").hidden = true;
  $("topic-view").hidden = false;
  window.scrollTo(0, 0);
  try { await refreshTopic(); } catch (err) { $("topic-head").replaceChildren(el("p", {}, `topic ${id}: ${err.message}`)); }
}

function closeTopic() {
  state.topic = null;
  history.replaceState(null, "", location.pathname + location.search);
  $("topic-view").hidden = true;
  $("list-view").hidden = false;
}

async function tick() {
  if (state.busy) return;
  state.busy = true;
  try {
    const changed = await refreshList(false);
    if (changed && state.topic !== null) await refreshTopic();
  } catch (err) {
    $("status").textContent = `cannot reach the read API: ${err.message}`;
  } finally {
    state.busy = false;
  }
}

let typing = null;
$("search").addEventListener("input", (e) => {
  clearTimeout(typing);
  typing = setTimeout(() => { state.query = e.target.value.trim(); refreshList(true).catch(() => {}); }, 150);
});
$("sort").addEventListener("change", (e) => { state.sort = e.target.value; refreshList(true).catch(() => {}); });
$("back").addEventListener("click", closeTopic);
$("more").addEventListener("click", () => { state.shown += PAGE; refreshTopic().catch(() => {}); });

const initial = /^#topic-(\d+)$/.exec(location.hash);
tick().then(() => { if (initial) openTopic(Number(initial[1])); });
setInterval(tick, POLL_MS);
