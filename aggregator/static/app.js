// The status page: look a workflow up, follow it live, list stalled workflows and redrive them.
// Plain JavaScript, no build step, nothing fetched from outside the aggregator. The API is the
// aggregator's own (docs/design.md, "Aggregator HTTP API"); this page sits at <base>/ui/.
"use strict";

const api = new URL("..", document.baseURI); // the aggregator's base (the page is <base>/ui/)
const $ = (id) => document.getElementById(id);
const ID_RULE = /^[A-Za-z0-9._:-]{1,128}$/;
let watching = null; // AbortController of the live stream
let current = null; // the workflow id shown

function headers() {
  const token = sessionStorage.getItem("token") || "";
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function getJSON(path, init = {}) {
  const response = await fetch(new URL(path, api), { ...init, headers: { ...headers(), ...(init.headers || {}) } });
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  return { status: response.status, body };
}

function problemText(status, body) {
  if (status === 401) return "The aggregator needs a token: open “Access token” and paste it.";
  return (body && (body.detail || body.title)) || `HTTP ${status}`;
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function badge(text, kind) { return el("span", text, `badge ${kind || ""}`); }

function since(ms) {
  if (!Number.isFinite(ms)) return "";
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms ago`;
  if (ms < 120000) return `${(ms / 1000).toFixed(1)} s ago`;
  return `${Math.round(ms / 60000)} min ago`;
}

// A participant's time (its clock) in the aggregator's clock: less its measured offset.
function corrected(iso, offsetMs) { return Date.parse(iso) - (offsetMs || 0); }

function offsetText(ms) {
  const size = Math.abs(ms);
  const amount = size < 1000 ? `${Math.round(size)} ms` : size < 120000 ? `${(size / 1000).toFixed(1)} s` : `${(size / 60000).toFixed(1)} min`;
  return `clock ${amount} ${ms > 0 ? "ahead" : "behind"}`;
}

function renderView(view) {
  $("workflow").hidden = false;
  $("wf-id").textContent = view.workflow_id;
  const state = $("wf-state");
  state.textContent = view.state;
  state.className = `state-${view.state}`;
  $("wf-step").textContent = view.step || "—";
  $("wf-complete").textContent = view.complete ? "yes" : "no (a required part is missing)";
  $("wf-staleness").textContent = `at most ${view.staleness_ms} ms behind`;
  $("wf-stalled").replaceChildren(view.stalled ? badge("stalled", "bad") : badge("no", "ok"));
  const anomalies = $("anomalies");
  anomalies.replaceChildren(...(view.anomalies || []).map((a) => el("li", a.detail)));
  const rows = Object.entries(view.parts).map(([name, part]) => {
    const tr = el("tr");
    tr.dataset.participant = name;
    const th = el("th", name);
    th.scope = "row";
    tr.append(th, el("td", part.state ?? "—"), el("td", part.version ?? "—"), el("td", part.source));
    const fresh = el("td");
    if (part.error) fresh.append(badge(part.error, "bad"));
    else if (part.source === "stale") fresh.append(badge("stale copy", "warn"));
    else fresh.append(badge(part.source === "none" ? "unknown" : "fresh", part.source === "none" ? "warn" : "ok"));
    if (part.latency_ms !== null && part.latency_ms !== undefined) fresh.append(badge(`${part.latency_ms.toFixed(1)} ms call`));
    const skewed = part.clock_offset_ms !== undefined && part.clock_offset_ms !== null;
    if (skewed) {
      const clock = badge(offsetText(part.clock_offset_ms), "warn skew");
      clock.title = "This participant's clock is measured off the aggregator's: its times are corrected by it.";
      fresh.append(clock);
    }
    // Ages are measured in the aggregator's clock (the view's generated_at), not the browser's.
    const age = part.updated_at ? since(Date.parse(view.generated_at) - corrected(part.updated_at, part.clock_offset_ms)) : "";
    tr.append(fresh, el("td", age || "—"));
    if (part.updated_at) tr.lastChild.title = skewed ? `${part.updated_at} by ${name}'s clock` : part.updated_at;
    return tr;
  });
  $("parts").tBodies[0].replaceChildren(...rows);
}

