// One run: its graph coloured by task state, a timeline per worker, the task table and the
// failures; kept up to date by the server-sent events of /api/runs/<id>/events.
"use strict";

const runId = decodeURIComponent(location.pathname.split("/").pop());
const GANTT_W = 900, LANE_H = 22, MAX_BARS = 3000;
const state = { run: null, tasks: new Map(), layout: null, failures: [] };

function drawGraph() {
  const svg = document.getElementById("graph");
  const layout = state.layout;
  if (!layout) return;
  if (layout.too_large) {
    document.getElementById("graph-box").replaceChildren(el("p", { class: "muted" },
      layout.too_large + " tasks: too many to draw; see the table and the timeline"));
    return;
  }
  const [BOX_W, BOX_H] = layout.box;
  svg.setAttribute("width", layout.width);
  svg.setAttribute("height", layout.height);
  const at = new Map(layout.nodes.map((n) => [n.id, n]));
  const parts = [];
  for (const [from, to] of layout.edges) {
    const a = at.get(from), b = at.get(to);
    const x1 = a.x + BOX_W, y1 = a.y + BOX_H / 2, x2 = b.x, y2 = b.y + BOX_H / 2;
    const mid = (x1 + x2) / 2;
    parts.push(svgEl("path", { class: "edge", d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}` }));
  }
  for (const node of layout.nodes) {
    const task = state.tasks.get(node.id);
    const g = svgEl("g", { class: "node", "data-task": node.id, "data-state": task ? task.state : "queued",
                           transform: `translate(${node.x},${node.y})` });
    const title = svgEl("title");
    title.textContent = node.id + " (" + node.kind + ")";
    const label = svgEl("text", { x: 8, y: 19 });
    label.textContent = node.id.length > 17 ? node.id.slice(0, 16) + "…" : node.id;
    g.append(svgEl("rect", { width: BOX_W, height: BOX_H, rx: 4 }), label, title);
    parts.push(g);
  }
  svg.replaceChildren(...parts);
}

function colourGraph(changed) {
  for (const task of changed) {
    const g = document.querySelector(`#graph g.node[data-task="${CSS.escape(task.task_id)}"]`);
    if (g) g.setAttribute("data-state", task.state);
  }
}

function drawTable() {
  const body = document.querySelector("#tasks tbody");
  body.replaceChildren(...[...state.tasks.values()].map((t) => el("tr",
    { "data-task": t.task_id, "data-state": t.state },
    el("td", {}, t.task_id), el("td", { class: "task-state" }, stateBadge(t.state)),
    el("td", {}, String(t.attempts)), el("td", {}, t.worker || "-"),
    el("td", {}, t.start_offset_s === null ? "-" : "+" + seconds(t.start_offset_s)),
    el("td", {}, seconds(t.duration_s)))));
}

function drawGantt() {
  const svg = document.getElementById("gantt");
  const ran = [...state.tasks.values()].filter((t) => t.start_offset_s !== null).slice(0, MAX_BARS);
  const run = state.run;
  const end = run.ended_at ? run.ended_at - run.started_at : Date.now() / 1000 - run.started_at;
  const span = Math.max(end, ...ran.map((t) => t.start_offset_s + (t.duration_s || 0)), 1e-3);
  const lanes = [...new Set(ran.map((t) => t.worker || "-"))].sort();
  const left = 120, scale = (GANTT_W - left - 10) / span;
  const parts = [];
  lanes.forEach((lane, i) => {
    const label = svgEl("text", { class: "lane", x: 4, y: i * LANE_H + 15 });
    label.textContent = lane;
    parts.push(label);
  });
  for (const t of ran) {
    const row = lanes.indexOf(t.worker || "-");
    const bar = svgEl("rect", { class: "bar " + t.state, "data-task": t.task_id,
      x: left + t.start_offset_s * scale, y: row * LANE_H + 3,
      width: Math.max(2, (t.duration_s || 0) * scale), height: LANE_H - 6 });
    const title = svgEl("title");
    title.textContent = `${t.task_id}: ${t.state}, +${seconds(t.start_offset_s)}, ${seconds(t.duration_s)}`;
    bar.append(title);
    parts.push(bar);
  }
  const axis = svgEl("text", { class: "lane", x: GANTT_W - 90, y: lanes.length * LANE_H + 16 });
  axis.textContent = seconds(span);
  parts.push(axis);
  svg.setAttribute("width", GANTT_W);
  svg.setAttribute("height", lanes.length * LANE_H + 24);
  svg.replaceChildren(...parts);
}

function drawRun() {
  const run = state.run;
  document.getElementById("run-id").textContent = run.run_id;
  const badge = document.getElementById("run-status");
  badge.textContent = run.status;
  badge.className = "state " + run.status;
  badge.setAttribute("data-state", run.status);
  const took = run.ended_at ? " in " + seconds(run.ended_at - run.started_at) : "";
  const code = run.exit_code === null ? "" : ", exit code " + run.exit_code;
  document.getElementById("run-meta").textContent =
    `${run.workflow || "(unnamed)"}: ${run.target || "-"} on ${run.backend}, ${run.host} ` +
    `(pid ${run.pid}), started ${when(run.started_at)}${took}${code}`;
  document.getElementById("run-error").textContent = run.error || "";
}

function drawFailures() {
  const box = document.getElementById("failures");
  if (!state.failures.length) { box.replaceChildren(el("p", { class: "muted" }, "none")); return; }
  box.replaceChildren(...state.failures.map((f) => el("div", { class: "failure", "data-task": f.task_id },
    el("h3", {}, `${f.task_id} (attempt ${f.attempt + 1}): ${f.error}`), el("pre", {}, f.traceback || ""))));
}

function apply(update) {
  if (update.run) state.run = update.run;
  if (update.layout) state.layout = update.layout;
  if (update.failures) state.failures = update.failures;
  for (const task of update.tasks || []) state.tasks.set(task.task_id, task);
  drawRun();
  if (update.layout) drawGraph(); else colourGraph(update.tasks || []);
  drawTable();
  drawGantt();
  drawFailures();
}

async function start() {
  const detail = await getJSON("/api/runs/" + encodeURIComponent(runId));
  apply(detail);
  if (detail.run.status !== "running") return;
  const events = new EventSource("/api/runs/" + encodeURIComponent(runId) + "/events");
  events.onmessage = (message) => apply(JSON.parse(message.data));
  events.addEventListener("end", () => events.close());
}

start().catch((error) => {
  document.getElementById("run-error").textContent = String(error);
});
