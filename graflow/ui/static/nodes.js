// Nodes and workers of a Redis deployment: heartbeats, rates, tasks in flight.
"use strict";

async function refreshNodes() {
  const data = await getJSON("/api/nodes");
  const note = document.getElementById("nodes-note");
  const body = document.querySelector("#workers tbody");
  if (!data.available) { note.textContent = data.reason; body.replaceChildren(); return; }
  note.textContent = data.gone_nodes ? data.gone_nodes + " node(s) stopped sending heartbeats" : "";
  body.replaceChildren(...data.workers.map((w) => el("tr", { "data-worker": w.worker },
    el("td", {}, w.node), el("td", {}, w.worker), el("td", {}, w.queue || "-"),
    el("td", { class: w.stale ? "error" : "" }, seconds(w.seen_age_s) + " ago"),
    el("td", {}, String(w.done)), el("td", {}, String(w.failed)),
    el("td", {}, w.rate_per_s === null ? "-" : w.rate_per_s.toFixed(1) + "/s"),
    el("td", {}, String(w.in_flight)))));
}

refreshNodes();
setInterval(refreshNodes, 2000);
