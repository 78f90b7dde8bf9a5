// Compare: one input on 2 to 6 models; the grid fills in as each finishes, with cost
// and time under each output; vote for the one you prefer.
import { api, describe, el, imageField, models, operationsOf, showMessage, stream, usd } from "./api.js";

function resultCard(comparison, result, onVote) {
  const voted = comparison.vote && comparison.vote.model === result.model;
  const seconds = result.run_seconds === null ? "-" : `${result.run_seconds.toFixed(1)} s`;
  return el("article", { className: `card${voted ? " selected" : ""}`,
    dataset: { model: result.model, status: result.status } },
    el("h4", {}, result.model),
    el("p", {}, el("b", { className: `status-${result.status}` }, result.status)),
    result.outputs.map((o) => el("img", { className: "output", src: o.url, alt: `output of ${result.model}`,
      width: o.width, height: o.height })),
    result.error ? el("p", { className: "status-failed" }, `${result.error.code}: ${result.error.message}`) : null,
    el("p", { className: "muted" }, `cost ${usd(result.cost.actual ?? result.cost.estimated)}` +
      `${result.cost.actual === null ? " (estimate)" : ""}, run ${seconds}, queued ` +
      `${result.queue_seconds === null ? "-" : `${result.queue_seconds.toFixed(1)} s`}`),
    result.status === "succeeded"
      ? el("button", { type: "button", className: voted ? "" : "secondary", onclick: () => onVote(result.model) },
        voted ? "Your pick" : "Vote for this one")
      : null);
}

export function comparisonGrid(comparison, onVote) {
  return el("div", { id: "comparison", dataset: { id: comparison.id, status: comparison.status } },
    el("p", { className: "muted" }, `Comparison ${comparison.id}: ${comparison.status}, ` +
      `estimated ${usd(comparison.estimated_total)}` +
      `${comparison.actual_total !== null ? `, charged ${usd(comparison.actual_total)}` : ""}`),
    el("div", { className: "grid" }, comparison.results.map((r) => resultCard(comparison, r, onVote))));
}

export async function renderCompare(view, state) {
  const list = await models();
  // Its own operation, remembered between visits: not the edit view's, which a user
  // would not see change here.
  const operation = el("select", { id: "cmp-operation" }, operationsOf(list).map((o) =>
    el("option", { value: o, selected: o === (state.compareOperation || "general_edit") }, o)));
  const image = el("input", { id: "cmp-image", type: "file", accept: "image/*" });
  const imageUrl = el("input", { id: "cmp-image-url", type: "url", placeholder: "https://... (instead of a file)" });
  const prompt = el("textarea", { id: "cmp-prompt", rows: "2" });
  const mask = el("input", { id: "cmp-mask", type: "file", accept: "image/*" });
  const maskLabel = el("label", {}, "Mask (white = the area to edit; for the models that take one)", mask);
  const choices = el("div", { id: "cmp-models", className: "grid" });
  const grid = el("div", { id: "cmp-result" });
  const fill = () => {
    const serving = list.filter((m) => m.operations.includes(operation.value));
    choices.replaceChildren(...serving.map((m) => el("label", { className: "check" },
      el("input", { type: "checkbox", value: m.id, name: "models" }),
      `${m.id} (${m.price_range.text})${m.mask === "required" ? ", needs a mask" : ""}` +
      `${m.demo ? " - offline demo" : ""}`)));
    maskLabel.hidden = !serving.some((m) => m.mask !== "none");
  };
  operation.addEventListener("change", () => { state.compareOperation = operation.value; fill(); });

  let current = null;
  const vote = async (model) => {
    try {
      current = await api(`/v1/comparisons/${current.id}/vote`, { method: "POST", json: { model } });
      grid.replaceChildren(comparisonGrid(current, vote));
    } catch (error) {
      showMessage(describe(error));
    }
  };
  const run = async (event) => {
    event.preventDefault();
    showMessage("");
    const picked = [...choices.querySelectorAll("input:checked")].map((i) => i.value);
    if (picked.length < 2 || picked.length > 6) {
      showMessage("Pick 2 to 6 models to compare.");
      return;
    }
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
    if (prompt.value.trim()) form.append("prompt", prompt.value.trim());
    form.append("models", picked.join(","));
    form.append("metadata", JSON.stringify({ source: "console" }));
    try {
      current = await api("/v1/comparisons", { method: "POST", form });
      grid.replaceChildren(comparisonGrid(current, vote));
      // The grid fills in from the comparison's event stream as each model finishes.
      await stream(`/v1/comparisons/${current.id}/stream`, ({ data }) => {
        current = data;
        grid.replaceChildren(comparisonGrid(current, vote));
      });
    } catch (error) {
      showMessage(describe(error));
    }
  };
  view.replaceChildren(el("h2", {}, "Compare models"),
    el("form", { id: "compare-form", className: "card", onsubmit: run },
      el("label", {}, "Operation", operation), el("label", {}, "Image", image),
      el("label", {}, "or its URL", imageUrl),
      el("label", {}, "Prompt", prompt), maskLabel, el("h3", {}, "Models (2 to 6)"), choices,
      el("p", {}, el("button", { type: "submit", id: "run-compare" }, "Run comparison"))),
    grid);
  fill();
}
