// The model picker: every model grouped by tier, with provider, price and how it
// varies, operations and limits; choosing one shows its options and a live quote.
import { api, describe, el, models, showMessage, usd } from "./api.js";

const TIERS = ["budget", "mid", "premium", "variable", "specialized"];

export function limitsText(m) {
  const images = m.images.min === m.images.max ? `${m.images.min} image`
    : `${m.images.min}-${m.images.max} images`;
  const mask = m.mask === "none" ? "no mask" : `mask ${m.mask}`;
  return `${images}, up to ${m.max_resolution[0]}x${m.max_resolution[1]}, ${mask}`;
}

// One input per parameter spec; answers a function that reads the chosen options.
export function optionsForm(container, model, onChange) {
  container.replaceChildren();
  const readers = [];
  for (const [name, spec] of Object.entries(model.params || {})) {
    const hint = [spec.description, spec.min !== null && spec.min !== undefined ? `min ${spec.min}` : "",
      spec.max !== null && spec.max !== undefined ? `max ${spec.max}` : ""].filter(Boolean).join(", ");
    let input;
    if (spec.choices) {
      input = el("select", { name },
        el("option", { value: "" }, `default${spec.default !== null && spec.default !== undefined ? ` (${spec.default})` : ""}`),
        spec.choices.map((c) => el("option", { value: c }, c)));
    } else if (spec.type === "bool") {
      input = el("select", { name }, el("option", { value: "" }, "default"),
        el("option", { value: "true" }, "true"), el("option", { value: "false" }, "false"));
    } else if (spec.type === "int" || spec.type === "number") {
      input = el("input", { name, type: "number", min: spec.min ?? undefined, max: spec.max ?? undefined,
        step: spec.type === "int" ? "1" : "any", placeholder: spec.default ?? "" });
    } else {
      input = el("input", { name, type: "text", placeholder: spec.type === "size" ? "W*H" : (spec.default ?? "") });
    }
    input.addEventListener("change", onChange);
    container.append(el("label", { title: hint }, `${name}${hint ? ` (${hint})` : ""}`, input));
    readers.push(() => {
      const raw = input.value.trim();
      if (raw === "") return null;
      if (spec.type === "int") return [name, parseInt(raw, 10)];
      if (spec.type === "number") return [name, Number(raw)];
      if (spec.type === "bool") return [name, raw === "true"];
      return [name, raw];
    });
  }
  if (!readers.length) container.append(el("p", { className: "muted" }, "This model takes no options."));
  return () => Object.fromEntries(readers.map((r) => r()).filter(Boolean));
}

let sampleBlob;
async function sampleImage() {
  if (sampleBlob) return sampleBlob;
  const canvas = document.createElement("canvas");
  canvas.width = 256; canvas.height = 256;
  const g = canvas.getContext("2d");
  g.fillStyle = "#4a7bd0"; g.fillRect(0, 0, 256, 256);
  g.fillStyle = "#f2c230"; g.fillRect(64, 64, 128, 128);
  sampleBlob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  return sampleBlob;
}

// POST /v1/quotes for this model and options, on the user's image or a sample one.
export async function quote({ model, operation, options, prompt, image, mask }) {
  const form = new FormData();
  if (typeof image === "string") form.append("image", image); // a URL: quoted unfetched
  else form.append("image", image || (await sampleImage()), "image.png");
  if (mask) form.append("mask", mask, "mask.png");
  form.append("model", model.id);
  form.append("operation", operation);
  const needsPrompt = model.prompt_required.includes(operation) || (model.takes_prompt && prompt);
  if (needsPrompt) form.append("prompt", prompt || "a sample prompt for the quote");
  form.append("options", JSON.stringify(options));
  return api("/v1/quotes", { method: "POST", form });
}

// The catalog's price rules, as a person would say them.
const RULES = { flat: "one price per image", by_param: "priced by an option's value",
  quality_size: "priced by quality and size", credits: "Stability credits",
  provider_reported: "as the provider reports it" };

