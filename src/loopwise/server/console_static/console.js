// loopwise console: a client of the /v1 API. Every text from a run is written with
// textContent (never as HTML); the API key stays in sessionStorage and goes only in the
// Authorization header of same-origin requests.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { key: sessionStorage.getItem("loopwise.key") || "", stream: null, timer: null };

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function button(label, onClick, cls) {
  const b = el("button", label, cls);
  b.type = "button";
  b.addEventListener("click", onClick);
  return b;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (state.key) headers.Authorization = "Bearer " + state.key;
  // Every write says JSON (a keyless server refuses other writes, as cross-site forms).
  if (method !== "GET" && body === undefined) body = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit", cache: "no-store",
  });
  const data = await resp.json().catch(() => null);
  if (resp.status === 401) { signOut(); throw new Error("Sign in with an API key."); }
  if (!resp.ok) {
    const msg = data && data.error && data.error.message;
    throw new Error(msg || "The server answered " + resp.status + ".");
  }
  return data;
}

function signOut() {
  state.key = "";
  sessionStorage.removeItem("loopwise.key");
  route();
}

// -- SSE over fetch (so the key travels in a header) ----------------------------------
async function follow(runId, after, onEvent) {
  const ctrl = new AbortController();
  state.stream = ctrl;
  const headers = { Accept: "text/event-stream" };
  if (state.key) headers.Authorization = "Bearer " + state.key;
  const url = "/v1/runs/" + encodeURIComponent(runId) + "/events?after=" + after;
  try {
    const resp = await fetch(url, { headers, signal: ctrl.signal, credentials: "omit" });
    if (!resp.ok || !resp.body) throw new Error("The event stream answered " + resp.status + ".");
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const frame = parseFrame(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
        if (frame) onEvent(frame);
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") showError(err.message);
  }
}

function parseFrame(text) {
  let id = null, data = "";
  for (const line of text.split("\n")) {
    if (line.startsWith("id: ")) id = Number(line.slice(4));
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (id === null || !data) return null;
  try { return { id, data: JSON.parse(data) }; } catch (e) { return null; }
}

function stopFollowing() {
  if (state.stream) state.stream.abort();
  state.stream = null;
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
}

// -- formatting -----------------------------------------------------------------------
function tokens(run) {
  const u = run.usage || {};
  return (u.input_tokens || 0) + (u.output_tokens || 0);
}

function age(seconds) {
  const s = Math.max(0, Math.round(Date.now() / 1000 - seconds));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.round(s / 60) + " min";
  if (s < 86400) return Math.round(s / 3600) + " h";
  return Math.round(s / 86400) + " d";
}

function pretty(value) {
  try { return JSON.stringify(value, null, 2); } catch (e) { return String(value); }
}

function statusNode(status) {
  return el("span", status, "status " + String(status).replace(/[^a-z_]/g, ""));
}

function runLink(id) {
  const a = el("a", id);
  a.href = "#run=" + encodeURIComponent(id);
  return a;
}

// -- approvals ------------------------------------------------------------------------
function approvalCard(run, pending, why) {
  const card = el("div", null, "card approval");
  card.dataset.key = run.id + "\n" + pending.call_id;
  card.setAttribute("role", "group");
  card.setAttribute("aria-label", "Approval for " + pending.tool);
  const head = el("p");
  head.append(el("span", "Run ", "meta"), runLink(run.id), el("span", " (" + run.agent + ") wants to call ", "meta"));
  head.append(el("strong", pending.tool, "tool"));
  card.append(head, el("pre", pretty(pending.arguments), "arguments"));
  card.append(el("p", "Asked because: " + pending.reason, "reason"));
  if (why && why.rule) card.append(el("p", "Rule: " + why.rule + (why.why ? " — " + why.why : ""), "rule"));
  if (why && why.taint && why.taint.length) card.append(el("p", "Untrusted sources: " + why.taint.join(", "), "taint"));
  if (why && why.thought) card.append(el("p", "The agent's thought: " + why.thought, "thought"));
  const note = el("label", "Reason (needed to reject)");
  const reason = el("textarea");
  reason.className = "decision-reason";
  const rid = "reason-" + run.id + "-" + pending.call_id;
  reason.id = rid; note.htmlFor = rid;
  const edit = el("textarea");
  edit.className = "edit-arguments";
  edit.value = pretty(pending.arguments);
  edit.hidden = true;
  edit.setAttribute("aria-label", "Edited arguments (JSON)");
  const status = el("p", "", "decision-error");
  status.setAttribute("role", "alert");
  const decide = async (body) => {
    status.textContent = "";
    try {
      const path = "/v1/runs/" + encodeURIComponent(run.id) + "/approvals/" + encodeURIComponent(pending.call_id);
      await api("POST", path, body);
      card.replaceChildren(el("p", "Decision sent: " + body.decision + ".", "decided"));
      cards.delete(card.dataset.key);
      refresh();
    } catch (err) { status.textContent = err.message; }
  };
  const row = el("div", null, "row");
  row.append(
    button("Approve", () => decide({ decision: "approve" }), "approve"),
    button("Reject", () => {
      if (!reason.value.trim()) { status.textContent = "Give a reason to reject the call."; reason.focus(); return; }
      decide({ decision: "reject", reason: reason.value.trim() });
    }, "reject"),
    button("Edit arguments", () => { edit.hidden = false; sendEdit.hidden = false; edit.focus(); }, "edit"),
  );
  const sendEdit = button("Approve with these arguments", () => {
    let args;
    try { args = JSON.parse(edit.value); } catch (e) { status.textContent = "The arguments are not valid JSON."; return; }
    if (!args || typeof args !== "object" || Array.isArray(args)) { status.textContent = "The arguments must be a JSON object."; return; }
    decide({ decision: "approve", arguments: args, reason: reason.value.trim() || undefined });
  }, "send-edit");
  sendEdit.hidden = true;
  card.append(note, reason, row, edit, sendEdit, status);
  return card;
}

async function storedEvents(runId) {
  const headers = { Accept: "text/event-stream" };
  if (state.key) headers.Authorization = "Bearer " + state.key;
  const resp = await fetch("/v1/runs/" + encodeURIComponent(runId) + "/events?follow=false", { headers, credentials: "omit" });
  if (!resp.ok) return [];
  const text = await resp.text();
  return text.split("\n\n").map(parseFrame).filter(Boolean).map((f) => f.data);
}

function reasons(events) {
  const why = {};
  let thought = "";
  for (const e of events) {
    if (e.type === "model_text") thought = e.text;
    if (e.type === "approval_requested") why[e.call_id] = Object.assign(why[e.call_id] || {}, { thought });
    if (e.type === "policy_decision") why[e.call_id] = Object.assign(why[e.call_id] || {}, { rule: e.rule, why: e.reason, taint: e.taint });
  }
  return why;
}

const cards = new Map(); // "<run>\n<call>" -> its card, kept while pending (typed text survives refreshes)

async function renderApprovals(runs) {
  const waiting = runs.filter((r) => r.pending_approvals && r.pending_approvals.length);
  const keys = [];
  for (const run of waiting) {
    const fresh = run.pending_approvals.filter((p) => !cards.has(run.id + "\n" + p.call_id));
    const why = fresh.length ? reasons(await storedEvents(run.id)) : {};
    for (const p of run.pending_approvals) {
      const key = run.id + "\n" + p.call_id;
      if (!cards.has(key)) cards.set(key, approvalCard(run, p, why[p.call_id]));
      keys.push(key);
    }
  }
  const list = $("approval-list");
  const shown = Array.from(list.children).map((c) => c.dataset.key);
  if (shown.join("\0") !== keys.join("\0")) list.replaceChildren(...keys.map((k) => cards.get(k)));
  $("approvals").hidden = keys.length === 0;
}

// -- runs list ------------------------------------------------------------------------
async function loadAgents() {
  const agents = (await api("GET", "/v1/agents")).data.map((a) => a.name);
  for (const id of ["start-agent", "filter-agent"]) {
    const select = $(id);
    const keep = id === "filter-agent" ? [select.options[0]] : [];
    select.replaceChildren(...keep, ...agents.map((n) => { const o = el("option", n); o.value = n; return o; }));
  }
}

async function loadRuns() {
  const params = new URLSearchParams({ limit: "50" });
  if ($("filter-status").value) params.set("status", $("filter-status").value);
  if ($("filter-agent").value) params.set("agent", $("filter-agent").value);
  const runs = (await api("GET", "/v1/runs?" + params)).data;
  const rows = runs.map((r) => {
    const tr = el("tr");
    tr.dataset.runId = r.id;
    const first = el("td"); first.append(runLink(r.id));
    const st = el("td"); st.append(statusNode(r.status));
    tr.append(first, st, el("td", r.agent), el("td", r.principal || ""), el("td", r.steps),
      el("td", tokens(r)), el("td", "$" + Number(r.cost_usd).toFixed(4)), el("td", age(r.created_at)));
    return tr;
  });
  document.querySelector("#run-table tbody").replaceChildren(...rows);
  const all = params.has("status") ? (await api("GET", "/v1/runs?status=input_required&limit=50")).data : runs;
  await renderApprovals(all);
}

// -- run page -------------------------------------------------------------------------
function summary(run) {
  const dl = $("run-summary");
  const items = [["Id", run.id], ["Agent", run.agent], ["Status", run.status], ["Principal", run.principal || ""],
    ["Task", run.input], ["Steps", run.steps], ["Tokens", tokens(run)], ["Cost", "$" + Number(run.cost_usd).toFixed(4)],
    ["Output", run.output === null ? "" : (typeof run.output === "string" ? run.output : pretty(run.output))],
    ["Error", run.error || ""]];
  dl.replaceChildren(...items.flatMap(([k, v]) => [el("dt", k), el("dd", v)]));
  $("cancel").hidden = ["completed", "incomplete", "failed", "cancelled"].includes(run.status);
}

function shortened(text, limit) {
  const s = String(text);
  if (s.length <= limit) return el("pre", s, "content");
  const box = el("details");
  box.append(el("summary", s.slice(0, limit) + "… (" + s.length + " characters: show all)"), el("pre", s, "content"));
  return box;
}

function timelineItem(e) {
  const li = el("li");
  li.dataset.type = e.type;
  li.dataset.time = String(e.time);
  const line = (kind, text) => { const p = el("p"); p.append(el("span", kind, "kind"), el("span", text)); return p; };
  const meta = el("span", "step " + e.step, "meta");
  switch (e.type) {
    case "model_text": li.append(line(e.final ? "Answer" : "Thought", e.text)); break;
    case "tool_call": li.append(line("Tool call", e.name + " (" + e.call_id + ")"), el("pre", pretty(e.args), "arguments"));
      if (e.original_args) li.append(el("p", "The model asked for: " + JSON.stringify(e.original_args), "meta")); break;
    case "tool_result": li.append(line(e.is_error ? "Tool error" : "Observation", e.name + " · " + Number(e.duration).toFixed(3) + " s"), shortened(e.content, 300)); break;
    case "model_response": li.append(line("Model", (e.usage.input_tokens || 0) + " in / " + (e.usage.output_tokens || 0) + " out tokens · " + Number(e.duration).toFixed(3) + " s · $" + Number(e.cost_usd).toFixed(4))); break;
    case "policy_decision": li.append(line("Policy " + e.action, e.name + ": " + e.rule + " — " + e.reason + (e.taint && e.taint.length ? " (untrusted: " + e.taint.join(", ") + ")" : ""))); break;
    case "approval_requested": li.append(line("Approval asked", e.name + " (" + e.reason + ")"), el("pre", pretty(e.args), "arguments")); break;
    case "run_started": li.append(line(e.parent_run_id ? "Child run started" : "Run started", (e.agent || "") + " · " + e.model)); break;
    case "run_finished": li.append(line("Run " + e.status, (e.stop_reason || "") + (e.error ? " — " + e.error : ""))); break;
    case "model_request": li.append(line("Model asked", e.messages + " messages, about " + e.estimated_input_tokens + " tokens")); break;
    case "text_delta": return null;
    default: li.append(line(e.type, JSON.stringify(e).slice(0, 300)));
  }
  li.append(meta);
  return li;
}

function placeItem(lists, rootId, e, item) {
  // A child run's events (an agent used as a tool) go in a list nested under its parent.
  const id = String(e.run_id || rootId);
  if (!lists.has(id)) {
    const parent = lists.get(String(e.parent_run_id || "")) || lists.get(rootId);
    const holder = el("li", null, "child");
    holder.append(el("p", "Child run " + id, "kind"));
    const ol = el("ol");
    holder.append(ol);
    parent.append(holder);
    lists.set(id, ol);
  }
  lists.get(id).append(item);
}

async function showRun(runId) {
  $("timeline").replaceChildren();
  const run = await api("GET", "/v1/runs/" + encodeURIComponent(runId));
  summary(run);
  $("run-title").textContent = "Run " + run.id;
  $("cancel").onclick = async () => {
    try { summary(await api("POST", "/v1/runs/" + encodeURIComponent(runId) + "/cancel")); } catch (err) { showError(err.message); }
  };
  await renderApprovals([run]);
  const lists = new Map([[runId, $("timeline")]]); // run id -> its <ol> (child runs nest)
  follow(runId, 0, async (frame) => {
    const item = timelineItem(frame.data);
    if (item) placeItem(lists, runId, frame.data, item);
    if (["approval_requested", "run_finished", "model_response"].includes(frame.data.type)) {
      const fresh = await api("GET", "/v1/runs/" + encodeURIComponent(runId)).catch(() => null);
      if (fresh) { summary(fresh); await renderApprovals([fresh]); }
    }
  });
}

// -- routing --------------------------------------------------------------------------
function hashRun() {
  // The run id in "#run=<id>" (decoded; null when there is none or it is malformed).
  const m = location.hash.match(/^#run=(.+)$/);
  let id = null;
  try { id = m ? decodeURIComponent(m[1]) : null; } catch (e) { return null; }
  return id && /^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,199}$/.test(id) ? id : null;
}

function refresh() {
  const id = hashRun();
  if (id) api("GET", "/v1/runs/" + encodeURIComponent(id)).then((r) => { summary(r); return renderApprovals([r]); }).catch((e) => showError(e.message));
  else loadRuns().catch((e) => showError(e.message));
}

async function route() {
  stopFollowing();
  showError("");
  const signedIn = Boolean(state.key) || document.body.dataset.open === "1";
  $("signin").hidden = signedIn;
  $("signout").hidden = !state.key;
  const m = hashRun();
  $("runs").hidden = !signedIn || Boolean(m);
  $("run").hidden = !signedIn || !m;
  $("approvals").hidden = true;
  if (!signedIn) { $("key").focus(); return; }
  try {
    if (m) await showRun(m);
    else { await loadAgents(); await loadRuns(); state.timer = setInterval(() => loadRuns().catch((e) => showError(e.message)), 2000); }
  } catch (err) { showError(err.message); }
}

async function probeOpen() {
  // A server without keys (--no-auth) answers without one: no sign-in needed.
  if (state.key) return;
  const resp = await fetch("/v1/agents", { credentials: "omit" }).catch(() => null);
  if (resp && resp.ok) document.body.dataset.open = "1";
}

document.addEventListener("DOMContentLoaded", async () => {
  $("signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    state.key = $("key").value.trim();
    $("key").value = "";
    sessionStorage.setItem("loopwise.key", state.key);
    route();
  });
  $("signout").addEventListener("click", signOut);
  $("filter-form").addEventListener("change", () => loadRuns().catch((e) => showError(e.message)));
  $("start-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const run = await api("POST", "/v1/runs", { agent: $("start-agent").value, input: $("start-input").value });
      location.hash = "#run=" + encodeURIComponent(run.id);
    } catch (err) { showError(err.message); }
  });
  window.addEventListener("hashchange", route);
  await probeOpen();
  route();
});
