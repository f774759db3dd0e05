// The live view of ari-realtime. Plain JavaScript, no build step, no network
// resources: it reads GET /calls, GET /calls/{id}/events (server-sent events)
// and GET /healthz of the controller that served it.
//
// Everything the caller or the model said is untrusted text: it is only ever
// put in the page with textContent, never as HTML.
"use strict";

const LIST_EVERY_MS = 1000;
const HEALTH_EVERY_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";

const view = {
  calls: [],          // summaries from GET /calls
  selected: null,     // call id shown on the right
  record: null,       // its record, kept current from its events
  state: "",          // its last `state` event
  source: null,       // its EventSource
};

const $ = (id) => document.getElementById(id);

// --- requests -------------------------------------------------------------------------

async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (response.status === 401) {
    // The session cookie is missing or stale: ask for the token again.
    window.location.assign("/login");
    throw new Error("not logged in");
  }
  const body = await response.json();
  if (!response.ok && response.status !== 503) {
    throw new Error(body.error || `HTTP ${response.status}`);
  }
  return body;
}

function notice(text) {
  $("notice").textContent = text;
}

// --- the list of calls ----------------------------------------------------------------

async function refreshCalls() {
  try {
    const body = await getJson("/calls?limit=50");
    view.calls = body.calls;
    renderCalls();
    notice("");
  } catch (error) {
    notice(`cannot list calls: ${error.message}`);
  }
}

async function refreshHealth() {
  const box = $("health");
  try {
    const checks = await getJson("/healthz");
    box.replaceChildren();
    for (const [name, ok] of Object.entries(checks)) {
      const item = document.createElement("span");
      item.className = ok ? "good" : "bad";
      item.textContent = `${ok ? "\u2713" : "\u2717"} ${name.replace(/_/g, " ")}  `;
      box.append(item);
    }
  } catch (error) {
    box.textContent = "controller unreachable";
  }
}

function callItem(call) {
  const item = document.createElement("li");
  item.dataset.callId = call.id;
  item.classList.toggle("live", call.status === "live");
  item.classList.toggle("selected", call.id === view.selected);
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = call.caller_number || call.caller_name || call.dialled_number || call.id;
  const length = document.createElement("span");
  length.className = "what";
  length.textContent = duration(elapsedMs(call));
  const when = document.createElement("span");
  when.className = "when";
  const started = new Date(call.started_at);
  const outcome = call.status === "live" ? "live" : (call.outcome || "ended").replace(/_/g, " ");
  when.textContent = [
    call.direction,
    started.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }),
    call.dialled_number && `to ${call.dialled_number}`,
    outcome,
  ].filter(Boolean).join(" \u00b7 ");
  item.append(who, length, when);
  item.addEventListener("click", () => openCall(call.id));
  return item;
}

function renderCalls() {
  const live = view.calls.filter((c) => c.status === "live");
  const ended = view.calls.filter((c) => c.status !== "live");
  $("active-list").replaceChildren(...live.map(callItem));
  $("recent-list").replaceChildren(...ended.map(callItem));
  $("active-count").textContent = String(live.length);
  $("active-none").hidden = live.length > 0;
  $("recent-none").hidden = ended.length > 0;
}

// --- one call ---------------------------------------------------------------------------