function renderTimeline(timeline, participants) {
  const entries = timeline.entries;
  $("timeline").replaceChildren(
    ...entries.map((e) => el("li", `${e.at} — ${e.participant} ${e.state} (v${e.version})`)),
    ...Object.entries(timeline.errors || {}).map(([p, kind]) => el("li", `${p}: history unavailable (${kind})`, "error")),
  );
  const svg = $("lanes");
  const ns = "http://www.w3.org/2000/svg";
  const lanes = participants.length ? participants : [...new Set(entries.map((e) => e.participant))];
  const laneH = 44, left = 100, right = 20, top = 14;
  const width = Math.max(320, svg.clientWidth || 800);
  svg.setAttribute("height", String(top + laneH * lanes.length + 8));
  svg.setAttribute("viewBox", `0 0 ${width} ${top + laneH * lanes.length + 8}`);
  svg.replaceChildren();
  // Entries come in causal order and are drawn in it, left to right: each one step after the
  // one before, and further when more time passed between them (by their corrected times, on a
  // log scale), so a wait shows without a clock estimate ever drawing an effect before its cause.
  const gaps = entries.map((e, i) => {
    if (i === 0) return 0;
    const dt = corrected(e.at, e.clock_offset_ms) - corrected(entries[i - 1].at, entries[i - 1].clock_offset_ms);
    return 1 + (Number.isFinite(dt) && dt > 0 ? Math.log10(1 + dt) : 0);
  });
  const offsets = [];
  gaps.forEach((g, i) => offsets.push(i === 0 ? 0 : offsets[i - 1] + g));
  const span = offsets.length ? offsets[offsets.length - 1] : 0;
  const at = (i) => (span > 0 ? left + 10 + (offsets[i] / span) * (width - left - right - 10) : left + 10);
  lanes.forEach((name, i) => {
    const y = top + laneH * i + laneH / 2;
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", "8"); label.setAttribute("y", String(y + 4)); label.textContent = name;
    const line = document.createElementNS(ns, "line");
    line.setAttribute("class", "lane");
    line.setAttribute("x1", String(left)); line.setAttribute("x2", String(width - right));
    line.setAttribute("y1", String(y)); line.setAttribute("y2", String(y));
    svg.append(label, line);
  });
  // Labels go above their dot, else below it, wherever they overlap no other label; one that
  // fits in neither place is left out (the dot's tooltip and the list below say it).
  const taken = lanes.map(() => [[], []]); // per lane, per row: the [from, to] spans used
  const free = (spans, from, to) => spans.every(([a, b]) => to + 4 <= a || from >= b + 4);
  entries.forEach((e, i) => {
    const lane = lanes.indexOf(e.participant);
    if (lane < 0) return;
    const y = top + laneH * lane + laneH / 2;
    const cx = at(i);
    const dot = document.createElementNS(ns, "circle");
    dot.setAttribute("class", "dot"); dot.setAttribute("cx", String(cx)); dot.setAttribute("cy", String(y)); dot.setAttribute("r", "5");
    const title = document.createElementNS(ns, "title");
    title.textContent = `${e.participant} ${e.state} v${e.version} at ${e.at}`;
    dot.append(title);
    svg.append(dot);
    const text = document.createElementNS(ns, "text");
    text.textContent = e.state;
    svg.append(text);
    const w = text.getComputedTextLength() || 7 * e.state.length;
    const nearEnd = cx + 7 + w > width - right; // labels near the right edge go to the dot's left
    const from = nearEnd ? cx - 7 - w : cx + 7, to = from + w;
    const row = [0, 1].find((r) => free(taken[lane][r], from, to));
    if (row === undefined) { text.remove(); return; }
    taken[lane][row].push([from, to]);
    text.setAttribute("x", String(from)); text.setAttribute("y", String(row === 0 ? y - 7 : y + 15));
  });
}

async function refreshTimeline(id, participants) {
  const { status, body } = await getJSON(`workflows/${encodeURIComponent(id)}/timeline`);
  if (id !== current) return;
  if (status === 200) renderTimeline(body, participants);
}

async function show(id) {
  stopWatching();
  current = id;
  const url = new URL(window.location.href);
  url.searchParams.set("id", id);
  history.replaceState(null, "", url);
  say(`Looking ${id} up…`);
  const { status, body } = await getJSON(`workflows/${encodeURIComponent(id)}`);
  if (id !== current) return;
  if (status === 200) {
    renderView(body);
    say(`${id}: ${body.state}, shown ${new Date().toLocaleTimeString()}`);
    await refreshTimeline(id, Object.keys(body.parts));
  } else if (status === 404) {
    $("workflow").hidden = true;
    say(`No participant knows ${id} yet.${$("follow").checked ? " Waiting for it…" : ""}`);
  } else {
    say(problemText(status, body), true);
    return;
  }
  if ($("follow").checked) watch(id);
}

