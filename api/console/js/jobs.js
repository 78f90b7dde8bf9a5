// Jobs: the list with filters (status, model, dates, batch, metadata), a job's
// timeline, and cancel.
import { api, describe, el, models, showMessage, TERMINAL, usd } from "./api.js";
import { jobResult } from "./edit.js";

function toIso(date, endOfDay) {
  // A date input gives YYYY-MM-DD: the UTC day, as the API's filters read it.
  return date ? `${date}T${endOfDay ? "23:59:59" : "00:00:00"}Z` : undefined;
}

export async function renderJobs(view) {
  const list = await models();
  const status = el("select", { id: "f-status" }, el("option", { value: "" }, "any"),
    ["queued", "running", "succeeded", "failed", "canceled"].map((s) => el("option", { value: s }, s)));
  const model = el("select", { id: "f-model" }, el("option", { value: "" }, "any"),
    list.map((m) => el("option", { value: m.id }, m.id)));
  const after = el("input", { id: "f-after", type: "date" });
  const before = el("input", { id: "f-before", type: "date" });
  const batch = el("input", { id: "f-batch", type: "text", placeholder: "bat_..." });
  const metadata = el("input", { id: "f-metadata", type: "text", placeholder: "key:value" });
  const table = el("div", { className: "table-wrap", id: "jobs-table" });
  const detail = el("div", { id: "job-detail" });
  let cursor = null;

  const showJob = async (id) => {
    try {
      const [job, events] = await Promise.all([api(`/v1/jobs/${id}`), api(`/v1/jobs/${id}/events`)]);
      detail.replaceChildren(el("h3", {}, "Timeline"), jobResult(job),
        el("ul", { className: "timeline" }, events.data.map((e) => el("li", {},
          `${e.at} ${e.type}${e.to_status ? ` -> ${e.to_status}` : ""} `,
          el("span", { className: "muted" }, JSON.stringify(e.detail))))),
        TERMINAL.has(job.status) ? null : el("button", { type: "button", id: "cancel-job", onclick: async () => {
          try { await api(`/v1/jobs/${id}/cancel`, { method: "POST" }); await showJob(id); load(false); }
          catch (error) { showMessage(describe(error)); } } }, "Cancel job"));
    } catch (error) {
      showMessage(describe(error));
    }
  };
  const load = async (more) => {
    showMessage("");
    try {
      const page = await api("/v1/jobs", { query: { status: status.value, model: model.value,
        created_after: toIso(after.value, false), created_before: toIso(before.value, true),
        batch_id: batch.value.trim(), metadata: metadata.value.trim() || undefined,
        cursor: more ? cursor : undefined, limit: 25 } });
      cursor = page.next_cursor;
      const rows = page.data.map((j) => el("tr", { className: "clickable", dataset: { job: j.id },
        onclick: () => showJob(j.id) },
        el("td", {}, el("code", {}, j.id)), el("td", { className: `status-${j.status}` }, j.status),
        el("td", {}, j.model), el("td", {}, j.operation), el("td", {}, j.created_at.replace("T", " ").slice(0, 19)),
        el("td", {}, usd(j.cost.actual ?? j.cost.estimated))));
      const body = more && table.querySelector("tbody");
      if (body) body.append(...rows);
      else {
        table.replaceChildren(el("table", {}, el("thead", {}, el("tr", {},
          ["job", "status", "model", "operation", "created (UTC)", "cost"].map((h) => el("th", {}, h)))),
          el("tbody", {}, rows)));
      }
      table.querySelector("#more")?.remove();
      if (cursor) table.append(el("button", { type: "button", id: "more", className: "secondary", onclick: () => load(true) }, "More"));
      if (!page.data.length && !more) table.append(el("p", { className: "muted" }, "No jobs match."));
    } catch (error) {
      showMessage(describe(error));
    }
  };
  view.replaceChildren(el("h2", {}, "Jobs"),
    el("form", { className: "filters card", id: "job-filters", onsubmit: (e) => { e.preventDefault(); load(false); } },
      el("label", {}, "Status", status), el("label", {}, "Model", model),
      el("label", {}, "Created from", after), el("label", {}, "Created to", before),
      el("label", {}, "Batch", batch), el("label", {}, "Metadata", metadata),
      el("button", { type: "submit" }, "Filter")),
    el("div", { className: "cols" }, table, detail));
  await load(false);
}
