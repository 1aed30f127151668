// The operator's dashboard: reads /dashboard/api/* and follows /dashboard/api/stream.
// Every value from the server is put in the page as text (textContent), never as HTML.
"use strict";

const $ = (selector) => document.querySelector(selector);
const view = { cursor: null, next: null, openTask: null };
const timers = new Map();
const SUMMARY_FRESH_MS = 2500; // the server keeps its counts for 2 s: read them once they are newer
const SUMMARY_EVERY_MS = 15000; // and now and then without any change (tasks time out, webhooks give up)

// Runs fn once, ms from the first call since it last ran: a burst of changes costs one request.
function soon(name, fn, ms) {
  if (timers.has(name)) return;
  timers.set(name, setTimeout(() => { timers.delete(name); fn().catch(show); }, ms));
}

function show(problem) {
  const box = $("#problem");
  box.textContent = problem ? String(problem.message || problem) : "";
  box.hidden = !problem;
}

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (response.status === 401 || response.status === 403) {
    location.reload(); // the session ended: the server shows the sign-in form
    throw new Error("signed out");
  }
  if (!response.ok) throw new Error(`${path} answered ${response.status}`);
  return response.json();
}

function element(tag, properties = {}) {
  return Object.assign(document.createElement(tag), properties);
}

function cell(row, content) {
  const td = element("td");
  if (content instanceof Node) td.append(content);
  else td.textContent = content === null || content === undefined || content === "" ? "—" : String(content);
  row.append(td);
  return td;
}

function pairs(target, entries) {
  target.replaceChildren(...entries.flatMap(([name, value]) => {
    const dd = element("dd", { textContent: value === null || value === undefined ? "—" : String(value) });
    dd.dataset.name = name;
    return [element("dt", { textContent: name }), dd];
  }));
}

function table(target, headings, rows) {
  const head = element("tr");
  headings.forEach((heading) => head.append(element("th", { textContent: heading })));
  const body = rows.map((values) => {
    const tr = element("tr");
    values.forEach((value) => cell(tr, value));
    return tr;
  });
  target.replaceChildren(element("thead"), element("tbody"));
  target.tHead.append(head);
  target.tBodies[0].append(...(body.length ? body : [emptyRow(headings.length)]));
}

function emptyRow(span) {
  const tr = element("tr");
  tr.append(element("td", { textContent: "none", colSpan: span }));
  return tr;
}

function duration(task) {
  return task.durationS === null ? null : `${task.durationS} s`;
}

async function loadSummary() {
  const summary = await getJSON("/dashboard/api/summary");
  pairs($("#states"), Object.entries(summary.states));
  const hour = summary.lastHour;
  pairs($("#hour"), [
    ["submitted", hour.submitted],
    ["succeeded", hour.succeeded],
    ["failed", hour.failed],
    ["upstream calls per task", hour.upstreamCallsPerTask],
    ["lost callbacks recovered by the sweeper", hour.recoveredBySweeper],
    ["webhook failures", hour.webhookFailures],
  ]);
}

function taskRow(task) {
  const tr = element("tr");
  tr.dataset.taskId = task.taskId;
  cell(tr, task.thumbnail ? element("img", { src: task.thumbnail, alt: "", className: "thumb" }) : "");
  cell(tr, element("a", { href: `#task/${encodeURIComponent(task.taskId)}`, textContent: task.taskId }));
  cell(tr, task.model);
  cell(tr, task.state).className = `state ${task.state}`;
  cell(tr, task.keyName);
  cell(tr, duration(task));
  cell(tr, task.failMsg ? `${task.prompt || ""}\n${task.failMsg}` : task.prompt);
  return tr;
}

async function loadTasks() {
  const query = view.cursor ? `?cursor=${encodeURIComponent(view.cursor)}` : "";
  const page = await getJSON(`/dashboard/api/tasks${query}`);
  const rows = page.tasks.map(taskRow);
  $("#tasks tbody").replaceChildren(...(rows.length ? rows : [emptyRow(7)]));
  view.next = page.nextCursor;
  $("#older").disabled = !page.nextCursor;
  $("#newest").disabled = !view.cursor;
}

async function loadDetail(taskId) {
  const detail = await getJSON(`/dashboard/api/tasks/${encodeURIComponent(taskId)}`);
  const task = detail.task;
  $("#detail-title").textContent = task.taskId;
  const image = $("#detail-image");
  image.hidden = !task.thumbnail;
  if (task.thumbnail) image.src = task.thumbnail;
  pairs($("#detail-summary"), [
    ["model", task.model],
    ["state", task.state],
    ["key", task.keyName],
    ["prompt", task.prompt],
    ["created", task.createdAt],
    ["duration", duration(task)],
    ["failure", task.failMsg],
  ]);
  table($("#detail-events"), ["at", "source", "state", "outcome", "detail"],
    detail.events.map((e) => [e.at, e.source, e.state, e.outcome, JSON.stringify(e.detail)]));
  table($("#detail-callbacks"), ["received", "api", "verdict", "body"],
    detail.callbacks.map((c) => [c.receivedAt, c.provider, c.verdict, c.body]));
  table($("#detail-webhooks"), ["url", "event", "state", "attempts", "attempt log"],
    detail.webhooks.map((w) => [w.url, w.eventType, w.state, w.attempts, w.attemptLog.map(attemptLine).join("\n")]));
}

function attemptLine(attempt) {
  const result = attempt.statusCode === null ? attempt.error : `HTTP ${attempt.statusCode}`;
  return `${attempt.at}  ${result}  ${attempt.durationMs} ms`;
}

async function route() {
  const match = location.hash.match(/^#task\/(.+)$/);
  view.openTask = match ? decodeURIComponent(match[1]) : null;
  $("#detail").hidden = !view.openTask;
  $("#list").hidden = $("#overview").hidden = Boolean(view.openTask);
  if (view.openTask) await loadDetail(view.openTask);
}

function follow() {
  const live = $("#live");
  const source = new EventSource("/dashboard/api/stream");
  source.addEventListener("open", () => { live.className = "live on"; live.textContent = "live"; });
  source.addEventListener("error", () => { live.className = "live off"; live.textContent = "reconnecting…"; });
  source.addEventListener("change", (message) => {
    const change = JSON.parse(message.data);
    soon("summary", loadSummary, SUMMARY_FRESH_MS);
    if (!view.cursor) soon("tasks", loadTasks, 300); // the newest page: new tasks, new states, thumbnails
    if (view.openTask === change.taskId) soon("detail", () => loadDetail(change.taskId), 300);
  });
}

function page(cursor) {
  view.cursor = cursor;
  loadTasks().catch(show);
}

$("#older").addEventListener("click", () => page(view.next));
$("#newest").addEventListener("click", () => page(null));
window.addEventListener("hashchange", () => route().catch(show));
Promise.all([loadSummary(), loadTasks(), route()]).then(() => show(null), show);
follow();
setInterval(() => loadSummary().catch(show), SUMMARY_EVERY_MS);