export function quoteText(q) {
  const budget = q.budget.ok ? "fits your limits" : "over your limits";
  const units = `${q.pricing.units} ${q.pricing.unit}${Number(q.pricing.units) === 1 ? "" : "s"}`;
  return `Quote: ${usd(q.estimated)} ${q.currency} (${RULES[q.pricing.rule] || q.pricing.rule}: ` +
    `${units} x ${usd(q.pricing.unit_price)}), ${budget}`;
}

export async function renderModels(view, state) {
  const list = await models();
  const choose = async (id) => {
    state.model = id;
    await renderModels(view, state);
    // At phone width the detail sits below every card: bring it into view, and focus it.
    const heading = document.querySelector("#model-detail h3");
    heading.scrollIntoView({ block: "start" });
    heading.focus({ preventScroll: true });
  };
  const detail = el("section", { id: "model-detail", className: "card" },
    el("p", { className: "muted" }, "Choose a model to see its options and a live quote."));
  const groups = TIERS.map((tier) => {
    const members = list.filter((m) => m.tier === tier);
    if (!members.length) return null;
    return el("section", { className: "tier", dataset: { tier } },
      el("h3", {}, `${tier[0].toUpperCase()}${tier.slice(1)} tier`),
      el("div", { className: "grid" }, members.map((m) => el("div", {
        className: `card model-card${state.model === m.id ? " selected" : ""}`,
        dataset: { model: m.id }, tabindex: "0", role: "button",
        "aria-pressed": state.model === m.id ? "true" : "false",
        onclick: () => choose(m.id),
        // A card acts as the button it looks like: Enter and Space choose it.
        onkeydown: (event) => {
          if (event.key === "Enter" || event.key === " ") { event.preventDefault(); choose(m.id); }
        } },
        el("h4", {}, m.id),
        el("div", {}, el("span", { className: "tag" }, m.provider),
          m.demo ? el("span", { className: "tag demo" }, "offline demo model") : null),
        el("div", { className: "price" }, m.price_range.text),
        el("div", { className: "muted" }, m.operations.join(", ")),
        el("div", { className: "muted" }, limitsText(m))))));
  });
  view.replaceChildren(el("h2", {}, "Models"), el("div", { className: "cols" },
    el("div", {}, groups), detail));
  const chosen = list.find((m) => m.id === state.model);
  if (chosen) showDetail(detail, chosen, state);
}

function showDetail(detail, model, state) {
  const operation = el("select", { id: "detail-operation" },
    model.operations.map((o) => el("option", { value: o }, o)));
  const optionsBox = el("div", { id: "detail-options" });
  const quoteLine = el("p", { id: "model-quote", className: "price" }, "Quoting...");
  const refresh = async () => {
    quoteLine.textContent = "Quoting...";
    try {
      quoteLine.textContent = quoteText(await quote({ model, operation: operation.value,
        options: readOptions() }));
    } catch (error) {
      quoteLine.textContent = describe(error);
    }
  };
  operation.addEventListener("change", refresh);
  detail.replaceChildren(
    el("h3", { tabindex: "-1" }, model.id),
    el("p", { className: "muted" }, model.description),
    el("p", {}, el("span", { className: "tag" }, model.provider), el("span", { className: "tag" }, `${model.tier} tier`),
      model.demo ? el("span", { className: "tag demo" }, "offline demo model") : null),
    el("p", { className: "price", id: "model-price" }, `Price: ${model.price_range.text}`),
    el("p", { className: "muted" }, `Limits: ${limitsText(model)}`),
    el("label", {}, "Operation", operation),
    optionsBox, quoteLine,
    el("button", { type: "button", id: "use-model", onclick: () => {
      state.model = model.id; state.operation = operation.value; location.hash = "#edit"; } },
      "Edit with this model"));
  const readOptions = optionsForm(optionsBox, model, refresh);
  refresh().catch((error) => showMessage(describe(error)));
}
