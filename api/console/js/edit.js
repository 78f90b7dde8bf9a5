// An edit: operation, recommendations for it and the image, model, upload, prompt,
// mask and the model's own options, a live quote; then the job's progress and output.
import { ago, api, describe, el, imageField, imageSize, models, operationsOf, showMessage, sleep,
  stream, usd } from "./api.js";
import { optionsForm, quote, quoteText } from "./models.js";

const PICKS = [["cheapest", "Cheapest"], ["best_tier", "Best tier"], ["fastest", "Fastest"],
  ["most_reliable", "Most reliable"], ["tenant_pick", "Your pick"]];

export async function recommendations(operation, size, maxCost) {
  return api("/v1/recommendations", { query: { operation, width: size && size.width,
    height: size && size.height, max_cost: maxCost } });
}

export function recommendationList(answer, onPick) {
  const items = PICKS.map(([key, label]) => {
    const pick = answer.picks[key];
    return el("li", { dataset: { pick: key } }, el("b", {}, label), ": ",
      pick.model ? el("button", { type: "button", className: "link", onclick: () => onPick(pick.model) }, pick.model) : "none",
      el("div", { className: "muted" }, pick.reason));
  });
  items.push(el("li", { dataset: { pick: "default" } }, el("b", {}, "Default"), ": ",
    answer.default.model || "none", el("div", { className: "muted" }, answer.default.reason)));
  const unavailable = answer.models.filter((m) => !m.available);
  if (unavailable.length) {
    items.push(el("li", {}, el("b", {}, "Not offered"),
      el("div", { className: "muted" }, unavailable.map((m) => `${m.id}: ${m.unavailable_reason}`).join("; "))));
  }
  return el("ul", { className: "picks", id: "recommendations" }, items);
}

// The job as it moves, from its event stream (no polling): `onUpdate(job, event)` at each
// event, the last at its end.
export async function follow(jobId, onUpdate) {
  let job = null;
  await stream(`/v1/jobs/${jobId}/stream`, ({ data }) => {
    job = data.job;
    onUpdate(job, data.event || null);
  });
  return job;
}

export function jobResult(job) {
  return el("div", { className: "card", id: "job-result", dataset: { status: job.status } },
    el("p", {}, "Job ", el("code", {}, job.id), ": ",
      el("b", { className: `status-${job.status}` }, job.status), ` on ${job.model}`,
      job.status === "queued" && job.queue_position !== null && job.queue_position !== undefined
        ? el("span", { className: "muted", id: "queue-position" }, ` (${job.queue_position} ahead in the queue)`) : null),
    el("p", { className: "muted" }, `estimated ${usd(job.cost.estimated)}, charged ${usd(job.cost.actual)}`),
    job.error ? el("p", { className: "status-failed" }, `${job.error.code}: ${job.error.message}`) : null,
    job.data_deleted_at ? el("p", { className: "muted" }, `Its images were deleted ${ago(job.data_deleted_at)}.`) : null,
    job.outputs.map((o, n) => el("figure", { className: "output" },
      el("img", { className: "output", src: o.url, alt: `output ${n + 1} of ${job.id}`, width: o.width, height: o.height }),
      el("figcaption", {}, el("a", { className: "download", href: o.url, download: `${job.id}-${n}`,
        target: "_blank", rel: "noopener" }, `Download output ${n + 1}`),
        el("span", { className: "muted" }, ` ${o.width}x${o.height}, ${o.content_type.replace("image/", "").toUpperCase()}`)))));
}