function openCall(id) {
  if (view.source) view.source.close();
  view.selected = id;
  view.record = null;
  view.state = "";
  if (window.location.hash !== `#call=${encodeURIComponent(id)}`) {
    window.location.hash = `call=${encodeURIComponent(id)}`;
  }
  renderCalls();
  $("empty").hidden = true;
  $("call").hidden = false;
  $("call-title").textContent = id;
  $("call-meta").textContent = "connecting\u2026";
  $("transcript").replaceChildren();
  $("timeline").replaceChildren();

  const source = new EventSource(`/calls/${encodeURIComponent(id)}/events`);
  view.source = source;
  const on = (kind, handle) =>
    source.addEventListener(kind, (event) => {
      if (view.source !== source) return;  // a stream of a call no longer shown
      handle(JSON.parse(event.data));
      renderCall();
    });
  on("record", (record) => {
    view.state = record.state || "";
    view.record = record;
  });
  on("transcript", (line) =>
    upsert(view.record.transcript, line, (e) => e.role === line.role && e.start_ms === line.start_ms));
  on("turn", (turn) => upsert(view.record.turns, turn, (e) => e.index === turn.index));
  on("tool_call", (tool) => upsert(view.record.tool_calls, tool, (e) => e.call_id === tool.call_id));
  on("dtmf", (keys) => view.record.dtmf.push(keys));
  on("state", (data) => { view.state = data.state; });
  on("lag", async (data) => {
    // Events were dropped for this page: read the whole record again.
    notice(`missed ${data.dropped} event(s); reloaded the call`);
    try {
      const record = await getJson(`/calls/${encodeURIComponent(id)}`);
      if (view.source === source) { view.record = record; renderCall(); }
    } catch (error) {
      notice(`cannot reload the call: ${error.message}`);
    }
  });
  on("end", (record) => {
    source.close();  // else EventSource reconnects by itself
    view.record = record;
    view.state = "ended";
  });
  source.onerror = async () => {
    if (view.source !== source || source.readyState !== EventSource.CLOSED) return;
    try {
      view.record = await getJson(`/calls/${encodeURIComponent(id)}`);
      renderCall();
    } catch (error) {
      $("call-meta").textContent = error.message;
    }
  };
}

function upsert(list, entry, same) {
  for (let i = list.length - 1; i >= 0; i--) {
    if (same(list[i])) { list[i] = entry; return; }
  }
  list.push(entry);
}

function renderCall() {
  const record = view.record;
  if (!record) return;
  const live = record.status === "live";
  $("call-title").textContent =
    `${record.caller_number || record.caller_name || "unknown caller"} \u2192 ${record.dialled_number || "agent"}`;
  const parts = [
    record.direction,
    new Date(record.started_at).toLocaleString(),
    duration(elapsedMs(record)),
    record.profile && `profile ${record.profile}`,
    record.model,
    record.outcome && `${record.outcome}${record.end_reason ? ` (${record.end_reason})` : ""}`,
    record.cost_usd ? `$${record.cost_usd.toFixed(4)}` : "",
    `id ${record.id}`,
  ];
  $("call-meta").textContent = parts.filter(Boolean).join(" \u00b7 ");
  const state = $("call-state");
  state.textContent = live ? view.state || "live" : "ended";
  state.classList.toggle("live", live);
  $("hangup").hidden = !live;
  renderTranscript(record);
  renderTimeline(record);
}

function renderTranscript(record) {
  const items = [];
  for (const line of record.transcript) {
    items.push({ at: line.start_ms, kind: line.role, role: line.role, text: line.text });
  }
  for (const tool of record.tool_calls) {
    const result = tool.duration_ms == null ? "running\u2026" : tool.refused ? "refused" : "ok";
    items.push({
      at: tool.started_ms,
      kind: tool.refused ? "tool refused" : "tool",
      role: "tool",
      text: `${tool.name}(${JSON.stringify(tool.arguments)}) \u2192 ${result}` +
        (tool.result ? ` ${tool.result}` : ""),
    });
  }
  for (const keys of record.dtmf) {
    items.push({ at: keys.at_ms, kind: "dtmf", role: "keys", text: `${keys.direction}: ${keys.digits}` });
  }
  items.sort((a, b) => a.at - b.at);
  $("transcript").replaceChildren(...items.map((item) => {
    const li = document.createElement("li");
    li.className = item.kind;
    for (const [cls, text] of [["t", clock(item.at)], ["role", item.role], ["text", item.text]]) {
      const span = document.createElement("span");
      span.className = cls;
      span.textContent = text;
      li.append(span);
    }
    return li;
  }));
  $("transcript-none").hidden = items.length > 0;
}

// --- the timeline -----------------------------------------------------------------------

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function titled(node, text) {
  node.append(el("title", {}, text));
  return node;
}