function stopWatching() {
  if (watching) watching.abort();
  watching = null;
}

// The watch stream read with fetch (not EventSource, which cannot send the bearer token).
async function watch(id) {
  const controller = new AbortController();
  watching = controller;
  try {
    const response = await fetch(new URL(`workflows/${encodeURIComponent(id)}/watch`, api), {
      headers: { ...headers(), Accept: "text/event-stream" },
      signal: controller.signal,
    });
    if (!response.ok || !response.body) {
      say(`Live updates unavailable: HTTP ${response.status}`, true);
      return;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
        const event = (block.split("\n").find((l) => l.startsWith("event:")) || "event: message").slice(6).trim();
        if (!data || event !== "view" || id !== current) continue;
        const view = JSON.parse(data);
        renderView(view);
        say(`${id}: ${view.state}, live, updated ${new Date().toLocaleTimeString()}`);
        refreshTimeline(id, Object.keys(view.parts));
      }
    }
    if (watching === controller) say(`${id}: the live stream ended; press Show to follow again.`);
  } catch (err) {
    if (err.name !== "AbortError") say(`Live updates stopped: ${err.message}`, true);
  }
}

async function refreshStalled() {
  $("stalled-status").textContent = "Looking for stalled workflows…";
  const { status, body } = await getJSON("workflows?stalled=true");
  const tbody = $("stalled-list").tBodies[0];
  if (status !== 200) {
    tbody.replaceChildren();
    $("stalled-status").textContent = problemText(status, body);
    return;
  }
  tbody.replaceChildren(...body.views.map((view) => {
    const tr = el("tr");
    const link = el("a", view.workflow_id);
    link.href = `?id=${encodeURIComponent(view.workflow_id)}`;
    link.addEventListener("click", (ev) => { ev.preventDefault(); $("workflow-id").value = view.workflow_id; show(view.workflow_id); });
    const cell = el("th");
    cell.scope = "row";
    cell.append(link);
    const button = el("button", "Redrive", "secondary");
    button.type = "button";
    button.setAttribute("aria-label", `Redrive ${view.workflow_id}`);
    const result = el("span", "");
    result.setAttribute("role", "status");
    button.addEventListener("click", () => redrive(view.workflow_id, button, result));
    const actions = el("td");
    actions.append(button, " ", result);
    tr.append(cell, el("td", view.state), el("td", view.step || "—"), actions);
    return tr;
  }));
  $("stalled-status").textContent = body.views.length
    ? `${body.views.length} stalled workflow${body.views.length === 1 ? "" : "s"}, ${new Date().toLocaleTimeString()}`
    : `No stalled workflow, ${new Date().toLocaleTimeString()}`;
}

async function redrive(id, button, result) {
  button.disabled = true;
  result.textContent = "redriving…";
  const { status, body } = await getJSON(`workflows/${encodeURIComponent(id)}/redrive`, { method: "POST" });
  button.disabled = false;
  if (status !== 202) {
    result.textContent = problemText(status, body);
    result.className = "error";
    return;
  }
  result.className = "";
  result.textContent = Object.entries(body.participants)
    .map(([p, r]) => ("republished" in r ? `${p} republished ${r.republished}` : `${p}: ${r.error}`))
    .join(", ");
}

$("lookup").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const id = $("workflow-id").value.trim();
  if (!ID_RULE.test(id)) { say("A workflow id is 1 to 128 of A-Z a-z 0-9 . _ : -", true); return; }
  show(id);
});
$("follow").addEventListener("change", () => { if (!$("follow").checked) stopWatching(); else if (current) show(current); });
$("token").value = sessionStorage.getItem("token") || "";
$("token").addEventListener("change", () => { sessionStorage.setItem("token", $("token").value.trim()); refreshStalled(); if (current) show(current); });
$("refresh-stalled").addEventListener("click", refreshStalled);

const initial = new URL(window.location.href).searchParams.get("id");
if (initial && ID_RULE.test(initial)) { $("workflow-id").value = initial; show(initial); }
refreshStalled();