export async function renderEdit(view, state) {
  const list = await models();
  const operation = el("select", { id: "operation" },
    operationsOf(list).map((o) => el("option", { value: o, selected: o === (state.operation || "general_edit") }, o)));
  const model = el("select", { id: "model" });
  const image = el("input", { id: "image", type: "file", accept: "image/*" });
  const imageUrl = el("input", { id: "image-url", type: "url", placeholder: "https://... (instead of a file)" });
  const prompt = el("textarea", { id: "prompt", rows: "2", placeholder: "what to change" });
  const mask = el("input", { id: "mask", type: "file", accept: "image/*" });
  const maskLabel = el("label", {}, "Mask (white = the area to edit)", mask);
  const optionsBox = el("fieldset", { id: "options" });
  const quoteLine = el("p", { id: "edit-quote", className: "price" });
  const recsBox = el("div", { id: "recs" }, el("p", { className: "muted" }, "Loading recommendations..."));
  const result = el("div", { id: "result" });
  let readOptions = () => ({});
  let size = null;

  const current = () => list.find((m) => m.id === model.value);
  const fillModels = () => {
    const serving = list.filter((m) => m.operations.includes(operation.value));
    const wanted = serving.some((m) => m.id === state.model) ? state.model : "";
    model.replaceChildren(el("option", { value: "" }, "default for the operation"),
      ...serving.map((m) => el("option", { value: m.id, selected: m.id === wanted },
        `${m.id} (${m.tier}, ${m.price_range.text})${m.demo ? " - offline demo" : ""}`)));
  };
  const refreshQuote = async () => {
    const spec = current();
    if (!spec) { quoteLine.textContent = "The default model is explained under Recommendations."; return; }
    try {
      quoteLine.textContent = quoteText(await quote({ model: spec, operation: operation.value,
        options: readOptions(), prompt: prompt.value, image: imageUrl.value.trim() || image.files[0],
        mask: mask.files[0] }));
    } catch (error) {
      quoteLine.textContent = describe(error);
    }
  };
  const refreshModel = () => {
    const spec = current();
    state.model = model.value || null;
    maskLabel.hidden = !spec || spec.mask === "none";
    readOptions = spec ? optionsForm(optionsBox, spec, refreshQuote) : () => ({});
    if (!spec) optionsBox.replaceChildren(el("p", { className: "muted" }, "Pick a model to set its options."));
    refreshQuote();
  };
  const refreshRecs = async () => {
    try {
      const answer = await recommendations(operation.value, size);
      recsBox.replaceChildren(el("p", { className: "muted", id: "recs-for" },
        `For ${answer.operation}${size ? ` at ${size.width}x${size.height}` : ""}:`),
        recommendationList(answer, (id) => { state.model = id; fillModels(); refreshModel(); }));
    } catch (error) {
      recsBox.replaceChildren(el("p", { className: "status-failed" }, describe(error)));
    }
  };
  operation.addEventListener("change", () => { state.operation = operation.value; fillModels(); refreshModel(); refreshRecs(); });
  model.addEventListener("change", refreshModel);
  image.addEventListener("change", async () => { size = image.files[0] ? await imageSize(image.files[0]) : null; refreshRecs(); refreshQuote(); });
  prompt.addEventListener("change", refreshQuote);
  mask.addEventListener("change", refreshQuote); // a mask chosen: the quote no longer asks for one
  imageUrl.addEventListener("change", refreshQuote);

  const submit = async (event) => {
    event.preventDefault();
    showMessage("");
    if (!imageUrl.value.trim() && !image.files[0]) {
      showMessage("Choose an image file, or give its https:// URL.");
      return;
    }
    const form = new FormData();
    try {
      form.append("image", imageUrl.value.trim() || await imageField(image.files[0]));
      if (mask.files[0] && !maskLabel.hidden) form.append("mask", await imageField(mask.files[0]));
    } catch (error) {
      showMessage(describe(error));
      return;
    }
    form.append("operation", operation.value);
    if (model.value) form.append("model", model.value);
    if (prompt.value.trim()) form.append("prompt", prompt.value.trim());
    form.append("options", JSON.stringify(readOptions()));
    form.append("metadata", JSON.stringify({ source: "console" }));
    try {
      const job = await api("/v1/jobs", { method: "POST", form });
      await follow(job.id, (j) => result.replaceChildren(jobResult(j)));
    } catch (error) {
      showMessage(describe(error));
    }
  };

  view.replaceChildren(el("h2", {}, "Edit"), el("div", { className: "cols" },
    el("form", { id: "edit-form", className: "card", onsubmit: submit },
      el("label", {}, "Operation", operation), el("label", {}, "Model", model),
      el("label", {}, "Image", image), el("label", {}, "or its URL", imageUrl),
      el("label", {}, "Prompt", prompt), maskLabel,
      optionsBox, quoteLine, el("button", { type: "submit", id: "submit-edit" }, "Submit edit"), result),
    el("section", {}, el("h3", {}, "Recommendations"), recsBox)));
  fillModels();
  refreshModel();
  refreshRecs();
  await sleep(0);
}