// How long an utterance without an end time probably lasted: about 15
// characters a second, and never past the next thing said by the same side.
function speechEnd(line, next) {
  if (line.end_ms != null) return { end: line.end_ms, estimated: false };
  let end = line.start_ms + Math.max(600, line.text.length * 65);
  if (next) end = Math.min(end, next.start_ms);
  return { end, estimated: true };
}

function renderTimeline(record) {
  const svg = $("timeline");
  const width = Math.max(480, svg.clientWidth || svg.parentNode.clientWidth || 900);
  const left = 58, right = 28;
  const lanes = { caller: 22, latency: 52, agent: 76, tools: 118 };
  const laneHeight = 22;
  const height = 170;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("height", String(height));

  const spans = [];
  for (const line of record.transcript) spans.push(line.end_ms ?? line.start_ms + 600);
  for (const tool of record.tool_calls) spans.push(tool.started_ms + (tool.duration_ms || 0));
  const total = Math.max(1000, elapsedMs(record), ...spans);
  const x = (ms) => left + (Math.max(0, ms) / total) * (width - left - right);

  const nodes = [];
  for (const [name, y] of [["caller", lanes.caller], ["agent", lanes.agent], ["tools", lanes.tools]]) {
    nodes.push(el("rect", { class: "lane", x: left, y, width: width - left - right, height: laneHeight, rx: 3 }));
    nodes.push(el("text", { class: "lane-label", x: 4, y: y + 15 }, name));
  }

  // Speech, one lane per side.
  for (const role of ["caller", "agent"]) {
    const lines = record.transcript.filter((l) => l.role === role).sort((a, b) => a.start_ms - b.start_ms);
    lines.forEach((line, i) => {
      const { end, estimated } = speechEnd(line, lines[i + 1]);
      const x0 = x(line.start_ms), x1 = Math.max(x0 + 3, x(end));
      const rect = el("rect", {
        class: `seg-${role}${estimated ? " estimated" : ""}`,
        x: x0, y: lanes[role] + 2, width: x1 - x0, height: laneHeight - 4, rx: 3,
      });
      nodes.push(titled(rect, `${clock(line.start_ms)} ${role}: ${line.text}`));
      if (x1 - x0 > 40) {
        const label = el("text", { class: "seg-label", x: x0 + 4, y: lanes[role] + 15 },
          fit(line.text, (x1 - x0 - 8) / 5.5));
        nodes.push(label);
      }
    });
  }

  // Tool calls.
  for (const tool of record.tool_calls) {
    const x0 = x(tool.started_ms);
    const x1 = Math.max(x0 + 6, x(tool.started_ms + (tool.duration_ms || 0)));
    const rect = el("rect", {
      class: `seg-tool${tool.refused ? " refused" : ""}`,
      x: x0, y: lanes.tools + 2, width: x1 - x0, height: laneHeight - 4, rx: 3,
    });
    nodes.push(titled(rect, `${clock(tool.started_ms)} ${tool.name} ${tool.refused ? "refused" : "ok"}` +
      (tool.duration_ms != null ? ` in ${tool.duration_ms} ms` : "")));
    nodes.push(el("text", { class: "tool-label", x: x1 + 3, y: lanes.tools + 15 }, tool.name));
  }

  // Caller keys, under the caller lane's label.
  for (const keys of record.dtmf) {
    const y = keys.direction === "caller" ? lanes.caller - 4 : lanes.agent + laneHeight + 11;
    nodes.push(titled(el("text", { class: "dtmf", x: x(keys.at_ms), y }, `\u260e ${keys.digits}`),
      `${clock(keys.at_ms)} ${keys.direction} keys ${keys.digits}`));
  }

  // Each turn: how long the caller waited, and where the caller talked over it.
  const callerLines = record.transcript.filter((l) => l.role === "caller");
  for (const turn of record.turns) {
    const wait = turn.first_frame_latency_ms ?? turn.first_audio_latency_ms ?? turn.response_latency_ms;
    if (turn.caller_stopped_ms != null && wait != null) {
      const x0 = x(turn.caller_stopped_ms), x1 = Math.max(x0 + 2, x(turn.caller_stopped_ms + wait));
      const y = lanes.latency + 6;
      const path = el("path", { class: "latency", d: `M${x0},${y - 5} V${y} H${x1} V${y + 5}` });
      nodes.push(titled(path, `turn ${turn.index}: response ${ms(turn.response_latency_ms)}, ` +
        `first audio ${ms(turn.first_audio_latency_ms)}, first frame ${ms(turn.first_frame_latency_ms)}`));
      nodes.push(el("text", { class: "latency-label", x: x0, y: y - 8 }, `${wait} ms`));
    }
    if (turn.barge_in) {
      // The interruption is the caller's next utterance after this turn began.
      const from = (turn.caller_stopped_ms ?? 0) + (wait ?? 0);
      const cut = callerLines.find((l) => l.start_ms > from);
      if (cut) {
        const bx = x(cut.start_ms);
        nodes.push(titled(el("line", { class: "bargein", x1: bx, x2: bx, y1: lanes.caller, y2: lanes.agent + laneHeight }),
          `barge-in at ${clock(cut.start_ms)}` +
          (turn.barge_in_stop_latency_ms != null ? `; agent silent ${turn.barge_in_stop_latency_ms} ms later` : "")));
        nodes.push(el("text", { class: "bargein-label", x: bx + 3, y: lanes.agent - 3 }, "barge-in"));
      }
    }
  }

  // The time axis.
  const axisY = height - 18;
  nodes.push(el("line", { class: "axis", x1: left, x2: width - right, y1: axisY, y2: axisY }));
  const step = niceStep(total / 10);
  for (let t = 0; t <= total; t += step) {
    nodes.push(el("line", { class: "axis", x1: x(t), x2: x(t), y1: axisY, y2: axisY + 4 }));
    const label = step >= 1000 ? duration(t) : clock(t);
    nodes.push(el("text", { class: "tick", x: x(t), y: axisY + 15, "text-anchor": "middle" }, label));
  }
  if (record.status === "live") {
    nodes.push(el("line", { class: "now", x1: x(total), x2: x(total), y1: 10, y2: axisY }));
  }
  svg.replaceChildren(...nodes);
}

