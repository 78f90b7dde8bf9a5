// Costs (spend per model and per day, as charts; the budget and what remains) and
// batches (their progress).
import { api, describe, el, showMessage, usd } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// Horizontal bars, one per row: drawn here because a chart library is a CDN or a build.
export function barChart(id, rows, label) {
  const height = 24 * rows.length + 10;
  const chart = svg("svg", { class: "chart", id, viewBox: `0 0 600 ${Math.max(height, 40)}`, role: "img",
    "aria-label": label });
  const max = Math.max(...rows.map((r) => Number(r.amount)), 0) || 1;
  rows.forEach((r, n) => {
    const y = 6 + n * 24;
    const width = Math.max(2, 250 * Number(r.amount) / max);
    chart.append(svg("text", { x: 6, y: y + 13 }, r.key));
    const bar = svg("rect", { class: "bar-rect", x: 200, y, width, height: 16, rx: 3 });
    bar.dataset.key = r.key;
    bar.dataset.amount = r.amount;
    chart.append(bar, svg("text", { x: 206 + width, y: y + 13 }, `$${r.amount} (${r.jobs} job${r.jobs === 1 ? "" : "s"})`));
  });
  if (!rows.length) chart.append(svg("text", { x: 6, y: 24 }, "nothing charged in this range"));
  return chart;
}

export async function renderCosts(view) {
  try {
    const [byModel, byDay, budget] = await Promise.all([
      api("/v1/costs", { query: { group_by: "model" } }),
      api("/v1/costs", { query: { group_by: "day" } }),
      api("/v1/budget")]);
    const rows = (report, key) => report.rows.map((r) => ({ key: r[key], amount: r.amount, jobs: r.jobs }));
    const budgets = budget.budgets.length ? budget.budgets.map((b) => el("div", { className: "card", dataset: { scope: b.scope } },
      el("h4", {}, b.scope === "tenant" ? "Monthly budget" : `Budget for ${b.scope.slice(6)}`),
      el("p", {}, `${usd(b.spent)} spent + ${usd(b.in_flight)} in flight of ${usd(b.budget)}: `,
        el("b", {}, `${usd(b.remaining)} remaining`)),
      el("div", { className: "bar" }, el("span", { style: `width: ${Math.min(100, 100 * (Number(b.spent) + Number(b.in_flight)) / (Number(b.budget) || 1))}%` }))))
      : [el("p", { className: "muted" }, "No budget is set for this tenant.")];
    const plan = budget.plan_limit === null ? `plan ${budget.plan}: unlimited edits`
      : `plan ${budget.plan}: ${budget.plan_used} of ${budget.plan_limit} edits this ${budget.period}`;
    view.replaceChildren(el("h2", {}, "Costs"),
      el("p", { id: "costs-total" }, `This month: ${usd(byModel.total)} ${byModel.currency} charged (${plan}).`),
      el("div", { className: "grid", id: "budgets" }, budgets),
      el("h3", {}, "Spend per model"), barChart("chart-models", rows(byModel, "model"), "spend per model"),
      el("h3", {}, "Spend per day"), barChart("chart-days", rows(byDay, "day"), "spend per day"));
  } catch (error) {
    showMessage(describe(error));
  }
}

export async function renderBatches(view) {
  try {
    const page = await api("/v1/batches", { query: { limit: 50 } });
    const cards = page.data.map((b) => el("article", { className: "card", dataset: { batch: b.id } },
      el("h4", {}, b.id), el("p", {}, `${b.kind}, `, el("b", {}, b.status)),
      el("div", { className: "bar" }, el("span", { style: `width: ${100 * b.progress.fraction}%` })),
      el("p", { className: "muted" }, `${b.progress.done} of ${b.progress.total} done; ` +
        Object.entries(b.counts).filter(([, n]) => n).map(([s, n]) => `${n} ${s}`).join(", ")),
      el("p", { className: "muted" }, `cost so far ${usd(b.cost.so_far)} of ${usd(b.cost.estimated_total)} estimated`)));
    view.replaceChildren(el("h2", {}, "Batches"),
      cards.length ? el("div", { className: "grid" }, cards) : el("p", { className: "muted" }, "No batches yet."));
  } catch (error) {
    showMessage(describe(error));
  }
}
