// The status page: look a workflow up and follow it live; count and list the workflows in flight
// by state, step and age; list the stalled ones by why, redrive one, or a group as a tracked job.
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

let aggregatorSkew = 0; // the aggregator's clock less the browser's (ms), from its Date header

async function getJSON(path, init = {}) {
  const response = await fetch(new URL(path, api), { ...init, headers: { ...headers(), ...(init.headers || {}) } });
  const date = Date.parse(response.headers.get("Date") || "");
  if (Number.isFinite(date)) aggregatorSkew = date + 500 - Date.now(); // Date has whole seconds
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
  if (ms < 7200000) return `${Math.round(ms / 60000)} min ago`;
  if (ms < 172800000) return `${Math.round(ms / 3600000)} h ago`;
  return `${Math.round(ms / 86400000)} days ago`;
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

// -- the fleet: counts by state, the workflows in flight a page at a time ----------------------

// Links to a workflow's own view on this page (/ui/?id=ID): a plain link a person can open in
// a new tab or share; a plain click shows it here.
function workflowLink(id) {
  const link = el("a", id);
  link.href = `?id=${encodeURIComponent(id)}`;
  link.addEventListener("click", async (ev) => {
    if (ev.button !== 0 || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.altKey) return;
    ev.preventDefault();
    $("workflow-id").value = id;
    await show(id);
    if (!$("workflow").hidden) $("workflow-title").focus();
  });
  return link;
}

// When a workflow last changed, in the aggregator's clock: its newest part, each part's time
// corrected by its participant's measured clock offset.
function newestChange(view) {
  let newest = NaN;
  for (const part of Object.values(view.parts || {})) {
    if (!part.updated_at) continue;
    const at = corrected(part.updated_at, part.clock_offset_ms);
    if (Number.isFinite(at) && !(newest >= at)) newest = at;
  }
  return newest;
}

function ageCell(view, atMs, title) {
  const cell = el("td", Number.isFinite(atMs) ? since(Date.parse(view.generated_at) - atMs) || "—" : "—");
  if (title) cell.title = title;
  return cell;
}

function setStatus(id, text, isError = false) {
  $(id).textContent = text;
  $(id).classList.toggle("error", isError);
}

const plural = (n, one, many) => `${n} ${n === 1 ? one : many || `${one}s`}`;

// The state checkboxes, made from the summary's states once (a person's choice is kept when
// the counts are refreshed); the first time, the states that have workflows are checked.
function setStates(counts) {
  const box = $("fleet-states");
  const states = Object.keys(counts);
  const have = [...box.querySelectorAll("input")].map((i) => i.value);
  if (have.length === states.length && have.every((s, i) => s === states[i])) return;
  const before = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
  const busy = states.filter((s) => counts[s] > 0);
  const wanted = have.length ? before : new Set(busy.length ? busy : states);
  box.replaceChildren(box.querySelector("legend"), ...states.map((state) => {
    const label = el("label", null, "inline");
    const input = el("input");
    input.type = "checkbox";
    input.name = "state";
    input.value = state;
    input.checked = wanted.has(state);
    label.append(input, ` ${state}`);
    return label;
  }));
}

async function refreshCounts() {
  setStatus("counts-status", "Counting the workflows in flight…");
  const { status, body } = await getJSON("summary");
  if (status !== 200) {
    setStatus("counts-status", problemText(status, body), true);
    return false;
  }
  $("counts").replaceChildren(...Object.entries(body.counts).map(([state, n]) => {
    const item = el("div");
    item.dataset.state = state;
    const dd = el("dd", n);
    dd.className = `state-${state}`;
    item.append(el("dt", state), dd);
    return item;
  }));
  const when = new Date().toLocaleTimeString();
  setStatus("counts-status", body.complete
    ? `Complete: every one of the ${plural(body.scanned, "listed workflow")} counted, ${when}.`
    : `Not complete: the count stopped at its bound after ${plural(body.scanned, "listed workflow")}, ${when}.`);
  setStates(body.counts);
  return true;
}

async function loadSteps() {
  const { status, body } = await getJSON("healthz");
  if (status !== 200 || !body || !body.clock_offset_ms) return;
  const select = $("fleet-step");
  select.replaceChildren(select.options[0], ...Object.keys(body.clock_offset_ms).map((name) => {
    const option = el("option", name);
    option.value = name;
    return option;
  }));
}

let fleet = { params: null, page: 0, shown: 0, seq: 0 };

// The filter as query parameters; the age presets become times in the aggregator's clock
// (the browser's clock corrected by the aggregator's Date header), fixed for all the pages.
function fleetParams() {
  const states = [...document.querySelectorAll("#fleet-states input:checked")].map((i) => i.value);
  if (!states.length) return null;
  const params = new URLSearchParams();
  states.forEach((s) => params.append("state", s));
  if ($("fleet-step").value) params.set("step", $("fleet-step").value);
  const now = Date.now() + aggregatorSkew;
  if ($("fleet-before").value) params.set("updated_before", new Date(now - Number($("fleet-before").value)).toISOString());
  if ($("fleet-after").value) params.set("updated_after", new Date(now - Number($("fleet-after").value)).toISOString());
  params.set("limit", $("fleet-limit").value);
  return params;
}

async function listFleet(cursor = null) {
  if (!cursor) {
    const params = fleetParams();
    if (!params) { setStatus("fleet-status", "Check at least one state to list.", true); return; }
    fleet = { params, page: 0, shown: 0, seq: fleet.seq + 1 };
  }
  const seq = fleet.seq;
  const query = new URLSearchParams(fleet.params);
  if (cursor) query.set("cursor", cursor);
  $("fleet-next").disabled = true;
  setStatus("fleet-status", cursor ? "Loading the next page…" : "Listing…");
  const { status, body } = await getJSON(`workflows?${query}`);
  if (seq !== fleet.seq) return; // a newer listing started meanwhile
  $("fleet-next").disabled = false;
  if (status !== 200) {
    setStatus("fleet-status", problemText(status, body), true);
    return;
  }
  fleet.page += 1;
  const first = fleet.shown + 1;
  fleet.shown += body.views.length;
  $("fleet-list").hidden = false;
  $("fleet-list").tBodies[0].replaceChildren(...body.views.map((view) => {
    const tr = el("tr");
    tr.dataset.workflow = view.workflow_id;
    const th = el("th");
    th.scope = "row";
    th.append(workflowLink(view.workflow_id));
    const state = el("td", view.state, `state-${view.state}`);
    const changed = newestChange(view);
    const stalled = el("td");
    stalled.append(view.stall ? badge(`stalled: ${view.stall.reason}`, "bad") : view.stalled ? badge("stalled", "bad") : badge("no", "ok"));
    tr.append(th, state, el("td", view.step || "—"),
      ageCell(view, changed, Number.isFinite(changed) ? new Date(changed).toISOString() : ""), stalled);
    return tr;
  }));
  const parts = [
    body.views.length
      ? `Page ${fleet.page}: ${plural(body.views.length, "workflow")} (${first}–${fleet.shown})`
      : `Page ${fleet.page}: no matching workflow`,
    `${plural(body.scanned, "listed workflow")} looked at`,
  ];
  if (body.budget_exhausted) parts.push("the page ended on the scan budget, not on the data: there may be more on the next page");
  else if (!body.next) parts.push("no more pages");
  setStatus("fleet-status", `${parts.join("; ")}.`);
  $("fleet-next").hidden = !body.next;
  $("fleet-next").onclick = body.next ? () => listFleet(body.next) : null;
}

async function refreshFleet() {
  if (await refreshCounts()) await listFleet();
}

// -- stalled workflows, grouped by why; redrive one, or a group as a tracked job --------------

const REASONS = {
  no_progress: ["No progress", "Every part answered and nothing moved: an event was lost. A redrive usually moves it on."],
  part_unavailable: ["Part unavailable", "A required part could not be read: its participant is down or failing."],
  anomaly: ["Anomaly", "A declared ordering is still violated past the stall time: an event between two parts was lost."],
  unmapped: ["Unmapped state", "A part's state has no entry in its mapping: fix the definition; a redrive cannot help."],
};

function stalledRow(view) {
  const tr = el("tr");
  tr.dataset.workflow = view.workflow_id;
  const cell = el("th");
  cell.scope = "row";
  cell.append(workflowLink(view.workflow_id));
  const button = el("button", "Redrive", "secondary");
  button.type = "button";
  button.setAttribute("aria-label", `Redrive ${view.workflow_id}`);
  const result = el("span", "");
  result.setAttribute("role", "status");
  button.addEventListener("click", () => redrive(view.workflow_id, button, result));
  const actions = el("td");
  actions.append(button, " ", result);
  const stall = view.stall || { waiting_for: [], since: null };
  const sinceAt = stall.since ? Date.parse(stall.since) : NaN;
  tr.append(cell, el("td", view.state), el("td", view.step || "—"),
    el("td", stall.waiting_for.length ? stall.waiting_for.join(", ") : "—"),
    ageCell(view, sinceAt, stall.since || ""), actions);
  return tr;
}

function stalledGroup(reason, views) {
  const [title, why] = REASONS[reason] || [reason, ""];
  const group = el("section", null, "stall-group");
  group.dataset.reason = reason;
  const headingId = `stall-${reason}`;
  group.setAttribute("aria-labelledby", headingId);
  const heading = el("h3", `${title} `);
  heading.id = headingId;
  heading.append(el("span", `(${views.length})`, "count"));
  const button = el("button", `Redrive these ${views.length}`, "secondary redrive-group");
  button.type = "button";
  button.setAttribute("aria-label", `Redrive these ${views.length}: ${title.toLowerCase()}`);
  button.addEventListener("click", () => startJob(views.map((v) => v.workflow_id), `${title.toLowerCase()} (${views.length})`));
  const table = el("table");
  const caption = el("caption", `Stalled: ${title.toLowerCase()}`, "visually-hidden");
  const head = el("thead");
  const names = ["Workflow", "State", "Step", "Waiting for", "Stalled since", "Redrive"];
  const tr = el("tr");
  tr.append(...names.map((n) => { const th = el("th", n); th.scope = "col"; return th; }));
  head.append(tr);
  const tbody = el("tbody");
  tbody.append(...views.map(stalledRow));
  table.append(caption, head, tbody);
  group.append(heading, el("p", why, "sub"), button, table);
  return group;
}

async function refreshStalled() {
  setStatus("stalled-status", "Looking for stalled workflows…");
  const { status, body } = await getJSON("workflows?stalled=true");
  const list = $("stalled-list");
  if (status !== 200) {
    list.replaceChildren();
    $("redrive-all").hidden = true;
    setStatus("stalled-status", problemText(status, body), true);
    return;
  }
  const groups = new Map(Object.keys(REASONS).map((r) => [r, []]));
  for (const view of body.views) {
    const reason = (view.stall && view.stall.reason) || "unknown";
    if (!groups.has(reason)) groups.set(reason, []);
    groups.get(reason).push(view);
  }
  list.replaceChildren(...[...groups].filter(([, views]) => views.length).map(([r, views]) => stalledGroup(r, views)));
  const all = body.views.map((v) => v.workflow_id);
  $("redrive-all").hidden = all.length === 0;
  $("redrive-all").textContent = `Redrive all ${all.length} stalled`;
  $("redrive-all").onclick = () => startJob(all, `all stalled (${all.length})`);
  setRedriveButtons();
  const when = new Date().toLocaleTimeString();
  setStatus("stalled-status", all.length
    ? `${plural(all.length, "stalled workflow")}: ${[...groups].filter(([, v]) => v.length).map(([r, v]) => `${v.length} ${(REASONS[r] || [r])[0].toLowerCase()}`).join(", ")}; ${when}`
    : `No stalled workflow, ${when}`);
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

let job = null; // the redrive job followed: {id, state}

function setRedriveButtons() {
  const running = job !== null && job.state === "running";
  document.querySelectorAll(".redrive-group, #redrive-all").forEach((b) => { b.disabled = running; });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function startJob(ids, what) {
  if (job && job.state === "running") return;
  $("redrive-job").hidden = false;
  $("job-failures").replaceChildren();
  $("job-id").textContent = "";
  $("job-cancel").hidden = true;
  setStatus("job-status", `Starting a redrive job for ${what}…`);
  job = { id: null, state: "running" };
  setRedriveButtons();
  // By ids: the workflows shown (the job takes only those last changed before its cutoff).
  const request = { ids, dry_run: $("job-dry-run").checked };
  const rate = Number($("job-rate").value);
  if ($("job-rate").value && Number.isFinite(rate) && rate > 0) request.rate_per_s = rate;
  const { status, body } = await getJSON("redrives", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(request),
  });
  if (status !== 202 || !body || !body.id) {
    job = null;
    setRedriveButtons();
    setStatus("job-status", `The job was not started: ${problemText(status, body)}`, true);
    return;
  }
  job = { id: body.id, state: "running" };
  $("job-id").textContent = body.id;
  $("job-id").title = `cutoff ${body.cutoff}: only workflows last changed before it are taken`;
  $("job-cancel").hidden = false;
  $("job-cancel").disabled = false;
  await followJob(body.id);
}

function renderJob(body) {
  const selected = Number.isFinite(body.selected) ? body.selected : null;
  const progress = $("job-progress");
  progress.max = Math.max(1, selected || 0);
  progress.value = Math.min(progress.max, body.done || 0);
  const of = selected === null ? `${body.done}` : `${body.done} of ${selected}`;
  const tally = {};
  for (const r of body.results || []) tally[r.result] = (tally[r.result] || 0) + 1;
  const detail = Object.entries(tally).map(([k, n]) => `${n} ${k.replaceAll("_", " ")}`).join(", ");
  const word = { running: "Running", done: "Done", cancelled: "Cancelled" }[body.state] || body.state;
  const notes = [];
  if (body.dry_run) notes.push("a dry run: nothing was redriven");
  if (body.skipped) notes.push(`${body.skipped} skipped (unknown, or changed after the cutoff)`);
  if (body.error) notes.push(`stopped: ${body.error}`);
  const text = `${word}: ${of} done, ${body.failed} failed${detail ? ` (${detail})` : ""}${notes.length ? `; ${notes.join("; ")}` : ""}.`;
  if ($("job-status").textContent !== text) setStatus("job-status", text, body.failed > 0 && body.state !== "running");
  const failures = (body.results || []).filter((r) => r.result === "failed");
  if (failures.length !== $("job-failures").children.length) {
    $("job-failures").replaceChildren(...failures.map((r) => el("li", `${r.workflow_id}: ${r.detail || "failed"}`)));
  }
}

async function followJob(id) {
  for (;;) {
    if (!job || job.id !== id) return;
    const { status, body } = await getJSON(`redrives/${encodeURIComponent(id)}`);
    if (!job || job.id !== id) return;
    if (status !== 200) {
      setStatus("job-status", `Progress unavailable: ${problemText(status, body)}`, true);
      job.state = "unknown";
      break;
    }
    job.state = body.state;
    renderJob(body);
    if (body.state !== "running") break;
    await sleep(500);
  }
  $("job-cancel").hidden = true;
  setRedriveButtons();
  refreshStalled();
}

async function cancelJob() {
  if (!job || !job.id) return;
  $("job-cancel").disabled = true;
  const { status, body } = await getJSON(`redrives/${encodeURIComponent(job.id)}`, { method: "DELETE" });
  if (status !== 202 && status !== 200 && status !== 204) {
    $("job-cancel").disabled = false;
    setStatus("job-status", `Not cancelled: ${problemText(status, body)}`, true);
  }
}

$("lookup").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const id = $("workflow-id").value.trim();
  if (!ID_RULE.test(id)) { say("A workflow id is 1 to 128 of A-Z a-z 0-9 . _ : -", true); return; }
  show(id);
});
$("follow").addEventListener("change", () => { if (!$("follow").checked) stopWatching(); else if (current) show(current); });
$("token").value = sessionStorage.getItem("token") || "";
$("token").addEventListener("change", () => {
  sessionStorage.setItem("token", $("token").value.trim());
  refreshStalled();
  refreshFleet();
  if (current) show(current);
});
$("refresh-stalled").addEventListener("click", refreshStalled);
$("refresh-counts").addEventListener("click", refreshCounts);
$("fleet-filter").addEventListener("submit", (ev) => { ev.preventDefault(); listFleet(); });
$("job-cancel").addEventListener("click", cancelJob);

const initial = new URL(window.location.href).searchParams.get("id");
if (initial && ID_RULE.test(initial)) { $("workflow-id").value = initial; show(initial); }
refreshStalled();
loadSteps();
refreshFleet();
