// Queues and their dead letters; requeue and purge ask for confirmation first.
"use strict";

async function act(queue, action) {
  const question = action === "purge"
    ? "Delete every dead letter of queue '" + queue + "'? This cannot be undone."
    : "Put every dead letter of queue '" + queue + "' back on the queue?";
  if (!window.confirm(question)) return;
  const response = await fetch("/api/queues/" + encodeURIComponent(queue) + "/" + action, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Graflow-UI": "1" },
    body: JSON.stringify({ confirm: queue }),
  });
  const answer = await response.json();
  document.getElementById("queues-note").textContent = response.ok
    ? queue + ": " + JSON.stringify(answer) : "refused: " + answer.error;
  refreshQueues();
}

function deadTable(queue) {
  if (!queue.dead.length) return el("div");
  const rows = queue.dead.map((d) => el("tr", { "data-entry": d.entry_id },
    el("td", {}, d.entry_id), el("td", {}, d.reason), el("td", {}, d.run_id || "-"),
    el("td", {}, d.deliveries === null ? "-" : String(d.deliveries)), el("td", {}, when(d.dead_at))));
  return el("div", {}, el("h2", {}, "Dead letters of " + queue.name),
    el("table", {}, el("thead", {}, el("tr", {}, ...["entry", "reason", "run", "deliveries", "dead at"]
      .map((h) => el("th", {}, h)))), el("tbody", {}, ...rows)));
}

async function refreshQueues() {
  const data = await getJSON("/api/queues");
  const body = document.querySelector("#queues tbody");
  const dead = document.getElementById("dead");
  if (!data.available) {
    document.getElementById("queues-note").textContent = data.reason;
    body.replaceChildren(); dead.replaceChildren(); return;
  }
  body.replaceChildren(...data.queues.map((q) => el("tr", { "data-queue": q.name },
    el("td", {}, q.name), el("td", {}, String(q.waiting)), el("td", {}, String(q.in_flight)),
    el("td", {}, String(q.dead_letters)),
    el("td", {}, q.dead_letters ? el("span", {},
      el("button", { onclick: () => act(q.name, "requeue") }, "requeue all"), " ",
      el("button", { onclick: () => act(q.name, "purge") }, "purge")) : ""))));
  dead.replaceChildren(...data.queues.map(deadTable));
}

refreshQueues();
setInterval(refreshQueues, 3000);
