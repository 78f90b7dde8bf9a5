// Jobs: the list with filters (status, model, dates, batch, metadata), a job's
// timeline, and cancel. Each row is a button (keyboard and mouse alike); the job's
// detail opens where the user is looking, and focus moves to it.
import { ago, api, describe, el, models, showMessage, stream, TERMINAL, usd } from "./api.js";
import { jobResult } from "./edit.js";

function toIso(date, endOfDay) {
  // A date input gives YYYY-MM-DD: the UTC day, as the API's filters read it.
  return date ? `${date}T${endOfDay ? "23:59:59" : "00:00:00"}Z` : undefined;
}

const seconds = (value) => `${Number(value).toFixed(value < 10 ? 1 : 0)} s`;

// What each event means, in words; an event not listed here is shown by its name.
const SAYS = {
  created: (d) => `Accepted and queued for ${d.model} (estimated ${usd(d.estimated)})`,
  started: () => "A worker started it",
  submitted: () => "Sent to the provider",
  succeeded: (d) => `Succeeded with ${d.outputs} output${d.outputs === 1 ? "" : "s"}`,
  failed: (d) => `Failed: ${d.message} (${d.code})` +
    (d.call_settling ? "; the provider call is followed until its cost is known" : ""),
  retry_scheduled: (d) => `Will try again in ${seconds(d.delay_seconds)}: ${d.reason}`,
  throttled: (d) => `Held back by the provider's limits, queued again for ${seconds(d.delay_seconds)}` +
    ` (${d.reason}; no attempt spent)`,
  canceled: () => "Canceled",
  fell_back: (d) => `Moved from ${d.from_model} to ${d.to_model}`,
  call_settled: (d) => `The provider call settled: ${d.reason}`,
  submitted_after_cancel: () => "The provider call went out as it was canceled; its cost is followed",
  handed_back: (d) => `Handed back to the queue: ${d.reason}`,
  message_resent: () => "Its queue message was lost and sent again",
  follow_resumed: () => "Following the provider call again after a worker stopped",
  poll_resumed: () => "Following the provider call again after a worker stopped", // before 0.28
  store_retry: (d) => `Storing the output failed, trying again: ${d.reason}`,
  content_filtered: () => "The provider filtered the output's content",
  outputs_deleted: (d) => `Outputs deleted (${d.reason})`,
  inputs_released: (d) => `Inputs released (${d.reason})`,
};

export function eventLine(event, start) {
  const detail = event.detail || {};
  let text;
  try {
    text = SAYS[event.type] ? SAYS[event.type](detail) : event.type.replaceAll("_", " ");
  } catch (error) {
    text = event.type.replaceAll("_", " ");
  }
  const offset = (Date.parse(event.at) - start) / 1000;
  return el("li", { dataset: { type: event.type } },
    el("time", { datetime: event.at, title: event.at }, `+${offset.toFixed(offset < 10 ? 2 : 1)} s`),
    " ", text);
}

export function timeline(job, events) {
  const start = Date.parse(events.length ? events[0].at : job.created_at);
  return el("ol", { className: "timeline", id: "job-timeline",
    "aria-label": `what happened to ${job.id}, from ${ago(job.created_at)}` },
    events.map((e) => eventLine(e, start)));
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
  const table = el("div", { id: "jobs-table" });
  const detail = el("section", { id: "job-detail", "aria-live": "polite" });
  let cursor = null;

  let following = null; // the open job's stream, stopped when another opens or the page moves on
  const follow = (job, lastEventId) => {
    following = new AbortController();
    const { signal } = following;
    stream(`/v1/jobs/${job.id}/stream`, ({ data }) => {
      if (!detail.isConnected) { following.abort(); return; }
      const timelineNow = detail.querySelector("#job-timeline");
      const first = timelineNow?.querySelector("time");
      const start = first ? Date.parse(first.getAttribute("datetime")) : Date.parse(data.job.created_at);
      timelineNow?.append(eventLine(data.event, start));
      detail.querySelector("#job-result")?.replaceWith(jobResult(data.job));
      const cell = table.querySelector(`tr[data-job='${job.id}'] td[data-label=status] span`);
      if (cell) { cell.textContent = data.job.status; cell.className = `status-${data.job.status}`; }
      const cancel = detail.querySelector("#cancel-job");
      if (cancel && TERMINAL.has(data.job.status)) {
        const focused = document.activeElement === cancel;
        cancel.remove();
        if (focused) detail.querySelector("h3").focus(); // not lost to the page's body
      }
    }, { lastEventId, signal }).catch((error) => showMessage(describe(error)));
  };
  const showJob = async (id) => {
    following?.abort();
    try {
      const [job, events] = await Promise.all([api(`/v1/jobs/${id}`), api(`/v1/jobs/${id}/events`)]);
      const heading = el("h3", { tabindex: "-1" }, "Job ", el("code", {}, job.id));
      detail.replaceChildren(heading, jobResult(job), el("h4", {}, "Timeline"), timeline(job, events.data),
        ...(TERMINAL.has(job.status) ? [] : [el("button", { type: "button", id: "cancel-job", onclick: async () => {
          try { await api(`/v1/jobs/${id}/cancel`, { method: "POST" }); }
          catch (error) { showMessage(describe(error)); } } }, "Cancel job")]));
      for (const row of table.querySelectorAll("tr[data-job]")) {
        row.classList.toggle("selected", row.dataset.job === id);
      }
      // The detail is sticky beside the list on a wide screen and below it on a phone:
      // either way it is brought into view, and focus moves to it.
      detail.scrollIntoView({ block: "nearest" });
      heading.focus({ preventScroll: true });
      // A job still moving: its timeline grows from its event stream, after what is shown.
      if (!TERMINAL.has(job.status)) follow(job, events.data.length ? String(events.data.at(-1).id) : null);
    } catch (error) {
      showMessage(describe(error));
    }
  };
  const cell = (label, ...content) => el("td", { dataset: { label } }, ...content);
  const load = async (more) => {
    showMessage("");
    try {
      const page = await api("/v1/jobs", { query: { status: status.value, model: model.value,
        created_after: toIso(after.value, false), created_before: toIso(before.value, true),
        batch_id: batch.value.trim(), metadata: metadata.value.trim() || undefined,
        cursor: more ? cursor : undefined, limit: 25 } });
      cursor = page.next_cursor;
      const rows = page.data.map((j) => el("tr", { dataset: { job: j.id } },
        cell("job", el("button", { type: "button", className: "link open-job", onclick: () => showJob(j.id),
          "aria-label": `open job ${j.id}: ${j.status}, ${j.model}` }, el("code", {}, j.id))),
        cell("status", el("span", { className: `status-${j.status}` }, j.status)),
        cell("model", j.model), cell("operation", j.operation),
        cell("created", el("time", { datetime: j.created_at, title: j.created_at }, ago(j.created_at))),
        cell("cost", usd(j.cost.actual ?? j.cost.estimated))));
      const body = more && table.querySelector("tbody");
      if (body) body.append(...rows);
      else {
        table.replaceChildren(el("table", { className: "stack" },
          el("caption", { className: "muted" }, "Newest first; open a job for its timeline."),
          el("thead", {}, el("tr", {},
            ["job", "status", "model", "operation", "created", "cost"].map((h) => el("th", { scope: "col" }, h)))),
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
    el("div", { className: "cols jobs-cols" }, table, detail));
  await load(false);
}