// --- formatting ---------------------------------------------------------------------------

function elapsedMs(record) {
  const start = Date.parse(record.started_at);
  const end = record.ended_at ? Date.parse(record.ended_at) : Date.now();
  return Math.max(0, end - start);
}

function duration(msValue) {
  const s = Math.floor(msValue / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function clock(msValue) {
  const s = msValue / 1000;
  return `${Math.floor(s / 60)}:${(s % 60).toFixed(1).padStart(4, "0")}`;
}

function ms(value) {
  return value == null ? "?" : `${value} ms`;
}

function fit(text, chars) {
  const n = Math.floor(chars);
  return text.length <= n ? text : `${text.slice(0, Math.max(0, n - 1))}\u2026`;
}

function niceStep(raw) {
  for (const step of [500, 1000, 2000, 5000, 10000, 15000, 30000, 60000, 120000, 300000, 600000]) {
    if (step >= raw) return step;
  }
  return 1200000;
}

// --- start ----------------------------------------------------------------------------------

function openFromHash() {
  const match = window.location.hash.match(/^#call=(.+)$/);
  if (match) {
    const id = decodeURIComponent(match[1]);
    if (id !== view.selected) openCall(id);
  }
}

$("hangup").addEventListener("click", async () => {
  const id = view.selected;
  if (!id || !window.confirm("End this call now?")) return;
  const response = await fetch(`/calls/${encodeURIComponent(id)}/hangup`, { method: "POST" });
  notice(response.status === 202 ? "ending the call\u2026" : `could not end the call (HTTP ${response.status})`);
});
window.addEventListener("hashchange", openFromHash);
window.addEventListener("resize", () => view.record && renderTimeline(view.record));

refreshCalls();
refreshHealth();
openFromHash();
setInterval(refreshCalls, LIST_EVERY_MS);
setInterval(refreshHealth, HEALTH_EVERY_MS);
// A live call's clock and timeline move on even when nothing is said.
setInterval(() => { if (view.record && view.record.status === "live") renderCall(); }, 1000);
