// Costs (spend per model and per day over a range of days, as charts; the budget and
// what remains) and
// batches (their progress).
import { api, describe, el, showMessage, stream, usd } from "./api.js";

// Horizontal bars, one per row, as HTML: its text is the page's own size at any width (an
// SVG scaled down to a phone made it 6 px), and no chart library means no CDN or build.
export function barChart(id, rows, label) {
  const max = Math.max(...rows.map((r) => Number(r.amount)), 0) || 1;
  if (!rows.length) return el("p", { className: "muted", id }, "Nothing charged in this range.");
  return el("ul", { className: "hbars", id, "aria-label": label }, rows.map((r) =>
    el("li", { dataset: { key: r.key, amount: r.amount } },
      el("span", { className: "key" }, r.key),
      el("span", { className: "track" },
        el("span", { className: "fill", style: `width: ${Math.max(1, 70 * Number(r.amount) / max)}%` }),
        el("span", { className: "amount" }, `${usd(r.amount)} (${r.jobs} job${r.jobs === 1 ? "" : "s"})`)))));
}

const day = (date) => date.toISOString().slice(0, 10);

// The range the user picked (UTC days, "to" included), the current month by default.
function monthSoFar() {
  const now = new Date();
  return { from: `${day(now).slice(0, 8)}01`, to: day(now) };
}

function nextDay(date) {
  const d = new Date(`${date}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + 1);
  return day(d);
}

export async function renderCosts(view, state) {
  const range = state.costRange || monthSoFar();
  const from = el("input", { id: "cost-from", type: "date", value: range.from, required: true });
  const to = el("input", { id: "cost-to", type: "date", value: range.to, required: true });
  const body = el("div", { id: "costs-body" });
  const load = async () => {
    showMessage("");
    if (!from.value || !to.value || from.value > to.value) {
      showMessage("Choose a range whose first day is not after its last.");
      return;
    }
    state.costRange = { from: from.value, to: to.value };
    const query = (group_by) => ({ group_by, from: from.value, to: nextDay(to.value) });
    try {
      const [byModel, byDay, budget] = await Promise.all([
        api("/v1/costs", { query: query("model") }),
        api("/v1/costs", { query: query("day") }),
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
      body.replaceChildren(
        el("p", { id: "costs-total" }, `${from.value} to ${to.value}: ${usd(byModel.total)} charged (${byModel.currency}).`),
        el("h3", {}, "This month's budgets"), el("p", { className: "muted" }, `${plan[0].toUpperCase()}${plan.slice(1)}.`),
        el("div", { className: "grid", id: "budgets" }, budgets),
        el("h3", {}, "Spend per model"), barChart("chart-models", rows(byModel, "model"), "spend per model"),
        el("h3", {}, "Spend per day"), barChart("chart-days", rows(byDay, "day"), "spend per day"));
    } catch (error) {
      showMessage(describe(error));
    }
  };
  view.replaceChildren(el("h2", {}, "Costs"),
    el("form", { className: "range card", id: "cost-range", onsubmit: (e) => { e.preventDefault(); load(); } },
      el("label", {}, "From (UTC day)", from), el("label", {}, "To (included)", to),
      el("button", { type: "submit" }, "Show")),
    body);
  await load();
}

function batchCard(b) {
  return el("article", { className: "card", dataset: { batch: b.id, status: b.status } },
    el("h4", {}, b.id), el("p", {}, `${b.kind}, `, el("b", {}, b.status)),
    el("div", { className: "bar" }, el("span", { style: `width: ${100 * b.progress.fraction}%` })),
    el("p", { className: "muted" }, `${b.progress.done} of ${b.progress.total} done; ` +
      Object.entries(b.counts).filter(([, n]) => n).map(([s, n]) => `${n} ${s}`).join(", ")),
    el("p", { className: "muted" }, `cost so far ${usd(b.cost.so_far)} of ${usd(b.cost.estimated_total)} estimated`));
}

const LIVE_BATCHES = 10; // streams opened at most, for the newest batches still running

export async function renderBatches(view) {
  try {
    const page = await api("/v1/batches", { query: { limit: 50 } });
    const cards = page.data.map(batchCard);
    view.replaceChildren(el("h2", {}, "Batches"),
      cards.length ? el("div", { className: "grid" }, cards) : el("p", { className: "muted" }, "No batches yet."));
    // A running batch's card follows its progress stream until it ends or the page moves on.
    const running = page.data.filter((b) => !["completed", "canceled"].includes(b.status)).slice(0, LIVE_BATCHES);
    for (const batch of running) {
      const controller = new AbortController();
      stream(`/v1/batches/${batch.id}/stream`, ({ data }) => {
        const card = view.querySelector(`article[data-batch='${batch.id}']`);
        if (!card) { controller.abort(); return; }
        card.replaceWith(batchCard(data));
      }, { signal: controller.signal }).catch((error) => showMessage(describe(error)));
    }
  } catch (error) {
    showMessage(describe(error));
  }
}
