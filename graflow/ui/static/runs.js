// The runs page: recent runs, live ones first, filtered by status and workflow.
"use strict";

async function refreshRuns() {
  const form = document.getElementById("filters");
  const query = new URLSearchParams(new FormData(form)).toString();
  const runs = await getJSON("/api/runs?" + query);
  const body = document.querySelector("#runs tbody");
  body.replaceChildren(...runs.map((run) => {
    const took = run.ended_at ? run.ended_at - run.started_at : Date.now() / 1000 - run.started_at;
    const done = run.counts.succeeded || 0;
    const failed = run.counts.failed || 0;
    const tasks = done + "/" + run.tasks + (failed ? " (" + failed + " failed)" : "");
    const link = el("a", { href: "/runs/" + encodeURIComponent(run.run_id) }, run.run_id.slice(0, 12));
    return el("tr", { "data-run": run.run_id, "data-status": run.status },
      el("td", {}, link), el("td", {}, run.workflow || "-"), el("td", {}, stateBadge(run.status)),
      el("td", {}, run.exit_code === null ? "-" : String(run.exit_code)),
      el("td", {}, when(run.started_at)), el("td", {}, seconds(took)),
      el("td", {}, tasks), el("td", {}, run.backend));
  }));
}

document.getElementById("filters").addEventListener("input", refreshRuns);
document.getElementById("filters").addEventListener("submit", (e) => e.preventDefault());
refreshRuns();
setInterval(refreshRuns, 2000);
